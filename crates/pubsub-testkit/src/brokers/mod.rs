//! Start real broker processes (nats-server, redis-server, mosquitto) for
//! integration tests.
//!
//! Every broker listens on a free port of `127.0.0.1` only, keeps its
//! generated configuration, data and log file in a temporary directory owned
//! by the returned value, and is killed (`SIGKILL`, then reaped) when that
//! value drops. Starting is synchronous (it blocks the calling thread while
//! the broker comes up, at most [`READY_TIMEOUT`] per attempt), so it can be
//! called from plain `#[test]`s and from `#[tokio::test]`s alike.
//!
//! A start waits until the broker accepts TCP connections on its port, and,
//! on Linux, until the listening socket really belongs to the started process
//! (so a port taken by someone else in the meantime is not mistaken for
//! readiness). A broker process that exits during start-up (typically because
//! the free port was taken between [`free_port`] and the broker binding it) is
//! started again on a new port, up to [`START_ATTEMPTS`] times; restarts keep
//! the same port. A start that finally fails panics with the last
//! [`LOG_TAIL_LINES`] lines of the broker's log.
//!
//! The binaries come from Debian packages (`nats-server`, `redis-server`
//! / `redis-tools`, `mosquitto` / `mosquitto-clients`); [`find_binary`] looks
//! for them on `PATH` and in the `sbin` directories.

mod mosquitto;
mod nats;
mod process;
mod redis;

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use pubsub_core::sync::lock;

pub use mosquitto::{Mosquitto, MosquittoBuilder};
pub use nats::{
    NatsCluster, NatsServer, NatsServerBuilder, JETSTREAM_MAX_FILE, JETSTREAM_MAX_MEMORY,
};
pub use process::{BrokerProcess, Launch, Probe, Start};
pub use redis::{RedisCluster, RedisServer, RedisServerBuilder};

/// How long one start attempt waits for a broker to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often readiness is polled while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many times a start is attempted when the broker process exits early.
pub const START_ATTEMPTS: usize = 3;

/// How many lines of the broker log a failed start shows.
pub const LOG_TAIL_LINES: usize = 40;

/// How long a graceful stop ([`BrokerProcess::terminate`]) waits after
/// `SIGTERM` before falling back to `SIGKILL`.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one readiness probe (connect plus request/response) may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Bound on helper commands (`redis-cli`, `mosquitto_passwd`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Directories searched after `PATH` by [`find_binary`].
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

// ---------------------------------------------------------------------------
// Binaries and ports
// ---------------------------------------------------------------------------

/// The Debian package that ships `name`, for error messages.
fn debian_package(name: &str) -> &'static str {
    match name {
        "nats-server" => "nats-server",
        "redis-server" => "redis-server",
        "redis-cli" => "redis-tools",
        "mosquitto" => "mosquitto",
        "mosquitto_passwd" => "mosquitto",
        "mosquitto_pub" | "mosquitto_sub" => "mosquitto-clients",
        _ => "(unknown package)",
    }
}

/// Finds an executable called `name` on `PATH`, then in `/usr/sbin`, `/sbin`
/// and `/usr/local/sbin`, and returns its full path.
///
/// # Panics
///
/// If no such executable exists; the message names the Debian package that
/// ships it and `cargo xtask install-brokers`.
pub fn find_binary(name: &str) -> PathBuf {
    try_find_binary(name).unwrap_or_else(|| {
        panic!(
            "broker binary `{name}` not found on PATH nor in {}; install the Debian package \
             `{}` (apt-get install {}) or run `cargo xtask install-brokers`",
            SBIN_DIRS.join(", "),
            debian_package(name),
            debian_package(name),
        )
    })
}

/// Like [`find_binary`], but returns `None` instead of panicking, so a test
/// can skip itself when a broker is not installed.
pub fn try_find_binary(name: &str) -> Option<PathBuf> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Ports this process has handed out, so two brokers started concurrently by
/// tests of the same binary never get the same port.
fn handed_out_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Returns a TCP port of `127.0.0.1` that was free a moment ago: binds
/// `127.0.0.1:0`, reads the port the kernel chose, and closes the socket.
///
/// Another process may take the port before the caller binds it; broker
/// starts retry on a new port when that happens. Within this process, a port
/// is never returned twice.
///
/// # Panics
///
/// If binding a loopback socket fails, or no new port turns up in 200 tries.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        drop(listener);
        let mut seen = lock(handed_out_ports());
        if seen.insert(port) {
            return port;
        }
    }
    panic!("free_port: no port that was not already handed out in 200 tries");
}

/// Marks `port` as in use so [`free_port`] never returns it (used for ports
/// given explicitly to a builder).
fn reserve_port(port: u16) {
    lock(handed_out_ports()).insert(port);
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A unique number for names within this process.
fn next_serial() -> u64 {
    static SERIAL: AtomicU64 = AtomicU64::new(1);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Commands with a deadline
// ---------------------------------------------------------------------------

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured,
/// killing it if it takes longer than `timeout`.
///
/// Returns the output of the finished process; a process that had to be
/// killed yields an `io::ErrorKind::TimedOut` error.
pub fn run_command(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL_INTERVAL);
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "{cmd:?} did not finish within {timeout:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            ),
        )),
    }
}

/// Everything in the file at `path`, or nothing when it cannot be read.
fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Quotes a path for nats-server and mosquitto configuration files.
fn quoted(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Paths of the TLS files a broker needs, copied out of a [`TestPki`](crate::certs::TestPki).
#[derive(Clone, Debug)]
struct TlsFiles {
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TlsFiles {
    fn from_pki(pki: &crate::certs::TestPki) -> TlsFiles {
        TlsFiles {
            ca_cert: pki.ca_cert.clone(),
            server_cert: pki.server_cert.clone(),
            server_key: pki.server_key.clone(),
        }
    }
}

// The handles can move between threads (e.g. into `spawn_blocking`).
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<NatsServer>();
    is_send::<NatsCluster>();
    is_send::<RedisServer>();
    is_send::<RedisCluster>();
    is_send::<Mosquitto>();
};
