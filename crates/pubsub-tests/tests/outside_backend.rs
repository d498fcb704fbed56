//! A backend written outside the core and the three backend crates, as a
//! user's own crate would write it, with no line of `pubsub-core` changed
//! for it: its own config section (`[loopback]`) and `MSIGHT_LOOPBACK_*`
//! variables, chosen by `backend = "loopback"` in a TOML file, and held to
//! the whole conformance suite (the cases that need a broker process are
//! reported as ignored: its "broker" is a thread of this process).
//!
//! The broker is one thread per namespace that routes what the handles send
//! it through a channel, so the backend has the shape of a network client:
//! `publish` only queues, `flush` waits for a round trip through the broker,
//! `subscribe` returns once the broker has the subscription.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use pubsub_core::config::{Env, EnvSource, Section};
use pubsub_core::sync::lock;
use pubsub_core::{
    async_trait, Backend, BackendContext, BackendFactory, Bytes, Capabilities, Config, Error,
    ErrorKind, Inbox, Message, PubSub, PubSubBackend, Result, TryPublish,
};
use pubsub_testkit::conformance::{Harness, Suite};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------
// The backend: its section, its broker, its handle.
// ---------------------------------------------------------------------------

/// The `[loopback]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LoopbackConfig {
    /// Handles of one namespace share a broker.
    pub namespace: String,
    /// Largest payload accepted.
    pub max_payload: usize,
}

impl Default for LoopbackConfig {
    fn default() -> Self {
        LoopbackConfig {
            namespace: "default".into(),
            max_payload: 1 << 20,
        }
    }
}

impl Section for LoopbackConfig {
    const NAME: &'static str = "loopback";
    const ENV: &'static [(&'static str, &'static str)] = &[
        ("MSIGHT_LOOPBACK_NAMESPACE", "loopback.namespace"),
        ("MSIGHT_LOOPBACK_MAX_PAYLOAD", "loopback.max_payload"),
    ];

    fn apply_env(&mut self, source: &dyn EnvSource) -> Result<()> {
        let env = Env(source);
        env.string_req("MSIGHT_LOOPBACK_NAMESPACE", &mut self.namespace);
        env.number("MSIGHT_LOOPBACK_MAX_PAYLOAD", &mut self.max_payload)
    }

    fn validate(&self) -> Result<()> {
        if self.namespace.is_empty() {
            return Err(Error::config("loopback.namespace", "must not be empty"));
        }
        if self.max_payload == 0 {
            return Err(Error::config("loopback.max_payload", "must be at least 1"));
        }
        Ok(())
    }
}

/// What a handle asks of its broker.
enum Cmd {
    Subscribe {
        handle: u64,
        topic: String,
        group: Option<String>,
        inbox: Inbox,
        done: oneshot::Sender<()>,
    },
    Unsubscribe {
        handle: u64,
        topic: String,
        done: oneshot::Sender<()>,
    },
    Publish {
        topic: String,
        payload: Bytes,
    },
    /// Answered once everything sent before it was routed.
    Sync(oneshot::Sender<()>),
    Leave(u64),
}

struct Subscriber {
    handle: u64,
    group: Option<String>,
    inbox: Inbox,
}

/// The broker of one namespace: a thread routing commands, in order.
fn broker(namespace: &str) -> mpsc::Sender<Cmd> {
    static BROKERS: OnceLock<Mutex<HashMap<String, mpsc::Sender<Cmd>>>> = OnceLock::new();
    lock(BROKERS.get_or_init(Default::default))
        .entry(namespace.to_string())
        .or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || route(rx));
            tx
        })
        .clone()
}

