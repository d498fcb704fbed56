//! A file named in the configuration that does not exist is a configuration
//! error for the tool too: exit status 2, and the message names the key
//! and the path.

use std::process::{Command, Output};

/// The binary with no `MSIGHT_*` or `RUST_LOG` from the caller, then `vars`.
fn pubsub(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pubsub"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MSIGHT_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.envs(vars.iter().copied());
    cmd
}

fn describe(o: &Output) -> String {
    format!(
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn missing_nats_ca_file_exits_2_naming_key_and_path() {
    let o = pubsub(&[
        ("MSIGHT_NATS_USE_TLS", "true"),
        ("MSIGHT_NATS_TLS_CA_CERT_FILE", "/nonexistent/ca.pem"),
    ])
    .args(["pub", "--backend", "nats", "t", "m"])
    .output()
    .expect("the pubsub binary runs");
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("nats.tls_ca_cert"), "{}", describe(&o));
    assert!(stderr.contains("/nonexistent/ca.pem"), "{}", describe(&o));
}
