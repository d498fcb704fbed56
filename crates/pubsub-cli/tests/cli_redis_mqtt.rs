//! The `pubsub` binary against a real redis-server (both modes) and a real
//! mosquitto, each started on a free port of 127.0.0.1 per test: messages
//! crossing between separate `pub` and `sub` processes in every format,
//! `check`, `demo`, and interoperability with clients no one here wrote
//! (`redis-cli`, `mosquitto_pub`, `mosquitto_sub`).

mod common;

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

#[cfg(feature = "redis")]
mod redis {
    use std::fs::File;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use pubsub_testkit::brokers::{find_binary, free_port, RedisServer};

    use super::common::*;

    /// The connection variables of the Python original, and the mode.
    fn redis_env(server: &RedisServer, mode: &str) -> Vec<(&'static str, String)> {
        vec![
            ("MSIGHT_PUBSUB_BACKEND", "redis".to_string()),
            ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "127.0.0.1".to_string()),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_PORT",
                server.port().to_string(),
            ),
            ("MSIGHT_REDIS_MESSAGE_BROKER_MODE", mode.to_string()),
        ]
    }

    fn redis_cli(server: &RedisServer) -> Command {
        let mut cmd = Command::new(find_binary("redis-cli"));
        cmd.args(["-h", "127.0.0.1", "-p", &server.port().to_string()]);
        cmd
    }

    #[test]
    fn pub_to_sub_across_processes_in_every_format_on_redis_pubsub() {
        let server = RedisServer::start();
        let vars = redis_env(&server, "pubsub");
        let env = as_refs(&vars);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, BINARY).unwrap();
        for (format, want) in FORMATS {
            let topic = format!("cli.redis.{format}");
            let mut cmd = pubsub(&env);
            cmd.args(["sub", &topic, "--count", "3", "--timeout", "30"])
                .args(["--format", format]);
            let sub = start_sub(cmd, &[&topic]);
            pub_three_messages(&env, &topic, &file);
            let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
            assert_eq!(status.code(), Some(0), "{format}: {err}");
            assert_format_output(format, want, &topic, out);
        }
        // PUBLISH/SUBSCRIBE leaves nothing behind: no stream was written.
        assert_eq!(server.cli(&["EXISTS", "cli.redis.raw"]).trim(), "0");
    }

    #[test]
    fn pub_to_sub_across_processes_on_redis_streams() {
        let server = RedisServer::start();
        let vars = redis_env(&server, "streams");
        let env = as_refs(&vars);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, BINARY).unwrap();
        for (format, want) in [FORMATS[0], FORMATS[1], FORMATS[3]] {
            let topic = format!("cli.streams.{format}");
            let mut cmd = pubsub(&env);
            cmd.args(["sub", &topic, "--count", "3", "--timeout", "30"])
                .args(["--format", format]);
            let sub = start_sub(cmd, &[&topic]);
            pub_three_messages(&env, &topic, &file);
            let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
            assert_eq!(status.code(), Some(0), "{format}: {err}");
            assert_format_output(format, want, &topic, out);
            // Streams mode: the three messages are entries of a stream named
            // like the topic, and stay there.
            assert_eq!(server.cli(&["XLEN", &topic]).trim(), "3", "{format}");
        }
    }

    #[test]
    fn sub_in_a_group_on_redis_streams_configured_by_file() {
        let server = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pubsub.toml");
        std::fs::write(
            &config,
            format!(
                "backend = \"redis\"\n\n[redis]\nhost = \"127.0.0.1\"\nport = {}\nmode = \"streams\"\n",
                server.port()
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let topic = "cli.streams.group";
        let mut cmd = pubsub(&[]);
        cmd.args(["--config", config, "sub", topic, "--group", "detectors"])
            .args(["--count", "4", "--timeout", "30"]);
        let sub = start_sub(cmd, &[topic]);
        let o = run(pubsub(&[("MSIGHT_PUBSUB_CONFIG", config)])
            .args(["pub", topic, "frame", "--count", "4"]));
        assert_code(&o, 0);
        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        assert_eq!(String::from_utf8(out).unwrap(), "frame\n".repeat(4));
        // A consumer group of that name reads the stream, and every entry
        // it took was acknowledged (none pending).
        let groups = server.cli(&["XINFO", "GROUPS", topic]);
        let fields: Vec<&str> = groups.lines().collect();
        let value = |key: &str| {
            fields
                .iter()
                .position(|l| *l == key)
                .and_then(|i| fields.get(i + 1))
                .copied()
        };
        assert_eq!(value("name"), Some("detectors"), "{groups}");
        assert_eq!(value("pending"), Some("0"), "{groups}");
    }

    #[test]
    fn sub_with_a_group_in_redis_pubsub_mode_exits_2() {
        let server = RedisServer::start();
        let vars = redis_env(&server, "pubsub");
        let o = run(pubsub(&as_refs(&vars)).args(["sub", "cli.g", "--group", "g", "--count", "1"]));
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("set redis.mode = \"streams\""), "{err}");
        assert!(o.stdout.is_empty());
    }

    /// A site-wide group id does not stop a publisher on Redis pubsub mode
    /// (issue 16, item 10): the group applies to subscriptions only.
    #[test]
    fn pub_with_a_group_id_on_redis_pubsub_mode_publishes() {
        let server = RedisServer::start();
        let mut vars = redis_env(&server, "pubsub");
        vars.push(("MSIGHT_PUBSUB_GROUP_ID", "node-group".to_string()));
        let env = as_refs(&vars);
        let topic = "cli.grouped-publisher";
        let mut plain = redis_env(&server, "pubsub");
        plain.push(("MSIGHT_PUBSUB_GROUP_ID", String::new()));
        let mut cmd = pubsub(&as_refs(&plain));
        cmd.args(["sub", topic, "--count", "1", "--timeout", "30"]);
        let sub = start_sub(cmd, &[topic]);
        let o = run(pubsub(&env).args(["pub", topic, "hi", "--group", "g"]));
        assert_code(&o, 0);
        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        assert_eq!(out, b"hi\n");
        // Subscribing in the group is what is refused.
        let o = run(pubsub(&env).args(["sub", topic, "--timeout", "5"]));
        assert_code(&o, 2);
        assert!(
            stderr(&o).contains("set redis.mode = \"streams\""),
            "{}",
            stderr(&o)
        );
    }

    /// `demo`, `check` and `bench` in streams mode leave no stream and no
    /// consumer group behind (issue 16, item 13), also after a failure.
    #[test]
    fn streams_mode_commands_leave_nothing_behind() {
        let server = RedisServer::start();
        let vars = redis_env(&server, "streams");
        let env = as_refs(&vars);
        assert_clean_demo(&run(pubsub(&env).args(["demo", "--frames", "200"])), 200, 3);
        assert_code(&run(pubsub(&env).arg("check")), 0);
        let o = run(pubsub(&env)
            .args(["bench", "--msgs", "2000", "--subs", "2", "--group", "g"])
            .args(["--latency-samples", "20", "--no-progress"]));
        assert_code(&o, 0);
        // A demo that fails (out of time) cleans up too.
        let o = run(pubsub(&env).args([
            "demo",
            "--frames",
            "1000",
            "--rate",
            "50",
            "--timeout",
            "1s",
        ]));
        assert_code(&o, 1);
        assert_eq!(
            server.cli(&["DBSIZE"]).trim(),
            "0",
            "{}",
            server.cli(&["KEYS", "*"])
        );
    }

    /// `demo --ack manual --kill-worker N` on Redis streams: the frames the
    /// killed worker held are claimed by the others after ack_wait; lost 0.
    #[test]
    fn demo_with_a_killed_worker_loses_nothing_on_redis_streams() {
        let server = RedisServer::start();
        let vars = redis_env(&server, "streams");
        let o = run(pubsub(&as_refs(&vars)).args([
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
        assert_eq!(server.cli(&["DBSIZE"]).trim(), "0");
    }

    /// At least once on the command line (issue 12): two `sub --group g
    /// --ack manual` share a stream; one blocks writing its output (nobody
    /// reads its stdout) and is killed with SIGKILL. It acknowledged only
    /// what it had written and flushed, so the other member, or the test
    /// reading the killed one's pipe, has every message.
    #[test]
    fn a_subscriber_killed_while_writing_loses_nothing_with_manual_ack() {
        const N: usize = 3000;
        let server = RedisServer::start();
        let mut vars = redis_env(&server, "streams");
        vars.push(("MSIGHT_PUBSUB_ACK_WAIT", "4s".into()));
        vars.push(("MSIGHT_PUBSUB_MAX_IN_FLIGHT", "100".into()));
        let env = as_refs(&vars);
        let topic = "cli.at-least-once";
        let sub_args = ["sub", topic, "--group", "g", "--ack", "manual"];
        let mut cmd = pubsub(&env);
        cmd.args(sub_args);
        let mut healthy = start_sub(cmd, &[topic]);
        let mut cmd = pubsub(&env);
        cmd.args(sub_args);
        let (mut blocked, blocked_out) =
            Background::spawn_unread_stdout("pubsub sub (unread)", &mut cmd);
        assert!(
            blocked.wait_until(READY_TIMEOUT, |_, err| err
                .contains(&format!("subscribed to {topic}"))),
            "{}",
            blocked.stderr_now()
        );
        // 4 KiB lines: the 64 KiB pipe is full after about 16.
        let pad = "x".repeat(4000);
        let input: String = (0..N).map(|i| format!("{i:06}-{pad}\n")).collect();
        let publisher = Background::spawn_with_input(
            "pubsub pub",
            pubsub(&env).args(["pub", topic]),
            input.as_bytes(),
        );
        let (status, _, err) = publisher.finish(COMMAND_TIMEOUT);
        assert!(status.success(), "{err}");

        let ids = |out: &[u8]| -> Vec<usize> {
            out.split(|b| *b == b'\n')
                .filter(|l| l.len() == 4007)
                .map(|l| std::str::from_utf8(&l[..6]).unwrap().parse().unwrap())
                .collect()
        };
        // The healthy member takes all it can; then its count stands still
        // (the rest is held by the blocked member, not yet past ack_wait).
        let mut last = 0;
        let mut still_since = Instant::now();
        let t0 = Instant::now();
        loop {
            let n = ids(&healthy.stdout_now()).len();
            if n != last {
                last = n;
                still_since = Instant::now();
            }
            if still_since.elapsed() >= Duration::from_millis(800) && n > 0 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no progress: {n}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!blocked.exited(), "the blocked member is still there");
        let before_kill = last;
        assert!(before_kill < N, "the blocked member holds some");
        let killed_at = Instant::now();
        let _ = blocked.kill();
        let mut written_by_killed = Vec::new();
        {
            use std::io::Read;
            let mut pipe = blocked_out;
            pipe.read_to_end(&mut written_by_killed).unwrap();
        }
        let killed_ids = ids(&written_by_killed);
        assert!(
            !killed_ids.is_empty(),
            "the killed member wrote some before it blocked"
        );
        // The healthy member now gets what the killed one held.
        let complete = healthy.wait_until(Duration::from_secs(30), |out, _| {
            let mut all: std::collections::BTreeSet<usize> = ids(out).into_iter().collect();
            all.extend(killed_ids.iter().copied());
            all.len() == N
        });
        let redelivered_after = killed_at.elapsed();
        let healthy_ids = ids(&healthy.stdout_now());
        healthy.signal(libc::SIGTERM);
        let (status, _, err) = healthy.finish(COMMAND_TIMEOUT);
        let mut all: std::collections::BTreeSet<usize> = healthy_ids.iter().copied().collect();
        let duplicates =
            healthy_ids.len() - all.len() + killed_ids.iter().filter(|i| all.contains(i)).count();
        all.extend(killed_ids.iter().copied());
        println!(
            "{N} published; the healthy member had {before_kill} before the kill; the killed one wrote {} (acknowledged) and held {} unsettled; all {} reached the healthy member {:?} after the kill (ack_wait 4 s); lost {}, duplicates {duplicates}",
            killed_ids.len(),
            N - before_kill - killed_ids.len(),
            healthy_ids.len() - before_kill,
            redelivered_after,
            N - all.len()
        );
        assert!(complete, "lost {} of {N}", N - all.len());
        assert_eq!(all.len(), N);
        assert_eq!(status.code(), Some(143), "{err}");
        assert!(err.contains("pubsub sub: stopped by SIGTERM: "), "{err}");
    }

    /// Stopped by SIGTERM while its output is blocked, a `sub --ack manual`
    /// settles nothing it did not write and releases what it holds at
    /// once (nak 0): the other member has them in about a second, not
    /// after ack_wait (30 s here).
    #[test]
    fn a_stopped_manual_ack_subscriber_releases_what_it_holds_at_once() {
        const N: usize = 1000;
        let server = RedisServer::start();
        let mut vars = redis_env(&server, "streams");
        vars.push(("MSIGHT_PUBSUB_ACK_WAIT", "30s".into()));
        vars.push(("MSIGHT_PUBSUB_MAX_IN_FLIGHT", "100".into()));
        let env = as_refs(&vars);
        let topic = "cli.released";
        let sub_args = ["sub", topic, "--group", "g", "--ack", "manual"];
        let mut cmd = pubsub(&env);
        cmd.args(sub_args);
        let (mut blocked, blocked_out) =
            Background::spawn_unread_stdout("pubsub sub (unread)", &mut cmd);
        assert!(
            blocked.wait_until(READY_TIMEOUT, |_, err| err
                .contains(&format!("subscribed to {topic}"))),
            "{}",
            blocked.stderr_now()
        );
        let pad = "x".repeat(4000);
        let input: String = (0..N).map(|i| format!("{i:06}-{pad}\n")).collect();
        let publisher = Background::spawn_with_input(
            "pubsub pub",
            pubsub(&env).args(["pub", topic]),
            input.as_bytes(),
        );
        let (status, _, err) = publisher.finish(COMMAND_TIMEOUT);
        assert!(status.success(), "{err}");
        // It has read its first batch and blocked writing it; the other
        // member joins only now, so the blocked one surely holds some.
        std::thread::sleep(Duration::from_millis(500));
        let mut cmd = pubsub(&env);
        cmd.args(sub_args);
        let mut healthy = start_sub(cmd, &[topic]);
        let ids = |out: &[u8]| -> Vec<usize> {
            out.split(|b| *b == b'\n')
                .filter(|l| l.len() == 4007)
                .map(|l| std::str::from_utf8(&l[..6]).unwrap().parse().unwrap())
                .collect()
        };
        std::thread::sleep(Duration::from_millis(1500));
        let stopped_at = Instant::now();
        blocked.signal(libc::SIGTERM);
        let (status, _, err) = blocked.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(143), "{err}");
        let summary = err.lines().last().unwrap_or_default().to_string();
        let released: usize = summary
            .split(", ")
            .find_map(|p| p.strip_suffix(" released for redelivery"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a summary: {err}"));
        assert!(released > 0, "it held some: {summary}");
        let mut written = Vec::new();
        {
            use std::io::Read;
            let mut pipe = blocked_out;
            pipe.read_to_end(&mut written).unwrap();
        }
        let written_ids = ids(&written);
        let complete = healthy.wait_until(Duration::from_secs(10), |out, _| {
            let mut all: std::collections::BTreeSet<usize> = ids(out).into_iter().collect();
            all.extend(written_ids.iter().copied());
            all.len() == N
        });
        let took = stopped_at.elapsed();
        healthy.signal(libc::SIGTERM);
        let (_, out, _) = healthy.finish(COMMAND_TIMEOUT);
        let mut all: std::collections::BTreeSet<usize> = ids(&out).into_iter().collect();
        all.extend(written_ids.iter().copied());
        println!(
            "{summary}; all {N} at the other member {took:?} after SIGTERM; lost {}",
            N - all.len()
        );
        assert!(complete, "lost {}", N - all.len());
        assert!(
            took < Duration::from_secs(10),
            "released at once, not after ack_wait: {took:?}"
        );
    }

    /// `pub --header` publishes headers in order (a key may repeat), and
    /// `sub --format json` shows them with the entry id and the attempt;
    /// Redis pubsub mode, which has no headers, refuses them (exit 2).
    #[test]
    fn pub_headers_reach_sub_json_with_id_and_attempt() {
        let server = RedisServer::start();
        let vars = redis_env(&server, "streams");
        let env = as_refs(&vars);
        let topic = "cli.headers";
        let mut cmd = pubsub(&env);
        cmd.args([
            "sub",
            topic,
            "--count",
            "1",
            "--timeout",
            "30",
            "--format",
            "json",
        ]);
        let sub = start_sub(cmd, &[topic]);
        let o = run(pubsub(&env).args([
            "pub",
            topic,
            "hi",
            "--header",
            "trace=7f3a",
            "--header",
            "hop=camera",
            "--header",
            "hop=detector",
        ]));
        assert_code(&o, 0);
        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["headers"],
            serde_json::json!([["trace", "7f3a"], ["hop", "camera"], ["hop", "detector"]])
        );
        assert_eq!(v["attempt"], 1);
        let id = v["id"].as_str().expect("the entry id");
        assert!(
            id.contains('-') && id.starts_with(|c: char| c.is_ascii_digit()),
            "{id}"
        );
        assert_eq!(v["payload_base64"], "aGk=");

        let vars = redis_env(&server, "pubsub");
        let o = run(pubsub(&as_refs(&vars)).args(["pub", topic, "hi", "--header", "a=1"]));
        assert_code(&o, 2);
        assert!(stderr(&o).contains("headers"), "{}", stderr(&o));
        let o = run(pubsub(&as_refs(&vars)).args(["pub", topic, "hi", "--header", "novalue"]));
        assert_code(&o, 2);
        assert!(stderr(&o).contains("KEY=VALUE"), "{}", stderr(&o));
    }

    /// In auto ack mode a stopped `sub` leaves what it buffered and did not
    /// take unacknowledged, so another group member gets it after
    /// `redis.stream_claim_idle`; only the message it was writing when
    /// stopped (taken, so acknowledged) may be lost.
    #[test]
    fn a_stopped_auto_ack_subscriber_leaves_its_buffer_to_the_group() {
        const N: usize = 1000;
        let server = RedisServer::start();
        let mut vars = redis_env(&server, "streams");
        vars.push(("MSIGHT_REDIS_MESSAGE_BROKER_STREAM_CLAIM_IDLE", "1s".into()));
        let env = as_refs(&vars);
        let topic = "cli.auto-stopped";
        let sub_args = ["sub", topic, "--group", "g", "--ack", "auto"];
        let mut cmd = pubsub(&env);
        cmd.args(sub_args);
        let (mut blocked, blocked_out) =
            Background::spawn_unread_stdout("pubsub sub (unread)", &mut cmd);
        assert!(
            blocked.wait_until(READY_TIMEOUT, |_, err| err
                .contains(&format!("subscribed to {topic}"))),
            "{}",
            blocked.stderr_now()
        );
        let pad = "x".repeat(4000);
        let input: String = (0..N).map(|i| format!("{i:06}-{pad}\n")).collect();
        let publisher = Background::spawn_with_input(
            "pubsub pub",
            pubsub(&env).args(["pub", topic]),
            input.as_bytes(),
        );
        let (status, _, err) = publisher.finish(COMMAND_TIMEOUT);
        assert!(status.success(), "{err}");
        std::thread::sleep(Duration::from_millis(500));
        let mut cmd = pubsub(&env);
        cmd.args(sub_args);
        let mut healthy = start_sub(cmd, &[topic]);
        std::thread::sleep(Duration::from_millis(500));
        blocked.signal(libc::SIGTERM);
        let (status, _, err) = blocked.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(143), "{err}");
        let ids = |out: &[u8]| -> Vec<usize> {
            out.split(|b| *b == b'\n')
                .filter(|l| l.len() == 4007)
                .map(|l| std::str::from_utf8(&l[..6]).unwrap().parse().unwrap())
                .collect()
        };
        let mut written = Vec::new();
        {
            use std::io::Read;
            let mut pipe = blocked_out;
            pipe.read_to_end(&mut written).unwrap();
        }
        let written_ids = ids(&written);
        let all_but_one = healthy.wait_until(Duration::from_secs(15), |out, _| {
            let mut all: std::collections::BTreeSet<usize> = ids(out).into_iter().collect();
            all.extend(written_ids.iter().copied());
            all.len() >= N - 1
        });
        healthy.signal(libc::SIGTERM);
        let (_, out, _) = healthy.finish(COMMAND_TIMEOUT);
        let mut all: std::collections::BTreeSet<usize> = ids(&out).into_iter().collect();
        all.extend(written_ids.iter().copied());
        assert!(
            all_but_one,
            "lost {} of {N} (at most the one being written may be)",
            N - all.len()
        );
    }

    #[test]
    fn check_against_live_redis_succeeds_in_both_modes() {
        let server = RedisServer::start();
        for (mode, capabilities) in [
            ("pubsub", "capabilities: groups no, persistence no"),
            ("streams", "capabilities: groups yes, persistence yes"),
        ] {
            let vars = redis_env(&server, mode);
            let o = run(pubsub(&as_refs(&vars)).arg("check"));
            assert_code(&o, 0);
            let out = stdout(&o);
            assert!(out.contains("backend = \"redis\""), "{out}");
            assert!(out.contains(&format!("port = {}", server.port())), "{out}");
            assert!(out.contains(&format!("mode = \"{mode}\"")), "{out}");
            assert!(out.contains("connect:      redis backend in"), "{out}");
            assert!(
                out.contains("server:       redis-server (standalone)"),
                "{out}"
            );
            let version = out
                .lines()
                .find_map(|l| l.strip_prefix("version:      "))
                .expect("a version line");
            assert!(
                version.split('.').count() == 3
                    && version.starts_with(|c: char| c.is_ascii_digit()),
                "{out}"
            );
            assert!(out.contains("TLS:          no"), "{out}");
            assert!(out.contains(capabilities), "{mode}: {out}");
            assert!(out.contains("round trip:   "), "{out}");
            assert!(out.trim_end().ends_with("OK"), "{out}");
        }
    }

    #[test]
    fn check_against_a_dead_redis_port_exits_1() {
        let port = free_port();
        let t0 = Instant::now();
        let o = run(pubsub(&[
            ("MSIGHT_PUBSUB_BACKEND", "redis"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "127.0.0.1"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", &port.to_string()),
            (
                "MSIGHT_REDIS_MESSAGE_BROKER_PASSWORD",
                "redis-secret-marker",
            ),
            ("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "3"),
        ])
        .arg("check"));
        assert_code(&o, 1);
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        let out = stdout(&o);
        assert!(out.contains("connect:      FAILED"), "{out}");
        assert!(!out.contains("round trip"), "{out}");
        let err = stderr(&o);
        assert!(err.starts_with("error: connection failed"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(!out.contains("redis-secret-marker") && !err.contains("redis-secret-marker"));
    }

    #[test]
    fn demo_on_redis_streams_loses_and_duplicates_nothing() {
        let server = RedisServer::start();
        let port = server.port().to_string();
        let o = run(pubsub(&[
            ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "127.0.0.1"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", &port),
            ("MSIGHT_REDIS_MESSAGE_BROKER_MODE", "streams"),
        ])
        .args(["demo", "--backend", "redis"]));
        assert_clean_demo(&o, 1000, 3);
        assert!(
            stdout(&o).starts_with("pubsub demo: redis backend"),
            "{}",
            stdout(&o)
        );
    }

    #[test]
    fn demo_on_redis_pubsub_mode_exits_2_asking_for_streams() {
        let server = RedisServer::start();
        let port = server.port().to_string();
        let o = run(pubsub(&[
            ("MSIGHT_REDIS_MESSAGE_BROKER_HOST", "127.0.0.1"),
            ("MSIGHT_REDIS_MESSAGE_BROKER_PORT", &port),
        ])
        .args(["demo", "--backend", "redis"]));
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(
            err.starts_with("error: invalid configuration: group_id \"pubsub-demo-workers\""),
            "{err}"
        );
        assert!(
            err.contains("set redis.mode = \"streams\" (MSIGHT_REDIS_MESSAGE_BROKER_MODE=streams)"),
            "{err}"
        );
        assert!(o.stdout.is_empty(), "{}", stdout(&o));
    }

    #[test]
    fn sub_receives_what_redis_cli_publishes() {
        let server = RedisServer::start();
        let vars = redis_env(&server, "pubsub");
        let env = as_refs(&vars);
        let topic = "cli.from-redis-cli";
        // Every byte value: NUL, newlines, invalid UTF-8.
        let binary: Vec<u8> = (0..=255u8).rev().collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, &binary).unwrap();

        let mut cmd = pubsub(&env);
        cmd.args([
            "sub",
            topic,
            "--count",
            "2",
            "--timeout",
            "30",
            "--format",
            "raw",
        ]);
        let sub = start_sub(cmd, &[topic]);
        let o = run(redis_cli(&server).args(["PUBLISH", topic, "hello from redis-cli"]));
        assert_code(&o, 0);
        assert_eq!(stdout(&o).trim(), "1", "one subscriber received it");
        // -x: the last argument is standard input, bytes unchanged.
        let publish = Background::spawn(
            "redis-cli -x PUBLISH",
            redis_cli(&server).args(["-x", "PUBLISH", topic]),
            Stdio::from(File::open(&file).unwrap()),
        );
        let (status, out, err) = publish.finish(COMMAND_TIMEOUT);
        assert!(status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&out).trim(), "1");

        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        let mut want = b"hello from redis-cli".to_vec();
        want.extend_from_slice(&binary);
        assert!(
            out == want,
            "got {} bytes: {:?}",
            out.len(),
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn redis_cli_subscribe_receives_what_pub_sends() {
        let server = RedisServer::start();
        let vars = redis_env(&server, "pubsub");
        let env = as_refs(&vars);
        let topic = "cli.to-redis-cli";
        // No newline inside: redis-cli ends each reply element with one.
        let binary = b"\xff\x00\x01binary\xfe".to_vec();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, &binary).unwrap();

        let mut subscriber = Background::spawn(
            "redis-cli SUBSCRIBE",
            redis_cli(&server).args(["SUBSCRIBE", topic]),
            Stdio::null(),
        );
        // Not on a terminal, redis-cli prints each reply element on a line:
        // the confirmation is `subscribe`, the channel, the count.
        let confirmation = format!("subscribe\n{topic}\n1\n").into_bytes();
        let ready = subscriber.wait_until(READY_TIMEOUT, |out, _| out.starts_with(&confirmation));
        assert!(
            ready,
            "redis-cli did not confirm the subscription within {READY_TIMEOUT:?}: {:?} {}",
            String::from_utf8_lossy(&subscriber.stdout_now()),
            subscriber.stderr_now()
        );

        assert_code(
            &run(pubsub(&env).args(["pub", topic, "hello redis-cli"])),
            0,
        );
        let o = run(pubsub(&env).args(["pub", topic]).arg("--file").arg(&file));
        assert_code(&o, 0);

        let mut want = confirmation.clone();
        for payload in [&b"hello redis-cli"[..], &binary] {
            want.extend_from_slice(format!("message\n{topic}\n").as_bytes());
            want.extend_from_slice(payload);
            want.push(b'\n');
        }
        // redis-cli never exits by itself: read until both arrived, then kill it.
        let arrived = subscriber.wait_until(READY_TIMEOUT, |out, _| out.len() >= want.len());
        let (out, err) = subscriber.kill();
        assert!(
            arrived,
            "redis-cli got {:?}; {err}",
            String::from_utf8_lossy(&out)
        );
        assert!(
            out == want,
            "redis-cli printed {:?}, expected {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
    }
}

// ---------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------

#[cfg(feature = "mqtt")]
mod mqtt {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use pubsub_testkit::brokers::{find_binary, free_port, Mosquitto};

    use super::common::*;

    fn mqtt_env(broker: &Mosquitto) -> Vec<(&'static str, String)> {
        vec![
            ("MSIGHT_PUBSUB_BACKEND", "mqtt".to_string()),
            ("MSIGHT_MQTT_URL", broker.url()),
            ("MSIGHT_MQTT_QOS", "1".to_string()),
        ]
    }

    /// `demo --ack manual --kill-worker N` on MQTT: each worker gets a
    /// client id and a session of its own; the killed one, started again
    /// under its id, gets back from its session what it held; lost 0.
    #[test]
    fn demo_with_a_killed_worker_loses_nothing_on_mqtt() {
        let broker = Mosquitto::start();
        let vars = mqtt_env(&broker);
        let o = run(pubsub(&as_refs(&vars)).args([
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
    }

    /// `mosquitto_pub` / `mosquitto_sub` pointed at the broker.
    fn mosquitto_client(name: &str, broker: &Mosquitto) -> Command {
        let mut cmd = Command::new(find_binary(name));
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port().to_string()]);
        cmd
    }

    #[test]
    fn pub_to_sub_across_processes_in_every_format_on_mqtt_qos_1() {
        let broker = Mosquitto::start();
        let vars = mqtt_env(&broker);
        let env = as_refs(&vars);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, BINARY).unwrap();
        for (format, want) in FORMATS {
            let topic = format!("cli/mqtt/{format}");
            let mut cmd = pubsub(&env);
            cmd.args(["sub", &topic, "--count", "3", "--timeout", "30"])
                .args(["--format", format]);
            let sub = start_sub(cmd, &[&topic]);
            pub_three_messages(&env, &topic, &file);
            let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
            assert_eq!(status.code(), Some(0), "{format}: {err}");
            assert_format_output(format, want, &topic, out);
        }
        // The broker saw QoS 1 publishes (mosquitto logs `q1` for them).
        let log = broker.log_contents();
        let publishes: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Received PUBLISH") && l.contains("'cli/mqtt/raw'"))
            .collect();
        assert_eq!(publishes.len(), 3, "{log}");
        assert!(
            publishes.iter().all(|l| l.contains(", q1, ")),
            "{publishes:?}"
        );
    }

    #[test]
    fn sub_with_a_wildcard_and_a_group_on_mqtt() {
        let broker = Mosquitto::start();
        let vars = mqtt_env(&broker);
        let env = as_refs(&vars);
        let mut cmd = pubsub(&env);
        cmd.args(["sub", "cli/sensors/#", "--group", "g", "--count", "2"])
            .args(["--timeout", "30", "--format", "json"]);
        let sub = start_sub(cmd, &["cli/sensors/#"]);
        assert_code(&run(pubsub(&env).args(["pub", "cli/sensors/a", "1"])), 0);
        assert_code(&run(pubsub(&env).args(["pub", "cli/sensors/b/c", "2"])), 0);
        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        let text = String::from_utf8(out).unwrap();
        // The real topics, not the filter nor the `$share/...` form.
        assert!(
            text.contains("{\"topic\":\"cli/sensors/a\",\"len\":1,\"payload_base64\":\"MQ==\","),
            "{text}"
        );
        assert!(
            text.contains("{\"topic\":\"cli/sensors/b/c\",\"len\":1,\"payload_base64\":\"Mg==\","),
            "{text}"
        );
        assert!(
            broker.log_contents().contains("$share/g/cli/sensors/#"),
            "a shared subscription"
        );
    }

    /// A NATS wildcard on MQTT is refused, naming MQTT's own (issue 16,
    /// item 11); it was subscribed to as a plain topic name.
    #[test]
    fn a_nats_wildcard_on_mqtt_is_refused_naming_mqtts_own() {
        let broker = Mosquitto::start();
        let vars = mqtt_env(&broker);
        let o = run(pubsub(&as_refs(&vars)).args(["sub", "sensors.>", "--timeout", "5"]));
        assert_code(&o, 2);
        let err = stderr(&o);
        assert!(err.contains("`>` is a NATS wildcard"), "{err}");
        assert!(err.contains("`+` (one level) and `#` (the rest)"), "{err}");
    }

    #[test]
    fn check_against_live_mosquitto_succeeds() {
        let broker = Mosquitto::start();
        let vars = mqtt_env(&broker);
        let o = run(pubsub(&as_refs(&vars)).arg("check"));
        assert_code(&o, 0);
        let out = stdout(&o);
        assert!(out.contains("backend = \"mqtt\""), "{out}");
        assert!(out.contains(&broker.url()), "{out}");
        assert!(out.contains("qos = 1"), "{out}");
        assert!(out.contains("connect:      mqtt backend in"), "{out}");
        assert!(out.contains("server:       MQTT v5 broker"), "{out}");
        assert!(
            out.contains(&format!("address:      mqtt://127.0.0.1:{}", broker.port())),
            "{out}"
        );
        assert!(out.contains("TLS:          no"), "{out}");
        assert!(out.contains("capabilities: groups yes"), "{out}");
        assert!(out.contains("wildcards + #"), "{out}");
        assert!(out.contains("round trip:   "), "{out}");
        assert!(out.trim_end().ends_with("OK"), "{out}");
    }

    #[test]
    fn check_against_a_dead_mqtt_port_exits_1() {
        let port = free_port();
        let t0 = Instant::now();
        let o = run(pubsub(&[
            ("MSIGHT_PUBSUB_BACKEND", "mqtt"),
            ("MSIGHT_MQTT_HOST", "127.0.0.1"),
            ("MSIGHT_MQTT_PORT", &port.to_string()),
            ("MSIGHT_MQTT_USERNAME", "alice"),
            ("MSIGHT_MQTT_PASSWORD", "mqtt-secret-marker"),
            ("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "3"),
        ])
        .arg("check"));
        assert_code(&o, 1);
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        let out = stdout(&o);
        assert!(out.contains("connect:      FAILED"), "{out}");
        assert!(!out.contains("round trip"), "{out}");
        let err = stderr(&o);
        assert!(err.starts_with("error: connection failed"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(!out.contains("mqtt-secret-marker") && !err.contains("mqtt-secret-marker"));
    }

    #[test]
    fn demo_on_mqtt_loses_and_duplicates_nothing() {
        let broker = Mosquitto::start();
        let port = broker.port().to_string();
        let o = run(pubsub(&[
            ("MSIGHT_MQTT_HOST", "127.0.0.1"),
            ("MSIGHT_MQTT_PORT", &port),
            ("MSIGHT_MQTT_QOS", "1"),
        ])
        .args(["demo", "--backend", "mqtt"]));
        assert_clean_demo(&o, 1000, 3);
        assert!(
            stdout(&o).starts_with("pubsub demo: mqtt backend"),
            "{}",
            stdout(&o)
        );
    }

    #[test]
    fn sub_receives_what_mosquitto_pub_sends() {
        let broker = Mosquitto::start();
        let vars = mqtt_env(&broker);
        let env = as_refs(&vars);
        let topic = "cli/from-mosquitto-pub";
        // Every byte value: NUL, newlines, invalid UTF-8.
        let binary: Vec<u8> = (0..=255u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, &binary).unwrap();

        let mut cmd = pubsub(&env);
        cmd.args([
            "sub",
            topic,
            "--count",
            "2",
            "--timeout",
            "30",
            "--format",
            "raw",
        ]);
        let sub = start_sub(cmd, &[topic]);
        // MQTT 3.1.1 (mosquitto_pub's default) at QoS 0, then v5 at QoS 1.
        let o = run(mosquitto_client("mosquitto_pub", &broker).args([
            "-t",
            topic,
            "-m",
            "hello from mosquitto_pub",
        ]));
        assert_code(&o, 0);
        let o = run(mosquitto_client("mosquitto_pub", &broker)
            .args(["-V", "5", "-q", "1", "-t", topic, "-f"])
            .arg(&file));
        assert_code(&o, 0);

        let (status, out, err) = sub.finish(COMMAND_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{err}");
        let mut want = b"hello from mosquitto_pub".to_vec();
        want.extend_from_slice(&binary);
        assert!(
            out == want,
            "got {} bytes: {:?}",
            out.len(),
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn mosquitto_sub_receives_what_pub_sends() {
        let broker = Mosquitto::start();
        let vars = mqtt_env(&broker);
        let env = as_refs(&vars);
        let binary: Vec<u8> = (0..=255u8).rev().collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.bin");
        std::fs::write(&file, &binary).unwrap();

        for (topic, message) in [
            ("cli/to-mosquitto-sub/text", None),
            ("cli/to-mosquitto-sub/binary", Some(&file)),
        ] {
            // One message (-C 1), printed without a newline (-N), at most 20 s (-W).
            let mut subscriber = Background::spawn(
                "mosquitto_sub",
                mosquitto_client("mosquitto_sub", &broker).args([
                    "-V", "5", "-q", "1", "-t", topic, "-C", "1", "-N", "-W", "20",
                ]),
                Stdio::null(),
            );
            // mosquitto_sub says nothing when it is subscribed: publish until
            // it got one message and exited, a bounded number of times.
            let mut attempts = 0;
            while !subscriber.exited() {
                assert!(
                    attempts < 30,
                    "mosquitto_sub received nothing; stderr: {}",
                    subscriber.stderr_now()
                );
                attempts += 1;
                let mut cmd = pubsub(&env);
                cmd.args(["pub", topic]);
                match message {
                    Some(file) => cmd.arg("--file").arg(file),
                    None => cmd.arg("hello mosquitto_sub"),
                };
                assert_code(&run(&mut cmd), 0);
                let t0 = Instant::now();
                while !subscriber.exited() && t0.elapsed() < Duration::from_millis(500) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let (status, out, err) = subscriber.finish(COMMAND_TIMEOUT);
            assert!(status.success(), "mosquitto_sub: {status}: {err}");
            let want = match message {
                Some(_) => binary.clone(),
                None => b"hello mosquitto_sub".to_vec(),
            };
            assert!(
                out == want,
                "{topic}: mosquitto_sub printed {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}
