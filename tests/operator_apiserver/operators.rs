//! The operator's own processes: a restart duplicates nothing, one leader of two and its takeover, node
//! loads turned into pod-deletion-cost, and a namespace-scoped install with a Role only.

use super::*;

async fn counts(client: &Client, ns: &str, name: &str) -> Vec<(String, Vec<String>)> {
    let selector = instance(name);
    vec![
        (
            "Deployment".into(),
            names::<Deployment>(client, ns, &selector).await,
        ),
        (
            "ReplicaSet".into(),
            names::<ReplicaSet>(client, ns, &selector).await,
        ),
        ("Service".into(), names::<Service>(client, ns, &selector).await),
        (
            "ConfigMap".into(),
            names::<ConfigMap>(client, ns, &selector).await,
        ),
        (
            "ServiceAccount".into(),
            names::<ServiceAccount>(client, ns, &selector).await,
        ),
        ("Role".into(), names::<Role>(client, ns, &selector).await),
        (
            "RoleBinding".into(),
            names::<RoleBinding>(client, ns, &selector).await,
        ),
        (
            "PodDisruptionBudget".into(),
            names::<PodDisruptionBudget>(client, ns, &selector).await,
        ),
        ("Secret".into(), names::<Secret>(client, ns, &selector).await),
    ]
}

