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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::procs::{Proc, Redis, free_port};
use support::{Conn, Packet, Wire, http_get, metric_sum, switchyard_binary};
use switchyard_testkit::{Helm, TempDir, on_path, output, run_ok};

// ---- files of the repository --------------------------------------------------------------------------------

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

// ---- tools --------------------------------------------------------------------------------------------------

const PROMETHEUS_HINT: &str = "install it with scripts/prometheus.sh (Debian's `prometheus` package, which \
     ships prometheus and promtool; scripts/test.sh runs it)";

fn promtool() -> Command {
    Command::new(on_path("promtool", PROMETHEUS_HINT))
}

// ---- dashboards: structure ----------------------------------------------------------------------------------

#[test]
fn dashboards_are_well_formed_and_templated_by_namespace_and_gamecluster() {
    let mut uids = BTreeSet::new();
    for (dashboard, (_, title)) in dashboards().iter().zip(DASHBOARDS) {
        let file = &dashboard.file;
        let json = &dashboard.json;
        assert_eq!(json["title"], title, "{file}: title");
        let uid = json["uid"].as_str().unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(uid.len() <= 40, "{file}: uid {uid} is longer than Grafana allows");
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} is used twice");
        assert!(
            json["tags"]
                .as_array()
                .is_some_and(|tags| tags.contains(&json!("switchyard"))),
            "{file}: tagged switchyard (the dashboards link to each other by tag)"
        );
        // tests/chart.rs refuses any `*` in the default manifest (no RBAC wildcard may hide): the
        // dashboards are in it, so their regexes use `.+`, never `.*`, and no query multiplies.
        assert!(!dashboard.text.contains('*'), "{file} contains a `*`");

        let variables: BTreeMap<&str, &Value> = json["templating"]["list"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: no templating"))
            .iter()
            .map(|variable| (variable["name"].as_str().unwrap_or("?"), variable))
            .collect();
        assert_eq!(
            variables["datasource"]["type"], "datasource",
            "{file}: $datasource"
        );
        assert_eq!(
            variables["datasource"]["query"], "prometheus",
            "{file}: $datasource"
        );
        for name in ["namespace", "gamecluster"] {
            let variable = variables
                .get(name)
                .unwrap_or_else(|| panic!("{file}: no ${name} variable"));
            assert_eq!(variable["type"], "query", "{file}: ${name}");
            assert_eq!(variable["includeAll"], true, "{file}: ${name} offers All");
            assert_eq!(variable["multi"], true, "{file}: ${name} is multi-value");
            assert_eq!(
                variable["allValue"], ".+",
                "{file}: ${name} All matches every value"
            );
            assert_eq!(variable["datasource"]["uid"], "${datasource}", "{file}: ${name}");
            assert_eq!(
                variable["current"]["value"],
                json!(["$__all"]),
                "{file}: ${name} starts at All"
            );
        }

        let mut ids = BTreeSet::new();
        let all = json["panels"].as_array().expect("panels");
        for panel in all {
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: a panel without id"));
            assert!(ids.insert(id), "{file}: panel id {id} twice");
            let grid = &panel["gridPos"];
            let (x, w) = (grid["x"].as_u64().unwrap_or(99), grid["w"].as_u64().unwrap_or(99));
            assert!(
                x + w <= 24 && grid["h"].as_u64().is_some(),
                "{file}: gridPos of {panel}"
            );
        }
        let panels = panels(dashboard);
        assert!(panels.len() >= 10, "{file}: {} panels", panels.len());
        for panel in panels {
            let title = panel["title"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: a panel without title"));
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file} / {title}: a description says what the panel shows"
            );
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file} / {title}: datasource"
            );
            let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
            let targets = targets.unwrap_or_else(|| panic!("{file} / {title}: no targets"));
            for target in targets {
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{file} / {title}: target datasource"
                );
                let expr = target["expr"].as_str().filter(|e| !e.is_empty());
                let expr = expr.unwrap_or_else(|| panic!("{file} / {title}: a target without expr"));
                check_selectors(
                    &format!("{file} / {title}"),
                    expr,
                    file == "switchyard-overview.json",
                );
            }
        }
    }
}

