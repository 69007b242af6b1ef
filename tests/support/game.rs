//! Game nodes built from source and run behind a real `switchyard gate`: the workspace's example game and a
//! crate from outside the workspace, each compiled with `cargo build` into the shared target directory (so
//! the SDK's dependencies compile once), then started as a node with the pod contract's flags.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::procs::{Proc, Redis, free_port};
use super::{http_get, metric_sum, switchyard_binary};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory this test was built in (`CARGO_TARGET_DIR` or the workspace's `target/`): the test
/// binary lives in `<target>/debug/deps/`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Runs `cargo build ARGS` in `dir` with the shared target directory; panics with cargo's output on failure.
fn cargo_build(dir: &Path, args: &[&str]) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO"))
        .arg("build")
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("cargo build {args:?}: {:?}", started.elapsed());
}

/// Builds binary `bin` of workspace package `package` and returns its path.
pub fn build_workspace_binary(package: &str, bin: &str) -> PathBuf {
    cargo_build(&workspace(), &["--locked", "-p", package, "--bin", bin]);
    target_dir().join("debug").join(bin)
}

/// What docs/first-game.md does, in `scratch`: `cargo new NAME`, then the crate's `Cargo.toml` and
/// `src/main.rs` from `fixture` (the guide's two files; its `path = "../../../node"` dependency pointed at
/// this checkout's `node/`), the workspace's `Cargo.lock` so it resolves the versions the workspace
/// tested, and `cargo build`. Returns the binary.
pub fn build_outside_crate(fixture: &Path, scratch: &Path) -> PathBuf {
    let manifest = std::fs::read_to_string(fixture.join("Cargo.toml")).expect("fixture Cargo.toml");
    let name = manifest
        .lines()
        .find_map(|line| line.strip_prefix("name = "))
        .map(|name| name.trim_matches('"').to_owned())
        .expect("the fixture's package name");
    let dir = scratch.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    let created = Command::new(env!("CARGO"))
        .args(["new", "--vcs", "none", &name])
        .current_dir(scratch)
        .output()
        .expect("cargo new runs");
    assert!(
        created.status.success(),
        "cargo new {name}: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let node = workspace().join("node");
    let manifest = manifest.replace("\"../../../node\"", &format!("{:?}", node.display().to_string()));
    assert!(
        manifest.contains(&node.display().to_string()),
        "the fixture names ../../../node"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::copy(fixture.join("src/main.rs"), dir.join("src/main.rs")).expect("copy src/main.rs");
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");
    cargo_build(&dir, &[]);
    target_dir().join("debug").join(name)
}

/// A game node process and a `switchyard gate` in front of it (static registry; a real redis-server as the
/// locator, which two processes need to share bindings), each with its log in `dir`; all killed when
/// dropped.
pub struct GameBehindGate {
    pub redis: Redis,
    pub node: Proc,
    pub gate: Proc,
    /// Client TCP address of the gate.
    pub tcp: String,
    /// Client WebSocket URL of the gate.
    pub ws: String,
    pub node_admin: String,
    pub gate_admin: String,
}

impl GameBehindGate {
    /// Starts `node_binary` with `node_args` after the contract's flags, and a gate linked to it; returns
    /// once the gate holds the link.
    pub async fn start(node_binary: &Path, node_args: &[&str], dir: &Path) -> GameBehindGate {
        let redis = Redis::start(dir);
        let locator = redis.url();
        let link = format!("127.0.0.1:{}", free_port());
        let node_admin = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = [
            "--id",
            "game-node",
            "--link",
            &link,
            "--http",
            &node_admin,
            "--locator",
            &locator,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(node_args.iter().map(|s| s.to_string()));
        let node = Proc::spawn("game-node", node_binary.to_str().expect("utf-8 path"), &args, dir);
        let tcp = format!("127.0.0.1:{}", free_port());
        let ws = format!("127.0.0.1:{}", free_port());
        let gate_admin = format!("127.0.0.1:{}", free_port());
        let gate_args: Vec<String> = [
            "gate",
            "--id",
            "gate-1",
            "--tcp",
            &tcp,
            "--ws",
            &ws,
            "--http",
            &gate_admin,
            "--registry",
            "static",
            "--nodes",
            &link,
            "--locator",
            &locator,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let gate = Proc::spawn("gate", switchyard_binary(), &gate_args, dir);
        let mut running = GameBehindGate {
            redis,
            node,
            gate,
            tcp,
            ws: format!("ws://{ws}/"),
            node_admin: format!("http://{node_admin}"),
            gate_admin: format!("http://{gate_admin}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                running.node.is_running(),
                "the game node exited:\n{}",
                running.node.log_text()
            );
            if let Ok(stream) = tokio::net::TcpStream::connect(&gate_admin).await {
                drop(stream);
                let metrics = http_get(&running.gate_admin, "/metrics").await.1;
                if metric_sum(&metrics, "switchyard_gate_node_links", &[]) == 1.0 {
                    return running;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the gate never linked to the game node"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
