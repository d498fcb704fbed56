//! The conformance suite at QoS 0, 1 and 2 against a real `mosquitto`
//! started on a free loopback port for each case.

mod common;

use pubsub_testkit::conformance::{self, Suite};

async fn harness(qos: u8) -> common::MqttHarness {
    common::MqttHarness {
        broker: common::start_broker(),
        qos,
    }
}

fn main() {
    conformance::main(vec![
        Suite::new("qos0", || harness(0)),
        Suite::new("qos1", || harness(1)),
        Suite::new("qos2", || harness(2)),
    ]);
}