async fn generations(client: &Client, ns: &str, name: &str) -> Vec<Option<i64>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for component in ["gate", "node", "redis"] {
        out.push(
            api.get(&format!("{name}-{component}"))
                .await
                .expect("Deployment")
                .metadata
                .generation,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn restarting_the_operator_duplicates_nothing() {
    let (plane, client, ns) = setup("restart").await;
    let first = Operator::start(plane, &ns, "op-1").await;
    create_cluster(&client, &ns, "again", GameClusterSpec::default()).await;
    eventually("children and ReplicaSets exist", WAIT, || async {
        let counts = counts(&client, &ns, "again").await;
        counts.iter().all(|(_, names)| !names.is_empty()).then_some(())
    })
    .await;
    // Let the first operator settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = counts(&client, &ns, "again").await;
    let generations_before = generations(&client, &ns, "again").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let leaf_before = secret_data(&secrets, "again-link-gate-tls").await;
    first.stop().await;

    let second = Operator::start(plane, &ns, "op-2").await;
    eventually("the restarted operator reconciled", WAIT, || async {
        let text = second.metrics().await;
        (metric(&text, "switchyard_operator_reconciles_total", "result=\"ok\"").unwrap_or(0.0) >= 1.0)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        counts(&client, &ns, "again").await,
        before,
        "a restart must not add or remove objects"
    );
    assert_eq!(
        generations(&client, &ns, "again").await,
        generations_before,
        "a restart must not change the Deployments (no new rollout)"
    );
    assert_eq!(
        secret_data(&secrets, "again-link-gate-tls").await,
        leaf_before,
        "a restart must not re-issue a good link certificate"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn two_operators_one_leader_and_takeover() {
    let (plane, client, ns) = setup("leader").await;
    let timings = LeaseTimings::default();
    let a = Operator::start_with(plane, &ns, "op-a", timings).await;
    eventually("op-a holds the lease", WAIT, || async {
        (lease_holder(&client, &ns).await.as_deref() == Some("op-a")).then_some(())
    })
    .await;
    let b = Operator::start_with(plane, &ns, "op-b", timings).await;
    // Both are ready (leader and standby); only one leads.
    eventually("both ready, one leader", WAIT, || async {
        let (ra, rb) = (
            kube_support::http_get(a.admin_port, "/readyz").await.0,
            kube_support::http_get(b.admin_port, "/readyz").await.0,
        );
        let (la, lb) = (
            metric(&a.metrics().await, "switchyard_operator_leader", ""),
            metric(&b.metrics().await, "switchyard_operator_leader", ""),
        );
        (ra == 200 && rb == 200 && la == Some(1.0) && lb == Some(0.0)).then_some(())
    })
    .await;
    create_cluster(&client, &ns, "duo", GameClusterSpec::default()).await;
    eventually("the leader reconciles", WAIT, || async {
        (node_replicas(&client, &ns, "duo").await == Some(2)).then_some(())
    })
    .await;
    let text = b.metrics().await;
    assert_eq!(
        metric(&text, "switchyard_operator_reconciles_total", ""),
        None,
        "the standby must not reconcile: {text}"
    );

    // A graceful stop releases the lease: the standby takes over at once (well within the lease duration).
    let stopped = std::time::Instant::now();
    a.stop().await;
    eventually("op-b takes over after a release", timings.duration, || async {
        (lease_holder(&client, &ns).await.as_deref() == Some("op-b")).then_some(())
    })
    .await;
    let takeover = stopped.elapsed();
    plane.kubectl_ok(&["-n", &ns, "scale", "gamecluster/duo", "--replicas=3"]);
    eventually("the new leader reconciles", WAIT, || async {
        (node_replicas(&client, &ns, "duo").await == Some(3)).then_some(())
    })
    .await;

    // A crash does not release the lease: a new replica waits for it to expire, then leads.
    let c = Operator::start_with(plane, &ns, "op-c", timings).await;
    let crashed = std::time::Instant::now();
    b.crash().await;
    eventually(
        "op-c takes over after the lease expires",
        Duration::from_secs(30),
        || async { (lease_holder(&client, &ns).await.as_deref() == Some("op-c")).then_some(()) },
    )
    .await;
    let expiry = crashed.elapsed();
    assert!(
        expiry >= timings.duration - Duration::from_millis(500),
        "took over after {expiry:?}, before the lease expired"
    );
    plane.kubectl_ok(&["-n", &ns, "scale", "gamecluster/duo", "--replicas=4"]);
    eventually("op-c reconciles", WAIT, || async {
        (node_replicas(&client, &ns, "duo").await == Some(4)).then_some(())
    })
    .await;
    eprintln!("takeover after release: {takeover:?}; after a crash: {expiry:?}");
    c.stop().await;
}

/// Least privilege: nodes may not write pods, so the operator reads each node pod's `/load` (real admin
/// servers here, one per pod on its own loopback address, with the node's load router) and writes the
/// bound-players, pod-deletion-cost and routes annotations; `kubectl scale` down then removes the emptiest
/// node (the ReplicaSet controller orders by pod-deletion-cost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn node_loads_become_pod_annotations_and_scale_down_removes_the_emptiest() {
    use switchyard_cluster::admin::AdminServer;
    use switchyard_cluster::kubernetes::{
        BOUND_PLAYERS_ANNOTATION, POD_DELETION_COST_ANNOTATION, ROUTES_ANNOTATION,
    };

    let (plane, client, ns) = setup("loads").await;
    let operator = Operator::start(plane, &ns, "op-1").await;
    let spec = GameClusterSpec {
        node: Some(NodeSpec {
            replicas: 3,
            ..NodeSpec::default()
        }),
        ..GameClusterSpec::default()
    };
    create_cluster(&client, &ns, "load", spec).await;
    let node_selector = "app.kubernetes.io/instance=load,app.kubernetes.io/component=node";
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let live = |pods: Vec<Pod>| -> Vec<String> {
        pods.into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .map(|pod| pod.name_any())
            .collect()
    };
    let names = eventually("three node pods", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels(node_selector))
            .await
            .ok()?;
        let names = live(list.items);
        (names.len() == 3).then_some(names)
    })
    .await;

    // The nodes' ServiceAccount may not patch pods (nor read them): a compromised node cannot modify others.
    for verb in ["patch", "update", "get"] {
        let output = plane.kubectl(&[
            "auth",
            "can-i",
            verb,
            "pods",
            "-n",
            &ns,
            &format!("--as=system:serviceaccount:{ns}:load-node"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "no",
            "the node ServiceAccount may {verb} pods"
        );
    }

    // One admin server per pod, as a node runs it (the load router on the admin port 9090), on the pod's
    // "IP": a loopback address of its own.
    let counts = [7usize, 0, 3];
    let mut servers = Vec::new();
    let mut senders = Vec::new();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for (index, (name, count)) in names.iter().zip(counts).enumerate() {
        let ip = format!("127.33.0.{}", 10 + index);
        let (sender, bound) = tokio::sync::watch::channel(count);
        let server = AdminServer::start_with(
            format!("{ip}:9090").parse().expect("address"),
            prometheus_client::registry::Registry::default(),
            vec![],
            switchyard_cluster::load::router(bound, &[2, 1]),
        )
        .await
        .unwrap_or_else(|error| panic!("a load server on {ip}:9090: {error}"));
        let patch = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
        }});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("pod status");
        servers.push(server);
        senders.push(sender);
    }
    let annotations_are = |wanted: [usize; 3]| {
        let pods = pods.clone();
        let names = names.clone();
        async move {
            for (name, count) in names.iter().zip(wanted) {
                let pod = pods.get(name).await.ok()?;
                let annotations = pod.annotations();
                let count = count.to_string();
                if annotations.get(BOUND_PLAYERS_ANNOTATION) != Some(&count)
                    || annotations.get(POD_DELETION_COST_ANNOTATION) != Some(&count)
                    || annotations.get(ROUTES_ANNOTATION).map(String::as_str) != Some("1,2")
                {
                    return None;
                }
            }
            Some(())
        }
    };
    eventually("the operator writes each node's load on its pod", WAIT, || {
        annotations_are(counts)
    })
    .await;
    senders[0].send_replace(8);
    eventually("a changed count follows", WAIT, || annotations_are([8, 0, 3])).await;
    eventually("the status sums the counts", WAIT, || async {
        let (_, status) = status(&client, &ns, "load").await;
        (status.node.bound_players == 11).then_some(())
    })
    .await;
    let text = operator.metrics().await;
    assert!(
        metric(
            &text,
            "switchyard_operator_node_load_reads_total",
            "reason=\"ok\""
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );

    // Scale down by one: the ReplicaSet deletes the pod with the lowest pod-deletion-cost, the empty one.
    plane.kubectl_ok(&["-n", &ns, "scale", "gamecluster/load", "--replicas=2"]);
    let left = eventually("two node pods left", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels(node_selector))
            .await
            .ok()?;
        let names = live(list.items);
        (names.len() == 2).then_some(names)
    })
    .await;
    assert_eq!(
        left.iter().collect::<std::collections::BTreeSet<_>>(),
        [&names[0], &names[2]].into_iter().collect(),
        "scale-down removed {:?} rather than the empty {}",
        names
            .iter()
            .filter(|name| !left.contains(name))
            .collect::<Vec<_>>(),
        names[1]
    );
    for server in servers {
        server.stop().await;
    }
    operator.stop().await;
}

