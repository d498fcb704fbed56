//! The conformance cases every backend runs against its real broker.
//!
//! A backend crate runs the whole suite from one test file declared with
//! `harness = false` in its `Cargo.toml`:
//!
//! ```text
//! [[test]]
//! name = "conformance"
//! harness = false
//! ```
//!
//! and a `main` that hands [`main`] a [`Suite`] per configuration, each
//! with an `async fn` that starts a broker and returns a [`Harness`] (the
//! crate's front page has a complete example).
//! Each case of [`CASES`] becomes one test, `<suite>::<case>`, with a fresh
//! harness (and so a fresh broker). A harness whose
//! [`Harness::config`] sets `ack = "manual"` runs every case in manual ack
//! mode: the cases acknowledge each message they take ([`settled`]), so
//! that a backend whose broker stops sending at `max_in_flight`
//! unacknowledged messages is held to the same cases. A case the backend cannot support, by
//! its declared [`Capabilities`](pubsub_core::Capabilities) or because it
//! has no broker, is reported by the test runner as *ignored* with the
//! reason, never as passed. Every wait is bounded; a case that runs past
//! [`CASE_LIMIT`] fails.

mod cases;
mod restart;
mod settle;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use pubsub_core::{BackendFactory, Config, Message, PubSub};

pub use restart::restart_under_load;

/// What a case needs from the backend under test.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// The backend's factory.
    fn factory(&self) -> BackendFactory;
    /// A config for one more client of the broker under test.
    fn config(&self) -> Config;
    /// Whether there is a broker process to stop (not for an in-process
    /// backend); the cases that restart it are skipped without one.
    fn has_broker(&self) -> bool {
        true
    }
    /// Stop the broker, as a crash would (`SIGKILL`, unless the harness
    /// needs the broker to save its state first).
    async fn stop_broker(&mut self);
    /// Start the stopped broker again on the same address and wait until it
    /// accepts connections.
    async fn start_broker(&mut self);
    /// A config whose broker address has nothing listening, or `None` when
    /// the backend has no address (in-process).
    fn dead_config(&self) -> Option<Config>;
    /// Whether the broker keeps group subscriptions across its own restart
    /// as it keeps plain ones, so that an at-least-once backend loses nothing
    /// for a group member either (see [`restart_under_load`]). `false` for a
    /// broker known not to: a group member may then lose what was published
    /// around the outage, and only that.
    fn groups_survive_broker_restart(&self) -> bool {
        true
    }
    /// Why the unsettled messages of a group member that goes away stay
    /// with it instead of going to another member, for a broker that keeps
    /// them in that member's session and sends them again only when it
    /// comes back (MQTT). `None` (the default): another member gets them,
    /// as `group_member_gone_its_messages_go_to_another` checks; otherwise
    /// that case is skipped with this reason, and the backend's own tests
    /// show what happens instead.
    fn gone_member_keeps_its_messages(&self) -> Option<String> {
        None
    }
    /// Extra label printed with results, e.g. `"qos=1"`.
    fn label(&self) -> String {
        self.factory().name().to_string()
    }
}

/// Stop the broker of `h` and start it again. `false` when it has none.
pub async fn restart_broker(h: &mut dyn Harness) -> bool {
    if !h.has_broker() {
        return false;
    }
    h.stop_broker().await;
    h.start_broker().await;
    true
}

/// The result of one case.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ran and passed (failures panic).
    Passed,
    /// Not applicable, with the reason; reported as ignored.
    Skipped(String),
}

/// A case: takes the harness, panics on failure.
pub type Case = for<'a> fn(&'a mut dyn Harness) -> BoxFuture<'a, Outcome>;

/// The longest a case may run, its harness's start included.
pub const CASE_LIMIT: Duration = Duration::from_secs(120);

macro_rules! cases {
    ($($module:ident::$case:ident),* $(,)?) => {
        /// Every case, by name, in the order they are listed in the output.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($case), |h| Box::pin($module::$case(h))),)*
        ];
    };
}

cases!(
    cases::round_trip_payloads,
    cases::two_plain_subscribers_each_get_everything,
    cases::group_of_three_shares_messages_exactly_once,
    cases::topics_are_isolated,
    cases::several_subscriptions_tag_messages_by_topic,
    cases::unsubscribe_stops_delivery,
    cases::publish_then_close_delivers_everything,
    cases::every_call_after_close_fails_closed,
    cases::order_is_kept,
    cases::blocking_api_from_a_plain_thread,
    cases::blocking_handle_shared_by_eight_threads,
    cases::blocking_api_inside_tokio_runtime,
    cases::connect_to_dead_port_fails_in_time,
    cases::resubscribes_after_broker_restart,
    cases::restart_under_load_keeps_what_the_backend_promises,
    settle::headers_arrive_in_order,
    settle::headers_refused_where_unsupported,
    settle::settling_in_auto_mode,
    settle::unsettled_is_redelivered_after_ack_wait,
    settle::nak_with_delay_redelivers_no_earlier,
    settle::max_deliver_then_dead_letter,
    settle::term_goes_to_dead_letter,
    settle::given_up_without_dead_letter_is_discarded_and_counted,
    settle::in_progress_holds_off_redelivery,
    settle::max_in_flight_bounds_unsettled_messages,
    settle::group_member_gone_its_messages_go_to_another,
);

type MakeHarness = Arc<dyn Fn() -> BoxFuture<'static, Box<dyn Harness>> + Send + Sync>;