/// Every series selector of a panel query is scoped by the dashboard's variables: gate, node and locator
/// series by `$namespace` and `$gamecluster`, operator series by `$operator_namespace` (in the overview,
/// which has no operator variable, operator series cover every operator).
fn check_selectors(what: &str, expr: &str, overview: bool) {
    for name in metric_names(expr) {
        let mut rest = expr;
        while let Some(at) = rest.find(name.as_str()) {
            let after = &rest[at + name.len()..];
            let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            if rest[..at].ends_with(is_word) {
                rest = after;
                continue;
            }
            let word_continues = after.starts_with(is_word);
            let suffix_len = ["_bucket", "_count", "_sum"]
                .iter()
                .find(|suffix| after.starts_with(*suffix))
                .map_or(0, |suffix| suffix.len());
            let after = &after[suffix_len..];
            if word_continues && suffix_len == 0 {
                rest = &rest[at + name.len()..];
                continue;
            }
            let selector = after
                .strip_prefix('{')
                .and_then(|s| s.split_once('}'))
                .map(|(inside, _)| inside);
            let operator_series = name.starts_with("switchyard_operator_")
                || selector.is_some_and(|s| s.contains("component=\"operator\""));
            match (operator_series, selector) {
                (true, None) => assert!(overview, "{what}: {name} without a selector in {expr}"),
                (true, Some(inside)) => assert!(
                    inside.contains("namespace=~\"$operator_namespace\""),
                    "{what}: {name}{{{inside}}} is not scoped by $operator_namespace"
                ),
                (false, None) => panic!("{what}: {name} without a selector in {expr}"),
                (false, Some(inside)) => assert!(
                    inside.contains("namespace=~\"$namespace\"")
                        && inside.contains("gamecluster=~\"$gamecluster\""),
                    "{what}: {name}{{{inside}}} is not scoped by $namespace and $gamecluster"
                ),
            }
            rest = &rest[at + name.len()..];
        }
    }
}

/// Every dashboard query is valid PromQL: each becomes a recording rule of a throwaway rule file that
/// `promtool check rules` parses.
#[test]
fn dashboard_queries_are_valid_promql() {
    let dir = TempDir::new("promql");
    let rules: Vec<Value> = all_queries()
        .iter()
        .enumerate()
        .map(|(index, query)| json!({"record": format!("dashboard_query_{index}"), "expr": concrete(&query.expr, "1m")}))
        .collect();
    let count = rules.len();
    let file = dir.path().join("queries.rules.json");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboards", "rules": rules}]}).to_string(),
    )
    .expect("write the rule file");
    let out = output(promtool().args(["check", "rules"]).arg(&file));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        // Name the queries promtool complains about.
        let queries = all_queries();
        let named: Vec<String> = text
            .lines()
            .filter_map(|line| {
                let index: usize = line
                    .split("dashboard_query_")
                    .nth(1)?
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()?;
                Some(format!("{} : {}", queries[index].what, queries[index].expr))
            })
            .collect();
        panic!(
            "promtool check rules refused dashboard queries:\n{text}\n{}",
            named.join("\n")
        );
    }
    assert!(text.contains(&format!("SUCCESS: {count} rules found")), "{text}");
}

// ---- alerts ---------------------------------------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let rules = alerts_dir().join("switchyard-alerts.yaml");
    let out = run_ok(promtool().args(["check", "rules"]).arg(&rules));
    let count = alert_rules().len();
    assert!(out.contains(&format!("SUCCESS: {count} rules found")), "{out}");

    let out = run_ok(
        promtool()
            .args(["test", "rules", "switchyard-alerts_test.yaml"])
            .current_dir(alerts_dir()),
    );
    assert!(out.contains("SUCCESS"), "promtool test rules:\n{out}");

    // Each alert has a unit test in which it fires (a non-empty exp_alerts).
    let tests = read(&alerts_dir().join("switchyard-alerts_test.yaml"));
    for (alert, _) in alert_rules() {
        let fires = tests
            .match_indices(&format!("alertname: {alert}\n"))
            .any(|(at, found)| {
                let after = tests[at + found.len()..].trim_start();
                after.starts_with("exp_alerts:\n")
                    && after["exp_alerts:\n".len()..]
                        .trim_start()
                        .starts_with("- exp_labels:")
            });
        assert!(
            fires,
            "switchyard-alerts_test.yaml has no case in which {alert} fires"
        );
    }
}

