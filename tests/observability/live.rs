//! Every dashboard query against a real Prometheus scraping a running cluster under load, and the
//! operator's panels against a real kube-apiserver.

use super::*;

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
    let plane = ControlPlane::shared_installed().await;
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
