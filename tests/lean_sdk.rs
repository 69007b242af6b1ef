//! What a game pays for the node SDK: no library crate of the workspace selects a k8s-openapi version
//! feature (k8s-openapi leaves that choice to the application; a library that made it would break every game
//! that uses kube with another version), and without its default features switchyard-node pulls in neither
//! Kubernetes, Redis nor the OTLP exporter; and the test-support crate (`testkit/`) stays out of them all.

use std::process::Command;

/// `cargo tree` of `package` with normal dependencies only (no dev-dependencies: a library's tests may
/// select a version), as text.
fn cargo_tree(package: &str, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "-p", package, "--prefix", "none"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const LIBRARIES: [&str; 6] = [
    "switchyard-protocol",
    "switchyard-cluster",
    "switchyard-gate",
    "switchyard-node",
    "switchyard-client",
    "switchyard-operator",
];

#[test]
fn no_library_selects_a_kubernetes_version() {
    for library in LIBRARIES {
        let tree = cargo_tree(library, &["-e", "normal,features", "--all-features"]);
        let versions: Vec<&str> = tree
            .lines()
            .filter(|line| line.starts_with("k8s-openapi feature \"v1_"))
            .collect();
        assert!(
            versions.is_empty(),
            "{library} selects a k8s-openapi version through its normal dependencies: {versions:?}"
        );
    }
    // The check can fail: the binary, an application, does select one.
    let binary = cargo_tree("switchyard", &["-e", "normal,features"]);
    assert!(
        binary
            .lines()
            .any(|line| line.starts_with("k8s-openapi feature \"v1_"))
    );
}

#[test]
fn without_default_features_the_sdk_stays_lean() {
    let lean = cargo_tree("switchyard-node", &["-e", "normal", "--no-default-features"]);
    for heavy in ["kube ", "k8s-openapi ", "redis ", "tonic ", "opentelemetry-otlp "] {
        assert!(
            !lean.lines().any(|line| line.starts_with(heavy)),
            "switchyard-node --no-default-features still depends on {heavy}"
        );
    }
    let full = cargo_tree("switchyard-node", &["-e", "normal"]);
    for heavy in ["kube ", "redis ", "opentelemetry-otlp "] {
        assert!(
            full.lines().any(|line| line.starts_with(heavy)),
            "the defaults bring {heavy}"
        );
    }
}

/// The test-support crate is a dev-dependency (and the e2e harness's): no library, nor the binary, ships it.
#[test]
fn the_testkit_is_never_a_normal_dependency() {
    for package in LIBRARIES.into_iter().chain(["switchyard"]) {
        let tree = cargo_tree(package, &["-e", "normal,build", "--all-features"]);
        assert!(
            !tree.lines().any(|line| line.starts_with("switchyard-testkit ")),
            "{package} depends on switchyard-testkit outside its dev-dependencies"
        );
    }
    // The check can fail: the e2e harness does depend on it.
    let e2e = cargo_tree("switchyard-e2e", &["-e", "normal"]);
    assert!(e2e.lines().any(|line| line.starts_with("switchyard-testkit ")));
}
