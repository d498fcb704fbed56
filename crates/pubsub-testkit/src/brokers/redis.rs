//! `redis-server`: [`RedisServer`] and [`RedisCluster`].

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::process::{read_line, write_text, BrokerProcess, Launch, Probe, Start};
use super::{
    find_binary, free_port, loopback, run_command, TlsFiles, COMMAND_TIMEOUT, PROBE_TIMEOUT,
    READY_TIMEOUT,
};
use crate::certs::TestPki;

/// Builder for [`RedisServer`]; see [`RedisServer::builder`]. It is also the
/// server's [`Launch`]: always started with `--save "" --appendonly no
/// --bind 127.0.0.1 --protected-mode no --dir <tempdir>` (nothing survives a
/// restart unless the extra arguments say otherwise), then the builder's.
#[derive(Clone, Debug, Default)]
pub struct RedisServerBuilder {
    port: Option<u16>,
    tls: Option<TlsFiles>,
    require_client_cert: bool,
    unix_socket: bool,
    args: Vec<String>,
    acl_users: Vec<(String, String)>,
    cluster: bool,
    cluster_port: Option<u16>,
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
    pub fn start(mut self) -> RedisServer {
        if self.cluster {
            self.cluster_port = Some(free_port());
        }
        let port = self.port;
        BrokerProcess::start_with(self, port)
    }
}

impl Launch for RedisServerBuilder {
    const PROGRAM: &'static str = "redis-server";

    fn probe(&self) -> Probe {
        if self.tls.is_some() {
            Probe::Accept
        } else {
            Probe::RedisPing
        }
    }

    fn prepare(&mut self, dir: &Path, port: u16, start: Start) -> Result<Vec<OsString>, String> {
        if start == Start::First {
            // Cluster state left by a failed attempt.
            let _ = fs::remove_file(dir.join("nodes.conf"));
        }
        write_text(&dir.join("redis.conf"), &self.render_conf())?;
        Ok(self.command_line(dir, port))
    }

    fn new_ports(&mut self) {
        if self.cluster_port.is_some() {
            self.cluster_port = Some(free_port());
        }
    }
}

impl RedisServerBuilder {
    fn render_conf(&self) -> String {
        let mut c = String::from("# generated by pubsub testkit\n");
        for (name, pass) in &self.acl_users {
            let _ = writeln!(c, "user {name} on >{pass} ~* &* +@all");
        }
        c
    }

    fn command_line(&self, dir: &Path, port: u16) -> Vec<OsString> {
        let s = self;
        let mut a: Vec<OsString> = vec![dir.join("redis.conf").into_os_string()];
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]);
        push(&["--protected-mode", "no"]);
        let port = port.to_string();
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
        a.push(dir.as_os_str().to_owned());
        if s.cluster {
            a.push("--cluster-config-file".into());
            a.push(dir.join("nodes.conf").into_os_string());
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
            a.push(dir.join("redis.sock").into_os_string());
            a.push("--unixsocketperm".into());
            a.push("700".into());
        }
        a.extend(s.args.iter().map(OsString::from));
        a
    }
}

/// A running `redis-server` on `127.0.0.1`, killed when dropped; see
/// [`BrokerProcess`] for stopping and restarting it (data is lost on a
/// restart: persistence is off).
pub type RedisServer = BrokerProcess<RedisServerBuilder>;

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

    /// `redis://127.0.0.1:P`, or `rediss://127.0.0.1:P` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// Whether the server serves TLS only.
    pub fn is_tls(&self) -> bool {
        self.settings().tls.is_some()
    }

    /// The Unix socket path, if [`RedisServerBuilder::unix_socket`] was enabled.
    pub fn unix_socket_path(&self) -> Option<PathBuf> {
        self.settings()
            .unix_socket
            .then(|| self.dir().join("redis.sock"))
    }

    /// `host:port` form, as `redis-cli --cluster` and cluster clients use it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port())
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
        cmd.args(["-h", "127.0.0.1", "-p", &self.port().to_string()]);
        if let Some(tls) = &self.settings().tls {
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
                .map(|s| cluster_state(s.port()).unwrap_or_else(|| "unreachable".into()))
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
                if s.is_running() && cluster_state(s.port()).as_deref() != Some("ok") {
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