#[test]
fn every_alert_has_a_runbook_and_labels_the_dashboards_use() {
    let docs = read(&repo().join("docs/observability.md"));
    let rules_text = read(&alerts_dir().join("switchyard-alerts.yaml"));
    for (alert, expr) in alert_rules() {
        assert!(
            docs.contains(&format!("\n### {alert}\n")),
            "docs/observability.md has no runbook section `### {alert}`"
        );
        let anchor = format!(
            "runbook_url: https://example.invalid/switchyard/blob/main/docs/observability.md#{}\n",
            alert.to_lowercase()
        );
        assert!(
            rules_text.contains(&anchor),
            "{alert}: its runbook_url is not {anchor}"
        );
        // Alerts group by the labels the PodMonitor adds, like the dashboards.
        let operator = expr.contains("switchyard_operator_");
        let needed: &[&str] = if operator {
            &["namespace"]
        } else {
            &["namespace", "gamecluster"]
        };
        for label in needed {
            assert!(
                expr.contains(label),
                "{alert} does not keep the label {label}: {expr}"
            );
        }
        for name in metric_names(&expr) {
            assert!(
                docs.contains(&format!("`{name}")),
                "docs/observability.md does not list the metric {name} ({alert})"
            );
        }
    }
}

/// Series that exist only after their first event (a handler that failed, a node-to-node call, labelled by
/// its route and outcome): not in a fresh process's output. The running-cluster test sees them.
const CREATED_ON_FIRST_EVENT: [&str; 3] = [
    "switchyard_node_handler_failures_total",
    "switchyard_node_calls_total",
    "switchyard_node_call_duration_seconds",
];

/// Every gate and node metric the dashboards and alerts use is exported by the binary (checked on
/// `switchyard dev`, which runs both, after one login and one echo; locator metrics need Redis and are
/// covered by the cluster test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gate_and_node_metric_the_dashboards_and_alerts_use_is_exported() {
    let dev = support::Dev::start(&[]);
    let mut conn = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    assert_eq!(
        conn.request(2, 1, json!({"uid": 7, "name": "p7"})).await["code"],
        0
    );
    assert_eq!(conn.request(1, 2, json!({"message": "hi"})).await["code"], 0);
    let exposition = dev.metrics().await;
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .flat_map(metric_names)
        .collect();
    let mut used = BTreeSet::new();
    for query in all_queries() {
        used.extend(metric_names(&query.expr));
    }
    for (_, expr) in alert_rules() {
        used.extend(metric_names(&expr));
    }
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| name.starts_with("switchyard_gate_") || name.starts_with("switchyard_node_"))
        .filter(|name| !exported.contains(*name) && !CREATED_ON_FIRST_EVENT.contains(&name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "used by dashboards or alerts but not exported by `switchyard dev`: {missing:?}"
    );
}

// ---- the chart ------------------------------------------------------------------------------------------------

/// `helm template` of the chart as release `switchyard` in `switchyard-system`, with `--set` values.
trait TemplateSets {
    fn template_sets(&self, sets: &[&str]) -> Vec<Doc>;
}

