//! One cluster's life: children, status and events; scale, rollout, drain and delete; a spec only the
//! operator can judge becomes Degraded, then recovers.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn operator_creates_children_status_and_events() {
    let (plane, client, ns) = setup("children").await;
    let operator = Operator::start(plane, &ns, "op-1").await;
    // NetworkPolicies are on by default; admin ports only from the monitoring namespace (and, for nodes,
    // the operator).
    let mut spec = GameClusterSpec::default();
    spec.network_policy.admin_from = vec![
        serde_json::from_value(serde_json::json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
        }))
        .expect("peer"),
    ];
    let cluster = create_cluster(&client, &ns, "arena", spec).await;
    let uid = cluster.uid().expect("uid");
    let selector = instance("arena");

    let deployments = eventually("the three Deployments exist", WAIT, || async {
        let names = names::<Deployment>(&client, &ns, &selector).await;
        (names.len() == 3).then_some(names)
    })
    .await;
    assert_eq!(deployments, ["arena-gate", "arena-node", "arena-redis"]);
    eventually("every child exists", WAIT, || async {
        (names::<NetworkPolicy>(&client, &ns, &selector).await.len() == 3
            && names::<PodDisruptionBudget>(&client, &ns, &selector).await.len() == 2)
            .then_some(())
    })
    .await;
    assert_eq!(
        names::<Service>(&client, &ns, &selector).await,
        ["arena-gate", "arena-gate-headless", "arena-node", "arena-redis"]
    );
    assert_eq!(
        names::<ConfigMap>(&client, &ns, &selector).await,
        ["arena-config"]
    );
    assert_eq!(
        names::<ServiceAccount>(&client, &ns, &selector).await,
        ["arena-gate", "arena-node"]
    );
    assert_eq!(
        names::<Role>(&client, &ns, &selector).await,
        ["arena-gate", "arena-node"]
    );
    assert_eq!(
        names::<RoleBinding>(&client, &ns, &selector).await,
        ["arena-gate", "arena-node"]
    );
    assert_eq!(
        names::<NetworkPolicy>(&client, &ns, &selector).await,
        ["arena-gate", "arena-node", "arena-redis"]
    );
    // What the API server stored: client ports open, link port from this cluster's gates, Redis from its
    // gates and nodes, admin ports from the monitoring namespace (and the operator's pods, for nodes).
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    let ingress = |policy: NetworkPolicy| {
        serde_json::to_value(policy.spec.expect("spec").ingress.expect("ingress")).expect("JSON")
    };
    let monitoring = serde_json::json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}});
    let admin = |extra: Option<serde_json::Value>| {
        let mut from = vec![monitoring.clone()];
        from.extend(extra);
        serde_json::json!({"from": from, "ports": [{"port": 9090, "protocol": "TCP"}]})
    };
    let pods_of = |component: &str| {
        serde_json::json!({"podSelector": {"matchLabels": {
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/instance": "arena",
            "app.kubernetes.io/name": "switchyard",
        }}})
    };
    assert_eq!(
        ingress(policies.get("arena-gate").await.expect("gate policy")),
        serde_json::json!([
            {"ports": [{"port": 3553, "protocol": "TCP"}, {"port": 3554, "protocol": "TCP"}]},
            admin(None),
        ])
    );
    assert_eq!(
        ingress(policies.get("arena-node").await.expect("node policy")),
        serde_json::json!([
            {"from": [pods_of("gate")], "ports": [{"port": 7400, "protocol": "TCP"}]},
            admin(Some(serde_json::json!({
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {
                    "app.kubernetes.io/component": "operator",
                    "app.kubernetes.io/name": "switchyard",
                }},
            }))),
        ])
    );
    assert_eq!(
        ingress(policies.get("arena-redis").await.expect("redis policy")),
        serde_json::json!([
            {"from": [pods_of("gate"), pods_of("node")], "ports": [{"port": 6379, "protocol": "TCP"}]},
        ])
    );
    for name in ["arena-gate", "arena-node", "arena-redis"] {
        owned_by::<Deployment>(&client, &ns, name, &uid).await;
    }
    for name in ["arena-gate", "arena-gate-headless", "arena-node", "arena-redis"] {
        owned_by::<Service>(&client, &ns, name, &uid).await;
    }
    owned_by::<ConfigMap>(&client, &ns, "arena-config", &uid).await;
    for name in ["arena-gate", "arena-node"] {
        owned_by::<ServiceAccount>(&client, &ns, name, &uid).await;
        owned_by::<Role>(&client, &ns, name, &uid).await;
        owned_by::<RoleBinding>(&client, &ns, name, &uid).await;
        owned_by::<PodDisruptionBudget>(&client, &ns, name, &uid).await;
    }
    for name in ["arena-gate", "arena-node", "arena-redis"] {
        owned_by::<NetworkPolicy>(&client, &ns, name, &uid).await;
    }
    // The managed Redis's password: generated once into an immutable Secret the GameCluster owns.
    owned_by::<Secret>(&client, &ns, "arena-redis-auth", &uid).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let auth = secrets.get("arena-redis-auth").await.expect("the Redis Secret");
    assert_eq!(auth.immutable, Some(true));
    let data = auth.data.clone().expect("Secret data");
    let password = String::from_utf8(data["password"].0.clone()).expect("UTF-8 password");
    assert_eq!(password.len(), 48, "a 48-character password");
    let conf = String::from_utf8(data["redis.conf"].0.clone()).expect("UTF-8 redis.conf");
    assert!(conf.contains(&format!("requirepass {password}")), "{conf}");

    // The controller-manager accepted the templates: node pods exist, with the contract's environment.
    let node_selector = "app.kubernetes.io/instance=arena,app.kubernetes.io/component=node";
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = eventually("node pods created by the ReplicaSet", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels(node_selector))
            .await
            .ok()?;
        (list.items.len() == 2).then(|| list.items[0].clone())
    })
    .await;
    let pod_spec = pod.spec.expect("pod spec");
    assert_eq!(pod_spec.termination_grace_period_seconds, Some(75));
    let env: BTreeMap<String, String> = pod_spec.containers[0]
        .env
        .iter()
        .flatten()
        .filter_map(|var| Some((var.name.clone(), var.value.clone()?)))
        .collect();
    assert_eq!(env["SWITCHYARD_LINK"], "$(SWITCHYARD_POD_IP):7400");
    assert_eq!(
        env["SWITCHYARD_LOCATOR"],
        format!("redis://arena-redis.{ns}.svc:6379")
    );
    let password_ref = pod_spec.containers[0]
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "SWITCHYARD_LOCATOR_PASSWORD")
        .and_then(|var| var.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|selector| (selector.name.clone(), selector.key.clone()));
    assert_eq!(
        password_ref,
        Some(("arena-redis-auth".to_owned(), "password".to_owned()))
    );

    // Status before any pod is ready: written, generation observed, not ready, progressing.
    let (generation, first) = eventually("status written", WAIT, || async {
        let (generation, status) = status(&client, &ns, "arena").await;
        (status.observed_generation == generation && !status.conditions.is_empty())
            .then_some((generation, status))
    })
    .await;
    assert_eq!(first.observed_generation, generation);
    assert_eq!(condition(&first, "Ready").map(|c| c.0).as_deref(), Some("False"));
    assert_eq!(
        condition(&first, "Progressing").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert_eq!(
        condition(&first, "Degraded"),
        Some(("False".into(), "AsExpected".into()))
    );
    assert_eq!(
        first.selector.as_deref(),
        Some(
            "app.kubernetes.io/component=node,app.kubernetes.io/instance=arena,app.kubernetes.io/name=switchyard"
        )
    );

    // Play the kubelet: every pod ready; nodes report bound players.
    let ready = eventually("Ready=True once every pod is ready", WAIT, || async {
        mark_pods_ready(&client, &ns, &selector).await;
        let (_, status) = status(&client, &ns, "arena").await;
        (condition(&status, "Ready").map(|c| c.0).as_deref() == Some("True")).then_some(status)
    })
    .await;
    assert_eq!(
        (ready.gate.ready, ready.node.ready, ready.node.replicas),
        (2, 2, 2)
    );
    assert_eq!(
        condition(&ready, "Progressing"),
        Some(("False".into(), "Stable".into()))
    );
    let node_pods = pods
        .list(&ListParams::default().labels(node_selector))
        .await
        .expect("pods");
    for (pod, players) in node_pods.items.iter().zip([3, 4]) {
        let patch = serde_json::json!({"metadata": {"annotations": {"switchyard.dev/bound-players": players.to_string()}}});
        pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }
    // Reconciles since (readiness, rollout) left the password alone.
    let again = secrets.get("arena-redis-auth").await.expect("the Redis Secret");
    assert_eq!(
        again.metadata.uid, auth.metadata.uid,
        "the Secret was not replaced"
    );
    assert_eq!(again.data, auth.data, "the password was not regenerated");
    eventually("bound players summed in the status", WAIT, || async {
        let (_, status) = status(&client, &ns, "arena").await;
        (status.bound_players == 7 && status.node.bound_players == 7).then_some(())
    })
    .await;
    let table = plane.kubectl_ok(&["-n", &ns, "get", "gc", "arena", "--no-headers"]);
    let columns: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(
        &columns[..5],
        ["arena", "2", "2", "7", "True"],
        "kubectl get gc: {table}"
    );

    let reasons = eventually("rollout events", WAIT, || async {
        let reasons = event_reasons(&client, &ns, "arena").await;
        (reasons.iter().any(|r| r == "RolloutStarted") && reasons.iter().any(|r| r == "RolloutFinished"))
            .then_some(reasons)
    })
    .await;
    assert!(!reasons.iter().any(|r| r == "InvalidSpec"), "{reasons:?}");

    // Metrics of the leader.
    let text = operator.metrics().await;
    for name in [
        "switchyard_operator_reconciles_total",
        "switchyard_operator_reconcile_duration_seconds_count",
        "switchyard_operator_clusters",
        "switchyard_operator_rollouts_in_progress",
        "switchyard_operator_draining_pods",
        "switchyard_operator_leader",
    ] {
        assert!(text.contains(name), "metric {name} missing:\n{text}");
    }
    assert_eq!(metric(&text, "switchyard_operator_leader", ""), Some(1.0));
    assert_eq!(metric(&text, "switchyard_operator_clusters", ""), Some(1.0));
    assert!(metric(&text, "switchyard_operator_reconciles_total", "result=\"ok\"").unwrap_or(0.0) >= 1.0);

    // Children the spec no longer wants are deleted: the managed Redis once a Redis URL is given, the
    // NetworkPolicies once disabled.
    let api: Api<GameCluster> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"spec": {
        "networkPolicy": {"enabled": false},
        "locator": {"redis": {"url": "redis://shared-redis:6379", "keyPrefix": "games:arena"}},
    }});
    api.patch("arena", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    eventually("Redis and NetworkPolicies pruned", WAIT, || async {
        (names::<Deployment>(&client, &ns, &selector).await == ["arena-gate", "arena-node"]
            && names::<Service>(&client, &ns, &selector).await.len() == 3
            && names::<NetworkPolicy>(&client, &ns, &selector).await.is_empty())
        .then_some(())
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let node = deployments.get("arena-node").await.expect("node Deployment");
    let env = node.spec.template.spec.expect("pod spec").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let locator = env
        .iter()
        .find(|var| var.name == "SWITCHYARD_LOCATOR")
        .and_then(|var| var.value.clone());
    assert_eq!(locator.as_deref(), Some("redis://shared-redis:6379"));
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn scale_rollout_drain_and_delete() {
    let (plane, client, ns) = setup("lifecycle").await;
    let operator = Operator::start(plane, &ns, "op-1").await;
    create_cluster(&client, &ns, "pool", GameClusterSpec::default()).await;
    eventually("node Deployment with 2 replicas", WAIT, || async {
        (node_replicas(&client, &ns, "pool").await == Some(2)).then_some(())
    })
    .await;

    // kubectl scale goes through the scale subresource to spec.node.replicas, then to the Deployment.
    let scaled = plane.kubectl_ok(&["-n", &ns, "scale", "gamecluster/pool", "--replicas=5"]);
    assert!(scaled.contains("scaled"), "{scaled}");
    eventually("the node Deployment follows kubectl scale", WAIT, || async {
        (node_replicas(&client, &ns, "pool").await == Some(5)).then_some(())
    })
    .await;
    let scale = plane.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/apis/switchyard.dev/v1alpha1/namespaces/{ns}/gameclusters/pool/scale"),
    ]);
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("Scale JSON");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(
        scale["status"]["selector"],
        "app.kubernetes.io/component=node,app.kubernetes.io/instance=pool,app.kubernetes.io/name=switchyard"
    );
    eventually("a Scaled event", WAIT, || async {
        event_reasons(&client, &ns, "pool")
            .await
            .iter()
            .any(|r| r == "Scaled")
            .then_some(())
    })
    .await;

    let node_selector = "app.kubernetes.io/instance=pool,app.kubernetes.io/component=node";
    eventually("all ready", WAIT, || async {
        mark_pods_ready(&client, &ns, "app.kubernetes.io/instance=pool").await;
        let (_, status) = status(&client, &ns, "pool").await;
        (condition(&status, "Ready").map(|c| c.0).as_deref() == Some("True")).then_some(())
    })
    .await;

    // A draining pod (terminating, held by a finalizer as a node holding players would be) is counted.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let victim = pods
        .list(&ListParams::default().labels(node_selector))
        .await
        .expect("pods")
        .items[0]
        .name_any();
    let hold = serde_json::json!({"metadata": {"finalizers": ["switchyard.dev/test-hold"]}});
    pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .expect("finalizer");
    pods.delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    let draining = eventually("the terminating pod counts as draining", WAIT, || async {
        let (_, status) = status(&client, &ns, "pool").await;
        (status.node.draining == 1).then_some(status)
    })
    .await;
    assert_eq!(
        condition(&draining, "Progressing").map(|c| c.0).as_deref(),
        Some("True")
    );
    eventually("the draining-pods gauges", WAIT, || async {
        let text = operator.metrics().await;
        (metric(&text, "switchyard_operator_draining_pods", "") == Some(1.0)
            && metric(&text, "switchyard_operator_pool_draining_pods", "pool=\"game\"") == Some(1.0))
        .then_some(())
    })
    .await;
    let release = serde_json::json!({"metadata": {"finalizers": null}});
    pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("release");
    eventually("drained", WAIT, || async {
        mark_pods_ready(&client, &ns, "app.kubernetes.io/instance=pool").await;
        let (_, status) = status(&client, &ns, "pool").await;
        (status.node.draining == 0 && condition(&status, "Ready").map(|c| c.0).as_deref() == Some("True"))
            .then_some(())
    })
    .await;

    // A new node image rolls the pool: surge pods of the new template, Progressing until they are ready.
    let api: Api<GameCluster> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"spec": {"node": {"image": "registry.example/my-game:2"}}});
    api.patch("pool", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("new image");
    eventually("Progressing=True RollingUpdate", WAIT, || async {
        let (generation, status) = status(&client, &ns, "pool").await;
        (status.observed_generation == generation
            && condition(&status, "Progressing") == Some(("True".into(), "RollingUpdate".into())))
        .then_some(status)
    })
    .await;
    eventually("old and new ReplicaSets", WAIT, || async {
        (names::<ReplicaSet>(&client, &ns, node_selector).await.len() == 2).then_some(())
    })
    .await;
    eventually("the rollout finishes", Duration::from_secs(120), || async {
        mark_pods_ready(&client, &ns, "app.kubernetes.io/instance=pool").await;
        let (_, status) = status(&client, &ns, "pool").await;
        (condition(&status, "Progressing") == Some(("False".into(), "Stable".into()))
            && status.node.updated == 5)
            .then_some(())
    })
    .await;

    // Deleting the GameCluster deletes every child (garbage collector, through the owner references).
    api.delete("pool", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("children garbage-collected", WAIT, || async {
        let selector = instance("pool");
        (names::<Deployment>(&client, &ns, &selector).await.is_empty()
            && names::<Service>(&client, &ns, &selector).await.is_empty()
            && names::<ConfigMap>(&client, &ns, &selector).await.is_empty()
            && names::<ServiceAccount>(&client, &ns, &selector).await.is_empty()
            && names::<Role>(&client, &ns, &selector).await.is_empty()
            && names::<RoleBinding>(&client, &ns, &selector).await.is_empty()
            && names::<PodDisruptionBudget>(&client, &ns, &selector)
                .await
                .is_empty())
        .then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn spec_the_schema_cannot_judge_is_degraded_then_recovers() {
    let (plane, client, ns) = setup("degraded").await;
    let operator = Operator::start(plane, &ns, "op-1").await;
    let mut spec = GameClusterSpec::default();
    spec.node_mut().env.push(k8s_openapi::api::core::v1::EnvVar {
        name: "SWITCHYARD_LINK".into(),
        value: Some("0.0.0.0:1".into()),
        value_from: None,
    });
    create_cluster(&client, &ns, "bad", spec).await;
    let degraded = eventually("Degraded=True ReservedEnv", WAIT, || async {
        let (_, status) = status(&client, &ns, "bad").await;
        (condition(&status, "Degraded") == Some(("True".into(), "ReservedEnv".into()))).then_some(status)
    })
    .await;
    let message = &degraded
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded")
        .message;
    assert!(message.contains("SWITCHYARD_LINK"), "{message}");
    assert!(
        names::<Deployment>(&client, &ns, &instance("bad"))
            .await
            .is_empty(),
        "nothing is created from a spec that cannot work"
    );
    eventually("a Warning event InvalidSpec", WAIT, || async {
        event_reasons(&client, &ns, "bad")
            .await
            .iter()
            .any(|r| r == "InvalidSpec")
            .then_some(())
    })
    .await;
    // No crash loop: the reconcile counts it as invalid, not as an error to retry quickly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = operator.metrics().await;
    assert!(
        metric(
            &text,
            "switchyard_operator_reconciles_total",
            "result=\"invalid_spec\""
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "switchyard_operator_reconciles_total",
            "result=\"invalid_spec\""
        )
        .unwrap_or(0.0)
            < 10.0,
        "retried in a loop: {text}"
    );

    let api: Api<GameCluster> = Api::namespaced(client.clone(), &ns);
    let fix = serde_json::json!({"spec": {"node": {"env": null}}});
    api.patch("bad", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fix");
    eventually("Degraded=False and children created", WAIT, || async {
        let (_, status) = status(&client, &ns, "bad").await;
        (condition(&status, "Degraded").map(|c| c.0).as_deref() == Some("False")
            && names::<Deployment>(&client, &ns, &instance("bad")).await.len() == 3)
            .then_some(())
    })
    .await;
    eventually("a Recovered event", WAIT, || async {
        event_reasons(&client, &ns, "bad")
            .await
            .iter()
            .any(|r| r == "Recovered")
            .then_some(())
    })
    .await;
    operator.stop().await;
}
