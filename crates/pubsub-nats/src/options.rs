//! `NatsConfig` -> [`Options`]: the `async_nats::ConnectOptions`
//! (authentication, TLS, reconnect back-off, buffer sizes and the event hook
//! that feeds the counters), the server list and the address shown in messages.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{ConnectOptions, Event, ServerAddr};
use pubsub_core::config::redact_url;
use pubsub_core::tls::{self, TlsFiles};
use pubsub_core::{Config, Counters, Error, Result};

use crate::NatsConfig;

/// Everything needed to connect, checked once at connect. Connecting
/// consumes `client_options` and `servers`.
pub(crate) struct Options {
    /// The client library's options.
    pub client_options: ConnectOptions,
    /// The servers, in the configured order, credentials moved out of the URLs.
    pub servers: Vec<ServerAddr>,
    /// The server list as shown in errors and logs, passwords removed.
    pub shown: String,
    /// Whether connections use TLS (`tls = true` or a `tls://` / `wss://` URL).
    pub tls: bool,
}

impl Options {
    /// Build the client options from the common settings and the (checked)
    /// `[nats]` section. Checks every file and credential that can be
    /// checked before connecting (the `.creds` file is read here,
    /// asynchronously), so mistakes fail with the key at fault; `counters`
    /// get the reconnects and the client's drops.
    pub async fn new(
        config: &Config,
        nats: NatsConfig,
        counters: Arc<Counters>,
    ) -> Result<Options> {
        let servers = parse_servers(&nats)?;
        let mut client_options =
            authentication(ConnectOptions::new(), &nats, servers.url_credentials).await?;
        let tls = tls_wanted(&nats);
        if tls {
            client_options = client_options
                .require_tls(true)
                .tls_client_config(tls::client_config(&tls_files(&nats))?);
        } else {
            tls::warn_files_without_tls(
                &tls_files(&nats),
                "set nats.tls = true (MSIGHT_NATS_USE_TLS=true) or use tls:// server URLs",
            );
        }
        Ok(Options {
            client_options: connection(client_options, config, &nats, counters),
            servers: servers.addrs,
            shown: shown_address(&nats),
            tls,
        })
    }
}

/// The server list as shown in errors: `[nats://a:4222, nats://b:4222]`.
fn shown_address(nats: &NatsConfig) -> String {
    let list: Vec<String> = nats.servers.iter().map(|s| redact_url(s)).collect();
    format!("[{}]", list.join(", "))
}

/// The server list as the client gets it: credentials moved out of the
/// URLs (async-nats ignores them there, and logs the URLs at debug level).
struct Servers {
    addrs: Vec<ServerAddr>,
    /// `user[:password]` found in a URL: user and password, or a token when
    /// there is no password (NATS convention: `nats://token@host`).
    url_credentials: Option<(String, Option<String>)>,
}

/// `scheme://user:pass@host:port` -> (`scheme://host:port`, credentials).
fn split_userinfo(url: &str) -> (String, Option<(String, Option<String>)>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..end].rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let creds = match userinfo.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (userinfo.to_string(), None),
    };
    let clean = match scheme {
        Some(s) => format!("{s}://{host}{}", &rest[end..]),
        None => format!("{host}{}", &rest[end..]),
    };
    (clean, Some(creds))
}

/// The parsed server list, in the configured order.
fn parse_servers(nats: &NatsConfig) -> Result<Servers> {
    let mut url_credentials = None;
    let mut addrs = Vec::with_capacity(nats.servers.len());
    for (i, s) in nats.servers.iter().enumerate() {
        let key = format!("nats.servers[{i}]");
        let (clean, creds) = split_userinfo(s);
        if let Some(creds) = creds {
            if nats.user.is_some()
                || nats.token.is_some()
                || nats.nkeys_seed.is_some()
                || nats.user_credentials.is_some()
            {
                return Err(Error::config(
                    &key,
                    "has credentials in the URL and another authentication method is configured; choose one",
                ));
            }
            match &url_credentials {
                Some(existing) if *existing != creds => {
                    return Err(Error::config(
                        &key,
                        "has other URL credentials than an earlier server; use one set (or nats.user / nats.password)",
                    ))
                }
                _ => url_credentials = Some(creds),
            }
        }
        addrs.push(clean.parse::<ServerAddr>().map_err(|e| {
            Error::config(
                &key,
                format!("{:?} is not a NATS server URL ({e})", redact_url(s)),
            )
        })?);
    }
    Ok(Servers {
        addrs,
        url_credentials,
    })
}

