//! The committed CRD YAML must equal what `switchyard crd` generates: `crds/gamecluster.yaml` (the
//! GameCluster and GamePool CRDs, two documents), and the chart's copy `charts/switchyard/crds/gamecluster.yaml`
//! when the chart exists; and the GameCluster CRD must stay small enough for `kubectl apply`.
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
        "drainDeadlineSeconds of a node pool must be greater than 0",
        "metadata.name must be a DNS label",
        "spec.node and spec.pools are exclusive",
        "pools[].name must be unique",
        "pools[].name must be a DNS label",
        "metadata.name and each pools[].name together must be at most 57 characters",
        "spec.pool is immutable",
    ] {
        assert!(yaml.contains(rule), "the CRD lacks the rule {rule:?}");
    }
}

#[test]
fn the_game_pool_crd_scales_one_pool() {
    let crd = switchyard_operator::crd::pool_crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("gamepools.switchyard.dev"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["gp".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    let subresources = version.subresources.as_ref().expect("subresources");
    assert!(subresources.status.is_some());
    let scale = subresources.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| column.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Cluster", "Pool", "Desired", "Ready", "Draining", "Players", "Age"
        ]
    );
    // Both CRDs are in the one committed file, so `kubectl apply -f crds/` installs both.
    let yaml = switchyard_operator::crd_yaml().expect("yaml");
    assert_eq!(yaml.matches("\nkind: CustomResourceDefinition\n").count(), 2);
}

#[test]
fn the_game_cluster_crd_fits_the_last_applied_annotation() {
    // `kubectl apply` (client-side) stores the whole object in an annotation, and a pod's or CRD's
    // annotations may hold 256 KiB in all: keep the CRD well under it.
    let json = serde_json::to_vec(&switchyard_operator::crd::crd()).expect("json");
    assert!(
        json.len() < 200 * 1024,
        "the GameCluster CRD is {} bytes as JSON; it must stay under 200 KiB for kubectl apply",
        json.len()
    );
    let pool = serde_json::to_vec(&switchyard_operator::crd::pool_crd()).expect("json");
    assert!(pool.len() < 16 * 1024, "the GamePool CRD is {} bytes", pool.len());
}
