//! The command line as a new user meets it (issue 16): each test shows one
//! rough edge fixed, on the in-process backend or a dead port where no
//! broker is needed.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `check --format json` prints one JSON document on standard output: the
/// configuration and the result of each step, so `| jq .backend` works.
#[test]
fn check_json_is_one_document_with_the_result() {
    let o = run(pubsub(&[("MSIGHT_PUBSUB_GROUP_ID", "g1")]).args(["check", "--format", "json"]));
    assert_code(&o, 0);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("standard output is one JSON document");
    assert_eq!(v["backend"], "memory");
    assert_eq!(v["group_id"], "g1");
    assert_eq!(v["buffer"]["capacity"], 10000);
    assert_eq!(v["check"]["ok"], true, "{v}");
    assert_eq!(v["check"]["connect"]["ok"], true);
    assert_eq!(v["check"]["connect"]["backend"], "memory");
    assert!(v["check"]["round_trip_seconds"].as_f64().is_some(), "{v}");
    assert_eq!(v["check"]["capabilities"]["groups"], true);
    assert!(v["check"]["server"]["server"]
        .as_str()
        .is_some_and(|s| s.starts_with("in-process")));
    assert!(v["check"]["error"].is_null());
}

/// A failed connect is in the document too, with exit code 1 and the
/// error on stderr.
#[cfg(feature = "nats")]
#[test]
fn check_json_failure_is_still_one_document() {
    let port = pubsub_testkit::brokers::free_port();
    let o = run(pubsub(&[
        ("MSIGHT_PUBSUB_BACKEND", "nats"),
        ("MSIGHT_NATS_SERVERS", &format!("nats://127.0.0.1:{port}")),
        ("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "3"),
    ])
    .args(["check", "--format", "json"]));
    assert_code(&o, 1);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("standard output is one JSON document");
    assert_eq!(v["backend"], "nats");
    assert_eq!(v["check"]["ok"], false);
    assert_eq!(v["check"]["connect"]["ok"], false);
    let error = v["check"]["error"].as_str().expect("the error");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(
        stderr(&o).starts_with("error: connection failed"),
        "{}",
        stderr(&o)
    );
}

/// `check` shows the common settings and the chosen backend's section;
/// `--all-sections` every registered backend's.
#[test]
fn check_shows_the_chosen_backends_section_or_all() {
    let o = run(pubsub(&[]).arg("check"));
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("\n[memory]\n"), "{out}");
    assert!(out.contains("publish_timeout = \"5s\""), "{out}");
    for other in ["[nats]", "[redis]", "[mqtt]"] {
        assert!(!out.contains(other), "{other} shown: {out}");
    }
    #[cfg(all(feature = "nats", feature = "redis", feature = "mqtt"))]
    {
        let o = run(pubsub(&[]).args(["check", "--all-sections"]));
        assert_code(&o, 0);
        let out = stdout(&o);
        for section in ["[memory]", "[nats]", "[redis]", "[mqtt]"] {
            assert!(out.contains(section), "{section} missing: {out}");
        }
        let o = run(pubsub(&[]).args(["check", "--all-sections", "--format", "json"]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["redis"].is_object() && v["mqtt"].is_object(), "{v}");
    }
}

/// `--help` gives the real order: the environment over the file.
#[test]
fn help_names_the_environment_before_the_file() {
    let o = run(pubsub(&[]).arg("--help"));
    assert_code(&o, 0);
    let out = stdout(&o).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        out.contains(
            "[default: MSIGHT_PUBSUB_BACKEND, else `backend` of the config file, else memory]"
        ),
        "{out}"
    );
}

/// `--rate 0` means no limit in every command.
#[test]
fn rate_zero_means_no_limit_for_pub_too() {
    let o = run(pubsub(&[]).args(["pub", "t.rate0", "x", "--count", "3", "--rate", "0"]));
    assert_code(&o, 0);
    let o = run(pubsub(&[]).args(["pub", "t.rate0", "x", "--rate=-1"]));
    assert_code(&o, 2);
    assert!(stderr(&o).contains("0 for no limit"), "{}", stderr(&o));
}

