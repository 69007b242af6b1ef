//! docs/first-game.md stays true:
//!
//! - its `Cargo.toml` and `src/main.rs` are the crate `tests/outside_game.rs` makes with `cargo new`, builds
//!   and runs behind a gate (`tests/fixtures/outside-game/`);
//! - every command it shows is one a test runs (the list below says which), so a new step cannot slip in
//!   untested;
//! - `helm_install_and_kubectl_apply_as_the_guide_says` (ignored tier: a real kube-apiserver from
//!   `e2e/toolchain/build.sh`, helm from `scripts/helm.sh`) runs the guide's `helm` and `kubectl` lines,
//!   word for word, with the guide's `my-game.yaml`.

#[path = "support/kube.rs"]
mod kube_support;
mod support;

use std::process::Command;

use kube_support::ControlPlane;
use support::game::workspace;
use switchyard_testkit::{Helm, TempDir, tool};

fn guide() -> String {
    std::fs::read_to_string(workspace().join("docs/first-game.md")).expect("docs/first-game.md")
}

/// The fenced blocks of `language` in `text`, in order.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line == format!("```{language}") => current = Some(String::new()),
            Some(block) if line == "```" => {
                found.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    found
}

fn fixture(file: &str) -> String {
    std::fs::read_to_string(workspace().join("tests/fixtures/outside-game").join(file)).expect("fixture file")
}

#[test]
fn the_guide_shows_the_crate_the_tests_build() {
    let guide = guide();
    let toml = blocks(&guide, "toml");
    assert_eq!(toml.len(), 1, "one Cargo.toml in the guide");
    // The guide's crate sits next to a Switchyard checkout; the fixture sits inside it.
    assert_eq!(
        toml[0].replace("\"../switchyard/node\"", "\"../../../node\""),
        fixture("Cargo.toml")
    );
    let rust = blocks(&guide, "rust");
    assert_eq!(rust.len(), 1, "one src/main.rs in the guide");
    assert_eq!(rust[0], fixture("src/main.rs"));
}

/// Every command of the guide, and the test that runs it.
const TESTED_COMMANDS: [(&str, &str); 9] = [
    (
        "cargo new my-game",
        "outside_game (support::game::build_outside_crate)",
    ),
    ("cargo build", "outside_game (support::game::build_outside_crate)"),
    (
        "switchyard gate --registry static --nodes 127.0.0.1:7400 &",
        "outside_game (support::game::GameBehindGate)",
    ),
    (
        "./target/debug/my-game --link 127.0.0.1:7400",
        "outside_game (support::game::GameBehindGate)",
    ),
    ("cargo build --release", "the tests of scripts/image.sh"),
    (
        "../switchyard/scripts/image.sh --binary target/release/my-game --name registry.local/my-game:1.0.0",
        "the tests of scripts/image.sh",
    ),
    (
        "helm install switchyard charts/switchyard --namespace switchyard-system --create-namespace",
        "first_game::helm_install_and_kubectl_apply_as_the_guide_says",
    ),
    (
        "kubectl apply -f my-game.yaml",
        "first_game::helm_install_and_kubectl_apply_as_the_guide_says",
    ),
    (
        "kubectl get gc my-game",
        "first_game::helm_install_and_kubectl_apply_as_the_guide_says",
    ),
];

fn guide_commands() -> Vec<String> {
    blocks(&guide(), "sh")
        .iter()
        .flat_map(|block| block.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .collect()
}

#[test]
fn every_command_of_the_guide_is_run_by_a_test() {
    let commands = guide_commands();
    let listed: Vec<&str> = TESTED_COMMANDS.iter().map(|(command, _)| *command).collect();
    assert_eq!(
        commands, listed,
        "the guide's commands changed: run the new ones in a test, then list them here"
    );
}

#[test]
#[ignore = "needs a real kube-apiserver and helm: e2e/toolchain/build.sh, scripts/helm.sh"]
fn helm_install_and_kubectl_apply_as_the_guide_says() {
    let plane = ControlPlane::shared();
    let helm = Helm::new();
    let work = TempDir::new("first-game");
    let work = work.path();
    let yaml = blocks(&guide(), "yaml");
    assert_eq!(yaml.len(), 1, "one my-game.yaml in the guide");
    std::fs::write(work.join("my-game.yaml"), &yaml[0]).expect("write my-game.yaml");

    for line in guide_commands() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut command = match words[0] {
            "helm" => {
                let mut command = helm.cmd();
                command.env("KUBECONFIG", &plane.admin_kubeconfig);
                command
            }
            "kubectl" => {
                let mut kubectl = Command::new(tool("kubectl"));
                kubectl
                    .env("KUBECONFIG", &plane.admin_kubeconfig)
                    .current_dir(work);
                kubectl
            }
            _ => continue,
        };
        let output = command.args(&words[1..]).output().expect("the command runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "`{line}` failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if line.starts_with("kubectl get gc") {
            assert!(stdout.contains("my-game"), "{stdout}");
        }
    }
    // What the API server stored: the guide's image in the node pool.
    let stored = plane.kubectl_ok(&["get", "gc", "my-game", "-o", "jsonpath={.spec.node.image}"]);
    assert_eq!(stored, "registry.local/my-game:1.0.0");
    let _ = helm
        .cmd()
        .env("KUBECONFIG", &plane.admin_kubeconfig)
        .args(["uninstall", "switchyard", "--namespace", "switchyard-system"])
        .output();
}
