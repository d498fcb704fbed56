//! Workspace automation: `cargo xtask <command>`.
//!
//! Std only. Every failure that can be expected (missing tool, failing child
//! process, ...) is reported as a message and turns into exit status 1.

mod setup;

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{self, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Error type of every step: a human readable message.
pub type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "\
Usage: cargo xtask <command> [args]

Commands:
  ci                Install brokers and the Python peer if needed, then run
                    fmt, clippy, tests, docs and the dependency isolation check
  install-brokers   Only make sure the broker binaries and the Python peer
                    (target/py-venv) are present
  bench [args...]   cargo run --release -p pubsub-bench -- [args...]
  help              Print this message
";

/// Which packages must not appear in the normal dependency tree of which
/// crate. A crate is checked only if `crates/<name>` exists.
/// aws-lc-rs is the default rustls provider of rumqttc and others; a second
/// provider besides `ring` makes every rustls connect panic when the
/// backends are linked together. `pubsub-cli` links all of them. The test
/// kit and what only it needs (certificate generation, temporary
/// directories, a log subscriber, a test runner) stay out of every library.
const FORBIDDEN_DEPS: &[(&str, &[&str])] = &[
    (
        "pubsub-core",
        &["async-nats", "redis", "rumqttc", "aws-lc-rs"],
    ),
    ("pubsub-nats", &["redis", "rumqttc", "aws-lc-rs"]),
    ("pubsub-redis", &["async-nats", "rumqttc", "aws-lc-rs"]),
    ("pubsub-mqtt", &["async-nats", "redis", "aws-lc-rs"]),
    ("pubsub-cli", &["aws-lc-rs"]),
    (
        "msight-data",
        &["async-nats", "redis", "rumqttc", "aws-lc-rs"],
    ),
];

/// Crates of the test kit only (certificate generation, temporary
/// directories, a log subscriber, a test runner): forbidden in the normal
/// dependency tree of every library crate.
const TEST_ONLY_DEPS: &[&str] = &[
    "pubsub-testkit",
    "rcgen",
    "tempfile",
    "tracing-subscriber",
    "libtest-mimic",
];

/// The library crates, which must not depend on [`TEST_ONLY_DEPS`].
const LIBRARIES: &[&str] = &[
    "pubsub-core",
    "pubsub-nats",
    "pubsub-redis",
    "pubsub-mqtt",
    "msight-data",
];

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("\nxtask: error: {msg}");
            1
        }
    };
    process::exit(code);
}

fn run(args: &[String]) -> Result<()> {
    let Some(command) = args.first() else {
        print!("{USAGE}");
        return Ok(());
    };
    let rest = &args[1..];
    match command.as_str() {
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        "ci" => {
            no_extra_args("ci", rest)?;
            let mut ctx = Ctx::new()?;
            ci(&mut ctx)
        }
        "install-brokers" => {
            no_extra_args("install-brokers", rest)?;
            let mut ctx = Ctx::new()?;
            let mut steps = Steps::default();
            let res = setup_steps(&mut ctx, &mut steps);
            steps.summary();
            res
        }
        "bench" => {
            let ctx = Ctx::new()?;
            bench(&ctx, rest)
        }
        other => {
            eprint!("{USAGE}");
            Err(format!("unknown command `{other}`"))
        }
    }
}

fn no_extra_args(command: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(format!(
            "`{command}` takes no arguments (got `{arg}`); see `cargo xtask help`"
        )),
    }
}

/// Shared state: workspace root, cargo binary and the environment applied to
/// every child process.
pub struct Ctx {
    pub root: PathBuf,
    pub cargo: OsString,
    /// Environment variables set on every spawned child.
    pub env: Vec<(String, OsString)>,
    /// `apt-get update` already ran in this process.
    pub apt_updated: bool,
}

impl Ctx {
    fn new() -> Result<Self> {
        let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .ok_or_else(|| {
                format!(
                    "cannot find the workspace root: {} has no parent",
                    manifest_dir.display()
                )
            })?
            .to_path_buf();
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut ctx = Ctx {
            root,
            cargo,
            env: Vec::new(),
            apt_updated: false,
        };
        // apt-get/dpkg also want the sbin directories on PATH, so the augmented
        // PATH applies to every child from the start (step 3 reports it).
        if let Some(path) = setup::augmented_path() {
            ctx.set_env("PATH", path);
        }
        Ok(ctx)
    }

    pub fn set_env(&mut self, key: &str, value: impl Into<OsString>) {
        let value = value.into();
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.env.push((key.to_string(), value)),
        }
    }

    /// The PATH children see.
    pub fn child_path(&self) -> Option<OsString> {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| env::var_os("PATH"))
    }

    /// A command run in the workspace root with the shared environment.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn cargo(&self) -> Command {
        self.cmd(&self.cargo)
    }
}

/// Run `cmd` with inherited stdio; error unless it exits successfully.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = status_of(cmd)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({})",
            describe(cmd),
            exit_text(status)
        ))
    }
}

/// Run `cmd` with inherited stdio and return its exit status.
pub fn status_of(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status()
        .map_err(|e| format!("cannot run `{}`: {e}", describe(cmd)))
}

