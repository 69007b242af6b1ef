//! Golden-ish checks of the translation: the fields the pod contract and the drain design depend on. The
//! NetworkPolicies, the locator's settings and the gates' exposure have their own files below.

#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::crd::{
    CaBundleRef, GameClusterSpec, GateTlsSpec, RateLimitSpec, RedisLocatorSpec, SecretKeyRef, ServiceType,
    TrafficPolicy,
};
use k8s_openapi::api::core::v1::Container;

#[path = "children_tests/gate_exposure.rs"]
mod gate_exposure;
#[path = "children_tests/locator.rs"]
mod locator;
#[path = "children_tests/network_policy.rs"]
mod network_policy;

fn cluster(spec: GameClusterSpec) -> GameCluster {
    let mut cluster = GameCluster::new("arena", spec);
    cluster.metadata.namespace = Some("games".into());
    cluster.metadata.uid = Some("uid-1".into());
    cluster
}

pub(super) fn build(spec: GameClusterSpec) -> Children {
    children(&cluster(spec), &Defaults::default()).expect("a valid spec")
}

pub(super) fn container(deployment: &Deployment) -> &Container {
    &deployment
        .spec
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
}

pub(super) fn pod(deployment: &Deployment) -> &PodSpec {
    deployment.spec.template.spec.as_ref().expect("pod spec")
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value.clone())
}

fn env_field(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value_from.as_ref())
        .and_then(|source| source.field_ref.as_ref())
        .map(|field| field.field_path.clone())
}

#[test]
fn names_follow_the_pod_contract() {
    let children = build(GameClusterSpec::default());
    let names: Vec<String> = children.all().iter().map(Child::describe).collect();
    assert_eq!(
        names,
        [
            "ServiceAccount/arena-gate",
            "ServiceAccount/arena-node",
            "Role/arena-gate",
            "Role/arena-node",
            "RoleBinding/arena-gate",
            "RoleBinding/arena-node",
            "ConfigMap/arena-config",
            "Service/arena-redis",
            "Deployment/arena-redis",
            "Service/arena-gate",
            "Service/arena-gate-headless",
            "Service/arena-node",
            "Deployment/arena-gate",
            "Deployment/arena-node",
            "PodDisruptionBudget/arena-gate",
            "PodDisruptionBudget/arena-node",
            "NetworkPolicy/arena-gate",
            "NetworkPolicy/arena-node",
            "NetworkPolicy/arena-redis",
        ]
    );
}

#[test]
fn every_child_is_labelled_and_owned() {
    for child in build(GameClusterSpec::default()).all() {
        let json = child.to_json();
        let meta = &json["metadata"];
        assert_eq!(meta["namespace"], "games", "{}", child.describe());
        assert_eq!(meta["labels"][LABEL_NAME], "switchyard");
        assert_eq!(meta["labels"][LABEL_INSTANCE], "arena");
        assert_eq!(meta["labels"][LABEL_MANAGED_BY], "switchyard-operator");
        let owner = &meta["ownerReferences"][0];
        assert_eq!(owner["kind"], "GameCluster");
        assert_eq!(owner["apiVersion"], "switchyard.dev/v1alpha1");
        assert_eq!(owner["uid"], "uid-1");
        assert_eq!(owner["controller"], true, "{}", child.describe());
    }
}

#[test]
fn node_deployment_surges_and_drains() {
    let children = build(GameClusterSpec::default());
    let node = &children.pools[0].deployment;
    assert_eq!(node.spec.replicas, Some(2));
    let rolling = node
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .expect("rolling update");
    assert_eq!(rolling.max_surge, Some(IntOrString::String("25%".into())));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(pod(node).termination_grace_period_seconds, Some(60 + 15));
    assert_eq!(
        pod(&children.gate_deployment).termination_grace_period_seconds,
        Some(30 + 10)
    );
    assert_eq!(pod(node).service_account_name.as_deref(), Some("arena-node"));
    let selector = node.spec.selector.match_labels.as_ref().expect("selector");
    assert_eq!(selector.get(LABEL_COMPONENT).map(String::as_str), Some("node"));
    assert!(
        !selector.contains_key(LABEL_MANAGED_BY),
        "selectors are immutable: keep them minimal"
    );
}

