//! `NatsConfig` -> `async_nats::ConnectOptions`: authentication, TLS,
//! reconnect back-off, buffer sizes and the event hook that feeds the counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{ConnectOptions, Event, ServerAddr};
use pubsub_core::config::NatsConfig;
use pubsub_core::tls::{self, TlsFiles};
use pubsub_core::{Config, Counters, Error, ErrorKind, Result};

/// The parsed server list, in the configured order.
pub(crate) fn server_addrs(nats: &NatsConfig) -> Result<Vec<ServerAddr>> {
    nats.servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<ServerAddr>().map_err(|e| {
                Error::config(
                    &format!("nats.servers[{i}]"),
                    format!(
                        "{:?} is not a NATS server URL ({e})",
                        pubsub_core::config::redact_url(s)
                    ),
                )
            })
        })
        .collect()
}

/// Whether TLS is asked for, by `tls = true` or a `tls://` server URL.
pub(crate) fn tls_wanted(nats: &NatsConfig) -> bool {
    nats.tls
        || nats.servers.iter().any(|s| {
            s.to_ascii_lowercase().starts_with("tls://")
                || s.to_ascii_lowercase().starts_with("wss://")
        })
}

/// Build the client options. Checks every file and credential that can be
/// checked before connecting, so mistakes fail with the key at fault.
pub(crate) async fn connect_options(
    config: &Config,
    counters: Arc<Counters>,
) -> Result<ConnectOptions> {
    let nats = &config.nats;
    let mut opts = ConnectOptions::new();

    if let Some(user) = &nats.user {
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
        if !path.is_file() {
            return Err(Error::config(
                "nats.user_credentials",
                format!("{} does not exist or is not a file", path.display()),
            ));
        }
        // The parse error could quote the file; show only the path.
        opts = opts.credentials_file(path).await.map_err(|_| {
            Error::config(
                "nats.user_credentials",
                format!(
                    "{} is not a valid .creds file (expected a user JWT and an NKey seed block)",
                    path.display()
                ),
            )
        })?;
    }

    if tls_wanted(nats) {
        let files = TlsFiles {
            section: "nats",
            ca_key: "tls_ca_cert",
            cert_key: "tls_cert",
            key_key: "tls_key",
            ca: nats.tls_ca_cert.as_deref(),
            cert: nats.tls_cert.as_deref(),
            key: nats.tls_key.as_deref(),
            verify: nats.tls_verify,
        };
        opts = opts
            .require_tls(true)
            .tls_client_config(tls::client_config(&files)?);
    }

    let max_delay = nats.reconnect_delay_max;
    opts = opts
        .connection_timeout(config.connect_timeout)
        .ping_interval(nats.ping_interval)
        .subscription_capacity(nats.subscription_capacity)
        .max_reconnects(nats.max_reconnects)
        .retain_servers_order()
        .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
        .event_callback(event_hook(counters));
    if let Some(name) = &nats.name {
        opts = opts.name(name);
    }
    Ok(opts)
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

/// Fail early on a server list the client cannot parse.
pub(crate) fn check(config: &Config) -> Result<Vec<ServerAddr>> {
    config.nats.validate()?;
    let addrs = server_addrs(&config.nats)?;
    if addrs.is_empty() {
        return Err(Error::new(ErrorKind::InvalidConfig, "nats.servers: empty"));
    }
    Ok(addrs)
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
    fn tls_scheme_turns_tls_on() {
        let mut n = NatsConfig::default();
        assert!(!tls_wanted(&n));
        n.servers = vec!["nats://a:1".into(), "TLS://b:2".into()];
        assert!(tls_wanted(&n));
    }
}
