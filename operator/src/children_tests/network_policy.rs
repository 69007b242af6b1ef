//! The NetworkPolicies of a cluster: on by default, who may reach each port (players, gates, the
//! operator, `adminFrom`).

use super::*;

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