/// A wildcard of another backend's syntax is refused, naming this
/// backend's own (the in-process backend has none).
#[test]
fn foreign_wildcards_are_refused_on_memory() {
    for topic in ["a.>", "sensors.*.front", "sensors/#", "a/+/c"] {
        let o = run(pubsub(&[]).args(["sub", topic, "--timeout", "5"]));
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(
            err.contains("wildcard") && err.contains("the memory backend has no wildcards"),
            "{topic}: {err}"
        );
    }
}

/// `pub` with no message: a hint when standard input is a terminal (here a
/// pseudo-terminal made by `script`), and a word when the input was empty.
#[test]
fn pub_without_a_message_says_what_it_does() {
    let o = run(pubsub(&[])
        .args(["pub", "t.empty"])
        .stdin(std::process::Stdio::null()));
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("no input: 0 messages published to t.empty"),
        "{}",
        stderr(&o)
    );

    let bin = binary();
    let line = format!("{} pub t.tty", bin.display());
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MSIGHT_") {
            cmd.env_remove(&k);
        }
    }
    let mut tty = Background::spawn("script pubsub pub", &mut cmd, std::process::Stdio::piped());
    let hinted = tty.wait_until(READY_TIMEOUT, |out, err| {
        let all = format!("{}{err}", String::from_utf8_lossy(out));
        all.contains("reading messages from standard input, one per line; end with Ctrl-D")
    });
    let (out, err) = tty.kill();
    assert!(hinted, "no hint: {:?} {err}", String::from_utf8_lossy(&out));
}

/// `(1 worker)`, not `(1 workers)`.
#[test]
fn demo_with_one_worker_says_worker() {
    let o = run(pubsub(&[]).args(["demo", "--workers", "1", "--frames", "20", "--rate", "0"]));
    assert_clean_demo(&o, 20, 1);
    assert!(stdout(&o).contains("(1 worker) ->"), "{}", stdout(&o));
}

/// Case is ignored alike everywhere: backend names and every choice.
#[test]
fn choices_ignore_case_like_backend_names() {
    let o = run(pubsub(&[]).args(["check", "--backend", "MEMORY", "--format", "JSON"]));
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["backend"], "memory");
    let t0 = Instant::now();
    let o = run(pubsub(&[]).args([
        "sub",
        "t.case",
        "--format",
        "Hex",
        "--ack",
        "Manual",
        "--timeout",
        "0.2",
    ]));
    // Timed out (1), not a usage error (2).
    assert_code(&o, 1);
    assert!(t0.elapsed() < Duration::from_secs(30));
}

/// A demo at full speed whose receive buffers drop frames ends as soon as
/// every frame is accounted for (a result, or counted as dropped), not
/// after its whole `--timeout`.
#[test]
fn demo_that_drops_ends_when_every_frame_is_accounted_for() {
    let t0 = Instant::now();
    let o = run(pubsub(&[("MSIGHT_PUBSUB_BUFFER_CAPACITY", "50")]).args([
        "demo",
        "--rate",
        "0",
        "--frames",
        "20000",
        "--payload-size",
        "128",
        "--timeout",
        "60s",
    ]));
    let took = t0.elapsed();
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(took < Duration::from_secs(30), "took {took:?}: {out}");
    assert!(!out.contains("timed out"), "{out}");
    let dropped: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("dropped:     "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a dropped line");
    assert!(dropped > 0, "the scenario must drop: {out}");
    assert!(
        out.contains(&format!("lost {dropped},")),
        "lost = dropped: {out}"
    );
}

/// `bench` with its defaults measures rather than drops: its subscribers
/// use back-pressure.
#[test]
fn bench_with_defaults_loses_nothing_on_memory() {
    let o = run(pubsub(&[]).args(["bench", "--backend", "memory", "--no-progress"]));
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("received 100000 of 100000, lost 0, dropped by receive buffers 0"),
        "{out}"
    );
    assert!(out.contains(", back-pressure"), "{out}");
}