#[test]
fn node_environment_follows_the_pod_contract() {
    let children = build(GameClusterSpec::default());
    let node = container(&children.pools[0].deployment);
    assert_eq!(node.args.as_deref(), Some(&["node".to_owned()][..]));
    assert_eq!(env_field(node, "SWITCHYARD_ID").as_deref(), Some("metadata.name"));
    assert_eq!(
        env_field(node, "SWITCHYARD_POD_NAME").as_deref(),
        Some("metadata.name")
    );
    assert_eq!(
        env_field(node, "SWITCHYARD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(
        env_field(node, "SWITCHYARD_POD_IP").as_deref(),
        Some("status.podIP")
    );
    assert_eq!(
        env_value(node, "SWITCHYARD_HTTP").as_deref(),
        Some("$(SWITCHYARD_POD_IP):9090")
    );
    assert_eq!(
        env_value(node, "SWITCHYARD_LINK").as_deref(),
        Some("$(SWITCHYARD_POD_IP):7400")
    );
    assert_eq!(
        env_value(node, "SWITCHYARD_LOCATOR").as_deref(),
        Some("redis://arena-redis.games.svc:6379")
    );
    assert_eq!(
        env_value(node, "SWITCHYARD_LOCATOR_PREFIX").as_deref(),
        Some("switchyard:arena")
    );
    assert_eq!(env_value(node, "SWITCHYARD_LOG").as_deref(), Some("info"));
    assert_eq!(
        env_value(node, "SWITCHYARD_DRAIN_DEADLINE").as_deref(),
        Some("60s")
    );
    assert_eq!(env_value(node, "SWITCHYARD_POOL").as_deref(), Some("game"));
    // The operator writes the node pod's annotations itself (from /load): nodes may not write pods.
    assert_eq!(env_value(node, "SWITCHYARD_REPORT_POD"), None);
    assert_eq!(
        env_value(node, "SWITCHYARD_DRAIN_FILE").as_deref(),
        Some("/etc/podinfo/annotations")
    );
    // The pod IP is defined before the values that reference it.
    let names: Vec<&str> = node.env.iter().flatten().map(|v| v.name.as_str()).collect();
    let ip = names.iter().position(|n| *n == "SWITCHYARD_POD_IP");
    let http = names.iter().position(|n| *n == "SWITCHYARD_HTTP");
    assert!(ip < http);
    let from = node.env_from.as_ref().expect("envFrom")[0]
        .config_map_ref
        .as_ref()
        .expect("configMapRef");
    assert_eq!(from.name, "arena-config");
    let ports: Vec<(&str, i32)> = node
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().unwrap_or(""), p.container_port))
        .collect();
    assert_eq!(ports, [("link", 7400), ("admin", 9090)]);
    let readiness = node
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("readiness");
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert_eq!(readiness.port, IntOrString::String("admin".into()));
    let liveness = node
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("liveness");
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    let podinfo = pod(&children.pools[0].deployment)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "podinfo")
        .and_then(|v| v.downward_api.as_ref())
        .expect("downward API volume");
    let item = &podinfo.items.as_ref().expect("items")[0];
    assert_eq!(item.path, "annotations");
    assert_eq!(
        item.field_ref.as_ref().map(|f| f.field_path.as_str()),
        Some("metadata.annotations")
    );
}

#[test]
fn gate_environment_follows_the_pod_contract() {
    let mut spec = GameClusterSpec::default();
    spec.gate.websocket.enabled = false;
    spec.gate.drain_deadline_seconds = 45;
    spec.locator.redis = Some(RedisLocatorSpec {
        url: "redis://shared:6379".into(),
        key_prefix: Some("games:arena".into()),
        ..Default::default()
    });
    let children = build(spec);
    let gate = container(&children.gate_deployment);
    assert_eq!(gate.args.as_deref(), Some(&["gate".to_owned()][..]));
    assert_eq!(
        env_value(gate, "SWITCHYARD_TCP").as_deref(),
        Some("$(SWITCHYARD_POD_IP):3553")
    );
    assert_eq!(env_value(gate, "SWITCHYARD_WS").as_deref(), Some(""));
    assert_eq!(env_value(gate, "SWITCHYARD_WS_PATH").as_deref(), Some("/"));
    assert_eq!(
        env_value(gate, "SWITCHYARD_HEARTBEAT_INTERVAL").as_deref(),
        Some("10s")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_HEARTBEAT_MODE").as_deref(),
        Some("resp")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_MAX_CONNECTIONS").as_deref(),
        Some("100000")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_GATE_DRAIN_DEADLINE").as_deref(),
        Some("45s")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_REGISTRY").as_deref(),
        Some("kubernetes")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_NODE_SERVICE").as_deref(),
        Some("arena-node")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_LINK_PORT_NAME").as_deref(),
        Some("link")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_LOCATOR").as_deref(),
        Some("redis://shared:6379")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_LOCATOR_PREFIX").as_deref(),
        Some("games:arena")
    );
    assert!(children.redis.is_none(), "a Redis URL means no managed Redis");
    let service_ports: Vec<&str> = children
        .gate_service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .expect("ports")
        .iter()
        .filter_map(|p| p.name.as_deref())
        .collect();
    assert_eq!(service_ports, ["tcp"]);
}

