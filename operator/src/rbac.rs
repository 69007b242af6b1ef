//! What the operator itself may do: the rules of its ClusterRole (or Role, for a one-namespace install).
//! The chart renders these; the API-server tests run the operator as a user bound to exactly them.
//!
//! The operator must hold every permission it grants in the Roles it creates (Kubernetes refuses privilege
//! escalation), hence EndpointSlices `get/list/watch` (the gates' Role). Nodes get no right at all.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const MANAGE: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|&r| r.to_owned()).collect()),
        verbs: verbs.iter().map(|&v| v.to_owned()).collect(),
        ..Default::default()
    }
}

/// The rules the operator needs.
pub fn operator_rules() -> Vec<PolicyRule> {
    vec![
        rule(crate::crd::GROUP, &["gameclusters"], &["get", "list", "watch"]),
        rule(
            crate::crd::GROUP,
            &["gameclusters/status"],
            &["get", "update", "patch"],
        ),
        // Owner references with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
        rule(crate::crd::GROUP, &["gameclusters/finalizers"], &["update"]),
        // One GamePool per pool of spec.pools: created and pruned by the operator, scaled by users and HPAs.
        rule(
            crate::crd::GROUP,
            &["gamepools"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            crate::crd::GROUP,
            &["gamepools/status"],
            &["get", "update", "patch"],
        ),
        rule("apps", &["deployments"], &MANAGE),
        // Which ReplicaSet is a node Deployment's current one (rollouts drain the pods of the others).
        rule("apps", &["replicasets"], &["list"]),
        rule("", &["services", "configmaps", "serviceaccounts"], &MANAGE),
        // The managed Redis's password Secret (made once), and the link CA and certificates, which renewal
        // reads and replaces. RBAC cannot narrow this to those Secrets (their names vary per GameCluster):
        // the namespace-scoped install limits it to one namespace (docs/security.md). No delete: the
        // garbage collector removes them with their GameCluster.
        rule(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "update", "patch"],
        ),
        rule("rbac.authorization.k8s.io", &["roles", "rolebindings"], &MANAGE),
        rule("policy", &["poddisruptionbudgets"], &MANAGE),
        rule("networking.k8s.io", &["networkpolicies"], &MANAGE),
        // Status from node pods; their load annotations (bound players, pod-deletion-cost, routes), written
        // from each node's /load; rollouts: drain (annotate) old node pods, delete the ones a rollback made
        // current again.
        rule("", &["pods"], &["get", "list", "watch", "patch", "delete"]),
        // Granted to the gates' Role.
        rule("discovery.k8s.io", &["endpointslices"], &["get", "list", "watch"]),
        rule("coordination.k8s.io", &["leases"], &["get", "create", "update"]),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// A ClusterRole named `name` with [`operator_rules`].
pub fn cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        rules: Some(operator_rules()),
        aggregation_rule: None,
    }
}
