//! The one managed-process type every broker launcher is: [`BrokerProcess`]
//! starts, stops (`SIGKILL`), terminates (`SIGTERM`), starts again and
//! restarts a broker, whatever its kind; a [`Launch`] says what differs.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    find_binary, free_port, loopback, read_log, reserve_port, LOG_TAIL_LINES, POLL_INTERVAL,
    PROBE_TIMEOUT, READY_TIMEOUT, START_ATTEMPTS, TERMINATE_TIMEOUT,
};

/// What differs between brokers: the program, its files and arguments for
/// a start on a port, and how to tell that it is ready. The broker kinds of
/// this crate implement it ([`NatsServerBuilder`](super::NatsServerBuilder),
/// [`RedisServerBuilder`](super::RedisServerBuilder),
/// [`MosquittoBuilder`](super::MosquittoBuilder)); a backend crate of its
/// own can implement it for its broker and get [`BrokerProcess`] with it.
pub trait Launch: fmt::Debug + Send {
    /// The broker's executable, found by [`find_binary`].
    const PROGRAM: &'static str;

    /// How readiness is checked once the port accepts connections.
    fn probe(&self) -> Probe;

    /// Write the broker's files into `dir` (the process's own temporary
    /// directory) for a start on `port`, and return its arguments.
    fn prepare(&mut self, dir: &Path, port: u16, start: Start) -> Result<Vec<OsString>, String>;

    /// Before a retry on a new port: pick new ports for anything else the
    /// broker listens on.
    fn new_ports(&mut self) {}

    /// Whether [`BrokerProcess::restart`] stops the broker gracefully
    /// (`SIGTERM`, e.g. so that it saves its state) instead of killing it.
    fn graceful_restart(&self) -> bool {
        false
    }
}

/// Which start [`Launch::prepare`] prepares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The first start: nothing of an earlier run should be left over.
    First,
    /// A start after a stop, on the same port: state the broker kept stays.
    Again,
}

/// How a start checks that the broker is ready, once its port accepts a
/// TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Accepting a connection is enough.
    Accept,
    /// The server must send a line starting with `INFO ` (nats-server).
    NatsInfo,
    /// `PING` must be answered with `+PONG`, or with an error other than
    /// `-LOADING` (e.g. `-NOAUTH` on a password-protected server).
    RedisPing,
}

/// A broker process on `127.0.0.1`, killed (`SIGKILL`) and reaped when
/// dropped. Its configuration, data and log live in a temporary directory
/// it owns. [`NatsServer`](super::NatsServer), [`RedisServer`](super::RedisServer)
/// and [`Mosquitto`](super::Mosquitto) are this type with their [`Launch`].
#[derive(Debug)]
pub struct BrokerProcess<L: Launch> {
    dir: tempfile::TempDir,
    program: PathBuf,
    log_path: PathBuf,
    port: u16,
    running: Option<Running>,
    launch: L,
}

