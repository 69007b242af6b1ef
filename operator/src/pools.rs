//! Node pools: `spec.pools` of a `GameCluster` (or its single-pool form `spec.node`, the pool
//! [`contract::DEFAULT_POOL`]), and the `GamePool` custom resource, one per pool of `spec.pools`, that
//! carries the pool's replica count behind a `/scale` subresource.
//!
//! Why a child resource per pool: `kubectl scale` and an HPA need one object with one `/scale` per pool, and
//! a CRD can have only one scale subresource. The operator creates `GamePool` `NAME-POOL` (owned by the
//! GameCluster) with `spec.replicas` from `spec.pools[i].replicas`; from then on the pool's Deployment
//! follows the `GamePool`, which `kubectl scale gamepool/NAME-POOL` and HPAs write. The operator writes
//! `GamePool.spec.replicas` again only when `spec.pools[i].replicas` itself changes (it remembers the value
//! it last copied in the annotation [`SPEC_REPLICAS_ANNOTATION`]): an edit of the GameCluster is a deliberate
//! scale too, and the last writer wins. The single-pool form has no `GamePool`: `kubectl scale gc/NAME`
//! writes `spec.node.replicas` as before.

use std::borrow::Cow;

use kube::CustomResource;
#[cfg(test)]
use kube::ResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use switchyard_cluster::contract;

use crate::crd::{GameClusterSpec, NodeSpec};

/// Most pools of one cluster.
pub const MAX_POOLS: usize = 16;
/// Longest pool name: `NAME-node-POOL` must stay a 63-character DNS label for the longest cluster name, and
/// the pool name is a label value and a Service-name part.
pub const MAX_POOL_NAME_LENGTH: usize = 15;
/// Longest cluster name plus pool name: `NAME-node-POOL` (6 more characters) is at most 63.
pub const MAX_CLUSTER_AND_POOL_LENGTH: usize = 57;
/// On a `GamePool`: the `spec.pools[i].replicas` the operator last copied into its `spec.replicas`.
pub const SPEC_REPLICAS_ANNOTATION: &str = "switchyard.dev/spec-replicas";
/// The CEL pattern of a pool name (a DNS label that starts with a letter).
const POOL_NAME_CEL_RULE: &str = "self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";

/// How gates pick a node of the pool for a stateless packet or a new binding (the gate's policies).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RoutingPolicy {
    /// Each node in turn.
    #[default]
    RoundRobin,
    /// A node at random.
    Random,
    /// The node with the fewest players bound through the gate.
    LeastBound,
}

impl RoutingPolicy {
    /// The gate's spelling (its `--routing` values and [`contract::env::POOL_ROUTING`]).
    pub fn as_gate_str(self) -> &'static str {
        match self {
            RoutingPolicy::RoundRobin => "round-robin",
            RoutingPolicy::Random => "random",
            RoutingPolicy::LeastBound => "least-bound",
        }
    }
}

/// One named node pool: its own pod template, replicas, drain deadline and routing policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// The pool's name, e.g. `lobby` or `battle`: a DNS label of at most 15 characters, unique in the
    /// cluster. Nodes announce it to gates (`SWITCHYARD_POOL`).
    #[schemars(length(min = 1, max = 15))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": POOL_NAME_CEL_RULE,
        "message": "pools[].name must be a DNS label that starts with a letter (at most 15 characters)"
    }]))]
    pub name: String,
    /// `roundRobin` (default), `random` or `leastBound`: how gates pick a node of this pool.
    #[serde(default)]
    pub routing: RoutingPolicy,
    /// The pod template parts, replicas and drain deadline, as `spec.node` has them. `replicas` is the
    /// initial size: afterwards the `GamePool` `NAME-POOL` holds it (`kubectl scale gamepool/NAME-POOL`).
    #[serde(flatten)]
    pub node: NodeSpec,
}

/// A pool as the operator renders it: from `spec.pools`, or the single-pool form.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool<'a> {
    pub name: Cow<'a, str>,
    pub routing: RoutingPolicy,
    pub node: Cow<'a, NodeSpec>,
    /// The single-pool form (`spec.node`): its objects keep the names and selectors they had before pools
    /// existed (`NAME-node`), and it has no `GamePool`.
    pub single: bool,
}