/// Run `cmd` quietly (no output at all) and report whether it succeeded.
pub fn succeeds_quietly(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn exit_text(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    }
}

/// Records step timings for the final summary.
#[derive(Default)]
struct Steps {
    done: Vec<(String, Duration, bool)>,
}

impl Steps {
    fn run(&mut self, title: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        println!("\n==> {title}");
        let start = Instant::now();
        let res = f();
        let elapsed = start.elapsed();
        match &res {
            Ok(()) => println!("    ok ({:.1}s)", elapsed.as_secs_f64()),
            Err(_) => println!("    FAILED ({:.1}s)", elapsed.as_secs_f64()),
        }
        self.done.push((title.to_string(), elapsed, res.is_ok()));
        res
    }

    fn summary(&self) {
        if self.done.is_empty() {
            return;
        }
        println!("\nSummary:");
        let width = self.done.iter().map(|(t, _, _)| t.len()).max().unwrap_or(0);
        let mut total = Duration::ZERO;
        for (title, elapsed, ok) in &self.done {
            total += *elapsed;
            let status = if *ok { "ok" } else { "FAILED" };
            println!(
                "  {title:<width$}  {:>7.1}s  {status}",
                elapsed.as_secs_f64()
            );
        }
        println!("  {:<width$}  {:>7.1}s", "total", total.as_secs_f64());
    }
}

/// Steps 1-3: brokers, Python peer, PATH.
fn setup_steps(ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
    steps.run("broker binaries", || setup::ensure_brokers(ctx))?;
    steps.run("python peer (target/py-venv)", || {
        setup::ensure_python_peer(ctx)
    })?;
    steps.run("PATH for child processes", || {
        setup::report_path(ctx);
        Ok(())
    })
}

fn ci(ctx: &mut Ctx) -> Result<()> {
    let mut steps = Steps::default();
    let res = ci_steps(ctx, &mut steps);
    steps.summary();
    if res.is_ok() {
        println!("\nci: all steps passed");
    }
    res
}

fn ci_steps(ctx: &mut Ctx, steps: &mut Steps) -> Result<()> {
    setup_steps(ctx, steps)?;
    let ctx = &*ctx;

    steps.run("cargo fmt --all --check", || {
        run_cmd(ctx.cargo().args(["fmt", "--all", "--check"]))
            .map_err(|e| format!("{e}\n  formatting differs; run `cargo fmt --all`"))
    })?;
    steps.run(
        "cargo clippy --workspace --all-targets --all-features -- -D warnings",
        || {
            run_cmd(ctx.cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    steps.run("cargo test --workspace --all-features", || {
        run_cmd(ctx.cargo().args(["test", "--workspace", "--all-features"]))
    })?;
    steps.run(
        "RUSTDOCFLAGS=\"-D warnings\" cargo doc --workspace --no-deps --all-features",
        || {
            run_cmd(
                ctx.cargo()
                    .args(["doc", "--workspace", "--no-deps", "--all-features"])
                    .env("RUSTDOCFLAGS", "-D warnings"),
            )
        },
    )?;
    steps.run("dependency isolation (cargo tree)", || {
        check_dependency_isolation(ctx)
    })
}

/// Step 8: the forbidden packages of `FORBIDDEN_DEPS` (and, for a library,
/// `TEST_ONLY_DEPS`) must not show up in
/// `cargo tree -p <crate> -e normal`.
fn check_dependency_isolation(ctx: &Ctx) -> Result<()> {
    let mut problems = Vec::new();
    for (krate, forbidden) in FORBIDDEN_DEPS {
        let mut forbidden = forbidden.to_vec();
        if LIBRARIES.contains(krate) {
            forbidden.extend_from_slice(TEST_ONLY_DEPS);
        }
        if !ctx.root.join("crates").join(krate).is_dir() {
            println!("    {krate}: skipped (crates/{krate} does not exist)");
            continue;
        }
        let mut cmd = ctx.cargo();
        cmd.args(["tree", "-p", krate, "-e", "normal", "--prefix", "none"])
            .stderr(Stdio::inherit());
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", describe(&cmd)))?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({})",
                describe(&cmd),
                exit_text(out.status)
            ));
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let mut bad: Vec<&str> = tree
            .lines()
            .map(str::trim)
            .filter(|line| {
                let name = line.split_whitespace().next().unwrap_or("");
                forbidden.contains(&name)
            })
            .collect();
        bad.sort_unstable();
        bad.dedup();
        if bad.is_empty() {
            println!("    {krate}: ok (none of {})", forbidden.join(", "));
        } else {
            for line in &bad {
                println!("    {krate}: forbidden dependency `{line}`");
            }
            problems.push(format!("{krate} depends on {}", bad.join(", ")));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "dependency isolation violated: {} (see `cargo tree -p <crate> -e normal -i <dep>`)",
            problems.join("; ")
        ))
    }
}

fn bench(ctx: &Ctx, args: &[String]) -> Result<()> {
    if !Path::new(&ctx.root).join("crates/pubsub-bench").is_dir() {
        return Err("no benchmark crate yet".to_string());
    }
    run_cmd(
        ctx.cargo()
            .args(["run", "--release", "-p", "pubsub-bench", "--"])
            .args(args),
    )
}