impl<L: Launch> BrokerProcess<L> {
    /// Start the broker `launch` describes on `port` (a free one if `None`)
    /// and wait until it is ready. When the process exits during start-up
    /// (typically: the free port was taken meanwhile), it is started again,
    /// on a new port unless the port was given, up to [`START_ATTEMPTS`] times.
    ///
    /// # Panics
    ///
    /// If the program is missing, or the broker does not come up (the
    /// message holds the end of its log).
    pub fn start_with(launch: L, port: Option<u16>) -> BrokerProcess<L> {
        Self::try_start_with(launch, port).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn try_start_with(launch: L, port: Option<u16>) -> Result<BrokerProcess<L>, String> {
        let program = find_binary(L::PROGRAM);
        let dir = tempfile::Builder::new()
            .prefix(&format!("pubsub-testkit-{}-", L::PROGRAM))
            .tempdir()
            .map_err(|e| format!("create a temporary directory for a test broker: {e}"))?;
        let fixed = port.is_some();
        let port = match port {
            Some(p) => {
                reserve_port(p);
                p
            }
            None => free_port(),
        };
        let mut broker = BrokerProcess {
            log_path: dir.path().join(format!("{}.log", L::PROGRAM)),
            dir,
            program,
            port,
            running: None,
            launch,
        };
        broker.boot(!fixed, Start::First)?;
        Ok(broker)
    }

    /// Launch, retrying when the process exits early: on a new port if
    /// `new_port_on_retry`, else on the same one after a short pause.
    fn boot(&mut self, new_port_on_retry: bool, start: Start) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            if attempt > 1 {
                if new_port_on_retry {
                    self.port = free_port();
                    self.launch.new_ports();
                } else {
                    thread::sleep(Duration::from_millis(250));
                }
            }
            let args = self.launch.prepare(self.dir.path(), self.port, start)?;
            match launch(self, &args, attempt) {
                Ok(r) => {
                    self.running = Some(r);
                    return Ok(());
                }
                Err(LaunchError::Exited(m)) => last = m,
                Err(LaunchError::Fatal(m)) => {
                    last = m;
                    break;
                }
            }
        }
        Err(format!(
            "{} failed to start on 127.0.0.1:{}: {last}\n--- last {LOG_TAIL_LINES} lines of {} ---\n{}\n---",
            L::PROGRAM,
            self.port,
            self.log_path.display(),
            log_tail(&self.log_path, LOG_TAIL_LINES)
        ))
    }

    /// The port on `127.0.0.1` the broker serves clients on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker (`SIGKILL`) and waits for it to exit. Does nothing
    /// if it is not running. What it held in memory is lost.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill();
        }
    }

    /// Stops the broker gracefully (`SIGTERM`, then `SIGKILL` after
    /// [`TERMINATE_TIMEOUT`]). Clients see a clean close instead of a reset;
    /// a broker that saves its state does so.
    pub fn terminate(&mut self) {
        if let Some(r) = self.running.take() {
            r.terminate(TERMINATE_TIMEOUT);
        }
    }

    /// Starts a stopped broker again on the same port with the same
    /// configuration and waits until it is ready. Does nothing if it is
    /// running.
    ///
    /// # Panics
    ///
    /// If it does not come up.
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        self.running = None;
        if let Err(e) = self.boot(false, Start::Again) {
            panic!("{e}");
        }
    }

    /// Stops the broker and starts it again on the same port: killed, or
    /// terminated gracefully when its [`Launch::graceful_restart`] says so
    /// (a persistent Mosquitto).
    pub fn restart(&mut self) {
        if self.launch.graceful_restart() {
            self.terminate();
        } else {
            self.stop();
        }
        self.start_again();
    }

    /// The process id of the running broker, to signal it (e.g. `SIGSTOP`
    /// to make it hang without closing its connections).
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// Whether the broker process is alive.
    pub fn is_running(&mut self) -> bool {
        self.running.as_mut().is_some_and(Running::is_running)
    }

    /// Everything the broker wrote to stdout and stderr so far (all starts).
    pub fn log_contents(&self) -> String {
        read_log(&self.log_path)
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The temporary directory holding the broker's files (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The launch settings.
    pub fn settings(&self) -> &L {
        &self.launch
    }
}

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

/// Why a start attempt failed.
#[derive(Debug)]
enum LaunchError {
    /// The process exited before it was ready (often: port taken). Retried.
    Exited(String),
    /// Anything else (spawn failed, not ready in time). Not retried.
    Fatal(String),
}

/// Spawns the process with stdout and stderr appended to the log file and
/// waits (bounded by [`READY_TIMEOUT`]) until it is ready.
fn launch<L: Launch>(
    b: &BrokerProcess<L>,
    args: &[OsString],
    attempt: usize,
) -> Result<Running, LaunchError> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&b.log_path)
        .map_err(|e| LaunchError::Fatal(format!("open log file {}: {e}", b.log_path.display())))?;
    let _ = writeln!(
        log,
        "=== testkit: start attempt {attempt} on 127.0.0.1:{}: {} {args:?} ===",
        b.port,
        b.program.display(),
    );
    let log_err = log
        .try_clone()
        .map_err(|e| LaunchError::Fatal(format!("clone log file handle: {e}")))?;
    let child = Command::new(&b.program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|e| LaunchError::Fatal(format!("spawn {}: {e}", b.program.display())))?;
    let mut running = Running { child };
    wait_ready(&mut running, b.port, b.launch.probe())?;
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
pub(crate) fn read_line(stream: &mut TcpStream) -> Option<String> {
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
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
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

/// Write `text` to `path`; the error names the file.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
