//! Golden-ish checks of the translation: the fields the pod contract and the drain design depend on.

#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::crd::{
    CaBundleRef, GameClusterSpec, GateTlsSpec, RateLimitSpec, RedisLocatorSpec, SecretKeyRef, ServiceType,
    TrafficPolicy,
};
use k8s_openapi::api::core::v1::Container;

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

/// (ports, peers) of each ingress rule; a peer is `(namespace labels, pod labels)`, `None` for "anyone".
type Rule = (Vec<i32>, Option<Vec<(Option<Labels>, Option<Labels>)>>);
type Labels = BTreeMap<String, String>;

fn rules(policy: &NetworkPolicy) -> Vec<Rule> {
    let spec = policy.spec.as_ref().expect("spec");
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
    spec.ingress
        .iter()
        .flatten()
        .map(|rule| {
            let ports = rule
                .ports
                .iter()
                .flatten()
                .map(|port| match port.port {
                    Some(IntOrString::Int(number)) => number,
                    ref other => panic!("port {other:?}"),
                })
                .collect();
            let peers = rule.from.as_ref().map(|peers| {
                peers
                    .iter()
                    .map(|peer| {
                        let labels = |selector: &Option<LabelSelector>| {
                            selector
                                .as_ref()
                                .map(|s| s.match_labels.clone().unwrap_or_default())
                        };
                        (labels(&peer.namespace_selector), labels(&peer.pod_selector))
                    })
                    .collect()
            });
            (ports, peers)
        })
        .collect()
}

fn component_labels(component: &str) -> Labels {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), "switchyard".to_owned()),
        (LABEL_INSTANCE.to_owned(), "arena".to_owned()),
        (LABEL_COMPONENT.to_owned(), component.to_owned()),
    ])
}

#[test]
fn network_policies_are_on_by_default() {
    let children = build(GameClusterSpec::default());
    let names: Vec<_> = children
        .network_policies
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["arena-gate", "arena-node", "arena-redis"]);
    let [gate, node, redis] = &children.network_policies[..] else {
        panic!("three policies")
    };
    let selects = |policy: &NetworkPolicy| {
        policy
            .spec
            .as_ref()
            .and_then(|s| s.pod_selector.as_ref())
            .and_then(|s| s.match_labels.clone())
    };
    assert_eq!(selects(gate), Some(component_labels("gate")));
    assert_eq!(selects(node), Some(component_labels("node")));
    assert_eq!(selects(redis), Some(component_labels("redis")));
    // Gates: client ports from anyone, admin from anyone (no adminFrom).
    assert_eq!(rules(gate), [(vec![3553, 3554], None), (vec![9090], None)]);
    // Nodes: the link port from this cluster's gates only.
    assert_eq!(
        rules(node),
        [
            (vec![7400], Some(vec![(None, Some(component_labels("gate")))])),
            (vec![9090], None),
        ]
    );
    // Redis: from this cluster's gates and nodes only.
    assert_eq!(
        rules(redis),
        [(
            vec![6379],
            Some(vec![
                (None, Some(component_labels("gate"))),
                (None, Some(component_labels("node"))),
            ])
        )]
    );
    // An external Redis: no Redis policy; disabled: none at all.
    let mut external = GameClusterSpec::default();
    external.locator.redis =
        Some(serde_json::from_value(serde_json::json!({"url": "redis://r:6379"})).expect("redis"));
    assert_eq!(build(external).network_policies.len(), 2);
    let mut off = GameClusterSpec::default();
    off.network_policy.enabled = false;
    assert!(build(off).network_policies.is_empty());
}

