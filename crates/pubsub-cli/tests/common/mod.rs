//! Helpers shared by the CLI test files: the binary with a clean
//! environment, bounded runs, background processes read while they run, and
//! the checks of the demo summary and of the `sub` formats.

// Each test file uses some of these.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pubsub_testkit::brokers::run_command;

/// Longest any single command may run in these tests.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a background process may take to say it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary under test: this package's, or `$PUBSUB_TEST_BIN` (to show
/// that a test fails with an older build).
pub fn binary() -> std::path::PathBuf {
    match std::env::var_os("PUBSUB_TEST_BIN") {
        Some(p) if !p.is_empty() => p.into(),
        _ => env!("CARGO_BIN_EXE_pubsub").into(),
    }
}

/// The binary with a clean environment: no `MSIGHT_*` or `RUST_LOG` from
/// the caller, then `vars`.
pub fn pubsub(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MSIGHT_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.envs(vars.iter().copied());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    run_command(cmd, COMMAND_TIMEOUT).expect("the command finishes in time")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// `(name, value)` pairs as the `&str` pairs [`pubsub`] takes.
pub fn as_refs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Lines `worker N   K frames` of the demo summary: the K's.
pub fn frames_per_worker(summary: &str) -> Vec<u64> {
    summary
        .lines()
        .filter(|l| l.starts_with("worker "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(words.get(3), Some(&"frames"), "{l:?}");
            words[2].parse().expect("a frame count")
        })
        .collect()
}

#[track_caller]
pub fn assert_clean_demo(o: &Output, frames: u64, workers: usize) {
    assert_code(o, 0);
    let out = stdout(o);
    assert!(
        out.contains(&format!(
            "frames:      {frames} published, {frames} processed, {frames} results; lost 0, duplicated 0, corrupt 0"
        )),
        "{out}"
    );
    assert!(out.contains("result:      OK"), "{out}");
    assert!(out.contains("latency:     p50 "), "{out}");
    let per_worker = frames_per_worker(&out);
    assert_eq!(per_worker.len(), workers, "{out}");
    assert_eq!(per_worker.iter().sum::<u64>(), frames, "{out}");
}

// ---------------------------------------------------------------------------
// Processes in the background
// ---------------------------------------------------------------------------

/// Collects everything a pipe delivers, readable while the process runs.
fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let reader = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, reader)
}

