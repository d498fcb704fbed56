//! The `pubsub` binary, driven as a user would: exit codes, what it prints,
//! and messages crossing between separate `pub` and `sub` processes through
//! a real nats-server (started on a free loopback port per test).
//!
//! The `memory` backend lives inside one process, so a `pub` process cannot
//! reach a `sub` process through it: memory is covered by `demo`, `check`,
//! `bench` and the configuration errors.

mod common;

use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// memory: no broker needed
// ---------------------------------------------------------------------------

#[test]
fn demo_on_memory_loses_and_duplicates_nothing() {
    let o = run(pubsub(&[]).args(["demo", "--frames", "600", "--rate", "3000"]));
    assert_clean_demo(&o, 600, 3);
    let out = stdout(&o);
    assert!(out.starts_with("pubsub demo: memory backend"), "{out}");
    // The in-process backend shares round-robin: 200 each.
    assert_eq!(frames_per_worker(&out), [200, 200, 200], "{out}");
}

#[test]
fn demo_with_other_sizes_and_a_named_group() {
    let o = run(pubsub(&[]).args([
        "demo",
        "--frames",
        "250",
        "--workers",
        "5",
        "--payload-size",
        "0",
        "--rate",
        "0",
        "--group",
        "lanes",
    ]));
    assert_clean_demo(&o, 250, 5);
    assert!(
        stdout(&o).contains("group \"lanes\" (5 workers)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn demo_that_runs_out_of_time_fails_with_exit_1() {
    let o = run(pubsub(&[]).args([
        "demo",
        "--frames",
        "1000",
        "--rate",
        "50",
        "--timeout",
        "1s",
    ]));
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("result:      FAILED (timed out"),
        "{}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(err.starts_with("error: demo: timed out after"), "{err}");
    assert!(err.contains("of 1000 frames published"), "{err}");
}

#[test]
fn demo_refuses_a_frame_over_the_max_payload() {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), "[memory]\nmax_payload = 1000\n").unwrap();
    let o =
        run(pubsub(&[])
            .arg("--config")
            .arg(file.path())
            .args(["demo", "--payload-size", "2000"]));
    assert_code(&o, 2);
    assert!(stderr(&o).contains("--payload-size 2000"), "{}", stderr(&o));
}

#[test]
fn check_on_memory_prints_the_config_without_secrets() {
    let o = run(pubsub(&[
        ("MSIGHT_NATS_USERNAME", "alice"),
        ("MSIGHT_NATS_PASSWORD", "hunter2-marker"),
    ])
    .args(["check", "--all-sections"]));
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("backend = \"memory\""), "{out}");
    assert!(out.contains("user = \"alice\""), "{out}");
    assert!(out.contains("password = \"<redacted>\""), "{out}");
    assert!(!out.contains("hunter2-marker") && !stderr(&o).contains("hunter2-marker"));
    assert!(out.contains("server:       in-process"), "{out}");
    assert!(out.contains("capabilities: groups yes"), "{out}");
    assert!(out.contains("round trip:   "), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
}

#[test]
fn bench_on_memory_counts_every_message() {
    let o = run(pubsub(&[("MSIGHT_PUBSUB_OVERFLOW", "block")]).args([
        "bench",
        "--msgs",
        "3000",
        "--pubs",
        "2",
        "--subs",
        "2",
        "--latency-samples",
        "50",
    ]));
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("latency, one message in flight (50 samples): p50"),
        "{out}"
    );
    assert!(out.contains("received 6000 of 6000, lost 0"), "{out}");
    for row in ["pub #1", "pub #2", "sub #1", "sub #2"] {
        assert!(out.lines().any(|l| l.starts_with(row)), "{row}: {out}");
    }
    let sub_total: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("sub ") && !l.starts_with("sub #"))
        .expect("a sub total row")
        .split_whitespace()
        .collect();
    assert_eq!(sub_total[1], "6000", "{out}");
}

#[test]
fn bench_with_a_group_shares_the_messages() {
    let o = run(pubsub(&[("MSIGHT_PUBSUB_OVERFLOW", "block")]).args([
        "bench",
        "--msgs",
        "2000",
        "--subs",
        "3",
        "--group",
        "bench-group",
        "--latency-samples",
        "0",
    ]));
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("3 subscribers in group \"bench-group\""),
        "{out}"
    );
    assert!(out.contains("received 2000 of 2000, lost 0"), "{out}");
    assert!(!out.contains("latency, one message in flight"), "{out}");
}