/// The pools of a spec, in spec order: `spec.pools`, or the one pool `game` of `spec.node` (its defaults
/// when absent).
pub fn pools(spec: &GameClusterSpec) -> Vec<Pool<'_>> {
    if spec.pools.is_empty() {
        let node = match &spec.node {
            Some(node) => Cow::Borrowed(node),
            None => Cow::Owned(NodeSpec::default()),
        };
        return vec![Pool {
            name: Cow::Borrowed(contract::DEFAULT_POOL),
            routing: RoutingPolicy::RoundRobin,
            node,
            single: true,
        }];
    }
    spec.pools
        .iter()
        .map(|pool| Pool {
            name: Cow::Borrowed(pool.name.as_str()),
            routing: pool.routing,
            node: Cow::Borrowed(&pool.node),
            single: false,
        })
        .collect()
}

/// The `GamePool` of pool `pool` of cluster `cluster`.
pub fn game_pool_name(cluster: &str, pool: &str) -> String {
    format!("{cluster}-{pool}")
}

/// The replica count of one pool of a `GameCluster`'s `spec.pools`, behind its own `/scale` subresource:
/// `kubectl scale gamepool/NAME-POOL --replicas=N`, or an HPA. Created and owned by the GameCluster; its
/// status is written by the operator.
// Print columns of one type repeat `type_ = "integer"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "GamePool",
    plural = "gamepools",
    shortname = "gp",
    category = "switchyard",
    namespaced,
    status = "GamePoolStatus",
    derive = "PartialEq",
    doc = "One node pool of a GameCluster's spec.pools: its replica count, scalable with kubectl scale and HPAs. Created by the operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        description = "The GameCluster",
        json_path = ".spec.cluster"
    ),
    printcolumn(
        name = "Pool",
        type_ = "string",
        description = "The pool's name",
        json_path = ".spec.pool"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        description = "Node pods wanted",
        json_path = ".spec.replicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        description = "Ready node pods",
        json_path = ".status.ready"
    ),
    printcolumn(
        name = "Draining",
        type_ = "integer",
        description = "Node pods draining their players",
        json_path = ".status.draining"
    ),
    printcolumn(
        name = "Players",
        type_ = "integer",
        description = "Players bound to the pool's nodes",
        json_path = ".status.boundPlayers"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct GamePoolSpec {
    /// The GameCluster this pool belongs to.
    #[schemars(length(min = 1, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.cluster is immutable"}]))]
    pub cluster: String,
    /// The pool's name in the GameCluster's `spec.pools`.
    #[schemars(length(min = 1, max = 15))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.pool is immutable"}]))]
    pub pool: String,
    /// Node pods of the pool (the scale subresource writes this field).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 0", "message": "replicas must be 0 or more"}]))]
    pub replicas: i32,
}

/// What the operator observed of one pool (also each entry of the GameCluster's `status.pools`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PoolStatus {
    /// The pool's name.
    pub name: String,
    /// Node pods that exist and are not terminating.
    pub replicas: i32,
    /// Node pods wanted.
    pub desired: i32,
    /// Ready node pods.
    pub ready: i32,
    /// Node pods of the current template.
    pub updated: i32,
    /// Node pods draining their players: terminating, or annotated `switchyard.dev/drain: "true"`.
    pub draining: i32,
    /// Players bound to the pool's node pods, draining ones included.
    pub bound_players: i64,
}

/// The status of a `GamePool`: its pool's counts and the selector of its pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GamePoolStatus {
    /// Node pods that exist and are not terminating (the scale subresource's `status.replicas`).
    pub replicas: i32,
    /// Ready node pods.
    pub ready: i32,
    /// Node pods of the current template.
    pub updated: i32,
    /// Node pods draining their players.
    pub draining: i32,
    /// Players bound to the pool's node pods.
    pub bound_players: i64,
    /// Label selector of the pool's node pods (for the scale subresource and HPAs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

impl GamePoolStatus {
    /// The `GamePool` status of a pool's status and selector.
    pub fn of(pool: &PoolStatus, selector: String) -> Self {
        GamePoolStatus {
            replicas: pool.replicas,
            ready: pool.ready,
            updated: pool.updated,
            draining: pool.draining,
            bound_players: pool.bound_players,
            selector: Some(selector),
        }
    }
}

#[cfg(test)]
#[path = "pools_tests.rs"]
mod tests;