/// One backend (or one mode of it) under test: a name for the output and
/// how to make a fresh harness.
#[derive(Clone)]
pub struct Suite {
    name: String,
    make: MakeHarness,
}

impl Suite {
    /// The suite `name` with harnesses from `make`, an `async fn() -> impl Harness`.
    pub fn new<H, F, Fut>(name: impl Into<String>, make: F) -> Suite
    where
        H: Harness + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = H> + Send + 'static,
    {
        let make = Arc::new(make);
        Suite {
            name: name.into(),
            make: Arc::new(move || {
                let fut = make();
                Box::pin(async move { Box::new(fut.await) as Box<dyn Harness> })
            }),
        }
    }

    /// One test per case of [`CASES`], named `<suite>::<case>`.
    pub fn trials(&self) -> Vec<Trial> {
        CASES
            .iter()
            .map(|&(case_name, case)| {
                let make = self.make.clone();
                let name = format!("{}::{case_name}", self.name);
                Trial::ignorable_test(name.clone(), move || run(&name, &*make, case))
            })
            .collect()
    }
}

/// Run every case of every suite with libtest's command line (filters,
/// `--list`, `--test-threads`, ...) and exit with its status.
pub fn main(suites: Vec<Suite>) {
    let args = Arguments::from_args();
    let trials = suites.iter().flat_map(Suite::trials).collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Run `case` with a fresh harness, on its own runtime, within [`CASE_LIMIT`].
fn run(
    name: &str,
    make: &(dyn Fn() -> BoxFuture<'static, Box<dyn Harness>> + Send + Sync),
    case: Case,
) -> Result<Completion, Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("test runtime: {e}")))?;
    let outcome = rt.block_on(async {
        tokio::time::timeout(CASE_LIMIT, async {
            let mut harness = make().await;
            let outcome = case(&mut *harness).await;
            (harness.label(), outcome)
        })
        .await
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Err(_) => Err(format!("{name} did not finish within {CASE_LIMIT:?}").into()),
        Ok((_, Outcome::Passed)) => Ok(Completion::Completed),
        Ok((label, Outcome::Skipped(why))) => {
            Ok(Completion::ignored_with(format!("[{label}] {why}")))
        }
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "conf.{prefix}.{nanos}.{}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn connect(h: &dyn Harness) -> PubSub {
    connect_cfg(h, h.config()).await
}

async fn connect_cfg(h: &dyn Harness, config: Config) -> PubSub {
    PubSub::connect_with(&h.factory(), &config)
        .await
        .unwrap_or_else(|e| panic!("connect [{}]: {e}", h.label()))
}

/// After a broker restart or failover: publish numbered probes (1, 2, ...)
/// to `topic`, one every 200 ms, until one reaches `sub` through both
/// reconnected clients, for at most `within`. Whether one arrived.
pub async fn probe_until_delivered(
    publ: &PubSub,
    sub: &PubSub,
    topic: &str,
    within: Duration,
) -> bool {
    let t0 = Instant::now();
    let mut i = 1u32;
    while t0.elapsed() < within {
        let _ = publ.publish(topic, seq(i)).await;
        i += 1;
        if let Some(m) = sub
            .recv_timeout(Duration::from_millis(200))
            .await
            .expect("recv")
        {
            settled(m);
            return true;
        }
    }
    false
}

/// Take what `sub` still receives until nothing comes for `quiet` (at most
/// 100,000 messages): the probes that arrived late.
pub async fn drain(sub: &PubSub, quiet: Duration) {
    for _ in 0..100_000 {
        match sub.recv_timeout(quiet).await.expect("recv") {
            Some(m) => drop(settled(m)),
            None => return,
        }
    }
}

/// `m`, acknowledged if it is to be settled (manual ack mode): the copy
/// returned keeps everything but the settle handle. In auto mode, `m`.
pub fn settled(m: Message) -> Message {
    if !m.needs_settling() {
        return m;
    }
    let copy = m.clone();
    m.ack().expect("ack a message taken by a case");
    copy
}

/// Receive until `n` messages arrived or `within` passed. In manual ack
/// mode the messages are returned unsettled, for the caller to settle (or
/// to hold, as a test of redelivery does); see [`take_n`].
pub async fn recv_n(ps: &PubSub, n: usize, within: Duration) -> Vec<Message> {
    receive(ps, n, within, |m| m).await
}

/// [`recv_n`], each message acknowledged as it arrives if it is to be
/// settled ([`settled`]): what the cases use, so that they run the same in
/// manual ack mode, also past a broker's limit of unacknowledged messages.
pub async fn take_n(ps: &PubSub, n: usize, within: Duration) -> Vec<Message> {
    receive(ps, n, within, settled).await
}

async fn receive(
    ps: &PubSub,
    n: usize,
    within: Duration,
    each: fn(Message) -> Message,
) -> Vec<Message> {
    let deadline = Instant::now() + within;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match ps.recv_timeout(left).await {
            Ok(Some(m)) => got.push(each(m)),
            Ok(None) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    got
}

/// Assert that nothing more arrives within `quiet`.
async fn assert_quiet(ps: &PubSub, quiet: Duration, what: &str) {
    if let Some(m) = ps.recv_timeout(quiet).await.expect("recv").map(settled) {
        panic!(
            "{what}: unexpected message on {:?} ({} bytes)",
            m.topic,
            m.payload.len()
        );
    }
}

fn seq(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn seq_of(m: &Message) -> u32 {
    u32::from_be_bytes(m.payload[..4].try_into().expect("a 4-byte sequence number"))
}
