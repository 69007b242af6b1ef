//! Observability: the Grafana dashboards (`charts/switchyard/dashboards/`), the alert rules
//! (`charts/switchyard/alerts/`), the chart objects that ship them (dashboard ConfigMaps, PodMonitor,
//! PrometheusRule) and the runbooks (`docs/observability.md`).
//!
//! - `every_dashboard_panel_returns_data_from_a_running_cluster` starts redis-server, two `switchyard node`s
//!   and a `switchyard gate`, plays through them with raw clients (logins, rooms, pushes, heartbeats, bad
//!   packets, a Redis outage, a node drain), scrapes them with a real Prometheus every second (relabelled
//!   exactly as the chart's PodMonitor does) and runs every query of every dashboard panel and template
//!   variable against it: each must return data. Operator panels need a Kubernetes API: here they are only
//!   checked to be valid queries; `operator_dashboard_panels_return_data_against_a_real_apiserver` (ignored
//!   by default, needs `e2e/toolchain/build.sh`) runs the operator against a real kube-apiserver and checks
//!   them too.
//! - The alert rules must pass `promtool check rules` and `promtool test rules` (a firing case per alert),
//!   and every alert has a runbook section.
//! - prometheus and promtool come from Debian's `prometheus` package (`scripts/prometheus.sh`); helm from
//!   `scripts/helm.sh`. A missing tool fails the test with the command that installs it.

mod support;

#[path = "support/kube.rs"]
mod kube_support;
#[path = "observability/live.rs"]
mod live;
#[path = "observability/static_checks.rs"]
mod static_checks;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use static_checks::block_after;
use support::procs::{Proc, Redis, free_port};
use support::{Conn, Packet, Wire, http_get, metric_sum, switchyard_binary};
use switchyard_testkit::{Helm, TempDir, on_path, output, run_ok};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/switchyard")
}

fn alerts_dir() -> PathBuf {
    chart().join("alerts")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// The dashboards the chart ships, by file name, and their titles.
const DASHBOARDS: [(&str, &str); 4] = [
    ("switchyard-overview.json", "Switchyard / Overview"),
    ("switchyard-gate.json", "Switchyard / Gate"),
    ("switchyard-node.json", "Switchyard / Node"),
    ("switchyard-operator.json", "Switchyard / Operator"),
];

struct Dashboard {
    file: String,
    text: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let dir = chart().join("dashboards");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    found.sort();
    let mut expected: Vec<String> = DASHBOARDS.iter().map(|(file, _)| file.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected, "the dashboards in {}", dir.display());
    DASHBOARDS
        .iter()
        .map(|(file, _)| {
            let text = read(&dir.join(file));
            let json =
                serde_json::from_str(&text).unwrap_or_else(|error| panic!("{file} is not JSON: {error}"));
            Dashboard {
                file: file.to_string(),
                text,
                json,
            }
        })
        .collect()
}

/// One query of a dashboard: a panel target or a template variable.
#[derive(Debug, Clone)]
struct Query {
    /// "<file> / <panel title> / <refId>" or "<file> / variable <name>".
    what: String,
    /// As written in the dashboard, with Grafana's variables.
    expr: String,
    /// Needs the operator (its metrics, or its pods' `up`).
    operator: bool,
}

fn needs_operator(expr: &str) -> bool {
    expr.contains("switchyard_operator_") || expr.contains("component=\"operator\"")
}

fn panels(dashboard: &Dashboard) -> Vec<&Value> {
    dashboard.json["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no panels", dashboard.file))
        .iter()
        .filter(|panel| panel["type"] != "row")
        .collect()
}

fn panel_queries(dashboard: &Dashboard) -> Vec<Query> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("").to_owned();
            queries.push(Query {
                what: format!(
                    "{} / {title} / {}",
                    dashboard.file,
                    target["refId"].as_str().unwrap_or("?")
                ),
                operator: needs_operator(&expr),
                expr,
            });
        }
    }
    queries
}

/// Template variables of type query, as PromQL: `label_values(m{sel}, l)` becomes `count by (l) (m{sel})`.
fn variable_queries(dashboard: &Dashboard) -> Vec<Query> {
    let mut queries = Vec::new();
    for variable in dashboard.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("?");
        let query = variable["query"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: variable {name} has no string query", dashboard.file));
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!(
                    "{}: variable {name}: expected label_values(...), got {query}",
                    dashboard.file
                )
            });
        let (series, label) = inner.rsplit_once(',').unwrap_or_else(|| {
            panic!(
                "{}: variable {name}: label_values(series, label), got {query}",
                dashboard.file
            )
        });
        let expr = format!("count by ({}) ({})", label.trim(), series.trim());
        queries.push(Query {
            what: format!("{} / variable {name}", dashboard.file),
            operator: needs_operator(&expr),
            expr,
        });
    }
    queries
}

fn all_queries() -> Vec<Query> {
    dashboards()
        .iter()
        .flat_map(|dashboard| {
            let mut queries = panel_queries(dashboard);
            queries.extend(variable_queries(dashboard));
            queries
        })
        .collect()
}

/// A dashboard query with Grafana's variables replaced the way "All" and the default time range would:
/// every template variable matches everything, `$__rate_interval` and `$__range` are fixed windows.
fn concrete(expr: &str, rate_interval: &str) -> String {
    let mut text = expr
        .replace("$__rate_interval", rate_interval)
        .replace("$__range", "1h");
    for variable in ["operator_namespace", "namespace", "gamecluster", "pod"] {
        text = text.replace(&format!("${variable}"), ".+");
    }
    assert!(!text.contains('$'), "an unknown variable is left in {text}");
    text
}

/// Metric names a PromQL expression refers to (`switchyard_*` and `up`), without histogram suffixes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if is_word(bytes[i]) && (i == 0 || !is_word(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_word(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = expr[i..].trim_start().chars().next();
            if word.starts_with("switchyard_") || (word == "up" && next == Some('{')) {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| word.strip_suffix(suffix))
                    .unwrap_or(word);
                names.insert(base.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The alert rules' expressions and names, read from the plain rule file (one `expr: |` block per rule).
fn alert_rules() -> Vec<(String, String)> {
    let text = read(&alerts_dir().join("switchyard-alerts.yaml"));
    let mut rules = Vec::new();
    let mut lines = text.lines().peekable();
    let mut name = None;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(alert) = trimmed.strip_prefix("- alert: ") {
            name = Some(alert.trim().to_owned());
        } else if trimmed == "expr: |" {
            let indent = line.len() - trimmed.len();
            let mut expr = String::new();
            while let Some(next) = lines.peek() {
                if next.trim().is_empty() || next.len() - next.trim_start().len() > indent {
                    expr.push_str(next.trim());
                    expr.push(' ');
                    lines.next();
                } else {
                    break;
                }
            }
            let alert = name.take().expect("an expr after its `- alert:`");
            rules.push((alert, expr.trim().to_owned()));
        }
    }
    assert!(
        rules.len() >= 10,
        "alert rules parsed from the rule file: {rules:?}"
    );
    rules
}

const PROMETHEUS_HINT: &str = "install it with scripts/prometheus.sh (Debian's `prometheus` package, which \
     ships prometheus and promtool; scripts/test.sh runs it)";

fn promtool() -> Command {
    Command::new(on_path("promtool", PROMETHEUS_HINT))
}
