//! The conformance suite at QoS 0 against a real `mosquitto` started on a
//! free loopback port for each case.

mod common;

async fn mqtt_qos0() -> common::MqttHarness {
    common::MqttHarness {
        broker: common::start_broker(),
        qos: 0,
    }
}

pubsub_core::conformance_suite!(mqtt_qos0);