fn route(rx: mpsc::Receiver<Cmd>) {
    let mut topics: HashMap<String, Vec<Subscriber>> = HashMap::new();
    let mut turn: HashMap<(String, String), usize> = HashMap::new();
    for cmd in rx {
        match cmd {
            Cmd::Subscribe {
                handle,
                topic,
                group,
                inbox,
                done,
            } => {
                topics.entry(topic).or_default().push(Subscriber {
                    handle,
                    group,
                    inbox,
                });
                let _ = done.send(());
            }
            Cmd::Unsubscribe {
                handle,
                topic,
                done,
            } => {
                if let Some(subs) = topics.get_mut(&topic) {
                    subs.retain(|s| s.handle != handle);
                }
                let _ = done.send(());
            }
            Cmd::Leave(handle) => {
                for subs in topics.values_mut() {
                    subs.retain(|s| s.handle != handle);
                }
            }
            Cmd::Sync(done) => {
                let _ = done.send(());
            }
            Cmd::Publish { topic, payload } => {
                let Some(subs) = topics.get(&topic) else {
                    continue;
                };
                let mut groups: Vec<&str> =
                    subs.iter().filter_map(|s| s.group.as_deref()).collect();
                groups.sort_unstable();
                groups.dedup();
                let chosen = groups.iter().map(|g| {
                    let members: Vec<&Subscriber> = subs
                        .iter()
                        .filter(|s| s.group.as_deref() == Some(*g))
                        .collect();
                    let n = turn.entry((topic.clone(), g.to_string())).or_default();
                    *n += 1;
                    members[*n % members.len()]
                });
                for s in subs.iter().filter(|s| s.group.is_none()).chain(chosen) {
                    let msg = Message::new(topic.as_str(), payload.clone());
                    futures::executor::block_on(s.inbox.deliver(msg));
                }
            }
        }
    }
}

/// A handle of the `loopback` backend.
#[derive(Debug)]
pub struct Loopback {
    handle: u64,
    broker: Mutex<mpsc::Sender<Cmd>>,
    inbox: Inbox,
    max_payload: usize,
    closed: AtomicBool,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl Loopback {
    fn send(&self, cmd: Cmd) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        lock(&self.broker)
            .send(cmd)
            .map_err(|_| Error::new(ErrorKind::Connect, "the loopback broker is gone"))
    }

    async fn round_trip(&self, make: impl FnOnce(oneshot::Sender<()>) -> Cmd) -> Result<()> {
        let (done, answer) = oneshot::channel();
        self.send(make(done))?;
        answer
            .await
            .map_err(|_| Error::new(ErrorKind::Connect, "the loopback broker is gone"))
    }
}

#[async_trait]
impl Backend for Loopback {
    const NAME: &'static str = "loopback";
    const CRATE: &'static str = "pubsub-loopback";
    type Config = LoopbackConfig;

    async fn connect(_: &Config, section: LoopbackConfig, ctx: BackendContext) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ok(Loopback {
            handle: NEXT.fetch_add(1, Ordering::Relaxed),
            broker: Mutex::new(broker(&section.namespace)),
            inbox: ctx.inbox,
            max_payload: section.max_payload,
            closed: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl PubSubBackend for Loopback {
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.groups = true;
        c.ordering = true;
        c.max_payload = Some(self.max_payload);
        c
    }

    async fn subscribe(&self, topic: &str, group: Option<&str>) -> Result<()> {
        self.round_trip(|done| Cmd::Subscribe {
            handle: self.handle,
            topic: topic.to_string(),
            group: group.map(str::to_string),
            inbox: self.inbox.clone(),
            done,
        })
        .await
    }

    async fn unsubscribe(&self, topic: &str) -> Result<()> {
        self.round_trip(|done| Cmd::Unsubscribe {
            handle: self.handle,
            topic: topic.to_string(),
            done,
        })
        .await
    }

    fn try_publish(&self, topic: &str, payload: Bytes) -> TryPublish {
        TryPublish::Done(self.send(Cmd::Publish {
            topic: topic.to_string(),
            payload,
        }))
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        self.send(Cmd::Publish {
            topic: topic.to_string(),
            payload,
        })
    }

    async fn flush(&self) -> Result<()> {
        self.round_trip(Cmd::Sync).await
    }

    async fn close(&self) -> Result<()> {
        self.flush().await?;
        self.send(Cmd::Leave(self.handle))?;
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        let _ = lock(&self.broker).send(Cmd::Leave(self.handle));
    }
}

// ---------------------------------------------------------------------------
// The tests: configuration by file and environment, then the whole suite.
// ---------------------------------------------------------------------------

fn unique_namespace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("outside-{}", N.fetch_add(1, Ordering::Relaxed))
}

struct LoopbackHarness {
    namespace: String,
}

#[async_trait]
impl Harness for LoopbackHarness {
    fn factory(&self) -> BackendFactory {
        BackendFactory::of::<Loopback>()
    }

