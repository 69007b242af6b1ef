//! The CRD as the API server serves it: established with its short name and columns, and every CEL rule
//! refusing what the binary cannot do, with its message.

use super::*;

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
