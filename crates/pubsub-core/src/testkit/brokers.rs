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

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::certs::TestPki;

/// How long one start attempt waits for a broker to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often readiness is polled while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many times a start is attempted when the broker process exits early.
pub const START_ATTEMPTS: usize = 3;

/// How many lines of the broker log a failed start shows.
pub const LOG_TAIL_LINES: usize = 40;

/// How long a graceful stop ([`NatsServer::terminate`] and friends) waits
/// after `SIGTERM` before falling back to `SIGKILL`.
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
        let mut seen = handed_out_ports()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.insert(port) {
            return port;
        }
    }
    panic!("free_port: no port that was not already handed out in 200 tries");
}

/// Marks `port` as in use so [`free_port`] never returns it (used for ports
/// given explicitly to a builder).
fn reserve_port(port: u16) {
    handed_out_ports()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(port);
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

// ---------------------------------------------------------------------------
// Process management shared by all brokers
// ---------------------------------------------------------------------------

/// A running broker process, killed and reaped on drop.
#[derive(Debug)]
struct Running {
    child: Child,
}

impl Running {
    fn kill(mut self) {
        self.kill_in_place();
    }

    fn kill_in_place(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `SIGTERM`, wait up to `grace`, then `SIGKILL`.
    fn terminate(mut self, grace: Duration) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if sent {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) => thread::sleep(POLL_INTERVAL),
                }
            }
        }
        self.kill_in_place();
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill_in_place();
    }
}

/// What to do once the port accepts a TCP connection.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// Accepting a connection is enough.
    Accept,
    /// The server must send a line starting with `INFO ` (nats-server).
    NatsInfo,
    /// `PING` must be answered with `+PONG`, or with an error other than
    /// `-LOADING` (e.g. `-NOAUTH` on a password-protected server).
    RedisPing,
}

/// Why a start attempt failed.
#[derive(Debug)]
enum LaunchError {
    /// The process exited before it was ready (often: port taken). Retried.
    Exited(String),
    /// Anything else (spawn failed, not ready in time). Not retried.
    Fatal(String),
}

impl LaunchError {
    fn message(&self) -> &str {
        match self {
            LaunchError::Exited(m) | LaunchError::Fatal(m) => m,
        }
    }
}

/// Everything needed to spawn one broker process.
struct LaunchSpec<'a> {
    program: &'a Path,
    args: &'a [OsString],
    log_path: &'a Path,
    port: u16,
    probe: Probe,
}

/// Spawns the process with stdout and stderr appended to the log file and
/// waits (bounded by [`READY_TIMEOUT`]) until it is ready.
fn launch(spec: &LaunchSpec<'_>, attempt: usize) -> Result<Running, LaunchError> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.log_path)
        .map_err(|e| {
            LaunchError::Fatal(format!("open log file {}: {e}", spec.log_path.display()))
        })?;
    let _ = writeln!(
        log,
        "=== testkit: start attempt {attempt} on 127.0.0.1:{}: {} {:?} ===",
        spec.port,
        spec.program.display(),
        spec.args
    );
    let log_err = log
        .try_clone()
        .map_err(|e| LaunchError::Fatal(format!("clone log file handle: {e}")))?;
    let child = Command::new(spec.program)
        .args(spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|e| LaunchError::Fatal(format!("spawn {}: {e}", spec.program.display())))?;
    let mut running = Running { child };
    wait_ready(&mut running, spec.port, spec.probe)?;
    Ok(running)
}

fn wait_ready(running: &mut Running, port: u16, probe: Probe) -> Result<(), LaunchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let pid = running.child.id();
    loop {
        match running.child.try_wait() {
            Ok(Some(status)) => {
                return Err(LaunchError::Exited(format!(
                    "process exited during start-up ({})",
                    describe_status(status)
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(LaunchError::Fatal(format!("waiting for the process: {e}"))),
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&loopback(port), PROBE_TIMEOUT) {
            if listener_owned_by(pid, port) != Some(false) && run_probe(&mut stream, probe) {
                // The probe may have raced with an exit (e.g. another broker
                // answered); check once more.
                if matches!(running.child.try_wait(), Ok(None)) {
                    return Ok(());
                }
                continue;
            }
        }
        if Instant::now() >= deadline {
            running.kill_in_place();
            return Err(LaunchError::Fatal(format!(
                "not accepting connections on 127.0.0.1:{port} within {READY_TIMEOUT:?}; killed"
            )));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

fn run_probe(stream: &mut TcpStream, probe: Probe) -> bool {
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
    match probe {
        Probe::Accept => true,
        Probe::NatsInfo => read_line(stream).is_some_and(|l| l.starts_with("INFO ")),
        Probe::RedisPing => {
            if stream.write_all(b"PING\r\n").is_err() {
                return false;
            }
            match read_line(stream) {
                Some(l) => {
                    l.starts_with("+PONG") || (l.starts_with('-') && !l.starts_with("-LOADING"))
                }
                None => false,
            }
        }
    }
}

/// Reads one `\n`-terminated line (at most 64 KiB) or `None` on error/EOF.
fn read_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => {
                if byte[0] == b'\n' {
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
                line.push(byte[0]);
            }
            _ => return None,
        }
    }
    None
}

/// On Linux: whether process `pid` holds a socket listening on TCP `port`.
/// `None` when that cannot be told (no `/proc`, or no permission).
fn listener_owned_by(pid: u32, port: u16) -> Option<bool> {
    let mut inodes = Vec::new();
    let mut any_table = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        any_table = true;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                if let Ok(inode) = cols[9].parse::<u64>() {
                    inodes.push(inode);
                }
            }
        }
    }
    if !any_table {
        return None;
    }
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for entry in fds.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok());
        if inode.is_some_and(|i| inodes.contains(&i)) {
            return Some(true);
        }
    }
    Some(false)
}

