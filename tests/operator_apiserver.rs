//! The operator against a real kube-apiserver + etcd + kube-controller-manager (no scheduler, no kubelet:
//! the harness marks pods ready itself). Run with
//! `cargo test --test operator_apiserver -- --ignored` once `e2e/toolchain/build.sh` has built the binaries
//! (`scripts/test.sh` does both). Missing binaries fail the tests with instructions.

#[path = "support/kube.rs"]
mod kube_support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use kube_support::{ControlPlane, LEASE_NAME, LeaseTimings, Operator, eventually, mark_pods_ready, metric};
use switchyard_cluster::link::tls::{LinkRole, check_pem};
use switchyard_operator::crd::NodeSpec;
use switchyard_operator::link_certs::{self, Leaf, LeafCheck, LinkCa, check_leaf};
use switchyard_operator::pools::RoutingPolicy;
use switchyard_operator::{GameCluster, GameClusterSpec, GameClusterStatus, GamePool, PoolSpec};

const WAIT: Duration = Duration::from_secs(60);

fn instance(name: &str) -> String {
    format!("app.kubernetes.io/instance={name}")
}

async fn setup(namespace: &str) -> (&'static ControlPlane, Client, String) {
    let plane = tokio::task::spawn_blocking(|| {
        let plane = ControlPlane::shared();
        plane.install();
        plane
    })
    .await
    .expect("control plane");
    let namespace = plane.namespace(namespace);
    (plane, plane.admin_client().await, namespace)
}

async fn create_cluster(client: &Client, namespace: &str, name: &str, spec: GameClusterSpec) -> GameCluster {
    let api: Api<GameCluster> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &GameCluster::new(name, spec))
        .await
        .expect("GameCluster created")
}

async fn names<K>(client: &Client, namespace: &str, selector: &str) -> Vec<String>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut names: Vec<String> = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .expect("list")
        .items
        .iter()
        .map(|object| object.name_any())
        .collect();
    names.sort();
    names
}

async fn owned_by<K>(client: &Client, namespace: &str, name: &str, uid: &str)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let object = api
        .get_metadata(name)
        .await
        .unwrap_or_else(|error| panic!("{}/{name} missing: {error}", K::kind(&())));
    let owner = object
        .owner_references()
        .iter()
        .find(|owner| owner.uid == uid)
        .unwrap_or_else(|| {
            panic!(
                "{}/{name} has no owner reference to the GameCluster",
                K::kind(&())
            )
        });
    assert_eq!(owner.kind, "GameCluster");
    assert_eq!(
        owner.controller,
        Some(true),
        "{}/{name}: controller owner",
        K::kind(&())
    );
}

async fn status(client: &Client, namespace: &str, name: &str) -> (Option<i64>, GameClusterStatus) {
    let api: Api<GameCluster> = Api::namespaced(client.clone(), namespace);
    let cluster = api.get(name).await.expect("GameCluster");
    (cluster.metadata.generation, cluster.status.unwrap_or_default())
}

fn condition(status: &GameClusterStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .map(|condition| (condition.status.clone(), condition.reason.clone()))
}

async fn event_reasons(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|event| event.reason)
        .collect()
}

async fn node_replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    api.get_opt(&format!("{name}-node"))
        .await
        .ok()
        .flatten()?
        .spec
        .replicas
}

