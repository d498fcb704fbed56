//! State shared by the handle and its poll task, and the SUBSCRIBE /
//! UNSUBSCRIBE requests of callers waiting for the broker's answer.
//!
//! Acknowledgements are matched to requests by order: rumqttc reports each
//! SUBSCRIBE / UNSUBSCRIBE it writes (`Outgoing::Subscribe(pkid)`) in the
//! order the requests were queued, and the broker's SUBACK / UNSUBACK name
//! that packet id. A request caught by a connection loss is answered after
//! the reconnect: by rumqttc's replay when the broker kept the session, or
//! by the re-subscription of everything when it did not.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use pubsub_core::sync::lock;
use pubsub_core::{Error, ErrorKind, Result};
use rumqttc::v5::mqttbytes::v5::{SubscribeReasonCode, UnsubAckReason};
use tokio::sync::{oneshot, Notify};

use super::MqttBackend;

pub(super) enum Ack {
    Sub(Vec<SubscribeReasonCode>),
    Unsub(Vec<UnsubAckReason>),
}

/// A caller of `subscribe` / `unsubscribe` waiting for the broker's answer.
pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) filter: String,
    pub(super) subscribe: bool,
    pub(super) tx: oneshot::Sender<Result<Ack>>,
}

/// Who waits for the acknowledgement of a queued SUBSCRIBE / UNSUBSCRIBE.
pub(super) enum Expect {
    /// A caller's own request.
    User(Waiter),
    /// The re-subscription after a reconnect, with its filters, and the
    /// callers whose requests the connection loss swallowed: it answers them.
    Resubscribe {
        filters: Vec<String>,
        waiters: Vec<Waiter>,
    },
}

impl Expect {
    /// The callers waiting on this.
    pub(super) fn into_waiters(self) -> Vec<Waiter> {
        match self {
            Expect::User(w) => vec![w],
            Expect::Resubscribe { waiters, .. } => waiters,
        }
    }
}

#[derive(Default)]
pub(super) struct Control {
    /// Queued in the request channel, not yet written, in order.
    pub(super) queued: VecDeque<Expect>,
    /// Written, waiting for SUBACK / UNSUBACK, by packet id.
    pub(super) sent: HashMap<u16, Expect>,
    /// After a connection loss: the queued requests rumqttc moved to its
    /// replay list, in order (sent again only if the session is resumed).
    pub(super) carried: Vec<Expect>,
    /// After a connection loss: callers whose request will not be answered
    /// as such (written before the loss, or dropped with the session).
    pub(super) parked: Vec<Waiter>,
    pub(super) next_id: u64,
}

/// Answer callers whose requests were swallowed by a connection loss, from
/// the re-subscription after it: a subscribe gets the code of its filter; an
/// unsubscribe succeeded, since the new session has only what is restored.
pub(super) fn answer_parked(
    waiters: Vec<Waiter>,
    filters: &[String],
    codes: &[SubscribeReasonCode],
) {
    for w in waiters {
        let r = if w.subscribe {
            match filters.iter().position(|f| *f == w.filter) {
                Some(i) => Ok(Ack::Sub(vec![codes
                    .get(i)
                    .copied()
                    .unwrap_or(SubscribeReasonCode::Unspecified)])),
                None => Err(Error::new(
                    ErrorKind::Connect,
                    format!(
                        "the connection to the MQTT broker was lost while subscribing to {:?}",
                        w.filter
                    ),
                )),
            }
        } else {
            Ok(Ack::Unsub(Vec::new()))
        };
        let _ = w.tx.send(r);
    }
}