/// The last `n` lines of a log file (or a note that it cannot be read).
fn log_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Builds the panic message of a failed start.
fn start_failure(what: &str, port: u16, log_path: &Path, reason: &str) -> String {
    format!(
        "{what} failed to start on 127.0.0.1:{port}: {reason}\n--- last {LOG_TAIL_LINES} lines of {} ---\n{}\n---",
        log_path.display(),
        log_tail(log_path, LOG_TAIL_LINES)
    )
}

fn new_tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory for a test broker")
}

fn write_text(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Quotes a path for nats-server and mosquitto configuration files.
fn quoted(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Paths of the TLS files a broker needs, copied out of a [`TestPki`].
#[derive(Clone, Debug)]
struct TlsFiles {
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TlsFiles {
    fn from_pki(pki: &TestPki) -> TlsFiles {
        TlsFiles {
            ca_cert: pki.ca_cert.clone(),
            server_cert: pki.server_cert.clone(),
            server_key: pki.server_key.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// NATS
// ---------------------------------------------------------------------------

/// Builder for [`NatsServer`]; see [`NatsServer::builder`].
#[derive(Clone, Debug, Default)]
pub struct NatsServerBuilder {
    extra_config: String,
    port: Option<u16>,
    max_payload: Option<u64>,
    tls: Option<(TlsFiles, bool)>,
}

impl NatsServerBuilder {
    /// Appends `extra` (nats-server configuration syntax) to the generated
    /// configuration file, e.g. an `authorization { ... }` block, a
    /// `tls { ... }` block, or `operator:` / `resolver:` lines. May be called
    /// several times; the pieces are appended in order.
    pub fn config(mut self, extra: &str) -> Self {
        self.extra_config.push_str(extra);
        self.extra_config.push('\n');
        self
    }

    /// Listens on this fixed port instead of a free one (no retry on a new
    /// port if it is taken).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets `max_payload` (bytes). Values above 64 MiB also raise
    /// `max_pending`, which nats-server requires to be at least as large.
    pub fn max_payload(mut self, bytes: u64) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Adds a `tls { cert_file, key_file, ca_file, verify }` block using the
    /// server certificate of `pki`; with `verify` the server demands a client
    /// certificate signed by the test CA. nats-server 2.9 still sends its
    /// `INFO` line in plain text first (with `"tls_required":true`).
    pub fn tls(mut self, pki: &TestPki, verify: bool) -> Self {
        self.tls = Some((TlsFiles::from_pki(pki), verify));
        self
    }

    /// Starts the server and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If `nats-server` is missing, or the server does not come up (the
    /// message holds the end of its log).
    pub fn start(self) -> NatsServer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(self) -> Result<NatsServer, String> {
        let program = find_binary("nats-server");
        let dir = new_tempdir("pubsub-testkit-nats-");
        let fixed = self.port.is_some();
        let port = match self.port {
            Some(p) => {
                reserve_port(p);
                p
            }
            None => free_port(),
        };
        let mut server = NatsServer {
            config_path: dir.path().join("nats-server.conf"),
            log_path: dir.path().join("nats-server.log"),
            server_name: format!("testkit-nats-{}-{}", std::process::id(), next_serial()),
            program,
            settings: self,
            http_port: None,
            port,
            running: None,
            dir,
        };
        server.boot(!fixed)?;
        Ok(server)
    }
}

/// A running `nats-server` on `127.0.0.1`, killed when dropped.
///
/// The generated configuration sets `listen: 127.0.0.1:<port>`, a unique
/// `server_name`, and no monitoring port (except for [`NatsCluster`]
/// members), followed by whatever the builder added.
#[derive(Debug)]
pub struct NatsServer {
    dir: tempfile::TempDir,
    program: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    server_name: String,
    settings: NatsServerBuilder,
    /// Monitoring port (`http:`), set for cluster members only.
    http_port: Option<u16>,
    port: u16,
    running: Option<Running>,
}

impl NatsServer {
    /// A builder with no extra configuration, a free port and default limits.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// Starts a server with the default configuration.
    ///
    /// # Panics
    ///
    /// As [`NatsServerBuilder::start`].
    pub fn start() -> NatsServer {
        NatsServer::builder().start()
    }

    fn render_config(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "# generated by pubsub testkit");
        let _ = writeln!(c, "server_name: \"{}\"", self.server_name);
        let _ = writeln!(c, "listen: 127.0.0.1:{}", self.port);
        if let Some(h) = self.http_port {
            let _ = writeln!(c, "http: 127.0.0.1:{h}");
        }
        if let Some(mp) = self.settings.max_payload {
            let _ = writeln!(c, "max_payload: {mp}");
            const DEFAULT_MAX_PENDING: u64 = 64 * 1024 * 1024;
            if mp > DEFAULT_MAX_PENDING {
                let _ = writeln!(c, "max_pending: {}", mp.saturating_mul(2));
            }
        }
        if let Some((tls, verify)) = &self.settings.tls {
            let _ = writeln!(c, "tls {{");
            let _ = writeln!(c, "  cert_file: {}", quoted(&tls.server_cert));
            let _ = writeln!(c, "  key_file: {}", quoted(&tls.server_key));
            let _ = writeln!(c, "  ca_file: {}", quoted(&tls.ca_cert));
            let _ = writeln!(c, "  verify: {verify}");
            let _ = writeln!(c, "  timeout: 5");
            let _ = writeln!(c, "}}");
        }
        c.push_str(&self.settings.extra_config);
        c
    }

    /// Writes the config and launches, retrying on a new port (if allowed)
    /// when the process exits early.
    fn boot(&mut self, new_port_on_retry: bool) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            if attempt > 1 {
                if new_port_on_retry {
                    self.port = free_port();
                } else {
                    thread::sleep(Duration::from_millis(250));
                }
            }
            write_text(&self.config_path, &self.render_config())?;
            let args = [
                OsString::from("-c"),
                self.config_path.clone().into_os_string(),
            ];
            let spec = LaunchSpec {
                program: &self.program,
                args: &args,
                log_path: &self.log_path,
                port: self.port,
                probe: Probe::NatsInfo,
            };
            match launch(&spec, attempt) {
                Ok(r) => {
                    self.running = Some(r);
                    return Ok(());
                }
                Err(LaunchError::Exited(m)) => last = m,
                Err(e) => {
                    last = e.message().to_string();
                    break;
                }
            }
        }
        Err(start_failure(
            "nats-server",
            self.port,
            &self.log_path,
            &last,
        ))
    }

    /// The client port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT` (also for TLS servers: the client chooses TLS).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The monitoring port, set only for [`NatsCluster`] members.
    pub fn http_port(&self) -> Option<u16> {
        self.http_port
    }

    /// The unique `server_name` written into the configuration.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Kills the server (`SIGKILL`) and waits for it to exit. Does nothing if
    /// it is not running.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill();
        }
    }

    /// Stops the server gracefully (`SIGTERM`, then `SIGKILL` after
    /// [`TERMINATE_TIMEOUT`]). Clients see a clean close instead of a reset.
    pub fn terminate(&mut self) {
        if let Some(r) = self.running.take() {
            r.terminate(TERMINATE_TIMEOUT);
        }
    }

    /// Starts a stopped server again on the same port with the same
    /// configuration and waits until it accepts connections. Does nothing
    /// if it is running.
    ///
    /// # Panics
    ///
    /// If it does not come up.
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        self.running = None;
        if let Err(e) = self.boot(false) {
            panic!("{e}");
        }
    }

    /// [`NatsServer::stop`], then [`NatsServer::start_again`] on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        self.running.as_mut().is_some_and(Running::is_running)
    }

    /// Everything the server wrote to stdout and stderr so far (all starts).
    pub fn log_contents(&self) -> String {
        read_log(&self.log_path)
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Path of the generated configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temporary directory holding config and log (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A cluster of `nats-server`s with full-mesh routes on `127.0.0.1`.
#[derive(Debug)]
pub struct NatsCluster {
    /// The members, in start order. Each has monitoring enabled on
    /// [`NatsServer::http_port`]. Stopping or restarting one is allowed; it
    /// rejoins on restart (routes are retried every second).
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers in a cluster named `c`, each routing to all others,
    /// and waits (bounded by [`READY_TIMEOUT`]) until every member reports
    /// `num_routes == n - 1` on `/routez`.
    ///
    /// # Panics
    ///
    /// If `n` is 0, or the cluster does not form.
    pub fn start(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, NatsServer::builder())
    }

    /// Like [`NatsCluster::start`], with every member built from a clone of
    /// `template` (its `port` is ignored: members always get free ports).
    ///
    /// # Panics
    ///
    /// As [`NatsCluster::start`].
    pub fn start_with(n: usize, template: NatsServerBuilder) -> NatsCluster {
        assert!(n > 0, "NatsCluster::start: need at least one server");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match NatsCluster::try_start(n, &template) {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("NATS cluster of {n} did not start in {START_ATTEMPTS} attempts: {last}");
    }

    fn try_start(n: usize, template: &NatsServerBuilder) -> Result<NatsCluster, String> {
        let program = find_binary("nats-server");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut servers = Vec::with_capacity(n);
        for (i, &(client, route, http)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &(_, r, _))| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let mut settings = template.clone();
            settings.port = Some(client);
            settings.extra_config.push_str(&format!(
                "cluster {{\n  name: c\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
            let dir = new_tempdir("pubsub-testkit-nats-cluster-");
            let mut server = NatsServer {
                config_path: dir.path().join("nats-server.conf"),
                log_path: dir.path().join("nats-server.log"),
                server_name: format!("testkit-nats-{}-{}-n{i}", std::process::id(), next_serial()),
                program: program.clone(),
                settings,
                http_port: Some(http),
                port: client,
                running: None,
                dir,
            };
            // Ports are fixed: the others' routes point at them. A failure
            // retries the whole cluster on new ports.
            server.boot(false)?;
            servers.push(server);
        }
        let cluster = NatsCluster { servers };
        cluster.wait_routes(n - 1)?;
        Ok(cluster)
    }

    fn wait_routes(&self, want: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        // Require two consecutive good polls: duplicate routes are counted
        // briefly before nats-server closes them.
        let mut good_polls = 0;
        let last_counts = loop {
            let counts: Vec<Option<usize>> = self
                .servers
                .iter()
                .map(|s| s.http_port.and_then(routez_num_routes))
                .collect();
            if counts.iter().all(|c| *c == Some(want)) {
                good_polls += 1;
                if good_polls >= 2 {
                    return Ok(());
                }
            } else {
                good_polls = 0;
            }
            if Instant::now() >= deadline {
                break counts;
            }
            thread::sleep(Duration::from_millis(50));
        };
        Err(format!(
            "routes not up within {READY_TIMEOUT:?}: num_routes per server {last_counts:?}, want {want}; \
             log of the first server:\n{}",
            self.servers
                .first()
                .map(|s| log_tail(&s.log_path, LOG_TAIL_LINES))
                .unwrap_or_default()
        ))
    }

    /// Waits (bounded by [`READY_TIMEOUT`]) until every running member
    /// reports a route to every other running member, e.g. after restarting
    /// one. Returns whether that happened in time.
    pub fn wait_for_routes(&mut self) -> bool {
        let running: Vec<usize> = (0..self.servers.len())
            .filter(|&i| self.servers[i].is_running())
            .collect();
        let want = running.len().saturating_sub(1);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if running
                .iter()
                .all(|&i| self.servers[i].http_port.and_then(routez_num_routes) == Some(want))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Client URLs of all members, in order.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The members (same as the `servers` field).
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }
}

/// `GET /routez` on the monitoring port and the `num_routes` it reports.
fn routez_num_routes(http_port: u16) -> Option<usize> {
    let body = http_get(http_port, "/routez")?;
    json_number_field(&body, "num_routes").map(|n| n as usize)
}

/// A minimal HTTP/1.0 GET to `127.0.0.1:port`, returning the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = Vec::new();
    // HTTP/1.0: the server closes the connection after the body.
    stream
        .take(4 * 1024 * 1024)
        .read_to_end(&mut response)
        .ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || !head.lines().next()?.contains(" 200") {
        return None;
    }
    Some(body.to_string())
}

/// The unsigned integer value of `"field": N` in a JSON text.
fn json_number_field(json: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\"");
    let rest = &json[json.find(&key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// Builder for [`RedisServer`]; see [`RedisServer::builder`].
#[derive(Clone, Debug, Default)]
pub struct RedisServerBuilder {
    port: Option<u16>,
    tls: Option<TlsFiles>,
    require_client_cert: bool,
    unix_socket: bool,
    args: Vec<String>,
    acl_users: Vec<(String, String)>,
    cluster: bool,
}

impl RedisServerBuilder {
    /// Serves TLS only: `--tls-port P --port 0` with the server certificate,
    /// key and CA of `pki`, and `--tls-auth-clients optional` (see
    /// [`RedisServerBuilder::require_client_cert`]). The URL becomes
    /// `rediss://127.0.0.1:P`.
    pub fn tls(mut self, pki: &TestPki) -> Self {
        self.tls = Some(TlsFiles::from_pki(pki));
        self
    }

    /// With TLS, demand a client certificate signed by the test CA
    /// (`--tls-auth-clients yes`) instead of accepting clients without one.
    pub fn require_client_cert(mut self, require: bool) -> Self {
        self.require_client_cert = require;
        self
    }

    /// Also listen on a Unix socket in the server's temporary directory
    /// (`--unixsocket PATH --unixsocketperm 700`); see
    /// [`RedisServer::unix_socket_path`].
    pub fn unix_socket(mut self, enable: bool) -> Self {
        self.unix_socket = enable;
        self
    }

    /// Appends one extra command-line argument, e.g. `.arg("--requirepass")
    /// .arg("secret")`. Arguments follow the generated ones, so they can
    /// override them.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several extra command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an ACL user with all permissions
    /// (`user NAME on >PASS ~* &* +@all` in the generated `redis.conf`).
    /// The `default` user stays as it is (no password) unless changed with
    /// [`RedisServerBuilder::arg`] (e.g. `--requirepass`) or an
    /// `acl_user("default", ...)`.
    ///
    /// # Panics
    ///
    /// If `name` or `pass` contains whitespace or a quote (they are written
    /// into a configuration line as they are).
    pub fn acl_user(mut self, name: &str, pass: &str) -> Self {
        for (what, value) in [("name", name), ("password", pass)] {
            assert!(
                !value.is_empty()
                    && !value
                        .chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\'),
                "RedisServerBuilder::acl_user: {what} {value:?} must be non-empty without whitespace or quotes"
            );
        }
        self.acl_users.push((name.to_string(), pass.to_string()));
        self
    }

    /// Listens on this fixed port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts the server and waits until it answers `PING` (or, for a
    /// TLS-only server, accepts TCP connections).
    ///
    /// # Panics
    ///
    /// If `redis-server` is missing, or it does not come up (the message
    /// holds the end of its log).
    pub fn start(self) -> RedisServer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(self) -> Result<RedisServer, String> {
        let program = find_binary("redis-server");
        let dir = new_tempdir("pubsub-testkit-redis-");
        let fixed = self.port.is_some();
        let port = match self.port {
            Some(p) => {
                reserve_port(p);
                p
            }
            None => free_port(),
        };
        let cluster_port = if self.cluster {
            Some(free_port())
        } else {
            None
        };
        let mut server = RedisServer {
            conf_path: dir.path().join("redis.conf"),
            log_path: dir.path().join("redis-server.log"),
            socket_path: dir.path().join("redis.sock"),
            program,
            settings: self,
            port,
            cluster_port,
            running: None,
            dir,
        };
        server.boot(!fixed, true)?;
        Ok(server)
    }
}

/// A running `redis-server` on `127.0.0.1`, killed when dropped.
///
/// Always started with `--save "" --appendonly no --bind 127.0.0.1
/// --protected-mode no --dir <tempdir>`: nothing survives a restart.
#[derive(Debug)]
pub struct RedisServer {
    dir: tempfile::TempDir,
    program: PathBuf,
    conf_path: PathBuf,
    log_path: PathBuf,
    socket_path: PathBuf,
    settings: RedisServerBuilder,
    port: u16,
    cluster_port: Option<u16>,
    running: Option<Running>,
}

impl RedisServer {
    /// A builder for a plain server on a free port.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Starts a plain server with the default options.
    ///
    /// # Panics
    ///
    /// As [`RedisServerBuilder::start`].
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    fn render_conf(&self) -> String {
        let mut c = String::from("# generated by pubsub testkit\n");
        for (name, pass) in &self.settings.acl_users {
            let _ = writeln!(c, "user {name} on >{pass} ~* &* +@all");
        }
        c
    }

    fn args(&self) -> Vec<OsString> {
        let s = &self.settings;
        let mut a: Vec<OsString> = vec![self.conf_path.clone().into_os_string()];
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]);
        push(&["--protected-mode", "no"]);
        let port = self.port.to_string();
        match &s.tls {
            Some(_) => push(&["--port", "0", "--tls-port", &port]),
            None => push(&["--port", &port]),
        }
        if s.cluster {
            let cluster_port = self.cluster_port.unwrap_or(0).to_string();
            push(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
            push(&["--cluster-port", &cluster_port]);
        }
        a.push("--dir".into());
        a.push(self.dir.path().as_os_str().to_owned());
        if s.cluster {
            a.push("--cluster-config-file".into());
            a.push(self.dir.path().join("nodes.conf").into_os_string());
        }
        if let Some(tls) = &s.tls {
            a.push("--tls-cert-file".into());
            a.push(tls.server_cert.clone().into_os_string());
            a.push("--tls-key-file".into());
            a.push(tls.server_key.clone().into_os_string());
            a.push("--tls-ca-cert-file".into());
            a.push(tls.ca_cert.clone().into_os_string());
            a.push("--tls-auth-clients".into());
            a.push(
                if s.require_client_cert {
                    "yes"
                } else {
                    "optional"
                }
                .into(),
            );
        }
        if s.unix_socket {
            a.push("--unixsocket".into());
            a.push(self.socket_path.clone().into_os_string());
            a.push("--unixsocketperm".into());
            a.push("700".into());
        }
        a.extend(s.args.iter().map(OsString::from));
        a
    }

    /// Launches, retrying when the process exits early: on a new port if
    /// `new_port_on_retry`, else on the same one after a short pause.
    /// `fresh` removes cluster state left by a failed attempt.
    fn boot(&mut self, new_port_on_retry: bool, fresh: bool) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            if attempt > 1 {
                if new_port_on_retry {
                    self.port = free_port();
                    if self.cluster_port.is_some() {
                        self.cluster_port = Some(free_port());
                    }
                } else {
                    thread::sleep(Duration::from_millis(250));
                }
            }
            if fresh {
                let _ = fs::remove_file(self.dir.path().join("nodes.conf"));
            }
            write_text(&self.conf_path, &self.render_conf())?;
            let args = self.args();
            let probe = if self.settings.tls.is_some() {
                Probe::Accept
            } else {
                Probe::RedisPing
            };
            let spec = LaunchSpec {
                program: &self.program,
                args: &args,
                log_path: &self.log_path,
                port: self.port,
                probe,
            };
            match launch(&spec, attempt) {
                Ok(r) => {
                    self.running = Some(r);
                    return Ok(());
                }
                Err(LaunchError::Exited(m)) => last = m,
                Err(e) => {
                    last = e.message().to_string();
                    break;
                }
            }
        }
        Err(start_failure(
            "redis-server",
            self.port,
            &self.log_path,
            &last,
        ))
    }

    /// The port (the TLS port for a TLS server) on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:P`, or `rediss://127.0.0.1:P` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Whether the server serves TLS only.
    pub fn is_tls(&self) -> bool {
        self.settings.tls.is_some()
    }

    /// The Unix socket path, if [`RedisServerBuilder::unix_socket`] was enabled.
    pub fn unix_socket_path(&self) -> Option<&Path> {
        self.settings
            .unix_socket
            .then_some(self.socket_path.as_path())
    }

    /// `host:port` form, as `redis-cli --cluster` and cluster clients use it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (`SIGKILL`) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill();
        }
    }

    /// Stops the server gracefully (`SIGTERM`, then `SIGKILL` after
    /// [`TERMINATE_TIMEOUT`]).
    pub fn terminate(&mut self) {
        if let Some(r) = self.running.take() {
            r.terminate(TERMINATE_TIMEOUT);
        }
    }

    /// Starts a stopped server again on the same port with the same options.
    /// Does nothing if it is running.
    ///
    /// # Panics
    ///
    /// If it does not come up.
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        self.running = None;
        if let Err(e) = self.boot(false, false) {
            panic!("{e}");
        }
    }

    /// [`RedisServer::stop`], then [`RedisServer::start_again`] on the same
    /// port (data is lost: persistence is off).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        self.running.as_mut().is_some_and(Running::is_running)
    }

    /// Everything the server wrote to stdout and stderr so far (all starts).
    pub fn log_contents(&self) -> String {
        read_log(&self.log_path)
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The temporary directory holding config, socket and log (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` (with `--tls` and the
    /// test CA for a TLS server; add credentials yourself) and returns its
    /// stdout. Bounded to 30 s.
    ///
    /// # Panics
    ///
    /// If `redis-cli` is missing, cannot run, or exits with failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(find_binary("redis-cli"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.settings.tls {
            cmd.arg("--tls").arg("--cacert").arg(&tls.ca_cert);
        }
        cmd.args(args);
        let out = run_command(&mut cmd, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("run redis-cli {args:?}: {e}"));
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A Redis Cluster of master nodes (no replicas) on `127.0.0.1`.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, in start order. Started with `--cluster-enabled yes
    /// --cluster-node-timeout 2000` and a `--cluster-port` of their own.
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) cluster-enabled nodes, joins them with
    /// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`,
    /// and waits (bounded by [`READY_TIMEOUT`]) until every node reports
    /// `cluster_state:ok`.
    ///
    /// # Panics
    ///
    /// If `n < 3` (redis-cli refuses fewer masters), or the cluster does not
    /// form.
    pub fn start(n: usize) -> RedisCluster {
        assert!(
            n >= 3,
            "RedisCluster::start: Redis Cluster needs at least 3 masters, got {n}"
        );
        let servers: Vec<RedisServer> = (0..n)
            .map(|_| {
                let builder = RedisServerBuilder {
                    cluster: true,
                    ..RedisServerBuilder::default()
                };
                builder.start()
            })
            .collect();
        let cluster = RedisCluster { servers };
        let mut cmd = Command::new(find_binary("redis-cli"));
        cmd.args(["--cluster", "create"]);
        cmd.args(cluster.nodes());
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = run_command(&mut cmd, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Err(states) = cluster.wait_state_ok() {
            panic!(
                "Redis cluster did not reach cluster_state:ok within {READY_TIMEOUT:?}: {states:?}\n\
                 --- redis-cli output ---\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        cluster
    }

    /// Polls `CLUSTER INFO` on every node until all say `cluster_state:ok`.
    fn wait_state_ok(&self) -> Result<(), Vec<String>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let states: Vec<String> = self
                .servers
                .iter()
                .map(|s| cluster_state(s.port).unwrap_or_else(|| "unreachable".into()))
                .collect();
            if states.iter().all(|s| s == "ok") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(states);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded by [`READY_TIMEOUT`]) until every running node reports
    /// `cluster_state:ok`, e.g. after restarting a node. Returns whether that
    /// happened in time.
    pub fn wait_for_state_ok(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut all_ok = true;
            for s in &mut self.servers {
                if s.is_running() && cluster_state(s.port).as_deref() != Some("ok") {
                    all_ok = false;
                }
            }
            if all_ok {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT` of every node, in order.
    pub fn nodes(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::address).collect()
    }

    /// `redis://127.0.0.1:PORT` of every node, in order.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// The nodes (same as the `servers` field).
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }
}

/// The `cluster_state` value from `CLUSTER INFO`, over a raw RESP exchange.
fn cluster_state(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.write_all(b"CLUSTER INFO\r\n").ok()?;
    // Reply: "$LEN\r\n<text>\r\n"
    let header = read_line(&mut stream)?;
    let len: usize = header.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0u8; len.min(1024 * 1024)];
    stream.read_exact(&mut body).ok()?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix("cluster_state:"))
        .map(|s| s.trim().to_string())
}

// ---------------------------------------------------------------------------
// Mosquitto
// ---------------------------------------------------------------------------

/// Builder for [`Mosquitto`]; see [`Mosquitto::builder`].
#[derive(Clone, Debug, Default)]
pub struct MosquittoBuilder {
    extra_config: String,
    port: Option<u16>,
    users: Vec<(String, String)>,
    tls: Option<(TlsFiles, bool)>,
    persistence: bool,
}

impl MosquittoBuilder {
    /// Appends `extra` (mosquitto.conf syntax) to the generated file. It
    /// comes after the `listener` line and its TLS options, so
    /// listener-specific options apply to the test listener.
    pub fn config(mut self, extra: &str) -> Self {
        self.extra_config.push_str(extra);
        self.extra_config.push('\n');
        self
    }

    /// Listens on this fixed port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Requires a user name and password: creates a password file with
    /// `mosquitto_passwd -b` holding `user` / `pass` and sets
    /// `allow_anonymous false`. Call again to add more users.
    pub fn password_file(mut self, user: &str, pass: &str) -> Self {
        self.users.push((user.to_string(), pass.to_string()));
        self
    }

    /// Serves MQTT over TLS on the listener with the server certificate,
    /// key and CA of `pki`; `require_client_cert` sets
    /// `require_certificate true` (client certificate signed by the test CA).
    pub fn tls(mut self, pki: &TestPki, require_client_cert: bool) -> Self {
        self.tls = Some((TlsFiles::from_pki(pki), require_client_cert));
        self
    }

    /// Keeps sessions, subscriptions, queued and retained messages across
    /// [`Mosquitto::restart`] (`persistence true` with
    /// `persistence_location` in the temporary directory). Mosquitto writes
    /// its database on a graceful shutdown, so `restart` then uses
    /// `SIGTERM`; after [`Mosquitto::stop`] (`SIGKILL`) only what the
    /// once-per-second autosave wrote survives.
    pub fn persistence(mut self, enable: bool) -> Self {
        self.persistence = enable;
        self
    }

    /// Starts the broker and waits until it accepts TCP connections.
    ///
    /// # Panics
    ///
    /// If `mosquitto` (or `mosquitto_passwd`) is missing, or the broker does
    /// not come up (the message holds the end of its log).
    pub fn start(self) -> Mosquitto {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(self) -> Result<Mosquitto, String> {
        let program = find_binary("mosquitto");
        let dir = new_tempdir("pubsub-testkit-mosquitto-");
        let fixed = self.port.is_some();
        let port = match self.port {
            Some(p) => {
                reserve_port(p);
                p
            }
            None => free_port(),
        };
        let passwd_path = dir.path().join("passwd");
        for (i, (user, pass)) in self.users.iter().enumerate() {
            let mut cmd = Command::new(find_binary("mosquitto_passwd"));
            cmd.arg("-b");
            if i == 0 {
                cmd.arg("-c");
            }
            cmd.arg(&passwd_path).arg(user).arg(pass);
            let out = run_command(&mut cmd, COMMAND_TIMEOUT)
                .map_err(|e| format!("mosquitto_passwd for user {user:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "mosquitto_passwd for user {user:?} failed ({}): {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let persist_dir = dir.path().join("persist");
        if self.persistence {
            fs::create_dir_all(&persist_dir)
                .map_err(|e| format!("create {}: {e}", persist_dir.display()))?;
        }
        let mut broker = Mosquitto {
            config_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            passwd_path,
            persist_dir,
            program,
            settings: self,
            port,
            running: None,
            dir,
        };
        broker.boot(!fixed)?;
        Ok(broker)
    }
}

/// A running `mosquitto` broker on `127.0.0.1`, killed when dropped.
///
/// The generated `mosquitto.conf` has `user root` (so a broker started as
/// root keeps root instead of switching to the `mosquitto` user, which could
/// not read the temporary directory), `allow_anonymous true` (or `false` with
/// a password file), `persistence false` (unless enabled),
/// `max_queued_messages 100000`, `max_inflight_messages 0` (unlimited),
/// `log_dest stderr` with all log types, and `listener PORT 127.0.0.1`
/// followed by its TLS options and the builder's extra text.
#[derive(Debug)]
pub struct Mosquitto {
    dir: tempfile::TempDir,
    program: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    passwd_path: PathBuf,
    persist_dir: PathBuf,
    settings: MosquittoBuilder,
    port: u16,
    running: Option<Running>,
}

impl Mosquitto {
    /// A builder for an anonymous, non-persistent broker on a free port.
    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    /// Starts a broker with the default configuration.
    ///
    /// # Panics
    ///
    /// As [`MosquittoBuilder::start`].
    pub fn start() -> Mosquitto {
        Mosquitto::builder().start()
    }

    fn render_config(&self) -> String {
        let s = &self.settings;
        let mut c = String::from("# generated by pubsub testkit\n");
        c.push_str("user root\n");
        c.push_str("per_listener_settings false\n");
        if s.users.is_empty() {
            c.push_str("allow_anonymous true\n");
        } else {
            c.push_str("allow_anonymous false\n");
            let _ = writeln!(c, "password_file {}", self.passwd_path.display());
        }
        if s.persistence {
            c.push_str("persistence true\n");
            let _ = writeln!(c, "persistence_location {}/", self.persist_dir.display());
            c.push_str("autosave_interval 1\n");
        } else {
            c.push_str("persistence false\n");
        }
        c.push_str("max_queued_messages 100000\n");
        c.push_str("max_inflight_messages 0\n");
        c.push_str("log_dest stderr\n");
        c.push_str("log_type all\n");
        c.push_str("connection_messages true\n");
        let _ = writeln!(c, "listener {} 127.0.0.1", self.port);
        if let Some((tls, require)) = &s.tls {
            let _ = writeln!(c, "cafile {}", tls.ca_cert.display());
            let _ = writeln!(c, "certfile {}", tls.server_cert.display());
            let _ = writeln!(c, "keyfile {}", tls.server_key.display());
            let _ = writeln!(c, "require_certificate {require}");
        }
        c.push_str(&s.extra_config);
        c
    }

    fn boot(&mut self, new_port_on_retry: bool) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            if attempt > 1 {
                if new_port_on_retry {
                    self.port = free_port();
                } else {
                    thread::sleep(Duration::from_millis(250));
                }
            }
            write_text(&self.config_path, &self.render_config())?;
            let args = [
                OsString::from("-c"),
                self.config_path.clone().into_os_string(),
            ];
            let spec = LaunchSpec {
                program: &self.program,
                args: &args,
                log_path: &self.log_path,
                port: self.port,
                probe: Probe::Accept,
            };
            match launch(&spec, attempt) {
                Ok(r) => {
                    self.running = Some(r);
                    return Ok(());
                }
                Err(LaunchError::Exited(m)) => last = m,
                Err(e) => {
                    last = e.message().to_string();
                    break;
                }
            }
        }
        Err(start_failure("mosquitto", self.port, &self.log_path, &last))
    }

    /// The listener port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:P`, or `mqtts://127.0.0.1:P` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.settings.tls.is_some() {
            "mqtts"
        } else {
            "mqtt"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Whether the listener serves TLS.
    pub fn is_tls(&self) -> bool {
        self.settings.tls.is_some()
    }

    /// Kills the broker (`SIGKILL`) and waits for it to exit. In-memory
    /// state is lost, even with persistence (see
    /// [`MosquittoBuilder::persistence`]).
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill();
        }
    }

    /// Stops the broker gracefully (`SIGTERM`, then `SIGKILL` after
    /// [`TERMINATE_TIMEOUT`]); with persistence, mosquitto saves its
    /// database first.
    pub fn terminate(&mut self) {
        if let Some(r) = self.running.take() {
            r.terminate(TERMINATE_TIMEOUT);
        }
    }

    /// Starts a stopped broker again on the same port with the same
    /// configuration. Does nothing if it is running.
    ///
    /// # Panics
    ///
    /// If it does not come up.
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        self.running = None;
        if let Err(e) = self.boot(false) {
            panic!("{e}");
        }
    }

    /// Stops the broker and starts it again on the same port. Without
    /// persistence it is killed and all sessions are lost; with persistence
    /// it is stopped gracefully ([`Mosquitto::terminate`]) so sessions,
    /// subscriptions and queued messages survive.
    pub fn restart(&mut self) {
        if self.settings.persistence {
            self.terminate();
        } else {
            self.stop();
        }
        self.start_again();
    }

    /// Whether the broker process is alive.
    pub fn is_running(&mut self) -> bool {
        self.running.as_mut().is_some_and(Running::is_running)
    }

    /// Everything the broker logged so far (all starts).
    pub fn log_contents(&self) -> String {
        read_log(&self.log_path)
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Path of the generated `mosquitto.conf`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temporary directory holding config, password file, database and
    /// log (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
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
