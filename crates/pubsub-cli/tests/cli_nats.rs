//! The `pubsub` binary with NATS in JetStream mode (`nats.mode =
//! "jetstream"`), against a real `nats-server -js` started on a free port
//! of 127.0.0.1 per test: `check` showing the account, streams and
//! consumers (as text and as one JSON document) and refusing a server
//! without JetStream, `demo` in auto and manual ack with a killed worker,
//! and `pub` / `sub --ack manual` across processes, a group's durable
//! consumer keeping what was published while no member ran.

#![cfg(feature = "nats")]

mod common;

use pubsub_testkit::brokers::NatsServer;

use common::*;

/// NATS in JetStream mode on `server`, as the environment says it.
fn js_env(server: &NatsServer) -> Vec<(&'static str, String)> {
    vec![
        ("MSIGHT_PUBSUB_BACKEND", "nats".to_string()),
        ("MSIGHT_NATS_SERVERS", server.url()),
        ("MSIGHT_NATS_MODE", "jetstream".to_string()),
    ]
}

/// `check --format json` with `args`: the one JSON document on stdout.
fn check_json(env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let o = run(pubsub(env).args(["check", "--format", "json"]).args(args));
    assert_code(&o, 0);
    serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", stdout(&o)))
}

/// The stream called `name` in a `check --format json` document.
fn stream<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["check"]["jetstream"]["streams"]
        .as_array()
        .expect("a list of streams")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stream {name} in {doc:#}"))
}

/// A group's member receives (acknowledging manually), so that the stream
/// `msight_sensors` and the durable consumer `g_sensors_cam` exist.
fn make_stream_and_group_consumer(env: &[(&str, &str)]) {
    let mut cmd = pubsub(env);
    cmd.args(["sub", "sensors.cam", "--group", "g", "--ack", "manual"])
        .args(["--count", "1", "--timeout", "30"]);
    let sub = start_sub(cmd, &["sensors.cam"]);
    assert_code(&run(pubsub(env).args(["pub", "sensors.cam", "frame"])), 0);
    let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, b"frame\n");
}

/// `check` shows the account's usage and limits, then every stream named
/// like `nats.stream` with its consumers; with `--topic`, each topic's
/// stream and the consumer this configuration reads it with, or the stream
/// that would be created. The check's own round trip leaves no message
/// nor consumer behind.
#[test]
fn check_in_jetstream_mode_shows_the_account_streams_and_consumers() {
    let server = NatsServer::start_jetstream();
    let vars = js_env(&server);
    let env = as_refs(&vars);
    make_stream_and_group_consumer(&env);

    let o = run(pubsub(&env).arg("check"));
    assert_code(&o, 0);
    let out = stdout(&o);
    println!("{out}");
    assert!(out.contains("mode = \"jetstream\""), "{out}");
    assert!(
        out.contains("delivery at least once"),
        "the capabilities of JetStream mode: {out}"
    );
    assert!(
        out.contains("jetstream:    account uses memory 0 B, storage ")
            && out.contains(", streams 1, consumers 1\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "              limits: memory none, storage none, streams none, consumers none"
        ),
        "{out}"
    );
    assert!(
        out.contains("streams:      1 named like nats.stream = \"msight_{token}\""),
        "{out}"
    );
    assert!(
        out.contains("  stream msight_sensors: subjects sensors, sensors.>; file storage, 1 replica, limits retention; max age 1d, max bytes 1.0 GiB, max msgs 1000000, discard old"),
        "{out}"
    );
    assert!(
        out.contains("    holds 1 message, ") && out.contains("(sequences 1..1), 1 consumer\n"),
        "{out}"
    );
    assert!(
        out.contains("    consumer g_sensors_cam (durable) on sensors.cam: deliver new, ack explicit, ack_wait 30s, max_deliver 6, max_ack_pending 1000; pending 0, unacked 0, redelivered 0"),
        "{out}"
    );
    assert!(out.contains("round trip:   "), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");

    // By topic: the one with a stream, and one without yet.
    let o = run(pubsub(&env).args([
        "check",
        "--group",
        "g",
        "--topic",
        "sensors.cam",
        "--topic",
        "lidar.roof",
    ]));
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("topic:        sensors.cam -> stream \"msight_sensors\"; consumer \"g_sensors_cam\" (from group_id)\n"),
        "{out}"
    );
    assert!(
        out.contains("topic:        lidar.roof -> no stream yet (the first publish or subscribe creates \"msight_lidar\" capturing lidar, lidar.>); consumer \"g_lidar_roof\" (from group_id), not created yet\n"),
        "{out}"
    );
    assert!(
        out.contains("1 consumer, 1 of them reading the topics"),
        "{out}"
    );
    assert!(
        out.contains("streams:      1 capturing the topics\n  stream msight_sensors: "),
        "{out}"
    );

    // The earlier checks' round trips (with a group the last time): their
    // stream stays, empty, without consumers.
    let doc = check_json(&env, &[]);
    let own = stream(&doc, "msight_pubsub-check");
    assert_eq!(own["messages"], 0, "{own:#}");
    assert_eq!(own["consumer_count"], 0, "{own:#}");
    assert!(own["last_seq"].as_u64().unwrap() >= 2, "{own:#}");
}