/// State shared by the handle and its poll task.
pub(super) struct Shared {
    /// Publishes accepted by the client.
    pub(super) accepted: AtomicU64,
    /// Publishes done: written (QoS 0), acknowledged (QoS 1, 2), refused,
    /// or dropped with a session the broker did not keep.
    pub(super) done: AtomicU64,
    /// Woken when `done` grows or the poll task ends.
    pub(super) progress: Notify,
    /// What to restore after a reconnect: topic -> MQTT filter.
    pub(super) subs: Mutex<BTreeMap<String, String>>,
    pub(super) control: Mutex<Control>,
    /// Keeps "register the waiter, queue the request" atomic, so that the
    /// order of waiters is the order of requests.
    pub(super) control_order: tokio::sync::Mutex<()>,
    pub(super) connected: AtomicBool,
    pub(super) closing: AtomicBool,
    pub(super) stopped: AtomicBool,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            accepted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            progress: Notify::new(),
            subs: Mutex::new(BTreeMap::new()),
            control: Mutex::new(Control::default()),
            control_order: tokio::sync::Mutex::new(()),
            connected: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }

    pub(super) fn add_done(&self, n: u64) {
        if n > 0 {
            self.done.fetch_add(n, Ordering::AcqRel);
            self.progress.notify_waiters();
        }
    }

    pub(super) fn outstanding(&self) -> u64 {
        self.accepted
            .load(Ordering::Acquire)
            .saturating_sub(self.done.load(Ordering::Acquire))
    }

    /// The connection was lost. Requests written before (in `sent`) will
    /// get no acknowledgement: their callers are parked. The first
    /// `in_pending` queued requests are in rumqttc's replay list (the
    /// request channel is first in, first out): they are carried until the
    /// reconnect tells whether the session, and so the replay, survived.
    /// Requests queued after the loss are sent after the reconnect as usual.
    pub(super) fn connection_lost(&self, in_pending: usize) {
        let mut c = lock(&self.control);
        let sent: Vec<Expect> = c.sent.drain().map(|(_, e)| e).collect();
        for e in sent {
            let waiters = e.into_waiters();
            c.parked.extend(waiters);
        }
        let k = in_pending.min(c.queued.len());
        let carried: Vec<Expect> = c.queued.drain(..k).collect();
        c.carried.extend(carried);
    }

    /// Fail every caller waiting for an acknowledgement; the connection is gone.
    pub(super) fn fail_waiters(&self, why: &str) {
        let mut c = lock(&self.control);
        let mut all: Vec<Waiter> = std::mem::take(&mut c.parked);
        let queued = std::mem::take(&mut c.queued);
        let sent = std::mem::take(&mut c.sent);
        let carried = std::mem::take(&mut c.carried);
        drop(c);
        for e in queued.into_iter().chain(sent.into_values()).chain(carried) {
            all.extend(e.into_waiters());
        }
        for w in all {
            let _ = w.tx.send(Err(Error::new(
                ErrorKind::Connect,
                format!("{why} before the broker acknowledged the request"),
            )));
        }
    }
}

impl MqttBackend {
    /// How long to wait for a SUBACK / UNSUBACK.
    pub(super) fn ack_timeout(&self) -> Duration {
        self.opts.close_timeout.max(self.opts.connect_timeout)
    }

    /// Queue a SUBSCRIBE (`subscribe`) or UNSUBSCRIBE of `filter` and wait
    /// for the broker's answer, each step bounded by [`Self::ack_timeout`].
    pub(super) async fn request(&self, filter: &str, subscribe: bool) -> Result<Ack> {
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.shared.control_order.lock().await;
            self.check_running()?;
            let id = {
                let mut c = lock(&self.shared.control);
                c.next_id += 1;
                let id = c.next_id;
                c.queued.push_back(Expect::User(Waiter {
                    id,
                    filter: filter.to_string(),
                    subscribe,
                    tx,
                }));
                id
            };
            let queue = async {
                if subscribe {
                    self.client.subscribe(filter, self.opts.qos).await
                } else {
                    self.client.unsubscribe(filter).await
                }
            };
            // The queue is full only while the broker is slow or away.
            let sent = tokio::time::timeout(self.ack_timeout(), queue).await;
            if !matches!(sent, Ok(Ok(()))) {
                lock(&self.shared.control)
                    .queued
                    .retain(|x| !matches!(x, Expect::User(w) if w.id == id));
                self.check_running()?;
                return Err(match sent {
                    Ok(Err(e)) => {
                        Error::topic(filter, "the MQTT client refused the filter").with_source(e)
                    }
                    _ => Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the MQTT client's request queue stayed full for {:?} (is the broker at {} reachable?)",
                            self.ack_timeout(),
                            self.opts.shown
                        ),
                    ),
                });
            }
        }
        let what = if subscribe { "SUBACK" } else { "UNSUBACK" };
        match tokio::time::timeout(self.ack_timeout(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Closed,
                "the MQTT connection task ended before the broker answered",
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no {what} for {filter:?} from the MQTT broker at {} within {:?}",
                    self.opts.shown,
                    self.ack_timeout()
                ),
            )),
        }
    }
}
