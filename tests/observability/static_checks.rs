//! What can be checked without running anything: the dashboards' structure and PromQL, the alert rules
//! (promtool) and their runbooks, the metrics the gate and node export, and the chart objects that ship them.

use super::*;

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
pub(super) fn block_after(text: &str, header: &str, indent: usize) -> String {
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