#[test]
fn bench_that_runs_out_of_time_exits_1() {
    let t0 = Instant::now();
    let o = run(pubsub(&[]).args([
        "bench",
        "--msgs",
        "1000000000",
        "--latency-samples",
        "0",
        "--timeout",
        "1s",
    ]));
    assert_code(&o, 1);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let err = stderr(&o);
    assert!(
        err.starts_with("error: bench: timed out after 1.000 s"),
        "{err}"
    );
    assert!(err.contains("of 1000000000 messages published"), "{err}");
    // The partial results are still shown.
    assert!(stdout(&o).contains("received "), "{}", stdout(&o));
}

#[test]
fn pub_on_memory_keeps_the_rate() {
    let t0 = Instant::now();
    let o = run(pubsub(&[]).args(["pub", "t.rate", "x", "--count", "6", "--rate", "20"]));
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("memory backend lives inside this process"),
        "{}",
        stderr(&o)
    );
    // Six messages at 20/s: the last is due 250 ms after the first.
    assert!(
        t0.elapsed() >= Duration::from_millis(240),
        "{:?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------
// configuration and usage errors: exit code 2, the key at fault named
// ---------------------------------------------------------------------------

#[test]
fn malformed_environment_variable_exits_2_naming_it() {
    for cmd in ["check", "demo"] {
        let o = run(pubsub(&[("MSIGHT_NATS_SERVERS", "[oops")]).arg(cmd));
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(
            err.starts_with("error: invalid configuration: MSIGHT_NATS_SERVERS"),
            "{err}"
        );
    }
    let o = run(pubsub(&[("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "soon")]).args(["sub", "x"]));
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("MSIGHT_PUBSUB_CONNECT_TIMEOUT"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn toml_syntax_error_exits_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "backend = \"nats\"\n[nats\nservers = 1\n").unwrap();
    let path_text = path.to_str().unwrap();
    let by_option = run(pubsub(&[]).args(["check", "--config", path_text]));
    let by_variable = run(pubsub(&[("MSIGHT_PUBSUB_CONFIG", path_text)]).arg("check"));
    for o in [by_option, by_variable] {
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(err.starts_with("error: invalid configuration"), "{err}");
        assert!(
            err.contains("broken.toml") && err.contains("line 2"),
            "{err}"
        );
        assert!(o.stdout.is_empty(), "nothing printed before the error");
    }
}

#[test]
fn unknown_key_and_missing_file_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[nats]\nserver = [\"nats://a:1\"]\n").unwrap();
    let o = run(pubsub(&[]).arg("check").arg("--config").arg(&path));
    assert_code(&o, 2);
    assert!(stderr(&o).contains("server"), "{}", stderr(&o));

    let o = run(pubsub(&[]).args(["check", "--config", "/nonexistent/pubsub.toml"]));
    assert_code(&o, 2);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn unknown_backend_exits_2_listing_the_registered_ones() {
    let o = run(pubsub(&[]).args(["check", "--backend", "kafka"]));
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("\"kafka\" is not registered"), "{err}");
    let registered = err
        .split("(registered: ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("the registered list")
        .to_string();
    assert!(registered.contains("memory"), "{err}");
    #[cfg(feature = "nats")]
    assert!(registered.contains("nats"), "{err}");
    #[cfg(feature = "mqtt")]
    assert!(registered.contains("mqtt"), "{err}");
    #[cfg(feature = "redis")]
    assert!(registered.contains("redis"), "{err}");
    assert!(o.stdout.is_empty());

    // A backend of this project that is not compiled in names its crate.
    for name in ["nats", "redis", "mqtt"] {
        if registered.contains(name) {
            continue;
        }
        let o = run(pubsub(&[("MSIGHT_PUBSUB_BACKEND", name)]).arg("check"));
        assert_code(&o, 2);
        assert!(
            stderr(&o).contains(&format!("pubsub-{name}")),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["sub"][..],
        &["sub", "x", "--format", "xml"],
        &["sub", "x", "--timeout", "soon"],
        &["sub", "x", "--count", "0"],
        &["pub", "x", "msg", "--rate", "fast"],
        &["pub", "x", "msg", "--file", "f"],
        &["frobnicate"],
    ] {
        let o = run(pubsub(&[]).args(args));
        assert_code(&o, 2);
    }
    for (args, fragment) in [
        (&["sub", "a b", "--timeout", "1"][..], "invalid topic"),
        (&["pub", "", "msg"], "invalid topic"),
        (&["pub", "x", "--file", "/nonexistent/payload"], "--file"),
        (&["check", "--group", "two words"], "--group"),
    ] {
        let o = run(pubsub(&[]).args(args));
        assert_code(&o, 2);
        assert!(stderr(&o).contains(fragment), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn help_and_version_exit_0() {
    let o = run(pubsub(&[]).arg("--help"));
    assert_code(&o, 0);
    for cmd in ["pub", "sub", "bench", "check", "demo"] {
        assert!(stdout(&o).contains(cmd), "{}", stdout(&o));
    }
    let o = run(pubsub(&[]).arg("--version"));
    assert_code(&o, 0);
    assert!(stdout(&o).starts_with("pubsub "), "{}", stdout(&o));
}

#[test]
fn verbose_logs_go_to_stderr_only() {
    let quiet = run(pubsub(&[]).args(["pub", "t.v", "x"]));
    assert_code(&quiet, 0);
    assert!(
        !stderr(&quiet).contains("published and flushed"),
        "{}",
        stderr(&quiet)
    );
    let loud = run(pubsub(&[]).args(["pub", "-v", "t.v", "x"]));
    assert_code(&loud, 0);
    assert!(
        stderr(&loud).contains("published and flushed"),
        "{}",
        stderr(&loud)
    );
    assert!(loud.stdout.is_empty());
    let debug = run(pubsub(&[]).args(["-vv", "pub", "t.v", "x"]));
    assert_code(&debug, 0);
    assert!(
        stderr(&debug).contains("DEBUG") || stderr(&debug).contains("INFO"),
        "{}",
        stderr(&debug)
    );
}

// ---------------------------------------------------------------------------
// NATS: a real nats-server, separate processes
// ---------------------------------------------------------------------------

#[cfg(feature = "nats")]
mod nats {
    use std::process::Stdio;
    use std::thread;

    use pubsub_testkit::brokers::{free_port, NatsServer};

    use super::*;

    fn nats_env(server: &NatsServer) -> Vec<(&'static str, String)> {
        vec![
            ("MSIGHT_PUBSUB_BACKEND", "nats".to_string()),
            ("MSIGHT_NATS_SERVERS", server.url()),
        ]
    }

    #[test]
    fn pub_to_sub_across_processes_in_every_format() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let env = as_refs(&vars);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, BINARY).unwrap();

        for (format, want) in FORMATS {
            let topic = format!("cli.formats.{format}");
            let mut cmd = pubsub(&env);
            cmd.args([
                "sub",
                &topic,
                "--count",
                "3",
                "--timeout",
                "30",
                "--format",
                format,
            ]);
            let sub = start_sub(cmd, &[&topic]);
            pub_three_messages(&env, &topic, &file);
            let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
            assert_eq!(status.code(), Some(0), "{format}: {err}");
            assert_format_output(format, want, &topic, out);
        }
    }

    #[test]
    fn pub_sends_each_stdin_line_count_times_in_order() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let env = as_refs(&vars);
        let mut cmd = pubsub(&env);
        cmd.args(["sub", "cli.lines", "--count", "6", "--timeout", "30"]);
        let sub = start_sub(cmd, &["cli.lines"]);

        let mut publisher = pubsub(&env)
            .args(["pub", "cli.lines", "--count", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = publisher.stdin.take().unwrap();
            stdin.write_all(b"one\ntwo\r\nthree").unwrap();
        } // closing stdin ends the input
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(s) = publisher.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "pub did not finish");
            thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success());
        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "one\none\ntwo\ntwo\nthree\nthree\n"
        );
    }

    #[test]
    fn sub_on_several_topics_with_a_group() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let env = as_refs(&vars);
        let mut cmd = pubsub(&env);
        cmd.args([
            "sub",
            "cli.a",
            "cli.b",
            "--group",
            "g",
            "--count",
            "2",
            "--timeout",
            "30",
            "--format",
            "json",
        ]);
        let sub = start_sub(cmd, &["cli.a", "cli.b"]);
        assert_code(&run(pubsub(&env).args(["pub", "cli.a", "1"])), 0);
        assert_code(&run(pubsub(&env).args(["pub", "cli.b", "2"])), 0);
        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"topic\":\"cli.a\""), "{text}");
        assert!(text.contains("\"topic\":\"cli.b\""), "{text}");
    }

    #[test]
    fn sub_timeout_exits_1() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let env = as_refs(&vars);
        let t0 = Instant::now();
        let o = run(pubsub(&env).args(["sub", "cli.quiet", "--count", "1", "--timeout", "1"]));
        assert_code(&o, 1);
        assert!(t0.elapsed() >= Duration::from_secs(1));
        let err = stderr(&o);
        assert!(err.contains("subscribed to cli.quiet"), "{err}");
        assert!(
            err.contains("error: timed out after") && err.contains("received 0 of 1 messages"),
            "{err}"
        );
        assert!(o.stdout.is_empty());
    }

    #[test]
    fn pub_with_a_wildcard_topic_exits_2_on_nats() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let o = run(pubsub(&as_refs(&vars)).args(["pub", "cli.*", "x"]));
        assert_code(&o, 2);
        assert!(stderr(&o).contains("wildcard"), "{}", stderr(&o));
    }

    #[test]
    fn check_against_live_nats_succeeds() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let o = run(pubsub(&as_refs(&vars)).arg("check"));
        assert_code(&o, 0);
        let out = stdout(&o);
        assert!(out.contains("backend = \"nats\""), "{out}");
        assert!(out.contains(&server.url()), "{out}");
        assert!(out.contains("connect:      nats backend in"), "{out}");
        assert!(
            out.contains(&format!(
                "server:       nats-server {}",
                server.server_name()
            )),
            "{out}"
        );
        assert!(out.contains("max payload:  1048576 bytes"), "{out}");
        assert!(out.contains("TLS:          no"), "{out}");
        assert!(out.contains("wildcards * >"), "{out}");
        assert!(out.contains("round trip:   "), "{out}");
        assert!(out.trim_end().ends_with("OK"), "{out}");
    }

    #[test]
    fn check_against_a_dead_port_exits_1() {
        // Credentials in the URL must not show in the config or the error.
        let port = free_port();
        let dead = format!("nats://bob:url-secret-marker@127.0.0.1:{port}");
        let o = run(pubsub(&[
            ("MSIGHT_PUBSUB_BACKEND", "nats"),
            ("MSIGHT_NATS_SERVERS", &dead),
            ("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "3"),
        ])
        .arg("check"));
        assert_code(&o, 1);
        let out = stdout(&o);
        assert!(out.contains("connect:      FAILED"), "{out}");
        assert!(
            out.contains(&format!("nats://bob:***@127.0.0.1:{port}")),
            "{out}"
        );
        let err = stderr(&o);
        assert!(err.starts_with("error: connection failed"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(!out.contains("url-secret-marker") && !err.contains("url-secret-marker"));
    }

    #[test]
    fn demo_on_nats_loses_and_duplicates_nothing() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let o = run(pubsub(&as_refs(&vars)).arg("demo"));
        assert_clean_demo(&o, 1000, 3);
        assert!(
            stdout(&o).starts_with("pubsub demo: nats backend"),
            "{}",
            stdout(&o)
        );
    }

    /// Core NATS keeps nothing: `demo --ack manual` is refused, saying what
    /// can (JetStream mode; exit 2), not run at most once.
    #[test]
    fn demo_with_manual_ack_is_refused_clearly_on_core_nats() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let o =
            run(pubsub(&as_refs(&vars)).args(["demo", "--ack", "manual", "--kill-worker", "10"]));
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(err.starts_with("error: demo --ack manual: "), "{err}");
        assert!(
            err.contains("core NATS")
                && err.contains("nats.mode = \"jetstream\"")
                && err.contains("redis.mode = \"streams\""),
            "{err}"
        );
        assert!(o.stdout.is_empty(), "{}", stdout(&o));
    }

    #[test]
    fn bench_on_nats_with_a_group() {
        let server = NatsServer::start();
        let vars = nats_env(&server);
        let o = run(pubsub(&as_refs(&vars)).args([
            "bench",
            "--msgs",
            "5000",
            "--subs",
            "2",
            "--group",
            "bench",
            "--latency-samples",
            "100",
        ]));
        assert_code(&o, 0);
        let out = stdout(&o);
        assert!(out.contains("pubsub bench: nats backend"), "{out}");
        assert!(
            out.contains("latency, one message in flight (100 samples)"),
            "{out}"
        );
        assert!(out.contains("received 5000 of 5000, lost 0"), "{out}");
    }
}

