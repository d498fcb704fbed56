//! SIGINT and SIGTERM: every command stops cleanly on either.
//!
//! A thread of its own waits for the signals from the moment the tool
//! starts, also when the shell started it with SIGINT ignored (a
//! background job of a script): installing a handler replaces the ignore.
//!
//! - Before a command has connected there is nothing to finish: the tool
//!   says so on stderr and exits at once.
//! - After that the first signal asks the command to stop: it notices
//!   within [`POLL`] (or at once, in async code), flushes what was accepted,
//!   releases what it holds unsettled, closes the connection, prints a
//!   one-line summary on stderr and exits with 128 + the signal's number
//!   (130 for SIGINT, 143 for SIGTERM).
//! - A second signal exits at once.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often blocking loops look whether a signal asked them to stop.
pub const POLL: Duration = Duration::from_millis(50);

/// SIGINT's number.
pub const SIGINT: i32 = 2;
/// SIGTERM's number.
pub const SIGTERM: i32 = 15;

/// The first signal received, 0 before one.
static STOP: AtomicI32 = AtomicI32::new(0);
/// Whether the command has nothing to finish yet (not connected).
static EXIT_AT_ONCE: AtomicBool = AtomicBool::new(true);

struct Waiters {
    lock: Mutex<()>,
    blocking: Condvar,
    async_tx: watch::Sender<i32>,
}

fn waiters() -> &'static Waiters {
    static W: OnceLock<Waiters> = OnceLock::new();
    W.get_or_init(|| Waiters {
        lock: Mutex::new(()),
        blocking: Condvar::new(),
        async_tx: watch::channel(0).0,
    })
}

/// `SIGINT` or `SIGTERM` (or the number).
pub fn name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".to_string(),
        SIGTERM => "SIGTERM".to_string(),
        n => format!("signal {n}"),
    }
}

/// The exit code for a stop by `signal`: 128 + its number.
pub fn exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

/// Start waiting for SIGINT and SIGTERM; `command` names the tool's
/// command in what it prints. Returns once the handlers are in place.
pub fn install(command: &'static str) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("pubsub-signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (mut int, mut term) = match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(i), Ok(t)) => (i, t),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    let sig = tokio::select! {
                        _ = int.recv() => SIGINT,
                        _ = term.recv() => SIGTERM,
                    };
                    received(command, sig);
                }
            });
        });
    let ok = spawned.is_ok() && matches!(ready_rx.recv_timeout(Duration::from_secs(5)), Ok(Ok(())));
    if !ok {
        tracing::warn!("cannot wait for SIGINT/SIGTERM; they stop the tool without a summary");
    }
}

/// A signal arrived.
fn received(command: &str, sig: i32) {
    let first = STOP
        .compare_exchange(0, sig, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if !first {
        let _ = writeln!(
            std::io::stderr(),
            "pubsub {command}: {} again: exiting at once",
            name(sig)
        );
        std::process::exit(i32::from(exit_code(sig)));
    }
    if EXIT_AT_ONCE.load(Ordering::Acquire) {
        let _ = writeln!(
            std::io::stderr(),
            "pubsub {command}: stopped by {} before anything was sent or received",
            name(sig)
        );
        std::process::exit(i32::from(exit_code(sig)));
    }
    let w = waiters();
    w.async_tx.send_replace(sig);
    let _guard = w.lock.lock();
    w.blocking.notify_all();
}

/// The command has connected: from now on a signal asks it to finish
/// (flush, release, close, summary) instead of ending the process.
pub fn connected() {
    EXIT_AT_ONCE.store(false, Ordering::Release);
    // A signal that came just before is handled by the command now.
}

/// The signal that asked to stop, if one did.
pub fn stop_requested() -> Option<i32> {
    match STOP.load(Ordering::Acquire) {
        0 => None,
        s => Some(s),
    }
}

/// Sleep for `d`, or less when a signal asks to stop. Returns the signal
/// if one did.
pub fn sleep(d: Duration) -> Option<i32> {
    let deadline = Instant::now() + d;
    let w = waiters();
    let mut guard = w.lock.lock().unwrap_or_else(|p| p.into_inner());
    // Bounded: each wait ends at the deadline at the latest.
    loop {
        if let Some(s) = stop_requested() {
            return Some(s);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        guard = w
            .blocking
            .wait_timeout(guard, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Completes when a signal asks to stop, with the signal.
pub async fn stopped() -> i32 {
    let mut rx = waiters().async_tx.subscribe();
    let sig = match rx.wait_for(|s| *s != 0).await {
        Ok(s) => *s,
        // The sender lives in a static: never dropped.
        Err(_) => 0,
    };
    if sig == 0 {
        std::future::pending::<()>().await;
    }
    sig
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_names() {
        assert_eq!(exit_code(SIGINT), 130);
        assert_eq!(exit_code(SIGTERM), 143);
        assert_eq!(name(SIGINT), "SIGINT");
        assert_eq!(name(SIGTERM), "SIGTERM");
    }

    #[test]
    fn sleep_without_a_signal_takes_its_time() {
        let t0 = Instant::now();
        assert_eq!(sleep(Duration::from_millis(30)), None);
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
}
