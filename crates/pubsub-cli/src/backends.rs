//! The backends compiled into this binary, one cargo feature each.

/// Register every backend compiled in, so that `--backend NAME`,
/// `backend = "NAME"` and `MSIGHT_PUBSUB_BACKEND=NAME` find it. `memory` is
/// always there. Asking for one that is not compiled in gives the library's
/// registry error, which lists the registered backends and names the crate.
pub fn register_backends() {
    #[cfg(feature = "nats")]
    pubsub_nats::register();
    #[cfg(feature = "mqtt")]
    pubsub_mqtt::register();
    #[cfg(feature = "redis")]
    pubsub_redis::register();
}