/// `check --format json` stays one JSON document, the report under
/// `check.jetstream`.
#[test]
fn check_in_jetstream_mode_as_json() {
    let server = NatsServer::start_jetstream();
    let vars = js_env(&server);
    let env = as_refs(&vars);
    make_stream_and_group_consumer(&env);
    let doc = check_json(&env, &["--topic", "sensors.cam"]);
    let check = &doc["check"];
    assert_eq!(check["ok"], true, "{doc:#}");
    assert_eq!(doc["nats"]["mode"], "jetstream", "{doc:#}");
    assert_eq!(check["capabilities"]["delivery"], "at least once");
    let js = &check["jetstream"];
    assert_eq!(js["account"]["streams"], 1, "{js:#}");
    assert_eq!(js["account"]["consumers"], 1, "{js:#}");
    assert_eq!(js["account"]["max_streams"], -1, "{js:#}");
    assert!(js["account"]["storage"].as_u64().unwrap() > 0, "{js:#}");
    assert_eq!(js["stream_template"], "msight_{token}");
    let topic = &js["topics"][0];
    assert_eq!(topic["topic"], "sensors.cam");
    assert_eq!(topic["stream"], "msight_sensors");
    // No group: an ephemeral consumer per subscription.
    assert_eq!(topic["consumer"], serde_json::Value::Null, "{topic:#}");
    let s = stream(&doc, "msight_sensors");
    assert_eq!(s["subjects"], serde_json::json!(["sensors", "sensors.>"]));
    assert_eq!(s["storage"], "file");
    assert_eq!(s["messages"], 1);
    let c = &s["consumers"][0];
    assert_eq!(c["name"], "g_sensors_cam", "{s:#}");
    assert_eq!(c["durable"], true);
    assert_eq!(c["filter_subject"], "sensors.cam");
    assert_eq!(c["ack_wait_seconds"], 30.0);
    assert_eq!(c["num_ack_pending"], 0);
    assert_eq!(js["streams"].as_array().unwrap().len(), 1, "{js:#}");
}