#[test]
fn services_and_rbac() {
    let children = build(GameClusterSpec::default());
    let node = children.pools[0].service.spec.as_ref().expect("spec");
    assert_eq!(node.cluster_ip.as_deref(), Some("None"));
    let link = &node.ports.as_ref().expect("ports")[0];
    assert_eq!((link.name.as_deref(), link.port), (Some("link"), 7400));
    let headless = children.gate_headless_service.spec.as_ref().expect("spec");
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    let client = children.gate_service.spec.as_ref().expect("spec");
    assert_eq!(client.type_.as_deref(), Some("ClusterIP"));
    let ports: Vec<(&str, i32)> = client
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().unwrap_or(""), p.port))
        .collect();
    assert_eq!(ports, [("tcp", 3553), ("ws", 3554)]);

    let gate_rule = &children.gate_role.rules.as_ref().expect("rules")[0];
    assert_eq!(
        gate_rule.api_groups.as_deref(),
        Some(&["discovery.k8s.io".to_owned()][..])
    );
    assert_eq!(
        gate_rule.resources.as_deref(),
        Some(&["endpointslices".to_owned()][..])
    );
    assert_eq!(gate_rule.verbs, ["get", "list", "watch"]);
    // Nodes have no API right (a compromised node cannot modify other pods) and no token mounted.
    assert_eq!(children.node_role.rules.as_deref(), Some(&[][..]));
    let node_pod = children.pools[0]
        .deployment
        .spec
        .template
        .spec
        .as_ref()
        .expect("node pod spec");
    assert_eq!(node_pod.automount_service_account_token, Some(false));
    let subject = &children.node_role_binding.subjects.as_ref().expect("subjects")[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "arena-node")
    );
    assert_eq!(children.node_role_binding.role_ref.name, "arena-node");
}

#[test]
fn containers_are_locked_down() {
    let children = build(GameClusterSpec::default());
    for deployment in [&children.gate_deployment, &children.pools[0].deployment] {
        let security = container(deployment)
            .security_context
            .as_ref()
            .expect("securityContext");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.run_as_user, Some(65532));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let pod_security = pod(deployment)
            .security_context
            .as_ref()
            .expect("pod securityContext");
        assert_eq!(pod_security.run_as_non_root, Some(true));
    }
}

#[test]
fn config_map_carries_packet_settings_and_rolls_pods() {
    let first = build(GameClusterSpec::default());
    let data = first.config_map.data.clone().expect("data");
    assert_eq!(data["SWITCHYARD_BYTE_ORDER"], "big");
    assert_eq!(data["SWITCHYARD_ROUTE_BYTES"], "2");
    assert_eq!(data["SWITCHYARD_SEQ_BYTES"], "2");
    assert_eq!(data["SWITCHYARD_MAX_PACKET_BYTES"], "65536");
    let hash = |children: &Children| {
        children.pools[0]
            .deployment
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
            .expect("config hash")
    };
    let mut spec = GameClusterSpec::default();
    spec.packet.seq_bytes = 4;
    let second = build(spec);
    assert_ne!(hash(&first), hash(&second), "a packet change must roll the pods");
    assert_eq!(
        hash(&first),
        hash(&build(GameClusterSpec::default())),
        "stable across calls"
    );
}

#[test]
fn images_and_commands() {
    let mut spec = GameClusterSpec::default();
    spec.image = Some("registry.example/switchyard:1".into());
    spec.node_mut().image = Some("registry.example/my-game:7".into());
    spec.node_mut().command = Some(vec!["/my-game".into()]);
    let children = build(spec);
    assert_eq!(
        container(&children.gate_deployment).image.as_deref(),
        Some("registry.example/switchyard:1")
    );
    let node = container(&children.pools[0].deployment);
    assert_eq!(node.image.as_deref(), Some("registry.example/my-game:7"));
    assert_eq!(node.command.as_deref(), Some(&["/my-game".to_owned()][..]));
    assert_eq!(node.args, None, "a custom command gets no demo `node` argument");
    let defaulted = build(GameClusterSpec::default());
    assert_eq!(
        container(&defaulted.pools[0].deployment).image,
        Some(Defaults::default().image)
    );
}