// ---------------------------------------------------------------------------
// MQTT: a real mosquitto
// ---------------------------------------------------------------------------

#[cfg(feature = "mqtt")]
#[test]
fn check_on_mqtt_with_a_password_reports_the_broker_without_secrets() {
    use pubsub_testkit::brokers::Mosquitto;
    let broker = Mosquitto::builder()
        .password_file("alice", "hunter2-mqtt")
        .start();
    let url = broker.url();
    let o = run(pubsub(&[
        ("MSIGHT_PUBSUB_BACKEND", "mqtt"),
        ("MSIGHT_MQTT_URL", url.as_str()),
        ("MSIGHT_MQTT_USERNAME", "alice"),
        ("MSIGHT_MQTT_PASSWORD", "hunter2-mqtt"),
    ])
    .arg("check"));
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("backend = \"mqtt\""), "{out}");
    assert!(out.contains(&url), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
    assert!(
        !out.contains("hunter2-mqtt") && !stderr(&o).contains("hunter2-mqtt"),
        "{out}"
    );

    let o = run(pubsub(&[
        ("MSIGHT_PUBSUB_BACKEND", "mqtt"),
        ("MSIGHT_MQTT_URL", url.as_str()),
        ("MSIGHT_MQTT_USERNAME", "alice"),
        ("MSIGHT_MQTT_PASSWORD", "wrong-hunter3"),
    ])
    .arg("check"));
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong-hunter3"), "{err}");
}