async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    api.get_opt(LEASE_NAME)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|holder| !holder.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn crd_is_established_with_short_name_and_columns() {
    let (plane, _client, namespace) = setup("crd").await;
    let established = plane.kubectl_ok(&[
        "get",
        "crd",
        "gameclusters.switchyard.dev",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
    ]);
    assert_eq!(established, "True");
    let output = plane.kubectl_stdin(
        &["-n", &namespace, "apply", "-f", "-"],
        "apiVersion: switchyard.dev/v1alpha1\nkind: GameCluster\nmetadata:\n  name: tiny\nspec: {}\n",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The short name and the print columns.
    let table = plane.kubectl_ok(&["-n", &namespace, "get", "gc"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "GATES", "NODES", "PLAYERS", "READY", "AGE"] {
        assert!(header.contains(column), "column {column} missing in {header:?}");
    }
    // Schema defaults are stored; spec.node is not (it is exclusive with spec.pools: absent, the operator
    // runs the single pool with its defaults).
    let replicas = plane.kubectl_ok(&["-n", &namespace, "get", "gc", "tiny", "-o", "jsonpath={.spec.gate.tcp.port} {.spec.packet.seqBytes} {.spec.locator.managedRedis.image}|{.spec.node}"]);
    assert_eq!(replicas, "3553 2 redis:7-alpine|");
    // Both CRDs of the committed file, with the GamePool's short name and columns.
    let pools = plane.kubectl_ok(&["-n", &namespace, "get", "gp"]);
    assert!(pools.is_empty() || pools.contains("No resources"), "{pools}");
    let crd = plane.kubectl_ok(&[
        "get",
        "crd",
        "gamepools.switchyard.dev",
        "-o",
        "jsonpath={.spec.versions[0].subresources.scale.specReplicasPath}",
    ]);
    assert_eq!(crd, ".spec.replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn invalid_specs_are_refused_with_the_cel_message() {
    let (plane, client, namespace) = setup("cel").await;
    let cases: [(&str, &str, &str); 25] = [
        (
            "same-ports",
            "gate: {tcp: {port: 4000}, websocket: {port: 4000}}",
            "gate.tcp.port and gate.websocket.port must differ",
        ),
        (
            "no-listener",
            "gate: {tcp: {enabled: false}, websocket: {enabled: false}}",
            "at least one of gate.tcp and gate.websocket must be enabled",
        ),
        (
            "seq-three",
            "packet: {seqBytes: 3}",
            "packet.seqBytes must be 0, 1, 2 or 4",
        ),
        (
            "route-three",
            "packet: {routeBytes: 3}",
            "packet.routeBytes must be 1, 2 or 4",
        ),
        (
            "tiny-packets",
            "packet: {maxPacketBytes: 8}",
            "packet.maxPacketBytes must hold a packet header",
        ),
        (
            "no-drain",
            "node: {drainDeadlineSeconds: 0}",
            "drainDeadlineSeconds of a node pool must be greater than 0",
        ),
        ("negative", "node: {replicas: -1}", "replicas must be 0 or more"),
        (
            "node-and-pools",
            "{node: {replicas: 1}, pools: [{name: lobby}]}",
            "spec.node and spec.pools are exclusive",
        ),
        (
            "pool-twice",
            "pools: [{name: lobby}, {name: battle}, {name: lobby}]",
            // The list-map type refuses the duplicate before CEL runs.
            "Duplicate value",
        ),
        (
            "pool-name",
            "pools: [{name: Lobby_1}]",
            "pools[].name must be a DNS label",
        ),
        (
            "pool-drain",
            "pools: [{name: battle, drainDeadlineSeconds: -5}]",
            "drainDeadlineSeconds of a node pool must be greater than 0",
        ),
        (
            "admin-port",
            "gate: {tcp: {port: 9090}}",
            "gate.tcp.port must not be 9090, the admin port",
        ),
        (
            "bad-heartbeat",
            "gate: {heartbeat: {interval: soon}}",
            "gate.heartbeat.interval must be a duration",
        ),
        (
            "bad-redis",
            "locator: {redis: {url: 'http://redis:6379'}}",
            "locator.redis.url must start with redis://",
        ),
        (
            // TLS to a Redis Cluster is not built into the binary: refused here, not at every pod's start.
            "tls-redis-cluster",
            "locator: {redis: {url: 'rediss+cluster://r1:6380,r2:6380'}}",
            "locator.redis.url must start with redis://",
        ),
        (
            "inline-password",
            "locator: {redis: {url: 'redis://:hunter2@redis:6379'}}",
            "locator.redis.url must not carry a password",
        ),
        (
            "bad-prefix",
            "locator: {redis: {url: 'redis://redis:6379', keyPrefix: '{hot}'}}",
            "locator.redis.keyPrefix must be 1 to 64 characters",
        ),
        (
            "long-prefix",
            "locator: {redis: {url: 'redis://redis:6379', keyPrefix: 'ppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp'}}",
            "spec.locator.redis.keyPrefix: Too long",
        ),
        (
            "ca-without-tls",
            "locator: {redis: {url: 'redis://redis:6379', ca: {configMapName: redis-ca}}}",
            "locator.redis.ca needs a rediss:// URL",
        ),
        (
            "ca-twice",
            "locator: {redis: {url: 'rediss://redis:6380', ca: {configMapName: a, secretName: b}}}",
            "a CA bundle names exactly one of secretName and configMapName",
        ),
        (
            "burst-alone",
            "gate: {rateLimit: {burst: 10}}",
            "gate.rateLimit.burst needs gate.rateLimit.perSecond",
        ),
        (
            "bad-login-deadline",
            "gate: {loginDeadline: later}",
            "gate.loginDeadline must be a duration",
        ),
        (
            "negative-per-ip",
            "gate: {maxConnectionsPerIp: -1}",
            "gate.maxConnectionsPerIp must be 0 or more",
        ),
        (
            "policy-on-cluster-ip",
            "gate: {service: {externalTrafficPolicy: Local}}",
            "gate.service.externalTrafficPolicy needs type NodePort or LoadBalancer",
        ),
        (
            "links-manual",
            "links: {tls: Manual}",
            "supported values: \"Operator\", \"Disabled\"",
        ),
    ];
    for (name, spec, message) in cases {
        let manifest = format!(
            "apiVersion: switchyard.dev/v1alpha1\nkind: GameCluster\nmetadata:\n  name: {name}\nspec:\n  {spec}\n"
        );
        let output = plane.kubectl_stdin(&["-n", &namespace, "apply", "-f", "-"], &manifest);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: the API server accepted {spec}");
        assert!(
            stderr.contains(message),
            "{name}: expected {message:?} in: {stderr}"
        );
    }
    // The name rule (child names must stay DNS labels), through the Rust client.
    let api: Api<GameCluster> = Api::namespaced(client.clone(), &namespace);
    let long = "a".repeat(48);
    let error = api
        .create(
            &PostParams::default(),
            &GameCluster::new(&long, GameClusterSpec::default()),
        )
        .await
        .expect_err("a 48-character name is refused");
    match error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422);
            assert!(
                status
                    .message
                    .contains("metadata.name must be a DNS label of at most 47 characters"),
                "{}",
                status.message
            );
        }
        other => panic!("unexpected error {other}"),
    }
    // A 43-character cluster with a 15-character pool: NAME-node-POOL would pass 63 characters.
    let spec = GameClusterSpec {
        pools: vec![pool_spec("abcdefghijklmno", 1, RoutingPolicy::RoundRobin)],
        ..GameClusterSpec::default()
    };
    let error = api
        .create(&PostParams::default(), &GameCluster::new(&"b".repeat(43), spec))
        .await
        .expect_err("too long a cluster and pool name together");
    assert!(error.to_string().contains("at most 57 characters"), "{error}");
}

