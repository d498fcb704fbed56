//! A Python peer for interoperability tests: the interpreter of the venv
//! that `cargo xtask install-brokers` (and `cargo xtask ci`) prepares with
//! `nats-py` and `redis`, the clients the Python original uses, and
//! `paho-mqtt` (MQTT v5) for the MQTT header tests.

use std::path::{Path, PathBuf};
use std::process::Command;
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