#[test]
fn metrics_annotations_and_user_annotations() {
    let mut spec = GameClusterSpec::default();
    spec.node_mut()
        .pod_annotations
        .insert("team".into(), "blue".into());
    let children = build(spec);
    let annotations = children.pools[0]
        .deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .expect("annotations");
    assert_eq!(annotations["team"], "blue");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9090");
    let mut quiet = GameClusterSpec::default();
    quiet.metrics.scrape_annotations = false;
    let annotations = build(quiet)
        .pools
        .remove(0)
        .deployment
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .expect("annotations");
    assert!(!annotations.contains_key("prometheus.io/scrape"));
}

#[test]
fn tracing_sets_otel_variables() {
    let mut spec = GameClusterSpec::default();
    spec.tracing.otlp_endpoint = Some("http://collector:4317".into());
    spec.tracing.sampling_ratio = 0.5;
    let children = build(spec);
    let node = container(&children.pools[0].deployment);
    assert_eq!(
        env_value(node, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://collector:4317")
    );
    assert_eq!(env_value(node, "OTEL_TRACES_SAMPLER_ARG").as_deref(), Some("0.5"));
    assert_eq!(
        env_value(node, "OTEL_SERVICE_NAME").as_deref(),
        Some("switchyard-node")
    );
    let plain = build(GameClusterSpec::default());
    assert_eq!(
        env_value(
            container(&plain.pools[0].deployment),
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
        None
    );
}

fn invalid(mutate: impl FnOnce(&mut GameClusterSpec)) -> SpecError {
    let mut spec = GameClusterSpec::default();
    mutate(&mut spec);
    children(&cluster(spec), &Defaults::default()).expect_err("an invalid spec")
}

#[test]
fn specs_that_cannot_work_are_refused_with_a_reason() {
    let message = |error: SpecError| error.to_string();
    assert!(
        message(invalid(|s| {
            s.gate.tcp.enabled = false;
            s.gate.websocket.enabled = false;
        }))
        .contains("at least one of gate.tcp and gate.websocket")
    );
    assert!(message(invalid(|s| s.gate.websocket.port = 3553)).contains("must differ"));
    assert!(message(invalid(|s| s.gate.tcp.port = 9090)).contains("admin port"));
    assert!(message(invalid(|s| s.packet.seq_bytes = 3)).contains("packet.seqBytes"));
    assert!(message(invalid(|s| s.packet.route_bytes = 0)).contains("packet.routeBytes"));
    assert!(message(invalid(|s| s.packet.max_packet_bytes = 8)).contains("maxPacketBytes"));
    assert!(
        message(invalid(|s| s.node_mut().drain_deadline_seconds = 0)).contains("node.drainDeadlineSeconds")
    );
    assert!(message(invalid(|s| s.gate.replicas = -1)).contains("gate.replicas"));
    assert!(message(invalid(|s| s.gate.heartbeat.interval = "soon".into())).contains("heartbeat"));
    assert!(message(invalid(|s| s.gate.websocket.path = "ws".into())).contains("path"));
    let reserved = invalid(|s| {
        s.node_mut().env.push(EnvVar {
            name: "SWITCHYARD_LINK".into(),
            value: Some("0.0.0.0:1".into()),
            value_from: None,
        })
    });
    assert_eq!(reserved.reason(), "ReservedEnv");
    assert!(message(reserved).contains("SWITCHYARD_LINK"));
    let drain = invalid(|s| {
        s.node_mut()
            .pod_annotations
            .insert("switchyard.dev/drain".into(), "true".into());
    });
    assert_eq!(drain.reason(), "ReservedAnnotation");
}

#[test]
fn names_and_metadata_are_checked() {
    let mut long = cluster(GameClusterSpec::default());
    long.metadata.name = Some("a".repeat(48));
    assert!(matches!(
        children(&long, &Defaults::default()),
        Err(SpecError::Invalid(_))
    ));
    let mut no_uid = cluster(GameClusterSpec::default());
    no_uid.metadata.uid = None;
    assert_eq!(
        children(&no_uid, &Defaults::default()).err(),
        Some(SpecError::Metadata("uid"))
    );
    for good in ["10s", "500ms", "0", "1.5m", "2h", "7"] {
        assert!(contract::is_duration(good), "{good}");
    }
    for bad in ["", "s", "1.", ".5s", "1d", "1 s", "1.2.3s"] {
        assert!(!contract::is_duration(bad), "{bad}");
    }
}

#[test]
fn user_env_follows_the_operators() {
    let mut spec = GameClusterSpec::default();
    spec.node_mut().env.push(EnvVar {
        name: "GAME_MODE".into(),
        value: Some("ranked".into()),
        value_from: None,
    });
    let children = build(spec);
    let node = container(&children.pools[0].deployment);
    let names: Vec<&str> = node.env.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(names.last(), Some(&"GAME_MODE"));
}

fn sorted(names: impl Iterator<Item = &'static str>) -> Vec<String> {
    let mut names: Vec<String> = names.map(str::to_owned).collect();
    names.sort();
    names
}

/// An external Redis with every credential and a CA: every optional `SWITCHYARD_LOCATOR_*` name.
fn locked_external_redis() -> RedisLocatorSpec {
    RedisLocatorSpec {
        url: "rediss://redis.shared:6380".into(),
        key_prefix: Some("games:arena".into()),
        password_secret_ref: Some(SecretKeyRef {
            name: "redis-creds".into(),
            key: "password".into(),
        }),
        username_secret_ref: Some(SecretKeyRef {
            name: "redis-creds".into(),
            key: "user".into(),
        }),
        ca: Some(CaBundleRef {
            secret_name: None,
            config_map_name: Some("redis-ca".into()),
            key: "ca.pem".into(),
        }),
    }
}

fn env_secret(container: &Container, name: &str) -> Option<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value_from.as_ref())
        .and_then(|source| source.secret_key_ref.as_ref())
        .map(|selector| (selector.name.clone(), selector.key.clone()))
}

