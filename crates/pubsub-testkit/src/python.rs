//! A Python peer for interoperability tests: the interpreter of the venv
//! that `cargo xtask install-brokers` (and `cargo xtask ci`) prepares with
//! `nats-py` and `redis`, the clients the Python original uses, the msight
//! data classes (`msight_core.data`, `msight_base`), and `paho-mqtt` (MQTT
//! v5) for the MQTT header tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::peer::Peer;

/// The Python interpreter: `$PUBSUB_TEST_PYTHON`, else the `py-venv` that
/// `cargo xtask install-brokers` prepares in the build's target directory,
/// found from the running test program (`<target>/debug/deps/...`), so it
/// follows `CARGO_TARGET_DIR` and works for any crate of the workspace;
/// else `target/py-venv` in the current directory or one above it.
///
/// # Panics
/// When none exists, with the command that prepares it.
pub fn interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("PUBSUB_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv_python = |dir: &Path| dir.join("py-venv/bin/python");
    let from_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().map(venv_python).find(|p| p.exists()));
    let from_cwd = || {
        let cwd = std::env::current_dir().ok()?;
        cwd.ancestors()
            .map(|d| venv_python(&d.join("target")))
            .find(|p| p.exists())
    };
    from_exe.or_else(from_cwd).unwrap_or_else(|| {
        panic!(
            "no Python peer (py-venv/bin/python) in the target directory of {:?} nor under the current directory, \
             and PUBSUB_TEST_PYTHON is not set: run `cargo xtask install-brokers` (it creates target/py-venv with nats-py, redis and paho-mqtt)",
            std::env::current_exe().ok()
        )
    })
}

/// A running Python script whose stdout lines can be awaited with a
/// timeout (a [`Peer`]); killed on drop.
pub struct PythonPeer(Peer);

impl PythonPeer {
    /// Run `script` (the program text) with `args`.
    pub fn spawn(script: &str, args: &[&str]) -> PythonPeer {
        PythonPeer::spawn_with_env(script, args, &[])
    }

    /// Run `script` with `args` and extra environment variables (the
    /// `MSIGHT_*` ones the Python original reads).
    pub fn spawn_with_env(script: &str, args: &[&str], env: &[(&str, &str)]) -> PythonPeer {
        let mut cmd = Command::new(interpreter());
        cmd.envs(env.iter().copied())
            .arg("-c")
            .arg(script)
            .args(args);
        PythonPeer(Peer::spawn(cmd, "Python peer"))
    }

    /// Wait for the script to exit (bounded) and return whether it succeeded.
    pub fn wait(self, timeout: Duration) -> bool {
        self.0.wait(timeout)
    }
}

impl std::ops::Deref for PythonPeer {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.0
    }
}

impl std::ops::DerefMut for PythonPeer {
    fn deref_mut(&mut self) -> &mut Peer {
        &mut self.0
    }
}

/// Python code that makes the Python original's pub/sub modules importable
/// without its heavy dependencies: `msight-core` is installed with
/// `--no-deps`, so Kafka's client is stubbed (never used here) and
/// `msight_core.topics.Topic` (which pulls in the data classes) is replaced
/// by a class with the same constructor and attributes. Prepend it to a
/// script, then `from msight_core.pubsub.nats_pubsub import NATSPubSub`,
/// `from msight_core.pubsub.utils import get_nats_config`, etc.
pub const MSIGHT_CORE_PRELUDE: &str = r#"
import os, sys, types
# The package asserts that a node has a device name.
os.environ.setdefault("MSIGHT_EDGE_DEVICE_NAME", "pubsub-interop-test")
_kafka = types.ModuleType("confluent_kafka")
_kafka.Producer = _kafka.Consumer = object
sys.modules["confluent_kafka"] = _kafka
import msight_core
_topics = types.ModuleType("msight_core.topics")
class Topic:
    def __init__(self, name, description=None, data_type=None):
        self.name, self.description, self.data_type = name, description, data_type
_topics.Topic = Topic
sys.modules["msight_core.topics"] = _topics
msight_core.topics = _topics
"#;

/// Python code that loads the msight data classes the way a Python node
/// does: `msight_core.data` (with its `Data`, `ImageData`, ...), `msight_base`
/// (`DetectionResultBase`, `RoadUserPoint`, ...), `msgpack`, `numpy`, plus
/// `sys`, `json` and `base64`. The venv has them (see `cargo xtask
/// install-brokers`). Prepend it to a script.
pub const MSIGHT_DATA_PRELUDE: &str = r#"
import os, sys, json, base64
os.environ.setdefault("MSIGHT_EDGE_DEVICE_NAME", "pubsub-interop-test")
import msgpack
import numpy as np
from dataclasses import dataclass, field
from msight_core.data import (Data, SensorData, SensorDataSequence, ImageData, DetectionResultsData,
                              RoadUserListData, BytesData, VideoData, PointCloudData)
from msight_base import DetectionResultBase, RoadUserPoint
from msight_base.road_user import RoadUserCategory
"#;

/// Run `script` (program text) with `args` to its end, `input` on its
/// stdin, and return its stdout.
///
/// # Panics
/// When it exits with an error or runs longer than `timeout` (it is then
/// killed); the panic message has its stderr.
pub fn run_script(script: &str, args: &[&str], input: &[u8], timeout: Duration) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut child = Command::new(interpreter())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python peer");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // A script that exits early closes the pipe; its exit status tells.
        let _ = stdin.write_all(&input);
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the Python peer") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let out = stdout.join().unwrap_or_default();
    let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("the Python script failed ({s}):\n{err}"),
        None => panic!("the Python script ran longer than {timeout:?}; killed:\n{err}"),
    }
}