/// Whether TLS is asked for, by `tls = true` or a `tls://` server URL.
fn tls_wanted(nats: &NatsConfig) -> bool {
    nats.tls
        || nats.servers.iter().any(|s| {
            s.to_ascii_lowercase().starts_with("tls://")
                || s.to_ascii_lowercase().starts_with("wss://")
        })
}

/// The authentication method of the section (or of the server URLs).
async fn authentication(
    mut opts: ConnectOptions,
    nats: &NatsConfig,
    url_credentials: Option<(String, Option<String>)>,
) -> Result<ConnectOptions> {
    if let Some((user, password)) = url_credentials {
        opts = match password {
            Some(p) => opts.user_and_password(user, p),
            None => opts.token(user),
        };
    } else if let Some(user) = &nats.user {
        let password = nats
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        opts = opts.user_and_password(user.clone(), password);
    } else if let Some(token) = &nats.token {
        opts = opts.token(token.expose().to_string());
    } else if let Some(seed) = &nats.nkeys_seed {
        let kp = nkeys::KeyPair::from_seed(seed.expose()).map_err(|_| {
            Error::config(
                "nats.nkeys_seed",
                "is not a valid NKey seed (expected the \"SU...\" seed of a user key)",
            )
        })?;
        match &nats.user_jwt {
            Some(jwt) => {
                let kp = Arc::new(kp);
                opts = opts.jwt(jwt.expose().to_string(), move |nonce| {
                    let kp = kp.clone();
                    async move { kp.sign(&nonce).map_err(async_nats::AuthError::new) }
                });
            }
            None => opts = opts.nkey(seed.expose().to_string()),
        }
    } else if let Some(path) = &nats.user_credentials {
        opts = credentials_file(opts, path).await?;
    }
    Ok(opts)
}

/// Authenticate with the `.creds` file at `path` (`nats.user_credentials`),
/// read here, asynchronously. A file that is missing or cannot be read is a
/// configuration error naming the key and the path, as is one that is not
/// a `.creds` file.
async fn credentials_file(opts: ConnectOptions, path: &Path) -> Result<ConnectOptions> {
    const KEY: &str = "nats.user_credentials";
    let not_creds = || {
        // The parse error could quote the file; show only the path.
        Error::config(
            KEY,
            format!(
                "{} is not a valid .creds file (expected a user JWT and an NKey seed block)",
                path.display()
            ),
        )
    };
    // tokio's `fs` feature: async-nats turns it on (it reads .creds files the same way).
    let contents = match tokio::fs::read_to_string(path).await {
        Ok(contents) => contents,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::config(
                KEY,
                format!("file {} does not exist", path.display()),
            ))
        }
        // Not UTF-8: not a .creds file.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(not_creds()),
        Err(e) => {
            return Err(Error::config(
                KEY,
                format!("file {} cannot be read: {e}", path.display()),
            ))
        }
    };
    opts.credentials(&contents).map_err(|_| not_creds())
}

/// The TLS files and switches of the section, for core's TLS setup.
fn tls_files(nats: &NatsConfig) -> TlsFiles<'_> {
    TlsFiles {
        section: "nats",
        ca_key: "tls_ca_cert",
        cert_key: "tls_cert",
        key_key: "tls_key",
        ca: nats.tls_ca_cert.as_deref(),
        cert: nats.tls_cert.as_deref(),
        key: nats.tls_key.as_deref(),
        verify: nats.tls_verify,
    }
}

