//! The NetworkPolicies of a cluster (on by default): gates' client ports open to all, the nodes' link port
//! from this cluster's gates only, Redis from its gates and nodes only, admin ports from
//! `spec.networkPolicy.adminFrom`.

use super::*;

impl Ctx<'_> {
    /// The admin-port rule: from `spec.networkPolicy.adminFrom` (plus `extra`), or from anywhere when it is
    /// empty.
    fn admin_rule(&self, extra: Option<NetworkPolicyPeer>) -> NetworkPolicyIngressRule {
        let peers = &self.spec.network_policy.admin_from;
        let from = (!peers.is_empty()).then(|| peers.iter().cloned().chain(extra).collect());
        NetworkPolicyIngressRule {
            from,
            ports: Some(vec![tcp_policy_port(ADMIN_PORT)]),
        }
    }

    /// The operator's pods, which read every node's `/load` on its admin port.
    fn operator_peer(&self) -> NetworkPolicyPeer {
        let namespace = match &self.defaults.operator_namespace {
            Some(namespace) => {
                BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), namespace.clone())])
            }
            None => BTreeMap::new(),
        };
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: non_empty(&namespace),
                match_expressions: None,
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
                    (LABEL_COMPONENT.to_owned(), OPERATOR_COMPONENT.to_owned()),
                ])),
                match_expressions: None,
            }),
            ip_block: None,
        }
    }

    fn policy(
        &self,
        component: Component,
        name: String,
        ingress: Vec<NetworkPolicyIngressRule>,
    ) -> NetworkPolicy {
        NetworkPolicy {
            metadata: self.meta(name, component),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(self.selector(component)),
                policy_types: Some(vec!["Ingress".to_owned()]),
                ingress: Some(ingress),
                ..Default::default()
            }),
        }
    }

    /// Gates: the client ports from anywhere, the admin port per `adminFrom`.
    pub(super) fn gate_network_policy(&self) -> NetworkPolicy {
        let clients = NetworkPolicyIngressRule {
            from: None,
            ports: Some(
                self.gate_ports()
                    .iter()
                    .map(|port| tcp_policy_port(port.port))
                    .collect(),
            ),
        };
        self.policy(
            Component::Gate,
            self.component_name(Component::Gate),
            vec![clients, self.admin_rule(None)],
        )
    }

    /// Nodes: the link port from this cluster's gates only, the admin port per `adminFrom` and the operator.
    pub(super) fn node_network_policy(&self) -> NetworkPolicy {
        let links = NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(self.selector(Component::Gate)),
                ..Default::default()
            }]),
            ports: Some(vec![tcp_policy_port(LINK_PORT)]),
        };
        self.policy(
            Component::Node,
            self.component_name(Component::Node),
            vec![links, self.admin_rule(Some(self.operator_peer()))],
        )
    }

    /// The managed Redis: from this cluster's gates and nodes only.
    pub(super) fn redis_network_policy(&self) -> NetworkPolicy {
        let peer = |component| NetworkPolicyPeer {
            pod_selector: Some(self.selector(component)),
            ..Default::default()
        };
        let clients = NetworkPolicyIngressRule {
            from: Some(vec![peer(Component::Gate), peer(Component::Node)]),
            ports: Some(vec![tcp_policy_port(REDIS_PORT)]),
        };
        self.policy(Component::Redis, child_name(self.name, "redis"), vec![clients])
    }
}

fn tcp_policy_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        end_port: None,
    }
}
