//! A game crate from outside the workspace (tests/fixtures/outside-game, the crate of docs/first-game.md:
//! `switchyard-node` as its only Switchyard dependency, a main of a router and `switchyard_node::run`) is
//! made with `cargo new` and built with `cargo build` as the guide says, runs as a node behind a real
//! `switchyard gate`, answers a raw due packet, serves its admin endpoints and drains on SIGTERM.

mod support;

use std::time::Duration;

use serde_json::json;
use support::game::{GameBehindGate, build_outside_crate, workspace};
use support::image::{ImageContents, build_image};
use support::{Conn, Packet, Wire, http_get};
use switchyard_testkit::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_crate_runs_as_a_node_behind_a_gate() {
    let scratch = TempDir::new("outside-game");
    let binary = build_outside_crate(&workspace().join("tests/fixtures/outside-game"), scratch.path());
    // The runtime's flags, under the game's own name; the `node` a GameCluster passes by default is accepted.
    let help = std::process::Command::new(&binary)
        .args(["node", "--help"])
        .output()
        .expect("runs");
    let help_text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    assert!(help_text.contains("Usage: my-game"), "{help_text}");
    assert!(help_text.contains("[env: SWITCHYARD_LINK="), "{help_text}");
    let bad = std::process::Command::new(&binary)
        .arg("--no-such-flag")
        .output()
        .expect("runs");
    assert!(!bad.status.success(), "an unknown flag is refused");

    // docs/first-game.md's image step: the game's own binary packed by scripts/image.sh, run as 65532 with
    // the game as its entrypoint and no shell.
    let image = build_image(
        "registry.local/my-game:1.0.0",
        &scratch.path().join("my-game.tar"),
        &["--binary", binary.to_str().expect("utf-8 path")],
    );
    let contents = ImageContents::read(&image.archive);
    assert_eq!(contents.config["config"]["User"], "65532:65532");
    assert_eq!(contents.config["config"]["Entrypoint"], json!(["my-game"]));
    let files: Vec<String> = contents
        .layer_entries()
        .into_iter()
        .map(|(_, _, path)| path)
        .collect();
    assert!(
        files.iter().any(|path| path.ends_with("bin/my-game")),
        "{files:?}"
    );
    assert!(
        !files
            .iter()
            .any(|path| path.ends_with("/sh") || path.ends_with("busybox")),
        "{files:?}"
    );

    let mut running = GameBehindGate::start(&binary, &[], scratch.path()).await;

    // A due data packet, byte by byte: size, header 0 (request), route 1, seq 7, a binary payload.
    let payload = [0x00, 0xff, b's', b'w', b'y'];
    let mut client = Conn::tcp(&running.tcp, Wire::DEFAULT).await;
    client.send_raw(&Wire::DEFAULT.data(1, 7, &payload)).await;
    let reversed: Vec<u8> = payload.iter().rev().copied().collect();
    assert_eq!(
        client.recv().await,
        Some(Packet::Data {
            route: 1,
            seq: 7,
            payload: reversed
        }),
        "the outside game's handler answers through the gate"
    );

    // The runtime's admin endpoints, with the node's metrics.
    assert_eq!(http_get(&running.node_admin, "/readyz").await.0, 200);
    let metrics = http_get(&running.node_admin, "/metrics").await.1;
    assert!(metrics.contains("switchyard_node_"), "{metrics}");

    // SIGTERM: the node drains (no player is bound) and `run` returns, so the process exits cleanly.
    running.node.signal("TERM");
    let status = running
        .node
        .wait_exit(Duration::from_secs(10))
        .expect("the node exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", running.node.log_text());
    let log = running.node.log_text();
    assert!(log.contains("SIGTERM: draining"), "{log}");
    assert!(log.contains("node stopped"), "{log}");
}