#[test]
fn admin_ports_follow_admin_from_and_the_operator_reaches_nodes() {
    let monitoring: NetworkPolicyPeer = serde_json::from_value(serde_json::json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }))
    .expect("peer");
    let mut spec = GameClusterSpec::default();
    spec.network_policy.admin_from = vec![monitoring];
    let monitoring_peer = (
        Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            "monitoring".to_owned(),
        )])),
        None,
    );
    let operator_pods = BTreeMap::from([
        (LABEL_NAME.to_owned(), "switchyard".to_owned()),
        (LABEL_COMPONENT.to_owned(), "operator".to_owned()),
    ]);
    let children = build(spec.clone());
    assert_eq!(
        rules(&children.network_policies[0])[1],
        (vec![9090], Some(vec![monitoring_peer.clone()]))
    );
    // The operator's namespace unknown: its pods in any namespace (`namespaceSelector: {}`).
    assert_eq!(
        rules(&children.network_policies[1])[1],
        (
            vec![9090],
            Some(vec![
                monitoring_peer.clone(),
                (Some(BTreeMap::new()), Some(operator_pods.clone()))
            ])
        )
    );
    let defaults = Defaults {
        operator_namespace: Some("switchyard-system".to_owned()),
        ..Defaults::default()
    };
    let children = super::children(&cluster(spec), &defaults).expect("a valid spec");
    assert_eq!(
        rules(&children.network_policies[1])[1],
        (
            vec![9090],
            Some(vec![
                monitoring_peer,
                (
                    Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_owned(),
                        "switchyard-system".to_owned()
                    )])),
                    Some(operator_pods)
                )
            ])
        )
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
fn the_managed_redis_is_locked_by_a_generated_password() {
    let built = build(GameClusterSpec::default());
    let redis = built.redis.as_ref().expect("a managed Redis");
    assert_eq!(redis.auth_secret.name.as_deref(), Some("arena-redis-auth"));
    assert_eq!(
        redis
            .auth_secret
            .owner_references
            .as_ref()
            .map(|owners| owners[0].uid.as_str()),
        Some("uid-1"),
        "the GameCluster owns the Secret"
    );
    let server = container(&redis.deployment);
    let args = server.args.clone().unwrap_or_default();
    assert_eq!(args[0], "/etc/switchyard-redis/redis.conf", "{args:?}");
    let protected = args.windows(2).any(|pair| pair == ["--protected-mode", "yes"]);
    assert!(protected, "{args:?}");
    let conf = pod(&redis.deployment)
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "config")
        .and_then(|volume| volume.secret.as_ref())
        .expect("the configuration comes from the Secret");
    assert_eq!(conf.secret_name.as_deref(), Some("arena-redis-auth"));
    assert_eq!(conf.default_mode, Some(0o440));
    for deployment in [&built.gate_deployment, &built.pools[0].deployment] {
        let process = container(deployment);
        assert_eq!(
            env_secret(process, "SWITCHYARD_LOCATOR_PASSWORD"),
            Some(("arena-redis-auth".to_owned(), "password".to_owned()))
        );
        assert_eq!(env_secret(process, "SWITCHYARD_LOCATOR_USERNAME"), None);
        assert_eq!(env_value(process, "SWITCHYARD_LOCATOR_CA"), None);
    }

    let password = crate::locator::generate_password();
    assert_eq!(password.len(), 48);
    assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_ne!(password, crate::locator::generate_password());
    let secret = crate::locator::auth_secret(redis.auth_secret.clone(), &password);
    let data = secret.data.expect("data");
    assert_eq!(data["password"].0, password.as_bytes());
    let conf = String::from_utf8(data["redis.conf"].0.clone()).expect("UTF-8");
    assert!(conf.contains(&format!("requirepass {password}\n")), "{conf}");
    assert!(conf.contains("protected-mode yes"), "{conf}");
    assert_eq!(secret.immutable, Some(true));
}

#[test]
fn an_external_redis_gets_its_credentials_and_ca_from_the_spec_references() {
    let mut spec = GameClusterSpec::default();
    spec.locator.redis = Some(locked_external_redis());
    let built = build(spec);
    assert!(built.redis.is_none());
    for deployment in [&built.gate_deployment, &built.pools[0].deployment] {
        let process = container(deployment);
        assert_eq!(
            env_secret(process, "SWITCHYARD_LOCATOR_PASSWORD"),
            Some(("redis-creds".to_owned(), "password".to_owned()))
        );
        assert_eq!(
            env_secret(process, "SWITCHYARD_LOCATOR_USERNAME"),
            Some(("redis-creds".to_owned(), "user".to_owned()))
        );
        assert_eq!(
            env_value(process, "SWITCHYARD_LOCATOR_CA").as_deref(),
            Some("/etc/switchyard/locator-ca/ca.crt")
        );
        let mounted = process
            .volume_mounts
            .iter()
            .flatten()
            .any(|mount| mount.name == "locator-ca" && mount.mount_path == "/etc/switchyard/locator-ca");
        assert!(mounted, "{:?}", process.volume_mounts);
        let volume = pod(deployment)
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == "locator-ca")
            .and_then(|volume| volume.config_map.as_ref())
            .expect("the CA volume");
        assert_eq!(volume.name, "redis-ca");
        let item = &volume.items.as_ref().expect("items")[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("ca.pem", "ca.crt"));
    }
}

