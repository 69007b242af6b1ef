//! The operator's Prometheus metrics, `switchyard_operator_*`. Labels are bounded: a result or an error
//! reason, never a cluster name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `result` of a reconcile: `ok`, `invalid_spec` (the user's spec cannot work) or `error` (retried).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// `reason` of a failed reconcile, e.g. `kube_api`, `invalid_spec`, `child_rejected`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// `pool` of a per-pool metric: the pool's name (bounded by `spec.pools`, at most 16 per cluster; the same
/// name in several clusters is one series).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

/// `kind` (`ca`, `gate`, `node`) and `reason` (`missing`, `renewal`, `invalid`, `ca_changed`) of an issued
/// link certificate.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuedLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// Every metric of the operator. Cheap to clone (the metrics are shared handles).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub clusters: Gauge,
    pub rollouts_in_progress: Gauge,
    pub draining_pods: Gauge,
    pub draining_pods_by_pool: Family<PoolLabels, Gauge>,
    pub route_conflicts: Gauge,
    pub unreadable_route_annotations: Gauge,
    pub leader: Gauge,
    pub node_load_reads: Family<ReasonLabels, Counter>,
    pub link_certificates_issued: Family<IssuedLabels, Counter>,
    pub link_certificate_errors: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            clusters: Gauge::default(),
            rollouts_in_progress: Gauge::default(),
            draining_pods: Gauge::default(),
            draining_pods_by_pool: Family::default(),
            route_conflicts: Gauge::default(),
            unreadable_route_annotations: Gauge::default(),
            leader: Gauge::default(),
            node_load_reads: Family::default(),
            link_certificates_issued: Family::default(),
            link_certificate_errors: Family::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `switchyard_operator_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        let operator = registry.sub_registry_with_prefix("switchyard_operator");
        operator.register(
            "reconciles",
            "Reconciles of GameClusters, by result",
            metrics.reconciles.clone(),
        );
        operator.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            metrics.reconcile_errors.clone(),
        );
        operator.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            metrics.reconcile_duration.clone(),
        );
        operator.register(
            "clusters",
            "GameClusters this operator manages",
            metrics.clusters.clone(),
        );
        operator.register(
            "rollouts_in_progress",
            "GameClusters whose Progressing condition is True",
            metrics.rollouts_in_progress.clone(),
        );
        operator.register(
            "draining_pods",
            "Node pods draining their players, over all GameClusters",
            metrics.draining_pods.clone(),
        );
        operator.register(
            "pool_draining_pods",
            "Node pods draining their players, by pool name, over all GameClusters",
            metrics.draining_pods_by_pool.clone(),
        );
        operator.register(
            "route_conflicts",
            "Client routes served by two node pools of one GameCluster, over all GameClusters (see the RouteConflict condition)",
            metrics.route_conflicts.clone(),
        );
        operator.register(
            "unreadable_route_annotations",
            "Node pods whose switchyard.dev/routes annotation cannot be read (left out of the route-conflict check)",
            metrics.unreadable_route_annotations.clone(),
        );
        operator.register(
            "leader",
            "1 while this replica holds the leader-election lease",
            metrics.leader.clone(),
        );
        operator.register(
            "node_load_reads",
            "Reads of node pods' load reports (/load), by reason: ok, unreachable, timeout, bad_report, patch_failed (the annotations could not be written), list_failed",
            metrics.node_load_reads.clone(),
        );
        operator.register(
            "link_certificates_issued",
            "Link certificates minted into Secrets, by kind (ca, gate, node) and reason (missing, renewal, invalid, ca_changed)",
            metrics.link_certificates_issued.clone(),
        );
        operator.register(
            "link_certificate_errors",
            "Link certificate Secrets the operator cannot keep, by reason: ca_foreign, leaf_foreign (a Secret of that name not owned by the GameCluster), ca_invalid (a malformed or expiring CA), mint_failed",
            metrics.link_certificate_errors.clone(),
        );
        metrics
    }
}