    fn config(&self) -> Config {
        let mut c = Config::default();
        c.backend = "loopback".into();
        c.section_mut::<LoopbackConfig>().unwrap().namespace = self.namespace.clone();
        c
    }

    fn has_broker(&self) -> bool {
        false
    }

    async fn stop_broker(&mut self) {}

    async fn start_broker(&mut self) {}

    fn dead_config(&self) -> Option<Config> {
        None
    }
}

fn check(ok: bool, what: impl Into<String>) -> std::result::Result<(), Failed> {
    if ok {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

/// Registered, then chosen by `backend = "loopback"` in a file that also
/// has a section of a backend this program does not register; its own
/// variable overrides the file.
fn chosen_by_a_toml_file() -> std::result::Result<(), Failed> {
    pubsub_core::register::<Loopback>();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "backend = \"loopback\"\n[loopback]\nnamespace = \"from-file\"\nmax_payload = 4096\n[kafka]\nbrokers = [\"k:9092\"]\n",
    )?;
    let config = Config::loader()
        .file(&file)
        .env([("MSIGHT_LOOPBACK_MAX_PAYLOAD", "1024")])
        .load()?;
    let section = config.section::<LoopbackConfig>()?;
    check(section.namespace == "from-file", format!("{section:?}"))?;
    check(section.max_payload == 1024, format!("{section:?}"))?;
    let shown = serde_json::to_string(&config)?;
    check(shown.contains("\"loopback\""), shown)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let ps = PubSub::connect(&config).await?;
        check(ps.backend_name() == "loopback", ps.backend_name())?;
        ps.subscribe("outside.t").await?;
        ps.publish("outside.t", "hello").await?;
        let m = ps.recv_timeout(Duration::from_secs(5)).await?;
        check(
            m.is_some_and(|m| &m.payload[..] == b"hello"),
            "the message came back",
        )?;
        let e = ps.publish("outside.t", vec![0u8; 1025]).await.unwrap_err();
        check(e.kind() == ErrorKind::PayloadTooLarge, e.to_string())?;
        ps.close().await?;
        Ok(())
    })
}

/// Its section is as strict as a built-in one: an unknown key is an error
/// naming the key and the file; a malformed variable names the variable.
fn its_section_is_checked_strictly() -> std::result::Result<(), Failed> {
    pubsub_core::register::<Loopback>();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[loopback]\nnamspace = \"x\"\n")?;
    let e = Config::from_file(&file).unwrap_err();
    let msg = e.to_string();
    check(e.kind() == ErrorKind::InvalidConfig, msg.clone())?;
    check(msg.contains("namspace") && msg.contains("typo.toml"), msg)?;
    let e = Config::loader()
        .env([("MSIGHT_LOOPBACK_MAX_PAYLOAD", "lots")])
        .load()
        .unwrap_err();
    check(
        e.to_string().contains("MSIGHT_LOOPBACK_MAX_PAYLOAD"),
        e.to_string(),
    )
}

fn main() {
    let suite = Suite::new("loopback", || async {
        LoopbackHarness {
            namespace: unique_namespace(),
        }
    });
    let mut trials = suite.trials();
    trials.push(Trial::test(
        "config::chosen_by_a_toml_file",
        chosen_by_a_toml_file,
    ));
    trials.push(Trial::test(
        "config::its_section_is_checked_strictly",
        its_section_is_checked_strictly,
    ));
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