#[test]
fn locator_specs_the_binary_cannot_use_are_refused() {
    let refused = |redis: RedisLocatorSpec| {
        let mut spec = GameClusterSpec::default();
        spec.locator.redis = Some(redis);
        match children(&cluster(spec), &Defaults::default()) {
            Err(SpecError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let with_url = |url: &str| RedisLocatorSpec {
        url: url.into(),
        ..Default::default()
    };
    assert!(refused(with_url("redis://:hunter2@redis:6379")).contains("must not carry a password"));
    assert!(refused(with_url("redis://u:hunter2@redis:6379")).contains("passwordSecretRef"));
    assert!(refused(with_url("http://redis:6379")).contains("must start with"));
    for prefix in ["has space", "{tag}", &"p".repeat(65), ""] {
        let message = refused(RedisLocatorSpec {
            key_prefix: Some(prefix.to_owned()),
            ..with_url("redis://redis:6379")
        });
        assert!(message.contains("keyPrefix"), "{prefix:?}: {message}");
    }
    let mut no_tls = locked_external_redis();
    no_tls.url = "redis://redis:6379".into();
    assert!(refused(no_tls).contains("needs a rediss:// URL"));
    let mut both = locked_external_redis();
    if let Some(ca) = both.ca.as_mut() {
        ca.secret_name = Some("also".into());
    }
    assert!(refused(both).contains("exactly one"));
}

#[test]
fn the_gate_exposure_comes_from_the_spec() {
    let mut spec = GameClusterSpec::default();
    spec.gate.max_connections_per_ip = 20;
    spec.gate.rate_limit = RateLimitSpec {
        per_second: 50,
        burst: 100,
    };
    spec.gate.login_deadline = "15s".into();
    spec.gate.heartbeat.server_time = true;
    spec.gate.proxy_protocol = true;
    spec.gate.tls = Some(GateTlsSpec {
        secret_name: "arena-tls".into(),
    });
    spec.gate.service.type_ = ServiceType::LoadBalancer;
    spec.gate.service.external_traffic_policy = Some(TrafficPolicy::Local);
    spec.gate.service.annotations = BTreeMap::from([("lb.example/internal".to_owned(), "true".to_owned())]);
    let built = build(spec);
    let gate = container(&built.gate_deployment);
    for (name, value) in [
        ("SWITCHYARD_MAX_CONNECTIONS_PER_IP", "20"),
        ("SWITCHYARD_RATE_LIMIT", "50"),
        ("SWITCHYARD_RATE_BURST", "100"),
        ("SWITCHYARD_AUTHORIZE_TIMEOUT", "15s"),
        ("SWITCHYARD_HEARTBEAT_TIME", "true"),
        ("SWITCHYARD_PROXY_PROTOCOL", "true"),
        ("SWITCHYARD_TLS_CERT", "/etc/switchyard/gate-tls/tls.crt"),
        ("SWITCHYARD_TLS_KEY", "/etc/switchyard/gate-tls/tls.key"),
    ] {
        assert_eq!(env_value(gate, name).as_deref(), Some(value), "{name}");
    }
    let tls = pod(&built.gate_deployment)
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "tls")
        .and_then(|volume| volume.secret.as_ref())
        .expect("the TLS Secret volume");
    assert_eq!(tls.secret_name.as_deref(), Some("arena-tls"));
    let mount = gate
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == "tls")
        .expect("the TLS mount");
    assert_eq!(mount.mount_path, "/etc/switchyard/gate-tls");
    assert_eq!(
        mount.sub_path, None,
        "a subPath mount would never see a renewed Secret"
    );
    let service = built.gate_service.spec.as_ref().expect("service spec");
    assert_eq!(service.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(service.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        built
            .gate_service
            .metadata
            .annotations
            .as_ref()
            .map(|a| a["lb.example/internal"].as_str()),
        Some("true")
    );

    // Defaults: everything off, no TLS files.
    let defaults = build(GameClusterSpec::default());
    let gate = container(&defaults.gate_deployment);
    assert_eq!(
        env_value(gate, "SWITCHYARD_MAX_CONNECTIONS_PER_IP").as_deref(),
        Some("0")
    );
    assert_eq!(env_value(gate, "SWITCHYARD_RATE_LIMIT").as_deref(), Some("0"));
    assert_eq!(
        env_value(gate, "SWITCHYARD_AUTHORIZE_TIMEOUT").as_deref(),
        Some("0")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_HEARTBEAT_TIME").as_deref(),
        Some("false")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_PROXY_PROTOCOL").as_deref(),
        Some("false")
    );
    assert_eq!(env_value(gate, "SWITCHYARD_TLS_CERT"), None);
    let service = defaults.gate_service.spec.as_ref().expect("service spec");
    assert_eq!(service.external_traffic_policy, None);
}

#[test]
fn gate_exposure_the_binary_cannot_use_is_refused() {
    let refused = |edit: &dyn Fn(&mut GameClusterSpec)| {
        let mut spec = GameClusterSpec::default();
        edit(&mut spec);
        match children(&cluster(spec), &Defaults::default()) {
            Err(SpecError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    assert!(refused(&|spec| spec.gate.rate_limit.burst = 5).contains("needs gate.rateLimit.perSecond"));
    assert!(refused(&|spec| spec.gate.rate_limit.per_second = -1).contains("0 or more"));
    assert!(refused(&|spec| spec.gate.max_connections_per_ip = -1).contains("maxConnectionsPerIp"));
    assert!(refused(&|spec| spec.gate.login_deadline = "soon".into()).contains("loginDeadline"));
    assert!(
        refused(&|spec| spec.gate.service.external_traffic_policy = Some(TrafficPolicy::Local))
            .contains("externalTrafficPolicy needs type NodePort or LoadBalancer")
    );
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
