//! The conformance suite against a real `mosquitto` started on a free
//! loopback port for each case: at QoS 0, 1 and 2 with clean sessions (the
//! default; manual ack is refused there), and at QoS 1 and 2 with a
//! persistent session per client on a broker with persistence, where
//! manual ack mode runs.

mod common;

use pubsub_testkit::conformance::{self, Suite};

async fn harness(qos: u8) -> common::MqttHarness {
    common::MqttHarness {
        broker: common::start_broker(),
        qos,
    }
}

async fn sessions(qos: u8) -> common::SessionsHarness {
    common::SessionsHarness::start(qos)
}

fn main() {
    conformance::main(vec![
        Suite::new("qos0", || harness(0)),
        Suite::new("qos1", || harness(1)),
        Suite::new("qos2", || harness(2)),
        Suite::new("qos1_sessions", || sessions(1)),
        Suite::new("qos2_sessions", || sessions(2)),
    ]);
}
