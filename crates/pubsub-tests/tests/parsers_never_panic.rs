//! Property tests: arbitrary strings fed to topic validation and to every
//! config parser return `Ok` or an error, never panic; errors name the
//! variable or key at fault.

use std::collections::HashMap;

use proptest::prelude::*;
use pubsub_core::config::env::{parse_bool, parse_duration, parse_list, parse_number};
use pubsub_core::config::PUBSUB_ENV;
use pubsub_core::{validate_topic_name, Config, ErrorKind, Section, Topic};
use pubsub_mqtt::{MqttConfig, MQTT_ENV};
use pubsub_nats::{validate_server_url, NatsConfig, NATS_ENV};
use pubsub_redis::{RedisConfig, REDIS_ENV};

fn all_env() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    PUBSUB_ENV
        .iter()
        .chain(NATS_ENV)
        .chain(MQTT_ENV)
        .chain(REDIS_ENV)
}

/// With every backend registered, a document reads all their sections when
/// it loads, so their variables' errors show there.
fn register_all() {
    pubsub_nats::register();
    pubsub_mqtt::register();
    pubsub_redis::register();
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        "\\[('[a-z:/0-9]{0,12}'[, ]{0,2}){0,4}\\]?",
        "(nats|tls|http|)(://)?[a-z0-9.:@\\[\\]]{0,20}",
        "[0-9.\\-e ]{0,12}(ms|s|m|h)?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn topic_validation(name in any_text()) {
        match validate_topic_name(&name) {
            Ok(()) => {
                prop_assert!(!name.is_empty());
                prop_assert!(Topic::new(name.clone()).is_ok());
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidTopic),
        }
    }

    #[test]
    fn scalar_parsers(v in any_text()) {
        for r in [parse_bool("V", &v).map(|_| ()), parse_number::<u16>("V", &v).map(|_| ()),
                  parse_number::<usize>("V", &v).map(|_| ()), parse_duration("V", &v).map(|_| ()),
                  parse_list("V", &v, &["a:1", "b:2"]).map(|_| ()),
                  validate_server_url("k", &v, &["nats", "tls"])] {
            if let Err(e) = r {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig);
                prop_assert!(e.to_string().contains('V') || e.to_string().contains('k'));
            }
        }
    }

    #[test]
    fn every_environment_variable(index in 0usize..64, v in any_text()) {
        register_all();
        let vars: Vec<&str> = all_env().map(|(k, _)| *k).collect();
        let var = vars[index % vars.len()];
        let env: HashMap<String, String> = [(var.to_string(), v.clone())].into();
        match Config::loader().env(env).no_default_file().load() {
            Ok(c) => {
                let _ = c.section::<NatsConfig>().unwrap().validate();
                let _ = c.section::<MqttConfig>().unwrap().validate();
                let _ = c.section::<RedisConfig>().unwrap().validate();
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig);
                // The error names the variable, or the key it sets, or the file it names.
                let msg = e.to_string();
                let key = all_env().find(|(k, _)| *k == var).unwrap().1;
                prop_assert!(msg.contains(var) || msg.contains(key.split('.').next_back().unwrap()) || msg.contains("config file"), "{}", msg);
            }
        }
    }

    #[test]
    fn config_file_text(text in any_text(), ext in prop_oneof![Just("toml"), Just("yaml"), Just("json")]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("c.{ext}"));
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = Config::from_file(&path) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            prop_assert!(e.to_string().contains("config file"));
        }
    }
}
