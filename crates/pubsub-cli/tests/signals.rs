//! SIGINT and SIGTERM, real signals sent to the `pubsub` process: every
//! command stops cleanly (flushes, closes, a one-line summary on stderr,
//! exit 130 / 143), also when started with SIGINT ignored as a script's
//! background job is, and a second signal exits at once.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How long a stopped command may take to exit.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// Wait until `bg`'s stderr contains `marker`.
#[track_caller]
fn wait_for_stderr(bg: &mut Background, marker: &str) {
    let seen = bg.wait_until(READY_TIMEOUT, |_, err| err.contains(marker));
    assert!(seen, "no {marker:?} on stderr: {}", bg.stderr_now());
}

/// The last line of `err`.
fn last_line(err: &str) -> &str {
    err.lines().last().unwrap_or_default()
}

#[test]
fn sub_stops_on_sigint_and_sigterm_with_a_summary() {
    for (sig, code, name) in [
        (libc::SIGINT, 130, "SIGINT"),
        (libc::SIGTERM, 143, "SIGTERM"),
    ] {
        let mut cmd = pubsub(&[]);
        cmd.args(["sub", "t.signals"]);
        let mut sub = Background::spawn("pubsub sub", &mut cmd, Stdio::null());
        wait_for_stderr(&mut sub, "subscribed to t.signals");
        let t0 = Instant::now();
        sub.signal(sig);
        let (status, _, err) = sub.finish(STOP_WITHIN);
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert_eq!(status.code(), Some(code), "{err}");
        assert_eq!(
            last_line(&err),
            format!("pubsub sub: stopped by {name}: 0 messages received"),
            "{err}"
        );
    }
}

/// A script's background job starts with SIGINT ignored; the tool stops
/// on it all the same, as `mosquitto_sub` does.
#[test]
fn sub_started_with_sigint_ignored_still_stops_on_it() {
    let line = format!("trap '' INT; exec {} sub t.ignored", binary().display());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &line]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MSIGHT_") {
            cmd.env_remove(&k);
        }
    }
    let mut sub = Background::spawn("sh -c pubsub sub", &mut cmd, Stdio::null());
    wait_for_stderr(&mut sub, "subscribed to t.ignored");
    sub.signal(libc::SIGINT);
    let (status, _, err) = sub.finish(STOP_WITHIN);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        last_line(&err).starts_with("pubsub sub: stopped by SIGINT"),
        "{err}"
    );
}

/// `pub` waiting for standard input, and `pub` pacing a long run.
#[test]
fn pub_stops_with_what_it_published() {
    let mut cmd = pubsub(&[]);
    cmd.args(["pub", "t.signals"]);
    let mut publisher = Background::spawn("pubsub pub", &mut cmd, Stdio::piped());
    publisher.write_stdin(b"one\ntwo\n");
    wait_for_stderr(&mut publisher, "memory backend lives inside this process");
    std::thread::sleep(Duration::from_millis(300));
    publisher.signal(libc::SIGTERM);
    let (status, _, err) = publisher.finish(STOP_WITHIN);
    assert_eq!(status.code(), Some(143), "{err}");
    assert_eq!(
        last_line(&err),
        "pubsub pub: stopped by SIGTERM: 2 messages published to t.signals (flushed)",
        "{err}"
    );

    let mut cmd = pubsub(&[]);
    cmd.args(["pub", "t.paced", "x", "--count", "1000000", "--rate", "20"]);
    let mut publisher = Background::spawn("pubsub pub --rate", &mut cmd, Stdio::null());
    wait_for_stderr(&mut publisher, "memory backend lives inside this process");
    std::thread::sleep(Duration::from_millis(500));
    publisher.signal(libc::SIGINT);
    let (status, _, err) = publisher.finish(STOP_WITHIN);
    assert_eq!(status.code(), Some(130), "{err}");
    let n: u64 = last_line(&err)
        .strip_prefix("pubsub pub: stopped by SIGINT: ")
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a summary: {err}"));
    assert!((2..=40).contains(&n), "{n} at 20/s in about 0.5 s: {err}");
}

#[test]
fn bench_and_demo_stop_with_a_summary() {
    let mut cmd = pubsub(&[]);
    cmd.args([
        "bench",
        "--msgs",
        "1000000000",
        "--latency-samples",
        "0",
        "--no-progress",
    ]);
    let mut bench = Background::spawn("pubsub bench", &mut cmd, Stdio::null());
    let started = bench.wait_until(READY_TIMEOUT, |out, _| {
        String::from_utf8_lossy(out).contains("pubsub bench: memory backend")
    });
    assert!(started, "{}", bench.stderr_now());
    std::thread::sleep(Duration::from_millis(300));
    bench.signal(libc::SIGINT);
    let (status, _, err) = bench.finish(STOP_WITHIN);
    assert_eq!(status.code(), Some(130), "{err}");
    let summary = last_line(&err);
    assert!(
        summary.starts_with("pubsub bench: stopped by SIGINT: ")
            && summary.contains("messages published (flushed)")
            && summary.contains("received"),
        "{err}"
    );

    let mut cmd = pubsub(&[]);
    cmd.args(["demo", "--frames", "100000", "--rate", "20"]);
    let mut demo = Background::spawn("pubsub demo", &mut cmd, Stdio::null());
    let started = demo.wait_until(READY_TIMEOUT, |out, _| {
        String::from_utf8_lossy(out).contains("pubsub demo: memory backend")
    });
    assert!(started, "{}", demo.stderr_now());
    std::thread::sleep(Duration::from_millis(500));
    demo.signal(libc::SIGTERM);
    let (status, _, err) = demo.finish(STOP_WITHIN);
    assert_eq!(status.code(), Some(143), "{err}");
    let summary = last_line(&err);
    assert!(
        summary.starts_with("pubsub demo: stopped by SIGTERM: ")
            && summary.contains("frames published (flushed)")
            && summary.contains("results received"),
        "{err}"
    );
}

