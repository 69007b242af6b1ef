//! The Helm chart (`charts/switchyard`), the example GameClusters (`examples/`), and the contract the
//! container image relies on: the binary runs as an unprivileged user on a read-only filesystem with
//! nothing but its documented `SWITCHYARD_*` variables.
//!
//! - `helm_lint_passes` and `helm_template_*` need helm (`scripts/helm.sh` builds it into the toolchain
//!   cache) and fail with a clear message when it is missing.
//! - `helm_install_into_a_real_apiserver` is ignored by default: it starts etcd and kube-apiserver from
//!   `e2e/toolchain/build.sh` on free 127.0.0.1 ports (`switchyard-testkit`), installs the
//!   chart, checks the CRD, the RBAC rules and the examples, and uninstalls. Run it with
//!   `cargo test --test chart -- --include-ignored`.
//! - `binary_runs_unprivileged_read_only_with_documented_env_only` runs `switchyard dev` as uid 65532
//!   (when the test runs as root) on a read-only root filesystem (when it may create a mount namespace).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
#[path = "chart/apiserver.rs"]
mod apiserver;
#[path = "chart/template.rs"]
mod template;
#[path = "chart/unprivileged.rs"]
mod unprivileged;

use switchyard_testkit::{
    ControlPlaneConfig, Helm, TempDir, describe, http_get_blocking, on_path, output, run_err, run_ok,
    run_with_input,
};

/// The release namespace and name used throughout.
const NAMESPACE: &str = "switchyard-system";
const RELEASE: &str = "switchyard";
/// Names the chart gives the release `switchyard` (fullname `switchyard`).
const OPERATOR: &str = "switchyard-operator";
const CRD: &str = "gameclusters.switchyard.dev";

type Grant = (String, String, String);

/// Every permission the operator needs, as (API group, resource, verb): the rules the operator's own
/// API-server tests run it under (`switchyard_operator::rbac::operator_rules`), so the chart can neither
/// lack a permission the operator uses nor grant one it does not.
fn operator_grants() -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in switchyard_operator::rbac::operator_rules() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    grants.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    grants
}

fn is_lease(grant: &Grant) -> bool {
    grant.0 == "coordination.k8s.io" && grant.1 == "leases"
}

/// What the ClusterRole must grant: everything but the leader-election Lease.
fn cluster_grants() -> BTreeSet<Grant> {
    operator_grants()
        .into_iter()
        .filter(|grant| !is_lease(grant))
        .collect()
}

/// What the namespaced leader-election Role must grant: the Lease only.
fn lease_grants() -> BTreeSet<Grant> {
    let grants: BTreeSet<Grant> = operator_grants().into_iter().filter(is_lease).collect();
    assert!(
        !grants.is_empty(),
        "the operator's rules have no Lease permission"
    );
    grants
}

fn assert_same_grants(what: &str, actual: &BTreeSet<Grant>, expected: &BTreeSet<Grant>) {
    let extra: Vec<_> = actual.difference(expected).collect();
    let missing: Vec<_> = expected.difference(actual).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: grants (apiGroup, resource, verb) differ from least privilege\n  \
         granted but not needed: {extra:?}\n  needed but not granted: {missing:?}"
    );
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/switchyard")
}

/// `helm template` of the chart as release `switchyard` in its namespace, with extra arguments.
trait TemplateChart {
    fn template_chart(&self, extra: &[&str]) -> String;
}

impl TemplateChart for Helm {
    fn template_chart(&self, extra: &[&str]) -> String {
        run_ok(
            self.cmd()
                .args(["template", RELEASE])
                .arg(chart())
                .args(["--namespace", NAMESPACE])
                .args(extra),
        )
    }
}

/// One YAML document of `helm template` output: its kind, metadata.name and text.
#[derive(Debug)]
struct Doc {
    kind: String,
    name: String,
    text: String,
}

fn documents(manifest: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut chunk = String::new();
    for line in manifest.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let kind = chunk
                .lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .map(str::to_owned);
            if let Some(kind) = kind {
                let name = chunk
                    .lines()
                    .skip_while(|l| *l != "metadata:")
                    .find_map(|l| l.strip_prefix("  name: "))
                    .unwrap_or_else(|| panic!("a {kind} without metadata.name:\n{chunk}"))
                    .trim_matches('"')
                    .to_owned();
                docs.push(Doc {
                    kind,
                    name,
                    text: std::mem::take(&mut chunk),
                });
            }
            chunk.clear();
        } else {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    docs
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|doc| doc.kind == kind && doc.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds_and_names(docs)))
}

fn kinds_and_names(docs: &[Doc]) -> BTreeSet<(String, String)> {
    docs.iter()
        .map(|doc| (doc.kind.clone(), doc.name.clone()))
        .collect()
}

/// The grants of a rendered ClusterRole or Role. The chart writes each rule as three lines whose values
/// are one-line flow arrays, which are JSON; any other shape fails here, so no rule can hide.
fn rendered_grants(doc: &Doc) -> BTreeSet<Grant> {
    let mut lines = doc.text.lines().skip_while(|line| *line != "rules:").skip(1);
    let mut grants = BTreeSet::new();
    let field = |line: Option<&str>, prefix: &str| -> Vec<String> {
        let line = line.unwrap_or_else(|| panic!("{} {}: rule ends before {prefix}", doc.kind, doc.name));
        let array = line.strip_prefix(prefix).unwrap_or_else(|| {
            panic!(
                "{} {}: expected a line `{prefix}[...]`, got {line:?} (keep each rule as one-line arrays)",
                doc.kind, doc.name
            )
        });
        serde_json::from_str(array).unwrap_or_else(|error| {
            panic!("{} {}: {line:?} is not a flat array: {error}", doc.kind, doc.name)
        })
    };
    while let Some(first) = lines.next() {
        if !first.starts_with(' ') {
            break; // the next top-level key
        }
        let groups = field(Some(first), "  - apiGroups: ");
        let resources = field(lines.next(), "    resources: ");
        let verbs = field(lines.next(), "    verbs: ");
        for group in &groups {
            for resource in &resources {
                for verb in &verbs {
                    grants.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    assert!(!grants.is_empty(), "{} {} has no rules", doc.kind, doc.name);
    grants
}
