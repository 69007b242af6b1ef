//! The pod contract seen from both ends: every variable the operator writes into a gate or node pod is read
//! by a flag of `switchyard gate` or of the node runtime (`switchyard node`, the same args a game's node
//! reads), and `docs/pod-contract.md` lists exactly the names of [`switchyard_cluster::contract`].

use std::collections::BTreeSet;

use clap::CommandFactory as _;
use switchyard_cluster::contract;
use switchyard_operator::crd::{CaBundleRef, GateTlsSpec, RedisLocatorSpec, SecretKeyRef};
use switchyard_operator::{Children, Defaults, GameCluster, GameClusterSpec};

use crate::Cli;

/// The env names of every argument of `switchyard SUBCOMMAND`.
fn read_by(subcommand: &str) -> BTreeSet<String> {
    let cli = Cli::command();
    let command = cli
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("no subcommand {subcommand}"));
    command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect()
}

/// A cluster with every optional part of the contract switched on (tracing, an external Redis with
/// credentials and a CA).
fn rendered() -> Children {
    let mut spec = GameClusterSpec::default();
    spec.tracing.otlp_endpoint = Some("http://collector:4317".into());
    spec.locator.redis = Some(RedisLocatorSpec {
        url: "rediss://redis:6380".into(),
        password_secret_ref: Some(SecretKeyRef {
            name: "redis".into(),
            key: "password".into(),
        }),
        username_secret_ref: Some(SecretKeyRef {
            name: "redis".into(),
            key: "user".into(),
        }),
        ca: Some(CaBundleRef {
            secret_name: Some("redis-ca".into()),
            config_map_name: None,
            key: "ca.crt".into(),
        }),
        ..Default::default()
    });
    spec.gate.tls = Some(GateTlsSpec {
        secret_name: "arena-tls".into(),
    });
    let mut cluster = GameCluster::new("arena", spec);
    cluster.metadata.namespace = Some("games".into());
    cluster.metadata.uid = Some("uid-1".into());
    switchyard_operator::children(&cluster, &Defaults::default()).expect("a valid spec")
}

fn assert_all_read(pod: &str, written: &BTreeSet<String>, read: &BTreeSet<String>) {
    let unread: Vec<&String> = written
        .iter()
        .filter(|name| !read.contains(*name) && !contract::REFERENCE_ONLY.contains(&name.as_str()))
        .collect();
    assert!(
        unread.is_empty(),
        "the operator writes {unread:?} into {pod} pods, and no flag reads them"
    );
    for name in contract::REFERENCE_ONLY {
        assert!(
            !read.contains(name),
            "{name} is only referenced, yet read by {pod}"
        );
    }
}

#[test]
fn every_variable_the_operator_writes_is_read() {
    let children = rendered();
    let gate = children.pod_env_names(&children.gate_deployment);
    let node = children.pod_env_names(&children.pools[0].deployment);
    assert!(gate.len() > 20 && node.len() > 15, "{gate:?} {node:?}");
    assert_all_read("gate", &gate, &read_by("gate"));
    assert_all_read("node", &node, &read_by("node"));
}

#[test]
fn the_gate_and_node_read_the_contract_names() {
    // The other direction for the contract's own names: a flag renamed away from its constant fails here
    // even before the operator is involved.
    let gate = read_by("gate");
    for name in contract::gate_env().filter(|name| !contract::REFERENCE_ONLY.contains(name)) {
        assert!(gate.contains(name), "switchyard gate reads no {name}");
    }
    let node = read_by("node");
    for name in contract::node_env().filter(|name| !contract::REFERENCE_ONLY.contains(name)) {
        assert!(node.contains(name), "switchyard node reads no {name}");
    }
}

#[test]
fn the_pod_contract_document_lists_exactly_the_contract() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pod-contract.md"))
        .expect("docs/pod-contract.md");
    // The first column of the variable tables: `NAME`, sometimes several per row.
    let mut listed = BTreeSet::new();
    for row in doc.lines().filter(|line| line.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        for quoted in first_cell.split('`').skip(1).step_by(2) {
            if quoted.starts_with("SWITCHYARD_") || quoted.starts_with("OTEL_") {
                listed.insert(quoted.to_owned());
            }
        }
    }
    let contract: BTreeSet<String> = contract::all().map(str::to_owned).collect();
    assert_eq!(
        listed, contract,
        "docs/pod-contract.md and switchyard_cluster::contract differ"
    );
}
