//! due clients connect unchanged: due's own Go client (`bench/due/scenario`, built from the Go module proxy
//! by `bench/due/build.sh`, the same build as the benchmark's) logs two players in (route 2), runs the
//! stateful routes whoami (3) and join (4), and says a line (5) that both players receive as push 6, against
//! a real `switchyard dev`, over TCP and WebSocket.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::Dev;

/// Builds the due programs (idempotent; seconds when up to date) and returns the scenario's path.
fn scenario_binary() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("bench/due/build.sh"))
        .output()
        .expect("bench/due/build.sh runs (it needs go)");
    assert!(
        out.status.success(),
        "bench/due/build.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).expect("utf-8 path");
    Path::new(dir.trim()).join("scenario")
}

#[test]
fn dues_own_client_logs_in_uses_stateful_routes_and_receives_pushes() {
    let scenario = scenario_binary();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dev = Dev::start(&[]);
    let ws_addr = dev
        .ws
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    for (transport, addr) in [("tcp", dev.tcp.clone()), ("ws", ws_addr)] {
        let out = Command::new(&scenario)
            .args(["-addr", &addr, "-transport", transport])
            // switchyard dev's defaults; due's packer is set from these flags.
            .args([
                "-route-bytes",
                "2",
                "-seq-bytes",
                "2",
                "-room",
                &format!("due-{transport}"),
            ])
            .env("DUE_ETC", root.join("bench/due/etc"))
            .output()
            .expect("scenario runs");
        assert!(
            out.status.success(),
            "{transport}: due's client failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("{transport}: no JSON report in:\n{stdout}"));
        let seen: Value = serde_json::from_str(line).expect("JSON report");
        for (name, uid) in [("ada", 9001), ("bob", 9002)] {
            assert_eq!(
                seen[format!("login_{name}")],
                json!({"code": 0, "uid": uid, "node": "dev-lobby"}),
                "{transport}"
            );
            assert_eq!(
                seen[format!("whoami_{name}")],
                json!({"code": 0, "uid": uid, "node": "dev-battle"}),
                "{transport}"
            );
        }
        assert_eq!(seen["join_ada"], json!({"code": 0, "members": 1}), "{transport}");
        assert_eq!(seen["join_bob"], json!({"code": 0, "members": 2}), "{transport}");
        assert_eq!(seen["say"], json!({"code": 0}), "{transport}");
        let push = json!({"route": 6, "seq": 0, "body": {"room": format!("due-{transport}"), "from": 9001, "text": "hello from due"}});
        assert_eq!(seen["push_bob"], push, "{transport}");
        assert_eq!(seen["push_ada"], push, "{transport}");
    }
}
