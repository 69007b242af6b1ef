//! The Switchyard operator: one `GameCluster` custom resource becomes a running cluster of gates, a node
//! pool, their Services, RBAC, disruption budgets, a packet ConfigMap and, when the spec names no Redis, a
//! managed one; the operator keeps it healthy through scaling and rolling updates.
//!
//! - [`crd`]: the resource's types and its generated CustomResourceDefinition ([`crd::crd_yaml`]).
//! - [`pools`]: node pools (`spec.pools`, or `spec.node` as the pool `game`) and the `GamePool` resource
//!   that scales one pool.
//! - [`children`]: the pure translation of a spec into Kubernetes objects (`docs/pod-contract.md`).
//! - [`status`]: the pure aggregation of Deployments and node pods into status, conditions and events.
//! - [`rollout`]: which node pods a rollout drains (the old ones, once a new one is ready), per pool.
//! - [`conflicts`]: routes served by two pools (the `RouteConflict` condition).
//! - [`pool_sync`]: the reconciler's side of `GamePool`s.
//! - [`link_certs`]: the cluster's link CA and the gate and node certificates it issues (mint, read back,
//!   decide renewal); [`link_secrets`]: the reconciler keeps them in Secrets.
//! - [`reconcile`]: the kube-rs controller that applies both with server-side apply.
//! - [`leader`]: leader election on a Lease, so two replicas are safe.
//! - [`load`]: the leader reads every node's load report and writes the node pods' bound-players,
//!   pod-deletion-cost and routes annotations (nodes may not write pods).
//! - [`run`]: all of it, plus the admin HTTP server (`/healthz`, `/readyz`, `/metrics`).

pub mod children;
pub mod conflicts;
pub mod crd;
pub mod leader;
pub mod link_certs;
pub mod link_secrets;
pub mod load;
pub mod locator;
pub mod metrics;
pub mod pool_sync;
pub mod pools;
pub mod rbac;
pub mod reconcile;
pub mod rollout;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use switchyard_cluster::admin::{self, Readiness};
use tokio_util::sync::CancellationToken;

pub use children::{Children, Defaults, SpecError, children};
pub use crd::{GameCluster, GameClusterSpec, GameClusterStatus, crd_yaml};
pub use leader::{LeaderElector, Leadership, LeaseSettings};
pub use metrics::Metrics;
pub use pools::{GamePool, GamePoolSpec, GamePoolStatus, PoolSpec};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "switchyard-operator";

/// Errors that stop the operator. Reconcile errors do not: they are retried with a backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work; the caller (flags, environment) is at fault.
    #[error("invalid operator configuration: {0}")]
    Config(String),
    /// The admin HTTP address cannot be bound.
    #[error("{0}")]
    Admin(#[source] std::io::Error),
}

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch only this namespace; `None` watches every namespace (needs a ClusterRole).
    pub namespace: Option<String>,
    /// What the spec may leave out (the default image).
    pub defaults: Defaults,
    /// Reconciles running at once at most (never two for one GameCluster).
    pub concurrency: u16,
    /// Admin HTTP address: `/healthz`, `/readyz`, `/metrics`; `None` serves none.
    pub admin: Option<SocketAddr>,
    /// Leader election; `None` reconciles at once (a single replica only).
    pub leader_election: Option<LeaseSettings>,
    /// This replica's name in Events (`reportingInstance`): the pod name.
    pub instance: String,
    /// After shutdown is requested, how long in-flight reconciles may take before they are abandoned.
    pub shutdown_grace: Duration,
    /// How the leader reads node loads into pod annotations.
    pub load: load::LoadSettings,
}

impl OperatorConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        if self.concurrency == 0 {
            return Err(Error::Config("--concurrency must be at least 1".into()));
        }
        if self.defaults.image.is_empty() {
            return Err(Error::Config("--default-image must not be empty".into()));
        }
        if let Some(lease) = &self.leader_election {
            lease.validate()?;
        }
        Ok(())
    }
}

/// Runs the operator until `shutdown` is cancelled: serves the admin endpoints, waits for leadership
/// (when configured), reconciles every `GameCluster` while leading, and on shutdown finishes in-flight
/// reconciles and releases the Lease so a standby replica takes over at once.
///
/// `/readyz` is ready while the replica takes part: a leader whose controller runs, or a standby whose last
/// lease attempt reached the API server. Both are ready, so a rolling update of the operator's own
/// Deployment is not blocked by the standby.
///
/// # Errors
/// Invalid settings, or the admin address cannot be bound. Kubernetes API errors are retried, not returned.
pub async fn run(
    client: kube::Client,
    config: OperatorConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::default();
    let admin_stop = CancellationToken::new();
    let admin_task = match config.admin {
        Some(address) => {
            let listener = admin::bind(address).await.map_err(Error::Admin)?;
            let bound = listener.local_addr().map_err(Error::Admin)?;
            tracing::info!(admin = %bound, "operator admin HTTP: /healthz /readyz /metrics");
            Some(tokio::spawn(admin::serve(
                listener,
                Arc::new(registry),
                vec![readiness.clone()],
                admin_stop.clone(),
            )))
        }
        None => None,
    };
    let result = lead_and_reconcile(client, &config, &metrics, &readiness, &shutdown).await;
    readiness.set(false);
    admin_stop.cancel();
    if let Some(task) = admin_task {
        match task.await {
            Ok(Err(error)) => tracing::warn!(%error, "admin HTTP server failed"),
            Err(error) => tracing::warn!(%error, "admin HTTP server panicked"),
            Ok(Ok(())) => {}
        }
    }
    tracing::info!("operator stopped");
    result
}

async fn lead_and_reconcile(
    client: kube::Client,
    config: &OperatorConfig,
    metrics: &Metrics,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let Some(lease) = &config.leader_election else {
        metrics.leader.set(1);
        lead(client, config, metrics, readiness, shutdown.clone()).await;
        metrics.leader.set(0);
        return Ok(());
    };
    loop {
        let elector = LeaderElector::new(client.clone(), lease.clone())?;
        let Some(leadership) = elector
            .acquire(shutdown, |reachable| readiness.set(reachable))
            .await
        else {
            return Ok(());
        };
        metrics.leader.set(1);
        let stop = shutdown.child_token();
        let lost = leadership.lost();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                lost.cancelled().await;
                stop.cancel();
            })
        };
        lead(client.clone(), config, metrics, readiness, stop).await;
        stopper.abort();
        metrics.leader.set(0);
        if shutdown.is_cancelled() {
            leadership.release().await;
            return Ok(());
        }
        tracing::warn!("no longer the leader: reconciling stopped, standing by");
        drop(leadership);
    }
}

/// What the leader does until `stop`: reconcile GameClusters, and read node loads into pod annotations.
async fn lead(
    client: kube::Client,
    config: &OperatorConfig,
    metrics: &Metrics,
    readiness: &Readiness,
    stop: CancellationToken,
) {
    // The controller returns only once `stop` is cancelled, or on its own: either way the reader stops too.
    let stop = stop.child_token();
    let loads = tokio::spawn(load::run(
        client.clone(),
        config.namespace.clone(),
        config.load.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    reconcile::run_controller(client, config, metrics.clone(), readiness, stop.clone()).await;
    stop.cancel();
    if let Err(error) = loads.await {
        tracing::warn!(%error, "the node load reader panicked");
    }
}