/// JetStream mode against a server without JetStream: the connect step
/// fails saying so, the error names `nats.mode` and how to enable it (exit
/// 2, the configuration error every command gives for it); as text and as
/// one JSON document. `--topic` outside JetStream mode is a usage error.
#[test]
fn check_in_jetstream_mode_against_a_server_without_jetstream_exits_2() {
    let server = NatsServer::start();
    let vars = js_env(&server);
    let env = as_refs(&vars);
    let o = run(pubsub(&env).arg("check"));
    assert_code(&o, 2);
    let out = stdout(&o);
    assert!(
        out.contains("connect:      FAILED after ")
            && out.contains(" (JetStream is not enabled on the server)"),
        "{out}"
    );
    let err = stderr(&o);
    assert!(
        err.starts_with("error: invalid configuration: nats.mode: \"jetstream\": the server [")
            && err.contains("JetStream is not enabled there (start nats-server with -js"),
        "{err}"
    );

    let o = run(pubsub(&env).args(["check", "--format", "json"]));
    assert_code(&o, 2);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(doc["check"]["ok"], false);
    assert_eq!(doc["check"]["connect"]["ok"], false);
    assert!(
        doc["check"]["error"]
            .as_str()
            .unwrap()
            .contains("nats.mode"),
        "{doc:#}"
    );
    assert!(doc["check"].get("jetstream").is_none(), "{doc:#}");

    // Core mode has no streams to show.
    let o = run(pubsub(&env[..2]).args(["check", "--topic", "a.b"]));
    assert_code(&o, 2);
    assert!(
        stderr(&o).starts_with("error: check --topic: only NATS in JetStream mode"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
}

/// `demo` in JetStream mode, auto ack: nothing lost or duplicated, and the
/// run's topics are purged and its consumers deleted afterwards.
#[test]
fn demo_in_jetstream_mode_loses_and_duplicates_nothing() {
    let server = NatsServer::start_jetstream();
    let vars = js_env(&server);
    let env = as_refs(&vars);
    let o = run(pubsub(&env).args(["demo", "--frames", "500"]));
    println!("{}", stdout(&o));
    assert_clean_demo(&o, 500, 3);
    assert!(
        stdout(&o).starts_with("pubsub demo: nats backend"),
        "{}",
        stdout(&o)
    );
    let doc = check_json(&env, &[]);
    let s = stream(&doc, "msight_pubsub-demo");
    assert_eq!(s["last_seq"], 1000, "500 frames and 500 results: {s:#}");
    assert_eq!(s["messages"], 0, "{s:#}");
    assert_eq!(s["consumer_count"], 0, "{s:#}");
}

/// `demo --ack manual --kill-worker N` in JetStream mode, set in a config
/// file: the frame the killed worker held (unacknowledged) is delivered
/// again to a member of the group after ack_wait; lost 0.
#[test]
fn demo_in_jetstream_mode_with_a_killed_worker_loses_nothing() {
    let server = NatsServer::start_jetstream();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pubsub.toml");
    std::fs::write(
        &file,
        format!(
            "backend = \"nats\"\n\n[nats]\nservers = [\"{}\"]\nmode = \"jetstream\"\n",
            server.url()
        ),
    )
    .unwrap();
    let o = run(pubsub(&[]).arg("--config").arg(&file).args([
        "demo",
        "--ack",
        "manual",
        "--kill-worker",
        "100",
        "--ack-wait",
        "1s",
    ]));
    assert_code(&o, 0);
    let out = stdout(&o);
    println!("{out}");
    assert!(
        out.contains("(killed after 100 frames, holding one, and started again)"),
        "{out}"
    );
    assert!(
        out.contains("1000 published") && out.contains("lost 0,"),
        "{out}"
    );
    assert!(
        demo_redelivered(&out) >= 1,
        "the held frame came back: {out}"
    );
    assert!(out.contains("result:      OK"), "{out}");
}

/// `pub` and `sub --ack manual` across processes in JetStream mode: a
/// group's member gets every message in order; what is published while no
/// member runs waits in the group's durable consumer (core NATS would drop
/// it) and arrives when one is back.
#[test]
fn pub_and_sub_with_manual_ack_in_jetstream_mode() {
    let server = NatsServer::start_jetstream();
    let vars = js_env(&server);
    let env = as_refs(&vars);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, BINARY).unwrap();
    let sub_cmd = |count: &str| {
        let mut cmd = pubsub(&env);
        cmd.args(["sub", "js.cli", "--group", "readers", "--ack", "manual"])
            .args(["--count", count, "--timeout", "30", "--format", "hex"]);
        cmd
    };
    let sub = start_sub(sub_cmd("3"), &["js.cli"]);
    pub_three_messages(&env, "js.cli", &file);
    let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_format_output("hex", FORMATS[1].1, "js.cli", out);

    // No member running: kept by the group's consumer.
    let o = run(pubsub(&env).args(["pub", "js.cli", "while away", "--count", "2"]));
    assert_code(&o, 0);
    let sub = start_sub(sub_cmd("2"), &["js.cli"]);
    let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{err}");
    let away = "while away"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(String::from_utf8(out).unwrap(), format!("{away}\n{away}\n"));

    // Everything was acknowledged: nothing pending on the group's consumer.
    let doc = check_json(&env, &["--topic", "js.cli", "--group", "readers"]);
    let c = &stream(&doc, "msight_js")["consumers"][0];
    assert_eq!(c["name"], "readers_js_cli", "{doc:#}");
    assert_eq!(c["num_ack_pending"], 0, "{c:#}");
    assert_eq!(c["num_pending"], 0, "{c:#}");
    assert_eq!(c["delivered_stream_seq"], 5, "{c:#}");
}

/// `bench` in JetStream mode, with `ack = "manual"` and a group: the
/// subscribers acknowledge what they count, so all 5,000 arrive past
/// `max_in_flight` = 100 (without that the consumer stopped there: 1,000
/// of 20,000 with the default 1,000); auto ack measures too.
#[test]
fn bench_in_jetstream_mode_in_both_ack_modes() {
    let server = NatsServer::start_jetstream();
    let mut vars = js_env(&server);
    vars.push(("MSIGHT_PUBSUB_MAX_IN_FLIGHT", "100".to_string()));
    for ack in ["auto", "manual"] {
        vars.retain(|(k, _)| *k != "MSIGHT_PUBSUB_ACK");
        vars.push(("MSIGHT_PUBSUB_ACK", ack.to_string()));
        let o = run(pubsub(&as_refs(&vars)).args([
            "bench",
            "--msgs",
            "5000",
            "--subs",
            "2",
            "--group",
            "bench",
            "--latency-samples",
            "50",
        ]));
        assert_code(&o, 0);
        let out = stdout(&o);
        assert!(
            out.contains("received 5000 of 5000, lost 0"),
            "{ack}: {out}"
        );
    }
}