#[test]
fn pods_get_exactly_the_names_of_the_contract() {
    let mut spec = GameClusterSpec::default();
    spec.tracing.otlp_endpoint = Some("http://collector:4317".into());
    spec.locator.redis = Some(locked_external_redis());
    spec.gate.tls = Some(GateTlsSpec {
        secret_name: "arena-tls".into(),
    });
    let built = build(spec);
    assert_eq!(
        built
            .pod_env_names(&built.gate_deployment)
            .into_iter()
            .collect::<Vec<_>>(),
        sorted(contract::gate_env())
    );
    assert_eq!(
        built
            .pod_env_names(&built.pools[0].deployment)
            .into_iter()
            .collect::<Vec<_>>(),
        sorted(contract::node_env())
    );
    // Every name the operator owns on nodes is refused in spec.node_mut().env.
    for name in contract::node_env().filter(|name| name.starts_with("SWITCHYARD_")) {
        let mut spec = GameClusterSpec::default();
        spec.node_mut().env = vec![EnvVar {
            name: name.to_owned(),
            value: Some("x".into()),
            ..Default::default()
        }];
        assert!(
            matches!(
                children(&cluster(spec), &Defaults::default()),
                Err(SpecError::ReservedEnv { .. })
            ),
            "{name}"
        );
    }
}

#[test]
fn containers_get_default_requests_unless_the_spec_sets_resources() {
    let requests = |container: &Container| -> Option<(String, String)> {
        let requests = container.resources.as_ref()?.requests.as_ref()?;
        Some((requests.get("cpu")?.0.clone(), requests.get("memory")?.0.clone()))
    };
    let children = build(GameClusterSpec::default());
    assert_eq!(
        requests(container(&children.gate_deployment)),
        Some(("100m".to_owned(), "128Mi".to_owned()))
    );
    assert_eq!(
        requests(container(&children.pools[0].deployment)),
        Some(("100m".to_owned(), "128Mi".to_owned()))
    );
    let redis = &children.redis.as_ref().expect("managed Redis").deployment;
    assert_eq!(
        requests(container(redis)),
        Some(("50m".to_owned(), "64Mi".to_owned()))
    );
    for deployment in [&children.gate_deployment, &children.pools[0].deployment, redis] {
        assert_eq!(
            container(deployment)
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref()),
            None,
            "no default limit"
        );
    }
    // A spec's resources replace the defaults whole; `{}` is an explicit "none".
    let mut spec = GameClusterSpec::default();
    spec.gate.resources = Some(
        serde_json::from_value(serde_json::json!({"requests": {"cpu": "2"}, "limits": {"memory": "1Gi"}}))
            .expect("resources"),
    );
    spec.node = Some(crate::crd::NodeSpec {
        resources: Some(Default::default()),
        ..Default::default()
    });
    let children = build(spec);
    let gate = container(&children.gate_deployment)
        .resources
        .clone()
        .expect("resources");
    assert_eq!(
        gate.requests.expect("requests").get("cpu").map(|q| q.0.as_str()),
        Some("2")
    );
    assert_eq!(
        gate.limits.expect("limits").get("memory").map(|q| q.0.as_str()),
        Some("1Gi")
    );
    assert_eq!(
        container(&children.pools[0].deployment).resources,
        Some(Default::default())
    );
}