/// Timeouts, reconnecting, buffer sizes, the client name and the event hook.
fn connection(
    mut opts: ConnectOptions,
    config: &Config,
    nats: &NatsConfig,
    counters: Arc<Counters>,
) -> ConnectOptions {
    let max_delay = nats.reconnect_delay_max;
    opts = opts
        .connection_timeout(config.connect_timeout)
        .ping_interval(nats.ping_interval)
        .subscription_capacity(nats.subscription_capacity)
        .max_reconnects(nats.max_reconnects)
        .retain_servers_order()
        // Every subject we publish to has passed our own check once (the
        // core topic rules reject all whitespace, a superset of what
        // async-nats looks for, then `check_subject`): async-nats need not
        // scan it again on every publish. Subscriptions are still checked.
        .skip_subject_validation(true)
        .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
        .event_callback(event_hook(counters));
    if let Some(name) = &nats.name {
        opts = opts.name(name);
    }
    opts
}

/// No wait for the first attempt, then 50 ms doubling up to `max`.
pub(crate) fn backoff(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = (attempts - 2).min(16) as u32;
    Duration::from_millis(50u64.saturating_mul(1 << exp)).min(max)
}

/// Counts reconnects and messages the client dropped for a slow consumer;
/// logs each burst of drops once (at most every 10 s), not per message.
fn event_hook(
    counters: Arc<Counters>,
) -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let disconnected = Arc::new(AtomicBool::new(false));
    let last_drop_log = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    move |event| {
        match event {
            Event::Connected => {
                if disconnected.swap(false, Ordering::AcqRel) {
                    counters.add_reconnect();
                    tracing::info!("nats: reconnected");
                }
            }
            Event::Disconnected => {
                disconnected.store(true, Ordering::Release);
                tracing::warn!("nats: disconnected; reconnecting in the background");
            }
            Event::SlowConsumer(sid) => {
                counters.add_dropped(1);
                let now = start.elapsed().as_secs() + 1;
                let last = last_drop_log.load(Ordering::Relaxed);
                if now >= last + 10
                    && last_drop_log
                        .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        sid,
                        "nats: slow consumer, the client dropped messages (counted in stats().dropped)"
                    );
                }
            }
            Event::ServerError(e) => tracing::warn!(error = %e, "nats: server error"),
            Event::ClientError(e) => tracing::warn!(error = %e, "nats: client error"),
            Event::LameDuckMode => tracing::info!("nats: server entered lame duck mode"),
            Event::Draining | Event::Closed => {}
        }
        std::future::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let max = Duration::from_secs(2);
        assert_eq!(backoff(1, max), Duration::ZERO);
        assert_eq!(backoff(2, max), Duration::from_millis(50));
        assert_eq!(backoff(3, max), Duration::from_millis(100));
        assert_eq!(backoff(10, max), max);
        assert_eq!(backoff(usize::MAX, max), max);
    }

    #[test]
    fn url_credentials_move_out_of_the_url() {
        assert_eq!(split_userinfo("nats://h:1"), ("nats://h:1".into(), None));
        assert_eq!(
            split_userinfo("nats://u:p@h:1/x"),
            ("nats://h:1/x".into(), Some(("u".into(), Some("p".into()))))
        );
        assert_eq!(
            split_userinfo("tok@h:1"),
            ("h:1".into(), Some(("tok".into(), None)))
        );
        let mut n = NatsConfig {
            servers: vec!["nats://u:p@a:1".into(), "nats://b:2".into()],
            ..Default::default()
        };
        let s = parse_servers(&n).unwrap();
        assert_eq!(s.addrs.len(), 2);
        assert!(
            !s.addrs[0].as_url_str().contains('@'),
            "{}",
            s.addrs[0].as_url_str()
        );
        assert_eq!(s.url_credentials, Some(("u".into(), Some("p".into()))));
        n.servers.push("nats://x:y@c:3".into());
        assert!(parse_servers(&n)
            .err()
            .expect("an error")
            .to_string()
            .contains("nats.servers[2]"));
        n.servers.pop();
        n.token = Some(pubsub_core::Secret::new("t"));
        assert!(parse_servers(&n)
            .err()
            .expect("an error")
            .to_string()
            .contains("another authentication method"));
    }

    #[test]
    fn tls_scheme_turns_tls_on() {
        let mut n = NatsConfig::default();
        assert!(!tls_wanted(&n));
        n.servers = vec!["nats://a:1".into(), "TLS://b:2".into()];
        assert!(tls_wanted(&n));
    }
}