fn pool_spec(name: &str, replicas: i32, routing: RoutingPolicy) -> PoolSpec {
    let node = NodeSpec {
        replicas,
        image: Some(format!("registry.example/game:{name}")),
        ..NodeSpec::default()
    };
    PoolSpec {
        name: name.to_owned(),
        routing,
        node,
    }
}

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

/// The data of a Secret, or `None` when it does not exist.
async fn secret_data(secrets: &Api<Secret>, name: &str) -> Option<BTreeMap<String, k8s_openapi::ByteString>> {
    secrets.get_opt(name).await.expect("read a Secret")?.data
}

fn text(data: &BTreeMap<String, k8s_openapi::ByteString>, key: &str) -> String {
    String::from_utf8(data[key].0.clone()).unwrap_or_else(|_| panic!("{key} is UTF-8"))
}

/// Replaces a leaf Secret's certificate and key (as a person or a stale writer might).
async fn replace_leaf(secrets: &Api<Secret>, name: &str, pem: &link_certs::Pem) {
    let patch = serde_json::json!({"stringData": {"tls.crt": pem.cert, "tls.key": pem.key}});
    secrets
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("leaf replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn link_certificates_are_minted_mounted_renewed_and_recreated() {
    let (plane, client, ns) = setup("links").await;
    let operator = Operator::start(plane, &ns, "op-1").await;
    let cluster = create_cluster(&client, &ns, "arena", GameClusterSpec::default()).await;
    let uid = cluster.uid().expect("uid");
    let link_selector = "app.kubernetes.io/instance=arena,app.kubernetes.io/component=link";
    let link_secrets = eventually("the three link Secrets exist", WAIT, || async {
        let names = names::<Secret>(&client, &ns, link_selector).await;
        (names.len() == 3).then_some(names)
    })
    .await;
    assert_eq!(
        link_secrets,
        ["arena-link-ca", "arena-link-gate-tls", "arena-link-node-tls"]
    );
    for name in &link_secrets {
        owned_by::<Secret>(&client, &ns, name, &uid).await;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let ca_secret = secrets.get("arena-link-ca").await.expect("CA Secret");
    assert_eq!(ca_secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca_data = ca_secret.data.clone().expect("CA data");
    let ca_pem = text(&ca_data, "tls.crt");
    // What the API server holds is what the processes accept, each leaf for its role only.
    for (name, role, other) in [
        ("arena-link-gate-tls", LinkRole::Gate, LinkRole::Node),
        ("arena-link-node-tls", LinkRole::Node, LinkRole::Gate),
    ] {
        let data = secret_data(&secrets, name).await.expect("leaf data");
        assert_eq!(text(&data, "ca.crt"), ca_pem, "{name} carries the CA");
        let check = |role| {
            check_pem(
                data["ca.crt"].0.as_slice(),
                data["tls.crt"].0.as_slice(),
                data["tls.key"].0.as_slice(),
                role,
                SystemTime::now(),
            )
        };
        check(role).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(check(other).is_err(), "{name} also passes as the other role");
    }

    // Gates and nodes mount their own leaf, whole and read-only, and get the contract's variables; no pod
    // mounts the CA.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = instance("arena");
    let all = eventually("gate, node and Redis pods created", WAIT, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
        (list.items.len() == 5).then_some(list.items)
    })
    .await;
    for pod in &all {
        let component = pod.labels()["app.kubernetes.io/component"].clone();
        let spec = pod.spec.clone().expect("pod spec");
        let secrets_mounted: Vec<String> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|volume| volume.secret.as_ref()?.secret_name.clone())
            .collect();
        let rendered = serde_json::to_string(&spec).expect("JSON");
        assert!(
            !rendered.contains("arena-link-ca"),
            "{} refers to the CA: {rendered}",
            pod.name_any()
        );
        let expected: &[&str] = match component.as_str() {
            "gate" => &["arena-link-gate-tls"],
            "node" => &["arena-link-node-tls"],
            _ => &[],
        };
        let link: Vec<&String> = secrets_mounted
            .iter()
            .filter(|name| name.contains("-link-"))
            .collect();
        assert_eq!(link, expected, "{}", pod.name_any());
        if component == "redis" {
            continue;
        }
        let container = &spec.containers[0];
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|mount| mount.name == "link-tls")
            .expect("the link mount");
        assert_eq!(mount.mount_path, "/etc/switchyard/link-tls");
        assert_eq!((mount.read_only, mount.sub_path.as_deref()), (Some(true), None));
        let env: BTreeMap<String, String> = container
            .env
            .iter()
            .flatten()
            .filter_map(|var| Some((var.name.clone(), var.value.clone()?)))
            .collect();
        for (name, file) in [
            ("SWITCHYARD_LINK_TLS_CA", "ca.crt"),
            ("SWITCHYARD_LINK_TLS_CERT", "tls.crt"),
            ("SWITCHYARD_LINK_TLS_KEY", "tls.key"),
        ] {
            assert_eq!(env[name], format!("/etc/switchyard/link-tls/{file}"));
        }
    }

    // Every pod ready: the cluster is stable, so the operator's next periodic look is minutes away.
    eventually("Ready=True once every pod is ready", WAIT, || async {
        mark_pods_ready(&client, &ns, &selector).await;
        let (_, status) = status(&client, &ns, "arena").await;
        (condition(&status, "Ready").map(|c| c.0).as_deref() == Some("True")).then_some(())
    })
    .await;
    // A gate leaf that is due for renewal in a few seconds (an hour-long one, most of it used): kept until
    // then, which only the requeue at its renewal time can end (nothing else changes), then renewed.
    let ca = LinkCa::from_secret(&ca_data, SystemTime::now()).expect("the stored CA is usable");
    let hour = Duration::from_secs(3600);
    let third = (hour + link_certs::BACKDATE) / 3;
    let soon = ca
        .issue_valid_for(
            Leaf::Gate,
            "arena",
            SystemTime::now() + Duration::from_secs(8) + third - hour,
            hour,
        )
        .expect("short-lived leaf");
    replace_leaf(&secrets, "arena-link-gate-tls", &soon).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = secret_data(&secrets, "arena-link-gate-tls")
        .await
        .expect("gate leaf");
    assert_eq!(text(&kept, "tls.crt"), soon.cert, "renewed before its time");
    let renewed = eventually("the gate leaf renewed at its time", WAIT, || async {
        let data = secret_data(&secrets, "arena-link-gate-tls").await?;
        (text(&data, "tls.crt") != soon.cert).then_some(data)
    })
    .await;
    match check_leaf(&ca, Some(&renewed), Leaf::Gate, SystemTime::now()) {
        LeafCheck::Keep { renew_at } => assert!(
            renew_at > SystemTime::now() + Duration::from_secs(15 * 24 * 3600),
            "a full-length leaf"
        ),
        other => panic!("the renewed leaf is not good: {other:?}"),
    }
    // A node leaf already past its renewal time (a minute past; still valid for 20 more): renewed at once.
    let due = ca
        .issue_valid_for(
            Leaf::Node,
            "arena",
            SystemTime::now() - (hour - third) - Duration::from_secs(60),
            hour,
        )
        .expect("due leaf");
    assert_eq!(
        check_leaf(
            &ca,
            Some(&link_certs::leaf_secret_data(&due, &ca)),
            Leaf::Node,
            SystemTime::now()
        ),
        LeafCheck::Issue(link_certs::Issue::Due)
    );
    replace_leaf(&secrets, "arena-link-node-tls", &due).await;
    eventually("the node leaf renewed", WAIT, || async {
        let data = secret_data(&secrets, "arena-link-node-tls").await?;
        (text(&data, "tls.crt") != due.cert
            && matches!(
                check_leaf(&ca, Some(&data), Leaf::Node, SystemTime::now()),
                LeafCheck::Keep { .. }
            ))
        .then_some(())
    })
    .await;
    // The CA stayed as it was.
    let ca_after = secrets.get("arena-link-ca").await.expect("CA Secret");
    assert_eq!(ca_after.metadata.uid, ca_secret.metadata.uid);
    assert_eq!(ca_after.data, ca_secret.data, "the CA was not replaced");

    // A deleted leaf is made again, by the same CA.
    let old_uid = secrets
        .get("arena-link-node-tls")
        .await
        .expect("node leaf")
        .metadata
        .uid;
    secrets
        .delete("arena-link-node-tls", &DeleteParams::default())
        .await
        .expect("deleted");
    let again = eventually("the deleted node leaf recreated", WAIT, || async {
        let secret = secrets.get_opt("arena-link-node-tls").await.ok()??;
        (secret.metadata.uid != old_uid).then_some(secret)
    })
    .await;
    assert!(matches!(
        check_leaf(&ca, again.data.as_ref(), Leaf::Node, SystemTime::now()),
        LeafCheck::Keep { .. }
    ));
    let exposed = operator.metrics().await;
    for (kind, reason) in [
        ("ca", "missing"),
        ("gate", "missing"),
        ("gate", "renewal"),
        ("node", "renewal"),
    ] {
        let filter = format!("kind=\"{kind}\",reason=\"{reason}\"");
        assert!(
            metric(
                &exposed,
                "switchyard_operator_link_certificates_issued_total",
                &filter
            )
            .unwrap_or(0.0)
                >= 1.0,
            "{filter}:\n{exposed}"
        );
    }
    assert!(
        metric(
            &exposed,
            "switchyard_operator_link_certificates_issued_total",
            "kind=\"node\",reason=\"missing\""
        )
        .unwrap_or(0.0)
            >= 2.0,
        "the node leaf made at the start and again after its deletion"
    );

    // A CA Secret the GameCluster does not own is neither used nor overwritten: Degraded, counted, no
    // crash loop, and nothing else of that cluster is made.
    let foreign = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("rogue-link-ca".into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "tls.crt".to_owned(),
            k8s_openapi::ByteString(b"not a CA".to_vec()),
        )])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign Secret");
    create_cluster(&client, &ns, "rogue", GameClusterSpec::default()).await;
    let degraded = eventually("the rogue cluster Degraded", WAIT, || async {
        let (_, status) = status(&client, &ns, "rogue").await;
        let degraded = condition(&status, "Degraded")?;
        (degraded.0 == "True").then_some(degraded)
    })
    .await;
    assert_eq!(degraded.1, "LinkCertificates");
    assert!(
        names::<Deployment>(&client, &ns, &instance("rogue"))
            .await
            .is_empty()
    );
    let still = secrets.get("rogue-link-ca").await.expect("foreign Secret");
    assert_eq!(still.data, foreign.data, "the foreign Secret was left alone");
    let exposed = operator.metrics().await;
    assert!(
        metric(
            &exposed,
            "switchyard_operator_link_certificate_errors_total",
            "reason=\"ca_foreign\""
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{exposed}"
    );
    // Looked at again (a change of the GameCluster): counted again, logged once.
    let clusters: Api<GameCluster> = Api::namespaced(client.clone(), &ns);
    let touch = serde_json::json!({"metadata": {"annotations": {"example.com/touched": "1"}}});
    clusters
        .patch("rogue", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .expect("annotated");
    eventually("the foreign CA counted twice", WAIT, || async {
        let exposed = operator.metrics().await;
        (metric(
            &exposed,
            "switchyard_operator_link_certificate_errors_total",
            "reason=\"ca_foreign\"",
        )
        .unwrap_or(0.0)
            >= 2.0)
            .then_some(())
    })
    .await;
    let log = operator.log_text();
    assert_eq!(
        log.matches("link certificates cannot be kept").count(),
        1,
        "{log}"
    );
    operator.stop().await;
}
