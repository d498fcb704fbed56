//! Steps 1-3 of `ci`: broker binaries, the Python interop peer, PATH.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{describe, run_cmd, succeeds_quietly, Ctx, Result};

/// Directories searched in addition to PATH (Debian puts nats-server and
/// mosquitto in /usr/sbin) and appended to the PATH of child processes.
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin"];

/// Broker binary -> Debian package providing it.
const BROKER_BINARIES: &[(&str, &str)] = &[
    ("nats-server", "nats-server"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("mosquitto", "mosquitto"),
    ("mosquitto_pub", "mosquitto-clients"),
    ("mosquitto_sub", "mosquitto-clients"),
    ("mosquitto_passwd", "mosquitto-clients"),
];

/// System services a package's postinst may start; stopped after installing
/// so they do not sit on the default ports.
const PACKAGE_SERVICES: &[(&str, &str)] =
    &[("redis-server", "redis-server"), ("mosquitto", "mosquitto")];

/// Python modules the interop tests import, and the pip packages providing them.
/// `msight_core` asserts that a device name is set before anything loads;
/// `paho-mqtt` (2.x, MQTT v5) is the MQTT peer of the header tests.
const PY_IMPORT_CHECK: &str = "import os; os.environ.setdefault('MSIGHT_EDGE_DEVICE_NAME', 'ci'); \
     import nats, redis, paho.mqtt.client, msight_core.data, msight_base, importlib.metadata as m; m.version('msight-core')";
const PY_PACKAGES: &[&str] = &["nats-py", "redis", "paho-mqtt"];
/// The Python original itself, without the dependencies it declares and the
/// tests never load (Open3D, Kafka, AWS, Sphinx, ...), and what importing
/// `msight_core.data` and `msight_base` (the msight data types, for the
/// msight-data interop tests) needs, pinned: msgpack, NumPy, OpenCV
/// (headless), Zstandard, snowflake-id, and `msight_base`'s import of
/// commonroad's lanelet module and matplotlib (without SciPy, networkx,
/// lxml, protobuf and rtree, which that import does not touch).
const PY_PACKAGES_NO_DEPS: &[&str] = &[
    "msight-core==2.0.0",
    "msight-base==0.1.2",
    "msgpack==1.2.4",
    "numpy==2.4.6",
    "opencv-python-headless==5.0.0.93",
    "zstandard==0.25.0",
    "snowflake-id==1.0.2",
    "commonroad-io==2026.1",
    "shapely==2.2.0",
    "iso3166==3.0.0",
    "omegaconf==2.4.0",
    "PyYAML==6.0.4",
    "matplotlib==3.11.2",
    "packaging==26.4",
    "pillow==13.0.0",
    "pyparsing==3.3.3",
    "cycler==0.12.1",
    "python-dateutil==4.0.0",
    "kiwisolver==1.5.1",
    "fonttools==4.68.0",
];

/// The current PATH with the sbin directories appended, or `None` if they are
/// all already there.
pub fn augmented_path() -> Option<OsString> {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    let mut changed = false;
    for dir in SBIN_DIRS {
        if !dirs.iter().any(|d| d == Path::new(dir)) {
            dirs.push(PathBuf::from(dir));
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    env::join_paths(dirs).ok()
}

/// Step 3: the PATH itself is set up in `Ctx::new` (apt-get needs it too).
pub fn report_path(ctx: &Ctx) {
    let current = env::var_os("PATH").unwrap_or_default();
    let present: Vec<PathBuf> = env::split_paths(&current).collect();
    let added: Vec<&str> = SBIN_DIRS
        .iter()
        .copied()
        .filter(|d| !present.iter().any(|p| p == Path::new(d)))
        .collect();
    if added.is_empty() {
        println!("    PATH already contains {}", SBIN_DIRS.join(" and "));
    } else {
        println!(
            "    appended {} to PATH of child processes",
            added.join(", ")
        );
    }
    if let Some((_, py)) = ctx.env.iter().find(|(k, _)| k == "PUBSUB_TEST_PYTHON") {
        println!("    PUBSUB_TEST_PYTHON={}", py.to_string_lossy());
    }
}

/// Find an executable named `name` on PATH or in the sbin directories.
pub fn find_exe(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Effective uid 0? Reads /proc/self/status, falls back to `id -u`.
fn is_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // Uid: real effective saved fs
            let mut fields = line.split_whitespace().skip(1);
            let effective = fields.nth(1);
            if let Some(uid) = effective {
                return uid == "0";
            }
        }
    }
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Can we install packages ourselves (root + apt-get)?
fn can_apt_install() -> bool {
    is_root() && find_exe("apt-get").is_some()
}

fn apt_install(ctx: &mut Ctx, packages: &[&str]) -> Result<()> {
    if !ctx.apt_updated {
        println!("    running apt-get update");
        run_cmd(
            ctx.cmd("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        ctx.apt_updated = true;
    }
    println!("    installing {}", packages.join(" "));
    run_cmd(
        ctx.cmd("apt-get")
            .args(["install", "-y"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn manual_install_hint(packages: &[&str]) -> String {
    let sudo = if is_root() { "" } else { "sudo " };
    format!("{sudo}apt-get install -y {}", packages.join(" "))
}

fn missing_brokers() -> Vec<(&'static str, &'static str)> {
    BROKER_BINARIES
        .iter()
        .copied()
        .filter(|(bin, _)| find_exe(bin).is_none())
        .collect()
}

/// Step 1: make sure every broker binary is installed.
pub fn ensure_brokers(ctx: &mut Ctx) -> Result<()> {
    let missing = missing_brokers();
    if missing.is_empty() {
        for (bin, _) in BROKER_BINARIES {
            if let Some(p) = find_exe(bin) {
                println!("    {bin}: {}", p.display());
            }
        }
        return Ok(());
    }

    let mut packages: Vec<&str> = Vec::new();
    for (_, pkg) in &missing {
        if !packages.contains(pkg) {
            packages.push(pkg);
        }
    }
    let names: Vec<&str> = missing.iter().map(|(bin, _)| *bin).collect();
    println!("    missing: {}", names.join(", "));

    if !can_apt_install() {
        return Err(format!(
            "missing broker binaries: {}\n  install them with:\n\n    {}\n",
            names.join(", "),
            manual_install_hint(&packages)
        ));
    }

    apt_install(ctx, &packages)?;
    stop_system_services(ctx, &packages);

    let still_missing: Vec<&str> = missing_brokers().iter().map(|(bin, _)| *bin).collect();
    if !still_missing.is_empty() {
        return Err(format!(
            "still missing after apt-get install: {}",
            still_missing.join(", ")
        ));
    }
    println!("    all broker binaries installed");
    Ok(())
}

/// The Debian postinst may have started system daemons on the default
/// ports; stop them (failures are ignored, e.g. no init system).
fn stop_system_services(ctx: &Ctx, installed: &[&str]) {
    if find_exe("service").is_none() {
        return;
    }
    for (pkg, service) in PACKAGE_SERVICES {
        if installed.contains(pkg) {
            let mut cmd = ctx.cmd("service");
            cmd.args([*service, "stop"]);
            let ok = succeeds_quietly(&mut cmd);
            println!(
                "    `{}`: {}",
                describe(&cmd),
                if ok {
                    "stopped"
                } else {
                    "not running / ignored"
                }
            );
        }
    }
}

/// Step 2: a venv at target/py-venv with nats-py, redis, paho-mqtt and msight-core; exports
/// PUBSUB_TEST_PYTHON to child processes.
pub fn ensure_python_peer(ctx: &mut Ctx) -> Result<()> {
    let venv = ctx.root.join("target").join("py-venv");
    // Not canonicalized: resolving the venv's python symlink would escape the venv.
    let venv_py = venv.join("bin").join("python");

    if !python_ready(ctx, &venv_py) {
        let has_pip = venv_py.exists()
            && succeeds_quietly(ctx.cmd(&venv_py).args(["-m", "pip", "--version"]));
        if !has_pip {
            create_venv(ctx, &venv)?;
        }
        println!("    pip install {}", PY_PACKAGES.join(" "));
        run_cmd(
            ctx.cmd(&venv_py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(PY_PACKAGES),
        )
        .map_err(|e| {
            format!("{e}\n  (installing the Python interop peer needs network access to PyPI)")
        })?;
        println!(
            "    pip install --no-deps {}",
            PY_PACKAGES_NO_DEPS.join(" ")
        );
        run_cmd(
            ctx.cmd(&venv_py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-deps",
                ])
                .args(PY_PACKAGES_NO_DEPS),
        )
        .map_err(|e| {
            format!("{e}\n  (installing the Python interop peer needs network access to PyPI)")
        })?;
        if !python_ready(ctx, &venv_py) {
            return Err(format!(
                "`{} -c \"{PY_IMPORT_CHECK}\"` still fails after pip install",
                venv_py.display()
            ));
        }
    }

    println!("    PUBSUB_TEST_PYTHON={}", venv_py.display());
    ctx.set_env("PUBSUB_TEST_PYTHON", venv_py.into_os_string());
    Ok(())
}

fn python_ready(ctx: &Ctx, venv_py: &Path) -> bool {
    venv_py.exists() && succeeds_quietly(ctx.cmd(venv_py).args(["-c", PY_IMPORT_CHECK]))
}

/// (Re)create the venv; installs python3-venv via apt-get once if possible.
fn create_venv(ctx: &mut Ctx, venv: &Path) -> Result<()> {
    match try_create_venv(ctx, venv) {
        Ok(()) => return Ok(()),
        Err(e) => println!("    {e}"),
    }
    let packages: &[&str] = if find_exe("python3").is_some() {
        &["python3-venv"]
    } else {
        &["python3", "python3-venv"]
    };
    if !can_apt_install() {
        return Err(format!(
            "cannot create the Python venv at {}\n  install Python's venv support with:\n\n    {}\n",
            venv.display(),
            manual_install_hint(packages)
        ));
    }
    apt_install(ctx, packages)?;
    try_create_venv(ctx, venv)
}

fn try_create_venv(ctx: &Ctx, venv: &Path) -> Result<()> {
    // A failed `python3 -m venv` (no ensurepip on Debian) leaves a venv
    // without pip behind; always start from scratch.
    if venv.exists() {
        fs::remove_dir_all(venv)
            .map_err(|e| format!("cannot remove stale venv {}: {e}", venv.display()))?;
    }
    let python3 = find_exe("python3").ok_or("python3 not found on PATH")?;
    println!("    creating venv {}", venv.display());
    let res = run_cmd(ctx.cmd(python3).arg("-m").arg("venv").arg(venv));
    if res.is_err() && venv.exists() {
        let _ = fs::remove_dir_all(venv);
    }
    res
}
