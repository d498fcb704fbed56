//! The READMEs a new user follows, held to what the tool does: each
//! section of the tour selects the backend its output shows, the sample
//! `check` output is the real one, and every default written in the
//! configuration reference is what `check` shows.

mod common;

use common::*;

const CLI_README: &str = include_str!("../README.md");
const WORKSPACE_README: &str = include_str!("../../../README.md");

/// The `### ` sections of the tour, with their titles.
fn tour_sections() -> Vec<(&'static str, &'static str)> {
    let tour = CLI_README
        .split("\n## A five-minute tour")
        .nth(1)
        .expect("the tour")
        .split("\n## ")
        .next()
        .unwrap();
    tour.split("\n### ")
        .skip(1)
        .map(|s| s.split_once('\n').unwrap_or((s, "")))
        .collect()
}

/// Every section after the first selects its backend itself (a section
/// used to rely on an export of an earlier one, and section 6 then ran
/// on MQTT while it showed NATS), and each backend its output names is one
/// it selected.
#[test]
fn each_tour_section_selects_the_backend_it_shows() {
    let sections = tour_sections();
    assert!(sections.len() >= 6, "{}", sections.len());
    for (title, text) in sections.iter().skip(1) {
        let mut selected: Vec<&str> = Vec::new();
        for marker in ["MSIGHT_PUBSUB_BACKEND=", "--backend "] {
            for part in text.split(marker).skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                if let Some(known) = ["memory", "nats", "redis", "mqtt"]
                    .into_iter()
                    .find(|k| *k == name)
                {
                    selected.push(known);
                }
            }
        }
        assert!(!selected.is_empty(), "section {title:?} selects no backend");
        for line in text.lines() {
            for prefix in ["pubsub demo: ", "pubsub bench: ", "connect:      "] {
                let Some(rest) = line.strip_prefix(prefix) else {
                    continue;
                };
                let shown = rest.split(" backend").next().unwrap_or_default();
                assert!(
                    selected.contains(&shown),
                    "section {title:?} shows the {shown} backend but selects {selected:?}: {line}"
                );
            }
        }
    }
}

/// The sample `check` output of section 2 is what `pubsub check` prints
/// with the section's variables: the configuration line for line, then the
/// same steps in the same order.
#[cfg(feature = "nats")]
#[test]
fn the_check_sample_is_the_real_output() {
    use pubsub_testkit::brokers::NatsServer;
    let sample: Vec<&str> = CLI_README
        .split("```console\n$ pubsub check\n")
        .nth(1)
        .expect("the check sample")
        .split("```")
        .next()
        .unwrap()
        .lines()
        .collect();
    let server = NatsServer::start();
    let url = server.url();
    let o = run(pubsub(&[
        ("MSIGHT_PUBSUB_BACKEND", "nats"),
        ("MSIGHT_NATS_SERVERS", url.as_str()),
    ])
    .arg("check"));
    assert_code(&o, 0);
    let real = stdout(&o).replace(&url, "nats://127.0.0.1:4222");
    let real: Vec<&str> = real.lines().collect();
    let config_end = |lines: &[&str]| {
        lines
            .iter()
            .position(|l| l.starts_with("connect:"))
            .unwrap()
    };
    let (sample_config, sample_steps) = sample.split_at(config_end(&sample));
    let (real_config, real_steps) = real.split_at(config_end(&real));
    assert_eq!(sample_config, real_config, "the configuration part");
    let label = |l: &&str| l.split(':').next().unwrap_or_default().to_string();
    assert_eq!(
        sample_steps.iter().map(label).collect::<Vec<_>>(),
        real_steps.iter().map(label).collect::<Vec<_>>(),
        "the steps"
    );
}

/// The rows of the workspace README's configuration tables (`| key |
/// default | ...`): key and default cell.
fn documented_defaults() -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in WORKSPACE_README.lines() {
        if line.starts_with("| key | default |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1];
        let Some(key) = key.strip_prefix('`').and_then(|k| k.split('`').next()) else {
            continue;
        };
        rows.push((key.to_string(), cells[2].to_string()));
    }
    rows
}

/// Each default the reference writes as a literal (or as "none") is the
/// value `check` shows with no configuration at all (`redis.cluster_nodes`
/// was documented as `host:port` and printed `[]`).
#[cfg(all(feature = "nats", feature = "redis", feature = "mqtt"))]
#[test]
fn documented_defaults_are_the_real_ones() {
    let o = run(pubsub(&[]).args(["check", "--all-sections", "--format", "json"]));
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = documented_defaults();
    assert!(rows.len() > 60, "{}", rows.len());
    let mut compared = 0;
    for (key, default) in rows {
        let value = key
            .split('.')
            .try_fold(&v, |v, k| v.get(k))
            .unwrap_or(&serde_json::Value::Null);
        if default.starts_with("none") {
            assert!(value.is_null(), "{key}: documented none, shows {value}");
            compared += 1;
            continue;
        }
        let Some(literal) = default.strip_prefix('`').and_then(|d| d.split('`').next()) else {
            continue;
        };
        let shown = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(
            literal.trim_matches('"'),
            shown,
            "{key}: documented {default:?}, `pubsub check` shows {value}"
        );
        compared += 1;
    }
    assert!(compared > 50, "{compared}");
}