/// What was accepted before the signal is flushed: a subscriber in another
/// process gets exactly the count the summary gives. A second signal while
/// the tool waits for a broker that is gone exits at once.
#[cfg(feature = "nats")]
#[test]
fn pub_flushes_before_exiting_and_a_second_signal_exits_at_once() {
    use pubsub_testkit::brokers::NatsServer;
    let mut server = NatsServer::start();
    let url = server.url();
    let env = [
        ("MSIGHT_PUBSUB_BACKEND", "nats"),
        ("MSIGHT_NATS_SERVERS", url.as_str()),
    ];
    let mut cmd = pubsub(&env);
    cmd.args(["sub", "t.flush", "--format", "hex"]);
    let mut sub = start_sub(cmd, &["t.flush"]);
    let mut cmd = pubsub(&env);
    cmd.args([
        "pub",
        "t.flush",
        "x",
        "--count",
        "100000000",
        "--rate",
        "2000",
    ]);
    let publisher = Background::spawn("pubsub pub", &mut cmd, Stdio::null());
    let flowing = sub.wait_until(READY_TIMEOUT, |out, _| out.len() > 100);
    assert!(flowing, "{}", publisher.stderr_now());
    publisher.signal(libc::SIGINT);
    let (status, _, err) = publisher.finish(STOP_WITHIN);
    assert_eq!(status.code(), Some(130), "{err}");
    let published: usize = last_line(&err)
        .strip_prefix("pubsub pub: stopped by SIGINT: ")
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a summary: {err}"));
    // Each message is the line "78\n" in hex.
    let all_there = sub.wait_until(READY_TIMEOUT, |out, _| out.len() >= published * 3);
    sub.signal(libc::SIGTERM);
    let (status, out, err) = sub.finish(STOP_WITHIN);
    assert!(
        all_there,
        "published {published}, received {}",
        out.len() / 3
    );
    assert_eq!(out.len(), published * 3, "none more either");
    assert_eq!(status.code(), Some(143), "{err}");
    assert_eq!(
        last_line(&err),
        format!("pubsub sub: stopped by SIGTERM: {published} messages received")
    );

    // The server goes away; a publisher's flush then waits (close_timeout
    // 30 s): the first signal starts that wait, the second ends it at once.
    let mut cmd = pubsub(&[
        ("MSIGHT_PUBSUB_BACKEND", "nats"),
        ("MSIGHT_NATS_SERVERS", url.as_str()),
        ("MSIGHT_PUBSUB_CLOSE_TIMEOUT", "30s"),
    ]);
    cmd.args(["pub", "t.gone"]);
    let mut publisher = Background::spawn("pubsub pub", &mut cmd, Stdio::piped());
    publisher.write_stdin(b"before\n");
    std::thread::sleep(Duration::from_millis(500));
    server.stop();
    publisher.write_stdin(b"after the server went away\n");
    std::thread::sleep(Duration::from_millis(300));
    publisher.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    publisher.signal(libc::SIGINT);
    let (status, _, err) = publisher.finish(STOP_WITHIN);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "{:?}: {err}",
        t0.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{err}");
    assert_eq!(
        last_line(&err),
        "pubsub pub: SIGINT again: exiting at once",
        "{err}"
    );
}

/// While it connects (here to a port that accepts and never answers)
/// there is nothing to finish: a signal ends `check` at once, saying so.
#[cfg(feature = "nats")]
#[test]
fn a_signal_while_connecting_exits_at_once() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", silent.local_addr().unwrap());
    let mut cmd = pubsub(&[
        ("MSIGHT_PUBSUB_BACKEND", "nats"),
        ("MSIGHT_NATS_SERVERS", url.as_str()),
        ("MSIGHT_PUBSUB_CONNECT_TIMEOUT", "30s"),
    ]);
    cmd.arg("check");
    let mut check = Background::spawn("pubsub check", &mut cmd, Stdio::null());
    let printed = check.wait_until(READY_TIMEOUT, |out, _| {
        String::from_utf8_lossy(out).contains("[nats]")
    });
    assert!(printed, "{}", check.stderr_now());
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    check.signal(libc::SIGTERM);
    let (status, _, err) = check.finish(STOP_WITHIN);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(status.code(), Some(143), "{err}");
    assert_eq!(
        last_line(&err),
        "pubsub check: stopped by SIGTERM before anything was sent or received"
    );
    drop(silent);
}