impl TemplateSets for Helm {
    fn template_sets(&self, sets: &[&str]) -> Vec<Doc> {
        let mut command = self.cmd();
        command
            .args(["template", "switchyard"])
            .arg(chart())
            .args(["--namespace", "switchyard-system"]);
        for set in sets {
            command.args(["--set", set]);
        }
        documents(&run_ok(&mut command))
    }
}

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
            if let Some(kind) = chunk.lines().find_map(|l| l.strip_prefix("kind: ")) {
                let name = chunk
                    .lines()
                    .skip_while(|l| *l != "metadata:")
                    .find_map(|l| l.strip_prefix("  name: "))
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_owned();
                docs.push(Doc {
                    kind: kind.to_owned(),
                    name,
                    text: chunk.clone(),
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

fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Doc> {
    docs.iter().filter(|doc| doc.kind == kind).collect()
}

/// The lines after `header` that are indented by at least `indent` spaces, with that indent removed.
fn block_after(text: &str, header: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut lines = text.lines().skip_while(|line| *line != header);
    assert!(lines.next().is_some(), "no line {header:?} in:\n{text}");
    let mut block = String::new();
    for line in lines {
        if let Some(rest) = line.strip_prefix(&pad) {
            block.push_str(rest);
        } else if !line.trim().is_empty() {
            break;
        }
        block.push('\n');
    }
    block
}

#[test]
fn chart_ships_dashboards_for_the_grafana_sidecar_with_toggles() {
    let helm = Helm::new();

    // On by default: one ConfigMap per dashboard, labelled grafana_dashboard: "1", holding the file.
    let docs = helm.template_sets(&[]);
    let maps = of_kind(&docs, "ConfigMap");
    let names: BTreeSet<&str> = maps.iter().map(|doc| doc.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "switchyard-dashboard-gate",
            "switchyard-dashboard-node",
            "switchyard-dashboard-operator",
            "switchyard-dashboard-overview",
        ]),
        "dashboard ConfigMaps rendered by default"
    );
    for dashboard in dashboards() {
        let short = dashboard
            .file
            .trim_start_matches("switchyard-")
            .trim_end_matches(".json");
        let map = maps
            .iter()
            .find(|doc| doc.name == format!("switchyard-dashboard-{short}"))
            .expect("its ConfigMap");
        assert!(
            map.text.contains("  namespace: switchyard-system\n"),
            "{}: in the release namespace",
            map.name
        );
        assert!(
            map.text.contains("\n    grafana_dashboard: \"1\"\n"),
            "{} carries the sidecar label:\n{}",
            map.name,
            &map.text[..600.min(map.text.len())]
        );
        let data = block_after(&map.text, &format!("  {}: |-", dashboard.file), 4);
        assert_eq!(
            data.trim_end(),
            dashboard.text.trim_end(),
            "{} holds {} unchanged",
            map.name,
            dashboard.file
        );
    }
    assert!(
        of_kind(&docs, "PodMonitor").is_empty(),
        "no PodMonitor by default"
    );
    assert!(
        of_kind(&docs, "PrometheusRule").is_empty(),
        "no PrometheusRule by default"
    );

    // Sidecar label, namespace, extra labels and annotations from the values.
    let docs = helm.template_sets(&[
        "dashboards.label=my_dashboards,dashboards.labelValue=yes,dashboards.namespace=grafana",
        "dashboards.annotations.grafana_folder=Switchyard,dashboards.labels.team=games",
    ]);
    let maps = of_kind(&docs, "ConfigMap");
    assert_eq!(maps.len(), 4);
    for map in maps {
        for needle in [
            "  namespace: grafana\n",
            "\n    my_dashboards: \"yes\"\n",
            "\n    team: games\n",
            "  annotations:\n    grafana_folder: Switchyard\n",
        ] {
            assert!(map.text.contains(needle), "{} lacks {needle:?}", map.name);
        }
        assert!(
            !map.text.contains("grafana_dashboard"),
            "{}: the default label is replaced",
            map.name
        );
    }

    // Off.
    let docs = helm.template_sets(&["dashboards.enabled=false"]);
    assert!(
        of_kind(&docs, "ConfigMap").is_empty(),
        "dashboards.enabled=false renders no ConfigMap"
    );
}

#[test]
fn chart_renders_the_podmonitor_and_the_prometheusrule_when_asked() {
    let helm = Helm::new();
    let docs = helm.template_sets(&[
        "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
        "monitoring.podMonitor.labels.release=kps,monitoring.prometheusRule.labels.release=kps",
        "monitoring.podMonitor.interval=30s,monitoring.podMonitor.namespace=monitoring",
    ]);

    let monitors = of_kind(&docs, "PodMonitor");
    assert_eq!(monitors.len(), 1, "one PodMonitor");
    let monitor = &monitors[0].text;
    for needle in [
        "apiVersion: monitoring.coreos.com/v1\n",
        "  name: switchyard\n  namespace: monitoring\n",
        "    release: kps\n",
        "  namespaceSelector:\n    any: true\n",
        "      - key: app.kubernetes.io/name\n        operator: In\n        values: [\"switchyard\"]\n",
        "      - key: app.kubernetes.io/component\n        operator: In\n        values: [\"gate\", \"node\", \"operator\"]\n",
        "    - port: admin\n      path: /metrics\n      interval: 30s\n",
        "        - sourceLabels: [__meta_kubernetes_namespace]\n          targetLabel: namespace\n",
        "        - sourceLabels: [__meta_kubernetes_pod_name]\n          targetLabel: pod\n",
        "        - sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]\n          targetLabel: component\n",
        "          regex: \"(gate|node);(.+)\"\n          targetLabel: gamecluster\n          replacement: \"$2\"\n",
    ] {
        assert!(
            monitor.contains(needle),
            "the PodMonitor lacks {needle:?}:\n{monitor}"
        );
    }

    let rules = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    let rule = &rules[0];
    assert_eq!(rule.name, "switchyard-alerts");
    assert!(
        rule.text.contains("    release: kps\n"),
        "ruleSelector label:\n{}",
        rule.text
    );
    // Its spec is the plain rule file, unchanged, and promtool accepts it.
    let spec = block_after(&rule.text, "spec:", 2);
    let plain = read(&alerts_dir().join("switchyard-alerts.yaml"));
    assert_eq!(
        spec.trim_end(),
        plain.trim_end(),
        "the PrometheusRule's spec is alerts/switchyard-alerts.yaml"
    );
    let dir = TempDir::new("rendered-rules");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &spec).expect("write the rendered rules");
    let out = run_ok(promtool().args(["check", "rules"]).arg(&file));
    assert!(out.contains("SUCCESS"), "{out}");

    // A nameOverride adds the operator's own name to the PodMonitor's selector.
    let docs = helm.template_sets(&["monitoring.podMonitor.enabled=true,nameOverride=arcade"]);
    assert!(
        of_kind(&docs, "PodMonitor")[0]
            .text
            .contains("        values: [\"switchyard\",\"arcade\"]\n"),
        "{}",
        of_kind(&docs, "PodMonitor")[0].text
    );

    // helm lint stays clean with every monitoring object on.
    let out = run_ok(helm.cmd().args(["lint", "--strict"]).arg(chart()).args([
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
    ]));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

/// `monitoring.scrapeAnnotations` puts the prometheus.io annotations on the operator's pod (gate and node
/// pods get them from the operator).
#[test]
fn operator_pod_carries_scrape_annotations() {
    let helm = Helm::new();
    let deployment = |sets: &[&str]| {
        helm.template_sets(sets)
            .into_iter()
            .find(|doc| doc.kind == "Deployment")
            .expect("the operator's Deployment")
            .text
    };
    let on = deployment(&[]);
    for needle in [
        "        prometheus.io/scrape: \"true\"\n",
        "        prometheus.io/port: \"9090\"\n",
        "        prometheus.io/path: /metrics\n",
    ] {
        assert!(
            on.contains(needle),
            "the operator's pod template lacks {needle:?} (templates/deployment.yaml must add them when \
             monitoring.scrapeAnnotations is true):\n{on}"
        );
    }
    assert!(deployment(&["metrics.port=9191"]).contains("        prometheus.io/port: \"9191\"\n"));
    assert!(!deployment(&["monitoring.scrapeAnnotations=false"]).contains("prometheus.io/scrape"));
}

// ---- a real Prometheus ------------------------------------------------------------------------------------------

/// One scrape target, described by the pod labels the PodMonitor's relabelings read.
struct Target {
    address: String,
    namespace: String,
    pod: String,
    component: &'static str,
    /// app.kubernetes.io/instance: the GameCluster of gates and nodes, the release of the operator.
    instance: String,
}

/// The relabelings of templates/podmonitor.yaml, as Prometheus relabel_configs (the PodMonitor's
/// camelCase keys in snake_case), so the test scrapes with exactly the chart's labels.
fn podmonitor_relabel_configs() -> String {
    let template = read(&chart().join("templates/podmonitor.yaml"));
    let block = block_after(&template, "      relabelings:", 8);
    assert!(
        block.contains("targetLabel: gamecluster"),
        "relabelings of the PodMonitor:\n{block}"
    );
    assert!(!block.contains("{{"), "the relabelings are plain YAML:\n{block}");
    block
        .replace("sourceLabels:", "source_labels:")
        .replace("targetLabel:", "target_label:")
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect()
}

/// A Prometheus scraping the targets every second, with the chart's alert rules loaded; killed on drop.
struct Prometheus {
    base: String,
    proc: Proc,
}

impl Prometheus {
    async fn start(dir: &Path, targets: &[Target]) -> Prometheus {
        let binary = on_path("prometheus", PROMETHEUS_HINT);
        let rules = dir.join("switchyard-alerts.yaml");
        std::fs::copy(alerts_dir().join("switchyard-alerts.yaml"), &rules).expect("copy the rules");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n",
            rules.display()
        );
        for target in targets {
            config.push_str(&format!(
                "      - targets: [\"{}\"]\n        labels:\n          __meta_kubernetes_namespace: \"{}\"\n          \
                 __meta_kubernetes_pod_name: \"{}\"\n          \
                 __meta_kubernetes_pod_label_app_kubernetes_io_component: \"{}\"\n          \
                 __meta_kubernetes_pod_label_app_kubernetes_io_instance: \"{}\"\n",
                target.address, target.namespace, target.pod, target.component, target.instance
            ));
        }
        config.push_str("    relabel_configs:\n");
        config.push_str(&podmonitor_relabel_configs());
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, &config).expect("write prometheus.yml");
        run_ok(promtool().args(["check", "config"]).arg(&config_file));

        let port = free_port();
        let args: Vec<String> = vec![
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ];
        let proc = Proc::spawn("prometheus", &binary.display().to_string(), &args, dir);
        let prometheus = Prometheus {
            base: format!("127.0.0.1:{port}"),
            proc,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&prometheus.base, "/-/ready").await.0 != 200 {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                prometheus.proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    /// An instant query: `Ok(result)` (the vector), or `Err(what Prometheus said)`.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) = http_get(&self.base, &format!("/api/v1/query?query={}", url_encode(expr))).await;
        let json: Value = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("HTTP {status}: {}", json["error"]));
        }
        Ok(json["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of a query returning one sample (0 when it returns none).
    async fn value(&self, expr: &str) -> f64 {
        self.query(expr)
            .await
            .ok()
            .and_then(|result| result.first().cloned())
            .and_then(|sample| sample["value"][1].as_str()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until every target is up and has been scraped a few times.
    async fn wait_scraped(&self, targets: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .value("count(count_over_time(up[1m]) >= 3 and up == 1)")
            .await
            < targets as f64
        {
            assert!(
                Instant::now() < deadline,
                "Prometheus did not scrape {targets} targets 3 times within 60 s: {}\n{}",
                http_get(&self.base, "/api/v1/targets").await.1,
                self.proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every alert rule evaluates without error against the real series.
    async fn assert_rules_healthy(&self) {
        let (_, body) = http_get(&self.base, "/api/v1/rules").await;
        let json: Value = serde_json::from_str(&body).expect("rules JSON");
        let mut seen = 0;
        for group in json["data"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                seen += 1;
                assert_eq!(
                    rule["health"], "ok",
                    "alert {} does not evaluate: {}",
                    rule["name"], rule["lastError"]
                );
            }
        }
        assert_eq!(
            seen,
            alert_rules().len(),
            "Prometheus loaded every alert rule: {body}"
        );
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs every query and returns the ones without data: an error, an empty result, or only NaN/Inf samples.
async fn queries_without_data(
    prometheus: &Prometheus,
    queries: &[Query],
    rate_interval: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for query in queries {
        let expr = concrete(&query.expr, rate_interval);
        match prometheus.query(&expr).await {
            Err(error) => failures.push(format!("{}: {error}\n    {expr}", query.what)),
            Ok(result) if result.is_empty() => failures.push(format!("{}: no data\n    {expr}", query.what)),
            Ok(result) => {
                let finite = result.iter().any(|sample| {
                    sample["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(f64::is_finite)
                });
                if !finite {
                    failures.push(format!(
                        "{}: only NaN or Inf ({result:?})\n    {expr}",
                        query.what
                    ));
                }
            }
        }
    }
    failures
}

// ---- a running cluster under load ------------------------------------------------------------------------------

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

async fn admin_metrics(admin: &str) -> String {
    match tokio::net::TcpStream::connect(admin).await {
        Ok(_) => http_get(&format!("http://{admin}"), "/metrics").await.1,
        Err(_) => String::new(),
    }
}

async fn wait_for_metric(admin: &str, name: &str, filters: &[&str], at_least: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if metric_sum(&admin_metrics(admin).await, name, filters) >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A player that keeps playing: login, join a room, say (a push to the room), whoami, echo, a heartbeat,
/// an unknown route and a malformed packet (both dropped), logout. Failed requests (during the Redis outage)
/// are retried; nothing here asserts, the dashboards' queries do.
struct Player {
    conn: Conn,
    uid: i64,
    seq: i64,
}

impl Player {
    fn next_seq(&mut self) -> i64 {
        self.seq = self.seq % 30_000 + 1;
        self.seq
    }

    /// Sends a request and waits (at most 3 s) for the response with its route and seq.
    async fn ask(&mut self, route: i64, body: Value) -> Option<Value> {
        let seq = self.next_seq();
        self.conn.send(route, seq, body).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.conn.recv_within(left).await {
                Ok(Some(Packet::Data {
                    route: r,
                    seq: s,
                    payload,
                })) if r == route && s == seq => return serde_json::from_slice(&payload).ok(),
                Ok(Some(_)) => {}
                Ok(None) | Err(()) => return None,
            }
        }
    }

    async fn play(mut self, stop: Arc<AtomicBool>, cycles: Arc<AtomicU64>) {
        let wire = self.conn.wire();
        let room = format!("room-{}", self.uid % 3);
        while !stop.load(Ordering::Relaxed) {
            let login = self
                .ask(2, json!({"uid": self.uid, "name": format!("p{}", self.uid)}))
                .await;
            if login.is_none_or(|reply| reply["code"] != 0) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            self.ask(4, json!({"room": room})).await;
            self.ask(5, json!({"room": room, "text": "gg"})).await;
            // Matchmaking: node-to-node calls (queue owner, battle pool) for the call panels.
            self.ask(11, json!({"mode": "duel"})).await;
            self.ask(13, json!({"x": 1, "y": 2})).await;
            self.ask(3, json!({})).await;
            self.ask(1, json!({"message": "ping"})).await;
            self.conn.send_raw(&wire.heartbeat()).await;
            let seq = self.next_seq();
            self.conn.send_raw(&wire.data(99, seq, b"{}")).await;
            let mut malformed = wire.size(2);
            malformed.extend([0, 0]);
            self.conn.send_raw(&malformed).await;
            self.ask(7, json!({})).await;
            cycles.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// redis-server, nodes `arena-node-a` and `arena-node-b` (the latter drains when its annotations file says
/// so) and gate `arena-gate-0`, as GameCluster `arena` in namespace `games`.
struct Cluster {
    dir: TempDir,
    redis: Redis,
    node_admins: Vec<String>,
    gate_admin: String,
    gate_tcp: String,
    gate_ws: String,
    drain_file: PathBuf,
    _procs: Vec<Proc>,
}

const NAMESPACE: &str = "games";
const GAMECLUSTER: &str = "arena";

impl Cluster {
    async fn start() -> Cluster {
        let dir = TempDir::new("cluster");
        let redis = Redis::start(dir.path());
        let drain_file = dir.path().join("annotations");
        std::fs::write(&drain_file, "team=\"blue\"\n").expect("write the annotations file");
        let mut procs = Vec::new();
        let mut links = Vec::new();
        let mut node_admins = Vec::new();
        for id in ["arena-node-a", "arena-node-b"] {
            let link = format!("127.0.0.1:{}", free_port());
            let admin = format!("127.0.0.1:{}", free_port());
            let mut args = strings(&[
                "node",
                "--id",
                id,
                "--link",
                &link,
                "--http",
                &admin,
                "--locator",
                &redis.url(),
                "--drain-deadline",
                "10s",
            ]);
            if id == "arena-node-b" {
                args.extend(strings(&["--drain-file", &drain_file.display().to_string()]));
            }
            procs.push(Proc::spawn(id, switchyard_binary(), &args, dir.path()));
            links.push(link);
            node_admins.push(admin);
        }
        let gate_tcp = format!("127.0.0.1:{}", free_port());
        let gate_ws = format!("127.0.0.1:{}", free_port());
        let gate_admin = format!("127.0.0.1:{}", free_port());
        let args = strings(&[
            "gate",
            "--id",
            "arena-gate-0",
            "--tcp",
            &gate_tcp,
            "--ws",
            &gate_ws,
            "--http",
            &gate_admin,
            "--locator",
            &redis.url(),
            "--nodes",
            &links.join(","),
        ]);
        procs.push(Proc::spawn(
            "arena-gate-0",
            switchyard_binary(),
            &args,
            dir.path(),
        ));
        wait_for_metric(
            &gate_admin,
            "switchyard_gate_node_links",
            &[],
            2.0,
            "the gate links to both nodes",
        )
        .await;
        Cluster {
            dir,
            redis,
            node_admins,
            gate_admin,
            gate_tcp,
            gate_ws: format!("ws://{gate_ws}/"),
            drain_file,
            _procs: procs,
        }
    }

    fn targets(&self) -> Vec<Target> {
        let target = |address: &str, pod: &str, component| Target {
            address: address.to_owned(),
            namespace: NAMESPACE.to_owned(),
            pod: pod.to_owned(),
            component,
            instance: GAMECLUSTER.to_owned(),
        };
        vec![
            target(&self.gate_admin, "arena-gate-0", "gate"),
            target(&self.node_admins[0], "arena-node-a", "node"),
            target(&self.node_admins[1], "arena-node-b", "node"),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_returns_data_from_a_running_cluster() {
    let queries = all_queries();
    on_path("prometheus", PROMETHEUS_HINT);
    let mut cluster = Cluster::start().await;
    let targets = cluster.targets();
    let prometheus = Prometheus::start(cluster.dir.path(), &targets).await;
    prometheus.wait_scraped(targets.len()).await;

    // Players over TCP and WebSocket.
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for uid in 1..=8 {
        let conn = if uid <= 6 {
            Conn::tcp(&cluster.gate_tcp, Wire::DEFAULT).await
        } else {
            Conn::ws(&cluster.gate_ws, Wire::DEFAULT).await
        };
        let player = Player { conn, uid, seq: 0 };
        load.push(tokio::spawn(player.play(stop.clone(), cycles.clone())));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while cycles.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "the players did not get going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A Redis outage: logins fail in the handlers (handler failures, locator errors, the subscription
    // drops and comes back).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut redis = cluster.redis;
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart(Duration::from_secs(2));
        redis
    })
    .await
    .expect("restart redis");
    cluster.redis = redis;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut failures = 0.0;
        for admin in &cluster.node_admins {
            failures += metric_sum(
                &admin_metrics(admin).await,
                "switchyard_node_handler_failures_total",
                &[],
            );
        }
        if failures >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no handler failed while Redis was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A maintenance drain of arena-node-b (its pod annotated switchyard.dev/drain="true"): its players log
    // out within a round, so it drains empty and stays up in state shut.
    std::fs::write(
        &cluster.drain_file,
        "team=\"blue\"\nswitchyard.dev/drain=\"true\"\n",
    )
    .expect("annotate");
    wait_for_metric(
        &cluster.node_admins[1],
        "switchyard_node_drains_finished_total",
        &[],
        1.0,
        "arena-node-b drained",
    )
    .await;

    // More play after both, so every rate window is full, then every query while the players keep going.
    let before = cycles.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        cycles.load(Ordering::Relaxed) > before,
        "the players kept playing after the outage and the drain"
    );

    let (operator, cluster_queries): (Vec<Query>, Vec<Query>) = queries.into_iter().partition(|q| q.operator);
    let mut failures = queries_without_data(&prometheus, &cluster_queries, "1m").await;
    // Operator queries have no operator to scrape here: they must still be valid and evaluate.
    for query in &operator {
        if let Err(error) = prometheus.query(&concrete(&query.expr, "1m")).await {
            failures.push(format!("{}: {error}", query.what));
        }
    }
    prometheus.assert_rules_healthy().await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries returned no data from the running cluster:\n{}",
        failures.len(),
        cluster_queries.len() + operator.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} dashboard queries returned data; {} operator queries evaluated (checked with data by the ignored \
         operator test)",
        cluster_queries.len(),
        operator.len()
    );
}

// ---- the operator, against a real kube-apiserver ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test observability -- --ignored"]
async fn operator_dashboard_panels_return_data_against_a_real_apiserver() {
    use kube::Api;
    use kube::api::PostParams;
    use kube_support::{ControlPlane, Operator};
    use switchyard_operator::{GameCluster, GameClusterSpec};

    let queries: Vec<Query> = all_queries().into_iter().filter(|query| query.operator).collect();
    assert!(queries.len() >= 10, "operator queries: {queries:?}");
    on_path("prometheus", PROMETHEUS_HINT);
    let plane = tokio::task::spawn_blocking(|| {
        let plane = ControlPlane::shared();
        plane.install();
        plane
    })
    .await
    .expect("control plane");
    let namespace = plane.namespace("observability");
    let operator = Operator::start(plane, &namespace, "switchyard-operator-0").await;

    let dir = TempDir::new("operator");
    let targets = [Target {
        address: format!("127.0.0.1:{}", operator.admin_port),
        namespace: namespace.clone(),
        pod: "switchyard-operator-0".to_owned(),
        component: "operator",
        instance: "switchyard".to_owned(),
    }];
    let prometheus = Prometheus::start(dir.path(), &targets).await;
    prometheus.wait_scraped(1).await;

    // A GameCluster that reconciles, and one whose spec cannot work (a reconcile error, reason invalid_spec).
    let client = plane.admin_client().await;
    let api: Api<GameCluster> = Api::namespaced(client, &namespace);
    api.create(
        &PostParams::default(),
        &GameCluster::new("arena", GameClusterSpec::default()),
    )
    .await
    .expect("GameCluster arena");
    let mut bad = GameClusterSpec::default();
    bad.node_mut().env.push(k8s_openapi::api::core::v1::EnvVar {
        name: "SWITCHYARD_LINK".into(),
        value: Some("0.0.0.0:1".into()),
        value_from: None,
    });
    api.create(&PostParams::default(), &GameCluster::new("bad", bad))
        .await
        .expect("GameCluster bad");
    let deadline = Instant::now() + Duration::from_secs(60);
    while prometheus
        .value("sum(switchyard_operator_reconcile_errors_total) and sum(switchyard_operator_reconciles_total{result=\"ok\"})")
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the operator did not reconcile both GameClusters within 60 s:\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let failures = queries_without_data(&prometheus, &queries, "2m").await;
    prometheus.assert_rules_healthy().await;
    operator.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} operator dashboard queries returned no data:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}
