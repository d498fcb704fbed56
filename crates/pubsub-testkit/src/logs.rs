//! Capture everything logged through `tracing`, at every level, to check
//! that secrets never reach a log.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use pubsub_core::sync::lock;

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sink() -> &'static Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // Fails only if the test binary installed another global subscriber.
        tracing::subscriber::set_global_default(subscriber)
            .expect("testkit::logs installs the only global tracing subscriber");
        sink
    })
}

/// Start capturing (idempotent). Every `tracing` event of the process, at
/// TRACE and above, is kept from now on.
pub fn capture() {
    sink();
}

/// Everything captured so far.
pub fn captured() -> String {
    String::from_utf8_lossy(&lock(&sink().0)).into_owned()
}
