//! Another process in a test: a Python peer, or this test program run again
//! as a child playing a role (a subscriber to be killed with `SIGKILL`
//! while it holds unsettled messages). Its standard output is read line by
//! line in the background; it is killed (`SIGKILL`) and reaped on drop.
//!
//! A test that needs a child checks [`child_role`] first:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use pubsub_testkit::peer::{child_role, spawn_self};
//! # fn hold_messages_until_killed() {}
//! #[test]
//! fn member_killed_loses_nothing() {
//!     if child_role().as_deref() == Some("member") {
//!         return hold_messages_until_killed();
//!     }
//!     let mut child = spawn_self("member_killed_loses_nothing", "member", &[]);
//!     child.line_with("ready", Duration::from_secs(20));
//!     child.kill();
//!     // ... the other member gets every message
//! }
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment variable that tells a test program it runs as a child.
pub const ROLE_VAR: &str = "PUBSUB_TESTKIT_ROLE";

/// The role this process plays, when a test started it with [`spawn_self`].
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Run this test program again with only the test `test` (exact name,
/// output not captured), as a child playing `role`, with `env` added.
///
/// # Panics
/// When the program cannot be started.
pub fn spawn_self(test: &str, role: &str, env: &[(&str, &str)]) -> Peer {
    let exe = std::env::current_exe().expect("the path of this test program");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(ROLE_VAR, role)
        .envs(env.iter().copied());
    Peer::spawn(cmd, &format!("child {role:?} of {test}"))
}

/// A running process whose output lines can be awaited with a timeout.
pub struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Peer {
    /// Start `cmd` with stdout piped (stdin closed, stderr inherited).
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn spawn(mut cmd: Command, what: &str) -> Peer {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start the {what}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            lines,
            what: what.to_string(),
        }
    }

    /// The next line of output, if one comes within `timeout`.
    pub fn try_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next line of output, waiting at most `timeout`.
    ///
    /// # Panics
    /// When no line comes in time (the process failed or hung).
    pub fn line(&mut self, timeout: Duration) -> String {
        match self.try_line(timeout) {
            Some(l) => l,
            None => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "the {} printed nothing within {timeout:?} (exit status {status:?}); see its stderr above",
                    self.what
                )
            }
        }
    }

    /// The first line with `marker` in it (other lines are skipped), from
    /// the marker on, waiting at most `timeout` in all. (A test program's
    /// own output may precede the child's on its line: libtest writes
    /// `test name ... ` before the test runs.)
    ///
    /// # Panics
    /// When none comes in time.
    pub fn line_with(&mut self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.line(left.max(Duration::from_millis(1)));
            if let Some(at) = line.find(marker) {
                return line[at..].to_string();
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill it with `SIGKILL` (as a crash would: nothing is flushed or
    /// settled) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for it to exit (bounded) and return whether it succeeded.
    pub fn wait(mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}