/// A bench run that loses messages exits 1, as `demo` does.
#[test]
fn bench_that_loses_messages_exits_1() {
    let o = run(pubsub(&[("MSIGHT_PUBSUB_BUFFER_CAPACITY", "10")]).args([
        "bench",
        "--msgs",
        "20000",
        "--latency-samples",
        "0",
        "--overflow",
        "drop-newest",
        "--no-progress",
    ]));
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.starts_with("error: bench: ") && err.contains("lost"),
        "{err}"
    );
}

/// `demo --ack manual --kill-worker N` on the in-process backend: worker 1
/// is aborted holding a frame after N; its frames come back to the others
/// and nothing is lost.
#[test]
fn demo_with_a_killed_worker_loses_nothing_with_manual_ack() {
    let o = run(pubsub(&[]).args([
        "demo",
        "--ack",
        "manual",
        "--kill-worker",
        "50",
        "--frames",
        "600",
        "--rate",
        "2000",
        "--ack-wait",
        "1s",
    ]));
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("(killed after 50 frames, holding one, and started again)"),
        "{out}"
    );
    assert!(
        out.contains("600 published") && out.contains("lost 0,"),
        "{out}"
    );
    assert!(
        demo_redelivered(&out) >= 1,
        "the held frame came back: {out}"
    );
    assert!(out.contains("result:      OK"), "{out}");
}

#[test]
fn kill_worker_needs_manual_ack() {
    let o = run(pubsub(&[]).args(["demo", "--kill-worker", "5", "--frames", "10"]));
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("--kill-worker needs --ack manual"),
        "{}",
        stderr(&o)
    );
}

/// TLS files given while TLS is off are warned about on every backend,
/// in the same words (NATS and Redis ignored them silently).
#[cfg(all(feature = "nats", feature = "redis", feature = "mqtt"))]
#[test]
fn tls_files_without_tls_are_warned_about_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not read").unwrap();
    let ca = ca.to_str().unwrap();
    let port = pubsub_testkit::brokers::free_port().to_string();
    let nats_url = format!("nats://127.0.0.1:{port}");
    for (backend, vars) in [
        (
            "nats",
            vec![
                ("MSIGHT_NATS_SERVERS", nats_url.as_str()),
                ("MSIGHT_NATS_TLS_CA_CERT_FILE", ca),
            ],
        ),
        (
            "redis",
            vec![
                ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "127.0.0.1"),
                ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", port.as_str()),
                ("MSIGHT_REDIS_MESSAGE_BROKER_TLS_CA_CERT_FILE", ca),
            ],
        ),
        (
            "mqtt",
            vec![
                ("MSIGHT_MQTT_HOST", "127.0.0.1"),
                ("MSIGHT_MQTT_PORT", port.as_str()),
                ("MSIGHT_MQTT_TLS_CA_CERT_FILE", ca),
            ],
        ),
    ] {
        let mut env = vars.clone();
        env.push(("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "2"));
        let o = run(pubsub(&env).args(["pub", "--backend", backend, "t", "m"]));
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "{backend}.tls_ca_cert is set but TLS is off, so it is not used: set {backend}.tls = true"
            )),
            "{backend}: {err}"
        );
    }
}

/// A number where a duration belongs, in the common settings or in any
/// backend's section: the error says it is a number and what to write
/// (it said `invalid value: string "5"`).
#[test]
fn a_number_for_a_duration_says_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, n) in [
        ("connect_timeout = 5\n", "connect_timeout", "5"),
        ("[nats]\nping_interval = 30\n", "nats.ping_interval", "30"),
        ("[mqtt]\nkeep_alive = 60\n", "mqtt.keep_alive", "60"),
        ("[redis]\nstream_block = 2\n", "redis.stream_block", "2"),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let o = run(pubsub(&[]).arg("--config").arg(&path).arg("check"));
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(err.contains(key), "{key}: {err}");
        assert!(
            err.contains(&format!("the number {n} is not a duration"))
                && err.contains(&format!("\"{n}s\"")),
            "{key}: {err}"
        );
        assert!(!err.contains("string"), "{err}");
    }
    let o = run(pubsub(&[("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "fast")]).arg("check"));
    assert_code(&o, 2);
    assert!(
        stderr(&o).trim_end().ends_with("got \"fast\""),
        "{}",
        stderr(&o)
    );
}