/// A process running in the background (`pubsub sub`, `redis-cli
/// SUBSCRIBE`, `mosquitto_sub`), its stdout and stderr collected as they
/// come. Killed when dropped.
pub struct Background {
    what: String,
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Background {
    /// Spawn `cmd` with `stdin`, stdout and stderr piped.
    pub fn spawn(what: &str, cmd: &mut Command, stdin: Stdio) -> Background {
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (out, out_reader) = collect(child.stdout.take().expect("stdout piped"));
        let (err, err_reader) = collect(child.stderr.take().expect("stderr piped"));
        Background {
            what: what.to_string(),
            child,
            out,
            err,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Spawn `cmd` with stdout piped but not read: the pipe is handed back,
    /// so that the process blocks once the pipe's buffer is full (a reader
    /// that does not read). Its stderr is collected as with [`Background::spawn`].
    pub fn spawn_unread_stdout(
        what: &str,
        cmd: &mut Command,
    ) -> (Background, std::process::ChildStdout) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (err, err_reader) = collect(child.stderr.take().expect("stderr piped"));
        let bg = Background {
            what: what.to_string(),
            child,
            out: Arc::default(),
            err,
            readers: vec![err_reader],
        };
        (bg, stdout)
    }

    /// Spawn `cmd` with `input` written to its stdin, which is then closed.
    pub fn spawn_with_input(what: &str, cmd: &mut Command, input: &[u8]) -> Background {
        use std::io::Write;
        let mut bg = Background::spawn(what, cmd, Stdio::piped());
        let mut stdin = bg.child.stdin.take().expect("stdin piped");
        // A process that exits early closes the pipe; its exit status tells.
        let _ = stdin.write_all(input);
        bg
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send it `signal` (`libc::SIGINT`, `libc::SIGTERM`), a real signal.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid of a child we own and have not reaped.
        let r = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            r,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Write `bytes` to its standard input (spawned with `Stdio::piped()`).
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        stdin.write_all(bytes).expect("write to the child's stdin");
        stdin.flush().expect("flush the child's stdin");
    }

    /// What it wrote on stdout so far.
    pub fn stdout_now(&self) -> Vec<u8> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What it wrote on stderr so far.
    pub fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait until `ready(stdout, stderr)` holds; false if `timeout` passes
    /// first or the process exits without it.
    pub fn wait_until(&mut self, timeout: Duration, ready: impl Fn(&[u8], &str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.exited();
            if ready(&self.stdout_now(), &self.stderr_now()) {
                return true;
            }
            if exited || Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the exit (bounded by `timeout`, panicking after a kill);
    /// the status, the stdout bytes and the stderr text.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<u8>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running after {timeout:?}; stderr: {}",
                    self.what,
                    self.stderr_now()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.join_readers();
        (status, self.stdout_now(), self.stderr_now())
    }

    /// Kill it (it is expected to run until told to stop); its stdout
    /// bytes and stderr text.
    pub fn kill(mut self) -> (Vec<u8>, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_readers();
        (self.stdout_now(), self.stderr_now())
    }

    fn join_readers(&mut self) {
        // The pipes close with the process (nothing else holds them).
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start `pubsub sub` (built by `cmd`) and wait until it said
/// `subscribed to TOPIC` on stderr for every topic.
pub fn start_sub(mut cmd: Command, topics: &[&str]) -> Background {
    let mut sub = Background::spawn("pubsub sub", &mut cmd, Stdio::null());
    let ready = sub.wait_until(READY_TIMEOUT, |_, err| {
        topics
            .iter()
            .all(|t| err.lines().any(|l| l == format!("subscribed to {t}")))
    });
    assert!(
        ready,
        "`pubsub sub` did not say it subscribed to {topics:?} within {READY_TIMEOUT:?}; stderr: {}",
        sub.stderr_now()
    );
    sub
}

// ---------------------------------------------------------------------------
// The `sub` formats
// ---------------------------------------------------------------------------

/// The second of the three messages [`pub_three_messages`] sends: invalid
/// UTF-8, a NUL and a newline.
pub const BINARY: &[u8] = b"\xff\x00bin\n";

/// Every `--format`, with what `sub --count 3` prints for the three
/// messages (`json` is checked by [`assert_format_output`] itself).
pub const FORMATS: [(&str, &[u8]); 4] = [
    ("raw", b"hello\xff\x00bin\n"),
    ("hex", b"68656c6c6f\nff0062696e0a\n\n"),
    ("line", b"hello\n\\xff\x00bin\n\n\n"),
    ("json", b""),
];

/// `pubsub pub` three times to `topic`: `hello`, the file holding
/// [`BINARY`], and an empty message.
pub fn pub_three_messages(env: &[(&str, &str)], topic: &str, file: &std::path::Path) {
    let o = run(pubsub(env).args(["pub", topic, "hello"]));
    assert_code(&o, 0);
    let o = run(pubsub(env).args(["pub", topic]).arg("--file").arg(file));
    assert_code(&o, 0);
    let o = run(pubsub(env).args(["pub", topic, ""]));
    assert_code(&o, 0);
}

/// What `sub --format FORMAT` printed for [`pub_three_messages`] is right.
#[track_caller]
pub fn assert_format_output(format: &str, want: &[u8], topic: &str, out: Vec<u8>) {
    if format != "json" {
        assert_eq!(
            out,
            want,
            "{format}: got {:?}",
            String::from_utf8_lossy(&out)
        );
        return;
    }
    let lines: Vec<serde_json::Value> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", String::from_utf8_lossy(&out));
    for (line, (len, b64)) in lines
        .iter()
        .zip([(5, "aGVsbG8="), (6, "/wBiaW4K"), (0, "")])
    {
        assert_eq!(line["topic"], topic);
        assert_eq!(line["len"], len);
        assert_eq!(line["payload_base64"], b64);
    }
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(&format!("{{\"topic\":\"{topic}\",\"len\":5,")),
        "{text}"
    );
}

/// The count on the `redelivered: N frames` line of a manual-ack demo's
/// summary.
///
/// # Panics
/// When there is no such line.
pub fn demo_redelivered(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("redelivered: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no redelivered line in {out}"))
}
