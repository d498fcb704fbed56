//! Connections for commands: standalone (a reconnecting manager) or
//! cluster, opened so that the first failure has the right kind, and what
//! the server says about itself.

use std::time::Duration;

use pubsub_core::{BrokerInfo, Error, ErrorKind, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, RedisResult, Value};

use crate::error::{kind_of, redis_error};
use crate::options::{Options, PushCallback, COMMAND_TIMEOUT};

/// A connection for commands: standalone (reconnecting manager) or cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    pub(super) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.subscribe(channel).await,
        }
    }

    pub(super) async fn unsubscribe(
        &mut self,
        channels: impl redis::ToRedisArgs + Send,
    ) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(channels).await,
            Conn::Cluster(c) => c.unsubscribe(channels).await,
        }
    }
}

/// Open a connection: first one plain attempt, so that a wrong password,
/// TLS trouble or a dead port fail at once with the right kind (the manager
/// would retry them), then the reconnecting manager / cluster connection.
pub(crate) async fn open(
    opts: &Options,
    push: Option<PushCallback>,
    response_timeout: Duration,
) -> Result<Conn> {
    if opts.redis.cluster {
        let client = opts.cluster_client(push, response_timeout)?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| redis_error(&opts.shown, "cannot connect to the cluster", e))?;
        return Ok(Conn::Cluster(conn));
    }
    let client = opts.client()?;
    let probe_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(opts.connect_timeout))
        .set_response_timeout(Some(opts.connect_timeout));
    let probe = async {
        client
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await
            .map_err(|e| first_connect_error(opts, e))
    };
    let probe = if opts.tls {
        tls_probe(opts, probe).await?
    } else {
        probe.await?
    };
    drop(probe);
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.connect_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
        // Keep trying while the server is away: subscriptions come back when it does.
        .set_number_of_retries(usize::MAX / 2);
    if let Some(push) = push {
        config = config
            .set_push_sender(move |info| push(info))
            .set_automatic_resubscription();
    }
    let manager = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| redis_error(&opts.shown, "cannot connect", e))?;
    Ok(Conn::Single(manager))
}

/// How long a TLS handshake may take before we look whether the server
/// speaks plain Redis instead.
const SNIFF_AFTER: Duration = Duration::from_millis(300);

/// The first TLS connect. A plain Redis server does not answer a TLS
/// client hello (it waits for the end of an inline command that never
/// comes), so the handshake would hang for all of `connect_timeout`. NATS
/// and MQTT fail at once there; to match them, a handshake still going
/// after [`SNIFF_AFTER`] is checked by a second, plain connection sending
/// `PING`: a Redis answer means the port is not TLS, which is a TLS error
/// at once. A TLS server is left alone unless its handshake is that slow.
async fn tls_probe<T>(
    opts: &Options,
    probe: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let mut probe = std::pin::pin!(probe);
    let sniff = async {
        tokio::time::sleep(SNIFF_AFTER).await;
        speaks_plain_redis(&opts.redis.host, opts.redis.port).await
    };
    tokio::select! {
        r = &mut probe => r,
        plain = sniff => {
            if plain {
                return Err(Error::new(
                    ErrorKind::Tls,
                    format!(
                        "redis {}: TLS handshake failed: the server answers in plain text (the Redis protocol), so this port does not serve TLS; \
                         set redis.tls = false (MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS=false) or use the server's TLS port",
                        opts.shown
                    ),
                ));
            }
            probe.await
        }
    }
}

/// Whether `host:port` answers a plain `PING` as Redis does (`+PONG`, or
/// an error such as `-NOAUTH`), within a second.
async fn speaks_plain_redis(host: &str, port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        Some(n > 1 && matches!(buf[0], b'+' | b'-') && buf[..n].ends_with(b"\r\n"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), talk).await,
        Ok(Some(true))
    )
}

/// The error of the first connect. A plain client at a TLS-only port is
/// hung up on without a word (OpenSSL sends no alert to what does not look
/// like TLS): say so, instead of a bare "connection closed".
fn first_connect_error(opts: &Options, e: redis::RedisError) -> Error {
    let hung_up = !opts.tls
        && opts.redis.unix_socket_path.is_none()
        && !e.is_connection_refusal()
        && !e.is_timeout()
        // A server that answered with an error code speaks Redis.
        && e.code().is_none()
        && matches!(kind_of(&e), ErrorKind::Connect | ErrorKind::Backend);
    if !hung_up {
        return redis_error(&opts.shown, "cannot connect", e);
    }
    Error::new(
        ErrorKind::Connect,
        format!(
            "redis {}: cannot connect: the server closed the connection or did not answer in the Redis protocol; \
             if it serves TLS only, set redis.tls = true (MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS)",
            opts.shown
        ),
    )
    .with_source(e)
}

/// `INFO server`: version and mode (standalone / cluster). Best effort: an
/// ACL user may not be allowed to run it.
pub(super) async fn broker_info(conn: &mut Conn, opts: &Options) -> BrokerInfo {
    let text = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("INFO").arg("server").query_async::<Value>(conn),
    )
    .await
    .ok()
    .and_then(|r| r.ok())
    .and_then(|v| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::VerbatimString { text, .. } => Some(text),
        Value::SimpleString(s) => Some(s),
        // A cluster answers per node: take the first.
        Value::Map(m) => m.into_iter().find_map(|(_, v)| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Value::VerbatimString { text, .. } => Some(text),
            _ => None,
        }),
        _ => None,
    })
    .unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let mut info = BrokerInfo::default();
    info.server = Some(match field("redis_mode") {
        Some(mode) => format!("redis-server ({mode})"),
        None => "redis-server".to_string(),
    });
    info.version = field("redis_version");
    info.max_payload = Some(opts.redis.max_payload);
    info.tls = opts.tls;
    info.address = Some(opts.shown.clone());
    info
}
