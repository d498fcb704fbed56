//! `mosquitto`: [`Mosquitto`].

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{write_text, BrokerProcess, Launch, Probe, Start};
use super::{find_binary, run_command, TlsFiles, COMMAND_TIMEOUT};
use crate::certs::TestPki;

/// Builder for [`Mosquitto`]; see [`Mosquitto::builder`]. It is also the
/// broker's [`Launch`]: the generated `mosquitto.conf` has `user root` (so a
/// broker started as root keeps root instead of switching to the
/// `mosquitto` user, which could not read the temporary directory),
/// `allow_anonymous true` (or `false` with a password file), `persistence
/// false` (unless enabled), `max_queued_messages 100000`,
/// `max_inflight_messages 0` (unlimited), `log_dest stderr` with all log
/// types, and `listener PORT 127.0.0.1` followed by its TLS options and the
/// builder's extra text.
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
    /// [`BrokerProcess::restart`] (`persistence true` with
    /// `persistence_location` in the temporary directory). Mosquitto writes
    /// its database on a graceful shutdown, so `restart` then uses
    /// `SIGTERM`; after [`BrokerProcess::stop`] (`SIGKILL`) only what the
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
        let port = self.port;
        BrokerProcess::start_with(self, port)
    }
}

impl Launch for MosquittoBuilder {
    const PROGRAM: &'static str = "mosquitto";

    fn probe(&self) -> Probe {
        Probe::Accept
    }

    fn prepare(&mut self, dir: &Path, port: u16, start: Start) -> Result<Vec<OsString>, String> {
        if start == Start::First {
            self.write_users_and_store(dir)?;
        }
        let path = dir.join("mosquitto.conf");
        write_text(&path, &self.render_config(dir, port))?;
        Ok(vec!["-c".into(), path.into_os_string()])
    }

    /// With persistence, a graceful stop lets mosquitto save its database,
    /// so sessions, subscriptions and queued messages survive a restart.
    fn graceful_restart(&self) -> bool {
        self.persistence
    }
}

impl MosquittoBuilder {
    /// The password file (`mosquitto_passwd -b`) and the persistence directory.
    fn write_users_and_store(&self, dir: &Path) -> Result<(), String> {
        let passwd_path = dir.join("passwd");
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
        let persist_dir = dir.join("persist");
        if self.persistence {
            fs::create_dir_all(&persist_dir)
                .map_err(|e| format!("create {}: {e}", persist_dir.display()))?;
        }
        Ok(())
    }

    fn render_config(&self, dir: &Path, port: u16) -> String {
        let s = self;
        let mut c = String::from("# generated by pubsub testkit\n");
        c.push_str("user root\n");
        c.push_str("per_listener_settings false\n");
        if s.users.is_empty() {
            c.push_str("allow_anonymous true\n");
        } else {
            c.push_str("allow_anonymous false\n");
            let _ = writeln!(c, "password_file {}", dir.join("passwd").display());
        }
        if s.persistence {
            c.push_str("persistence true\n");
            let _ = writeln!(c, "persistence_location {}/", dir.join("persist").display());
            c.push_str("autosave_interval 1\n");
        } else {
            c.push_str("persistence false\n");
        }
        c.push_str("max_queued_messages 100000\n");
        c.push_str("max_inflight_messages 0\n");
        c.push_str("log_dest stderr\n");
        c.push_str("log_type all\n");
        c.push_str("connection_messages true\n");
        let _ = writeln!(c, "listener {port} 127.0.0.1");
        if let Some((tls, require)) = &s.tls {
            let _ = writeln!(c, "cafile {}", tls.ca_cert.display());
            let _ = writeln!(c, "certfile {}", tls.server_cert.display());
            let _ = writeln!(c, "keyfile {}", tls.server_key.display());
            let _ = writeln!(c, "require_certificate {require}");
        }
        c.push_str(&s.extra_config);
        c
    }
}

/// A running `mosquitto` broker on `127.0.0.1`, killed when dropped; see
/// [`BrokerProcess`] for stopping and restarting it. Without persistence a
/// restart kills it and all sessions are lost; with persistence it is
/// stopped gracefully, so they survive.
pub type Mosquitto = BrokerProcess<MosquittoBuilder>;

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

    /// `mqtt://127.0.0.1:P`, or `mqtts://127.0.0.1:P` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// Whether the listener serves TLS.
    pub fn is_tls(&self) -> bool {
        self.settings().tls.is_some()
    }

    /// Path of the generated `mosquitto.conf`.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("mosquitto.conf")
    }
}
