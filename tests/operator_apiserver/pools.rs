//! Several node pools: each scales on its own (`kubectl scale gamepool/...`), and route conflicts show.

use super::*;

async fn deployment_replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.ok().flatten()?.spec.replicas
}

fn env_of(deployment: &Deployment, name: &str) -> Option<String> {
    deployment.spec.template.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn two_pools_scale_on_their_own_and_route_conflicts_show() {
    let (plane, client, ns) = setup("pools").await;
    let operator = Operator::start(plane, &ns, "op-1").await;
    let spec = GameClusterSpec {
        pools: vec![
            pool_spec("lobby", 2, RoutingPolicy::RoundRobin),
            pool_spec("battle", 1, RoutingPolicy::LeastBound),
        ],
        ..GameClusterSpec::default()
    };
    let cluster = create_cluster(&client, &ns, "duo", spec).await;
    let uid = cluster.uid().expect("uid");
    let selector = instance("duo");

    let deployments = eventually("a Deployment per pool", WAIT, || async {
        let names = names::<Deployment>(&client, &ns, &selector).await;
        (names.len() == 4).then_some(names)
    })
    .await;
    assert_eq!(
        deployments,
        ["duo-gate", "duo-node-battle", "duo-node-lobby", "duo-redis"]
    );
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for (pool, replicas) in [("lobby", 2), ("battle", 1)] {
        let deployment = api
            .get(&format!("duo-node-{pool}"))
            .await
            .expect("pool Deployment");
        assert_eq!(env_of(&deployment, "SWITCHYARD_POOL").as_deref(), Some(pool));
        assert_eq!(deployment.spec.replicas, Some(replicas));
        owned_by::<Deployment>(&client, &ns, &format!("duo-node-{pool}"), &uid).await;
        owned_by::<Service>(&client, &ns, &format!("duo-node-{pool}"), &uid).await;
        owned_by::<PodDisruptionBudget>(&client, &ns, &format!("duo-node-{pool}"), &uid).await;
        owned_by::<GamePool>(&client, &ns, &format!("duo-{pool}"), &uid).await;
    }
    let gate = api.get("duo-gate").await.expect("gate Deployment");
    assert_eq!(
        env_of(&gate, "SWITCHYARD_NODE_SERVICE").as_deref(),
        Some("duo-node-lobby,duo-node-battle")
    );
    assert_eq!(
        env_of(&gate, "SWITCHYARD_POOL_ROUTING").as_deref(),
        Some("lobby=round-robin,battle=least-bound")
    );
    let table = plane.kubectl_ok(&["-n", &ns, "get", "gamepools"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["CLUSTER", "POOL", "DESIRED", "READY", "DRAINING", "PLAYERS"] {
        assert!(header.contains(column), "column {column} missing in {header:?}");
    }

    // kubectl scale gamepool/duo-battle, as the README says: the /scale subresource of the pool's GamePool.
    let lobby_generation = api
        .get("duo-node-lobby")
        .await
        .expect("lobby")
        .metadata
        .generation;
    let pools: Api<GamePool> = Api::namespaced(client.clone(), &ns);
    let scaled = plane.kubectl_ok(&["-n", &ns, "scale", "gamepool/duo-battle", "--replicas=3"]);
    assert!(scaled.contains("scaled"), "{scaled}");
    eventually("the battle Deployment follows its GamePool", WAIT, || async {
        (deployment_replicas(&client, &ns, "duo-node-battle").await == Some(3)).then_some(())
    })
    .await;
    let lobby = api.get("duo-node-lobby").await.expect("lobby");
    assert_eq!(lobby.spec.replicas, Some(2), "scaling battle left lobby alone");
    assert_eq!(lobby.metadata.generation, lobby_generation, "lobby untouched");
    // The scale subresource reports the pool's pods and selector once the operator wrote the status.
    eventually("the GamePool's scale status", WAIT, || async {
        let scale = pools.get_scale("duo-battle").await.ok()?;
        let status = scale.status?;
        (status.replicas == 3
            && status.selector.as_deref()
                == Some("app.kubernetes.io/component=node,app.kubernetes.io/instance=duo,app.kubernetes.io/name=switchyard,switchyard.dev/pool=battle"))
        .then_some(())
    })
    .await;

    // An HPA can target a pool: the controller-manager's HPA controller reads the GamePool's /scale (no
    // metrics here, so it scales nothing; AbleToScale=True is what it says once it read the scale).
    let hpa = format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: lobby\n  namespace: {ns}\nspec:\n  scaleTargetRef: {{apiVersion: switchyard.dev/v1alpha1, kind: GamePool, name: duo-lobby}}\n  minReplicas: 1\n  maxReplicas: 6\n  metrics: [{{type: Resource, resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}}}]\n"
    );
    let output = plane.kubectl_stdin(&["apply", "-f", "-"], &hpa);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventually("the HPA reads the GamePool's scale", Duration::from_secs(90), || async {
        let able = plane.kubectl_ok(&[
            "-n",
            &ns,
            "get",
            "hpa",
            "lobby",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"AbleToScale\")].status} {.status.conditions[?(@.type==\"AbleToScale\")].reason}",
        ]);
        (able.trim() == "True SucceededGetScale").then_some(())
    })
    .await;
    plane.kubectl_ok(&["-n", &ns, "delete", "hpa", "lobby"]);

    // Editing spec.pools[lobby].replicas is a deliberate scale of lobby; battle keeps kubectl scale's 3.
    let gameclusters: Api<GameCluster> = Api::namespaced(client.clone(), &ns);
    let edited = serde_json::json!({"spec": {"pools": [
        {"name": "lobby", "replicas": 4, "image": "registry.example/game:lobby"},
        {"name": "battle", "replicas": 1, "routing": "leastBound", "image": "registry.example/game:battle"},
    ]}});
    gameclusters
        .patch("duo", &PatchParams::default(), &Patch::Merge(&edited))
        .await
        .expect("edit the spec");
    eventually("lobby follows the spec edit", WAIT, || async {
        (deployment_replicas(&client, &ns, "duo-node-lobby").await == Some(4)).then_some(())
    })
    .await;
    assert_eq!(
        deployment_replicas(&client, &ns, "duo-node-battle").await,
        Some(3)
    );
    assert_eq!(pools.get("duo-battle").await.expect("GamePool").spec.replicas, 3);

    // Status per pool, once the pods are ready.
    let status = eventually("per-pool status", WAIT, || async {
        mark_pods_ready(&client, &ns, &selector).await;
        let (_, status) = status(&client, &ns, "duo").await;
        let ready: Vec<(String, i32, i32)> = status
            .pools
            .iter()
            .map(|pool| (pool.name.clone(), pool.desired, pool.ready))
            .collect();
        (ready == [("lobby".to_owned(), 4, 4), ("battle".to_owned(), 3, 3)]).then_some(status)
    })
    .await;
    assert_eq!(status.node.ready, 7);
    assert_eq!(
        condition(&status, "RouteConflict"),
        Some(("False".into(), "NoConflict".into()))
    );

    // A new battle image rolls battle only: its old pods are drained once a new one is ready; lobby's
    // Deployment and pods are untouched.
    let lobby_generation = api
        .get("duo-node-lobby")
        .await
        .expect("lobby")
        .metadata
        .generation;
    let new_image = serde_json::json!({"spec": {"pools": [
        {"name": "lobby", "replicas": 4, "image": "registry.example/game:lobby"},
        {"name": "battle", "replicas": 1, "routing": "leastBound", "image": "registry.example/game:battle-2"},
    ]}});
    gameclusters
        .patch("duo", &PatchParams::default(), &Patch::Merge(&new_image))
        .await
        .expect("new battle image");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let drained_by_rollout = |pod: &Pod| {
        pod.annotations()
            .get("switchyard.dev/drained-by")
            .map(String::as_str)
            == Some("rollout")
    };
    // One surge pod of the new template turns ready (marked once: no kubelet here), so the old pods are
    // still there when the operator drains them.
    eventually("a ready battle pod of the new template", WAIT, || async {
        let sets = names::<ReplicaSet>(&client, &ns, "switchyard.dev/pool=battle").await;
        (sets.len() == 2 && mark_pods_ready(&client, &ns, "switchyard.dev/pool=battle").await > 0)
            .then_some(())
    })
    .await;
    eventually("the old battle pods are drained", WAIT, || async {
        let battle = pods
            .list(&ListParams::default().labels("switchyard.dev/pool=battle"))
            .await
            .ok()?
            .items;
        battle.iter().any(drained_by_rollout).then_some(())
    })
    .await;
    let lobby_pods = pods
        .list(&ListParams::default().labels("switchyard.dev/pool=lobby"))
        .await
        .expect("lobby pods")
        .items;
    assert_eq!(lobby_pods.len(), 4);
    assert!(
        lobby_pods
            .iter()
            .all(|pod| !pod.annotations().contains_key("switchyard.dev/drain")),
        "a battle rollout drained a lobby pod"
    );
    let lobby = api.get("duo-node-lobby").await.expect("lobby");
    assert_eq!(lobby.metadata.generation, lobby_generation, "lobby rolled");
    // In the pools form, kubectl scale gc/NAME would write spec.node: refused, spec.node and spec.pools
    // are exclusive.
    let refused = plane.kubectl(&["-n", &ns, "scale", "gc/duo", "--replicas=3"]);
    assert!(!refused.status.success(), "kubectl scale gc/duo succeeded");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("spec.node and spec.pools are exclusive"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Two pools' nodes report route 11 (as their pod reporters would): the RouteConflict condition.
    for (pool, routes) in [("lobby", "1,2,11"), ("battle", "3,4,11")] {
        let patch = serde_json::json!({"metadata": {"annotations": {"switchyard.dev/routes": routes}}});
        // A pod of the current template: the battle rollout may still be replacing older ones.
        eventually(&format!("a {pool} pod carries routes {routes}"), WAIT, || async {
            mark_pods_ready(&client, &ns, &selector).await;
            let listed = pods
                .list(&ListParams::default().labels(&format!("switchyard.dev/pool={pool}")))
                .await
                .ok()?;
            let pod = listed
                .items
                .iter()
                .find(|pod| !pod.annotations().contains_key("switchyard.dev/drain"))?;
            pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .ok()
                .map(drop)
        })
        .await;
    }
    let conflict = eventually("the RouteConflict condition", WAIT, || async {
        let api: Api<GameCluster> = Api::namespaced(client.clone(), &ns);
        let cluster = api.get("duo").await.ok()?;
        cluster
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "RouteConflict" && c.status == "True")
    })
    .await;
    assert_eq!(conflict.message, "route 11 is served by pools battle and lobby");
    eventually("the route-conflict gauge", WAIT, || async {
        let text = operator.metrics().await;
        (metric(&text, "switchyard_operator_route_conflicts", "") == Some(1.0)).then_some(())
    })
    .await;
    eventually("a RouteConflict warning event", WAIT, || async {
        event_reasons(&client, &ns, "duo")
            .await
            .iter()
            .any(|r| r == "RouteConflict")
            .then_some(())
    })
    .await;

    // Removing a pool from the spec deletes its objects.
    let lobby_only = serde_json::json!({"spec": {"pools": [
        {"name": "lobby", "replicas": 4, "image": "registry.example/game:lobby"},
    ]}});
    gameclusters
        .patch("duo", &PatchParams::default(), &Patch::Merge(&lobby_only))
        .await
        .expect("drop the battle pool");
    eventually("the battle pool's objects are gone", WAIT, || async {
        let deployments = names::<Deployment>(&client, &ns, &selector).await;
        let services = names::<Service>(&client, &ns, &selector).await;
        let game_pools = names::<GamePool>(&client, &ns, &selector).await;
        (!deployments.contains(&"duo-node-battle".to_owned())
            && !services.contains(&"duo-node-battle".to_owned())
            && game_pools == ["duo-lobby"])
        .then_some(())
    })
    .await;
    operator.stop().await;
}
