//! The committed CRD YAML must equal what `switchyard crd` generates: `crds/gamecluster.yaml`, and the
//! chart's copy `charts/switchyard/crds/gamecluster.yaml` when the chart exists.
//!
//! Regenerate with `cargo run -- crd > crds/gamecluster.yaml` (and copy it into the chart), or run this
//! test with `SWITCHYARD_UPDATE_CRDS=1`, which rewrites both files.

use std::path::PathBuf;

const REGENERATE: &str = "cargo run -- crd > crds/gamecluster.yaml && \
     cp crds/gamecluster.yaml charts/switchyard/crds/gamecluster.yaml \
     (or: SWITCHYARD_UPDATE_CRDS=1 cargo test -p switchyard-operator --test crd_fresh)";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate lives in the workspace")
        .to_path_buf()
}

#[test]
fn committed_crd_yaml_is_fresh() {
    let generated = switchyard_operator::crd_yaml().expect("the CRD serializes");
    let update = std::env::var_os("SWITCHYARD_UPDATE_CRDS").is_some();
    let root = workspace();
    let mut checked = 0;
    for (relative, required) in [
        ("crds/gamecluster.yaml", true),
        ("charts/switchyard/crds/gamecluster.yaml", false),
    ] {
        let path = root.join(relative);
        if !required && !path.parent().is_some_and(|dir| dir.exists()) {
            continue;
        }
        if update {
            std::fs::write(&path, &generated).expect("the CRD file is writable");
            eprintln!("wrote {}", path.display());
            continue;
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{relative} cannot be read ({error}); generate it: {REGENERATE}"));
        assert!(
            committed == generated,
            "{relative} is stale: it differs from the CRD the code generates. Regenerate it: {REGENERATE}"
        );
        checked += 1;
    }
    assert!(update || checked >= 1, "crds/gamecluster.yaml was not checked");
}

#[test]
fn crd_names_and_subresources() {
    let crd = switchyard_operator::crd::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("gameclusters.switchyard.dev"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["gc".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let subresources = version.subresources.as_ref().expect("subresources");
    assert!(subresources.status.is_some());
    let scale = subresources.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.node.replicas");
    assert_eq!(scale.status_replicas_path, ".status.node.replicas");
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| column.name.as_str())
        .collect();
    assert_eq!(columns, ["Gates", "Nodes", "Players", "Ready", "Age"]);
    let yaml = switchyard_operator::crd_yaml().expect("yaml");
    for rule in [
        "at least one of gate.tcp and gate.websocket must be enabled",
        "gate.tcp.port and gate.websocket.port must differ",
        "packet.seqBytes must be 0, 1, 2 or 4",
        "packet.routeBytes must be 1, 2 or 4",
        "node.drainDeadlineSeconds must be greater than 0",
        "metadata.name must be a DNS label",
    ] {
        assert!(yaml.contains(rule), "the CRD lacks the rule {rule:?}");
    }
}
