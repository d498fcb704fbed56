//! The conformance suite at QoS 1 against a real `mosquitto` started on a
//! free loopback port for each case.

mod common;

async fn mqtt_qos1() -> common::MqttHarness {
    common::MqttHarness {
        broker: common::start_broker(),
        qos: 1,
    }
}

pubsub_core::conformance_suite!(mqtt_qos1);