/// The chart's namespace-scoped install: the operator holds its rules only as a Role in one namespace (no
/// ClusterRole at all), runs with `--watch-namespace`, and manages a GameCluster there: children, status,
/// Events, its Lease and the node-load reader all stay inside the namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn a_namespace_scoped_operator_needs_only_a_role() {
    let (plane, client, ns) = setup("scoped").await;
    plane.bind_operator_rules_in(&ns);
    let can = |verb: &str, resource: &str, namespace: &str| {
        let output = plane.kubectl(&[
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            namespace,
            "--as=switchyard-operator-ns",
        ]);
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    assert!(can("list", "pods", &ns) && can("create", "deployments.apps", &ns));
    for (verb, resource) in [
        ("list", "pods"),
        ("list", "gameclusters.switchyard.dev"),
        ("create", "deployments.apps"),
    ] {
        assert!(
            !can(verb, resource, "default"),
            "the namespace-scoped operator may {verb} {resource} in default"
        );
    }
    let operator = Operator::start_as(
        plane,
        &plane.namespaced_operator_kubeconfig,
        &ns,
        "op-scoped",
        LeaseTimings::default(),
    )
    .await;
    create_cluster(&client, &ns, "solo", GameClusterSpec::default()).await;
    let selector = instance("solo");
    eventually("children and an observed status", WAIT, || async {
        let (generation, status) = status(&client, &ns, "solo").await;
        (names::<Deployment>(&client, &ns, &selector).await.len() == 3
            && names::<NetworkPolicy>(&client, &ns, &selector).await.len() == 3
            && status.observed_generation == generation)
            .then_some(())
    })
    .await;
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("op-scoped"));
    // A few rounds of the node-load reader: it lists pods in the namespace only, so nothing is forbidden.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = operator.metrics().await;
    assert_eq!(
        metric(
            &text,
            "switchyard_operator_node_load_reads_total",
            "reason=\"list_failed\""
        ),
        None,
        "{text}"
    );
    assert_eq!(
        metric(&text, "switchyard_operator_reconcile_errors_total", ""),
        None,
        "{text}"
    );
    operator.stop().await;
}
