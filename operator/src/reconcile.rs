//! The reconciler: a kube-rs [`Controller`] on `GameCluster` that owns every child object, watches the node
//! pods (bound players, drains, routes), applies [`crate::children`] with server-side apply, keeps each
//! pool's `GamePool` ([`crate::pool_sync`]), rolls each pool on its own, writes the status computed by
//! [`crate::status`] to the status subresource, and records Kubernetes Events.
//!
//! A spec that cannot work (or a child the API server refuses) is not an error to retry: it becomes the
//! `Degraded` condition and a Warning event, and the cluster is looked at again when its spec changes (or
//! after [`INVALID_REQUEUE`]). API failures are errors: they are retried with a per-cluster exponential
//! backoff, capped at [`MAX_BACKOFF`].
//!
//! Split by stage: `apply` (server-side apply of the children, the managed Redis's password Secret, pruning)
//! and `roll` (draining the node pods of older templates); the controller and one reconcile stay here.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_cluster::admin::Readiness;
use tokio_util::sync::CancellationToken;

use crate::children::{
    Child, Children, Component, Defaults, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_POOL,
    MANAGED_BY, PoolChildren, child_name, children, selector_string,
};
use crate::conflicts::{pod_pool, route_conflicts};
use crate::crd::{GameCluster, GameClusterStatus, LinkTlsMode};
use crate::metrics::{Metrics, PoolLabels, ReasonLabels, ResultLabels};
use crate::pools::{GamePool, GamePoolStatus};
use crate::status::{Observed, ObservedPool, Problem, aggregate, is_progressing, transitions};
use crate::{FIELD_MANAGER, OperatorConfig};
use crate::{link_secrets, pool_sync, rollout};

/// Requeue of a cluster whose spec cannot work (a spec change triggers a reconcile at once anyway).
pub const INVALID_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue while a rollout or drain is under way (child and pod events usually come first).
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(10);
/// Periodic resync of a stable cluster.
pub const STABLE_REQUEUE: Duration = Duration::from_secs(300);
/// Longest wait between retries of a failing reconcile.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A reconcile that failed and will be retried. The Kubernetes API (or the network to it) is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("the GameCluster has no namespace")]
    NoNamespace,
}

impl ReconcileError {
    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
        let action = action.into();
        move |source| ReconcileError::Kube { action, source }
    }

    /// Bounded `reason` label.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            ReconcileError::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 403 => "forbidden",
                kube::Error::Api(status) if status.code == 409 => "conflict",
                kube::Error::Api(_) => "kube_api",
                _ => "kube_client",
            },
            ReconcileError::NoNamespace => "no_namespace",
        }
    }
}

/// What every reconcile shares.
struct Context {
    client: Client,
    defaults: Defaults,
    recorder: Recorder,
    metrics: Metrics,
    store: Store<GameCluster>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last status written per cluster: fresher than the watch cache right after a write, so events
    /// are not repeated.
    statuses: HashMap<ObjectRef<GameCluster>, GameClusterStatus>,
    /// Consecutive failures per cluster, for the backoff.
    failures: HashMap<ObjectRef<GameCluster>, u32>,
    /// Routes served by two pools, per cluster (the route-conflict gauge).
    route_conflicts: HashMap<ObjectRef<GameCluster>, usize>,
    /// Node pods whose routes annotation cannot be read, per cluster: each is logged once.
    unreadable_routes: HashMap<ObjectRef<GameCluster>, BTreeSet<String>>,
    /// The link certificate problem of each cluster that has one: logged when it appears or changes.
    link_problems: HashMap<ObjectRef<GameCluster>, String>,
}

impl Context {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops what is known of deleted clusters and refreshes the gauges.
    fn refresh_gauges(&self) {
        let live: Vec<ObjectRef<GameCluster>> = self
            .store
            .state()
            .iter()
            .map(|cluster| ObjectRef::from_obj(cluster.as_ref()))
            .collect();
        let mut state = self.state();
        state.statuses.retain(|key, _| live.contains(key));
        state.failures.retain(|key, _| live.contains(key));
        state.route_conflicts.retain(|key, _| live.contains(key));
        state.unreadable_routes.retain(|key, _| live.contains(key));
        state.link_problems.retain(|key, _| live.contains(key));
        let rollouts = state.statuses.values().filter(|s| is_progressing(s)).count();
        let draining: i64 = state
            .statuses
            .values()
            .map(|status| i64::from(status.node.draining))
            .sum();
        // Draining pods by pool name, over every cluster (pool names, not cluster names: bounded).
        let mut by_pool: HashMap<String, i64> = HashMap::new();
        for pool in state.statuses.values().flat_map(|status| &status.pools) {
            *by_pool.entry(pool.name.clone()).or_default() += i64::from(pool.draining);
        }
        self.metrics.draining_pods_by_pool.clear();
        for (pool, draining) in by_pool {
            self.metrics
                .draining_pods_by_pool
                .get_or_create(&PoolLabels { pool })
                .set(draining);
        }
        let conflicts: usize = state.route_conflicts.values().sum();
        self.metrics
            .route_conflicts
            .set(i64::try_from(conflicts).unwrap_or(i64::MAX));
        let unreadable: usize = state.unreadable_routes.values().map(BTreeSet::len).sum();
        self.metrics
            .unreadable_route_annotations
            .set(i64::try_from(unreadable).unwrap_or(i64::MAX));
        self.metrics
            .clusters
            .set(i64::try_from(live.len()).unwrap_or(i64::MAX));
        self.metrics
            .rollouts_in_progress
            .set(i64::try_from(rollouts).unwrap_or(i64::MAX));
        self.metrics.draining_pods.set(draining);
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `stop` is cancelled, then lets in-flight reconciles finish (at most
/// `config.shutdown_grace`).
pub(crate) async fn run_controller(
    client: Client,
    config: &OperatorConfig,
    metrics: Metrics,
    readiness: &Readiness,
    stop: CancellationToken,
) {
    let namespace = config.namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let pods = watcher::Config::default().labels(&format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}={}",
        Component::Node.as_str()
    ));
    let controller = Controller::new(
        scoped::<GameCluster>(&client, namespace),
        watcher::Config::default(),
    )
    .with_config(
        ControllerConfig::default()
            .concurrency(config.concurrency)
            .debounce(Duration::from_millis(300)),
    )
    .owns(scoped::<Deployment>(&client, namespace), owned.clone())
    .owns(scoped::<Service>(&client, namespace), owned.clone())
    .owns(scoped::<ConfigMap>(&client, namespace), owned.clone())
    .owns(scoped::<ServiceAccount>(&client, namespace), owned.clone())
    .owns(scoped::<Role>(&client, namespace), owned.clone())
    .owns(scoped::<RoleBinding>(&client, namespace), owned.clone())
    .owns(scoped::<PodDisruptionBudget>(&client, namespace), owned.clone())
    .owns(scoped::<NetworkPolicy>(&client, namespace), owned.clone())
    // The link certificates (a deleted or edited one is put back at once) and the Redis password.
    .owns(scoped::<Secret>(&client, namespace), owned.clone())
    .owns(scoped::<GamePool>(&client, namespace), owned)
    .watches(scoped::<Pod>(&client, namespace), pods, |pod: Pod| {
        let instance = pod.labels().get(LABEL_INSTANCE).cloned();
        let namespace = pod.namespace();
        instance
            .zip(namespace)
            .map(|(name, namespace)| ObjectRef::<GameCluster>::new(&name).within(&namespace))
    })
    .graceful_shutdown_on(stop.clone().cancelled_owned());

    let context = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(config.instance.clone()),
            },
        ),
        client,
        defaults: config.defaults.clone(),
        metrics,
        store: controller.store(),
        state: Mutex::new(State::default()),
    });
    readiness.set(true);
    tracing::info!(
        namespace = namespace.unwrap_or("*"),
        concurrency = config.concurrency,
        "reconciling GameClusters"
    );
    let stream = controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                    tracing::warn!(cluster = %object, %error, "reconcile failed; retrying with backoff")
                }
                Err(error) => tracing::debug!(%error, "controller event"),
            }
        });
    let grace = config.shutdown_grace;
    tokio::select! {
        () = stream => {}
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(?grace, "in-flight reconciles did not finish within the shutdown grace; abandoned"),
    }
}

fn error_policy(cluster: Arc<GameCluster>, error: &ReconcileError, context: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(cluster.as_ref());
    let failures = {
        let mut state = context.state();
        let failures = state.failures.entry(key).or_insert(0);
        *failures = failures.saturating_add(1);
        *failures
    };
    let delay = backoff(failures);
    tracing::debug!(cluster = %cluster.name_any(), %error, failures, ?delay, "retrying");
    Action::requeue(delay)
}

/// 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

async fn reconcile(cluster: Arc<GameCluster>, context: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_cluster(&cluster, &context).await;
    context
        .metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let key = ObjectRef::from_obj(cluster.as_ref());
    match &result {
        Ok((_, invalid)) => {
            let label = if *invalid { "invalid_spec" } else { "ok" };
            context
                .metrics
                .reconciles
                .get_or_create(&ResultLabels { result: label })
                .inc();
            if *invalid {
                context
                    .metrics
                    .reconcile_errors
                    .get_or_create(&ReasonLabels {
                        reason: "invalid_spec",
                    })
                    .inc();
            }
            context.state().failures.remove(&key);
        }
        Err(error) => {
            context
                .metrics
                .reconciles
                .get_or_create(&ResultLabels { result: "error" })
                .inc();
            context
                .metrics
                .reconcile_errors
                .get_or_create(&ReasonLabels {
                    reason: error.metric_reason(),
                })
                .inc();
        }
    }
    context.refresh_gauges();
    result.map(|(action, _)| action)
}

/// One reconcile; `Ok((action, spec_invalid))`.
async fn reconcile_cluster(
    cluster: &GameCluster,
    context: &Context,
) -> Result<(Action, bool), ReconcileError> {
    let namespace = cluster.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = cluster.name_any();
    if cluster.meta().deletion_timestamp.is_some() {
        // The garbage collector deletes the children (owner references).
        return Ok((Action::await_change(), false));
    }
    let key = ObjectRef::from_obj(cluster);
    let previous = context
        .state()
        .statuses
        .get(&key)
        .cloned()
        .or_else(|| cluster.status.clone());

    let client = &context.client;
    let mut problem = None;
    // When the next link certificate is due for renewal.
    let mut renew_at: Option<SystemTime> = None;
    let mut deployments = Applied::default();
    // Every pool of the spec, with its GamePool once synced.
    let mut pools: Vec<PoolState> = crate::pools::pools(&cluster.spec)
        .iter()
        .map(|pool| PoolState {
            name: pool.name.to_string(),
            selector: crate::children::pool_selector_string(&name, &pool.name, pool.single),
            game_pool: None,
        })
        .collect();
    match children(cluster, &context.defaults) {
        Err(error) => {
            tracing::info!(cluster = %name, %namespace, %error, "spec cannot work");
            problem = Some(Problem {
                reason: error.reason().to_owned(),
                message: error.to_string(),
            });
        }
        Ok(mut children) => {
            // The link Secrets first: gates and nodes mount them at start.
            if cluster.spec.links.tls == LinkTlsMode::Operator {
                let outcome = link_secrets::ensure(client, &namespace, cluster, &context.metrics).await?;
                let mut state = context.state();
                match outcome {
                    Ok(at) => {
                        renew_at = Some(at);
                        if state.link_problems.remove(&key).is_some() {
                            tracing::info!(cluster = %name, %namespace, "link certificates kept again");
                        }
                    }
                    Err(blocked) => {
                        // Logged once per problem (it is counted at every reconcile).
                        if state.link_problems.get(&key) != Some(&blocked.message) {
                            tracing::warn!(cluster = %name, %namespace, problem = %blocked.message, "link certificates cannot be kept");
                            state.link_problems.insert(key.clone(), blocked.message.clone());
                        }
                        problem = Some(blocked);
                    }
                }
            }
            if problem.is_none() {
                for (pool, slot) in children.pools.iter_mut().zip(pools.iter_mut()) {
                    if let Some(stored) = follow_game_pool(client, &namespace, pool).await? {
                        slot.game_pool = Some(stored);
                    }
                }
                match apply_all(client, &namespace, &children).await? {
                    Ok(applied) => {
                        deployments = applied;
                        prune(client, &namespace, cluster, &children).await?;
                    }
                    Err(rejected) => {
                        tracing::info!(cluster = %name, %namespace, problem = %rejected.message, "child refused");
                        problem = Some(rejected);
                    }
                }
            }
        }
    }
    if problem.is_some() {
        // Report what exists anyway.
        let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        deployments.gate = api
            .get_opt(&child_name(&name, Component::Gate.as_str()))
            .await
            .map_err(ReconcileError::kube("reading a Deployment"))?;
        for pool in crate::pools::pools(&cluster.spec) {
            let object = crate::children::pool_object_name(&name, &pool.name, pool.single);
            if let Some(deployment) = api
                .get_opt(&object)
                .await
                .map_err(ReconcileError::kube("reading a Deployment"))?
            {
                deployments.pools.insert(pool.name.to_string(), deployment);
            }
        }
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let node_selector = selector_string(&name, Component::Node);
    let mut node_pods = pods
        .list(&ListParams::default().labels(&node_selector))
        .await
        .map_err(ReconcileError::kube("listing node pods"))?
        .items;
    if problem.is_none() {
        // Each pool rolls on its own: only its pods, against its own Deployment's current template.
        for PoolState {
            name: pool, selector, ..
        } in &pools
        {
            if let Some(deployment) = deployments.pools.get(pool) {
                let mut own: Vec<Pod> = node_pods
                    .iter()
                    .filter(|pod| pod_pool(&pod.metadata) == pool)
                    .cloned()
                    .collect();
                roll_nodes(context, cluster, &namespace, pool, deployment, selector, &mut own).await?;
                for patched in own {
                    if let Some(slot) = node_pods
                        .iter_mut()
                        .find(|pod| pod.metadata.name == patched.metadata.name)
                    {
                        *slot = patched;
                    }
                }
            }
        }
    }
    let node_pods: Vec<_> = node_pods.into_iter().map(|pod| pod.metadata).collect();
    let check = route_conflicts(&node_pods);
    note_routes(context, &key, &name, &namespace, &check);
    let by_pool: Vec<Vec<_>> = pools
        .iter()
        .map(|pool| {
            node_pods
                .iter()
                .filter(|pod| pod_pool(pod) == pool.name)
                .cloned()
                .collect()
        })
        .collect();
    let observed_pools: Vec<ObservedPool<'_>> = pools
        .iter()
        .zip(&by_pool)
        .map(|(pool, pods)| ObservedPool {
            name: &pool.name,
            desired: pool.game_pool.as_ref().map(|stored| stored.spec.replicas),
            deployment: deployments.pools.get(&pool.name),
            pods,
        })
        .collect();

    let observed = Observed {
        gate: deployments.gate.as_ref(),
        pools: &observed_pools,
        redis: deployments.redis.as_ref(),
        wants_redis: cluster.spec.locator.redis.is_none(),
        conflicts: &check.conflicts,
        problem: problem.as_ref(),
    };
    let status = aggregate(cluster, previous.as_ref(), &observed, Timestamp::now());
    for (pool, pool_status) in pools.iter().zip(&status.pools) {
        if let Some(stored) = &pool.game_pool {
            pool_sync::write_status(
                client,
                &namespace,
                stored,
                GamePoolStatus::of(pool_status, pool.selector.clone()),
            )
            .await
            .map_err(ReconcileError::kube("writing a GamePool status"))?;
        }
    }
    if previous.as_ref() != Some(&status) {
        let api: Api<GameCluster> = Api::namespaced(client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": GameCluster::api_version(&()),
            "kind": GameCluster::kind(&()),
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(ReconcileError::kube("writing the status"))?;
    }
    // The gauges follow the status as soon as it is written, not after the events below.
    context.state().statuses.insert(key.clone(), status.clone());
    context.refresh_gauges();
    let reference = cluster.object_ref(&());
    for notice in transitions(previous.as_ref(), &status) {
        let event = Event {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.to_owned(),
            note: Some(notice.message.clone()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        tracing::info!(cluster = %name, %namespace, reason = notice.reason, message = %notice.message, "event");
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            tracing::warn!(cluster = %name, %error, "cannot record an event");
        }
    }
    let progressing = is_progressing(&status);

    let wait = if problem.is_some() {
        INVALID_REQUEUE
    } else if progressing {
        PROGRESS_REQUEUE
    } else {
        STABLE_REQUEUE
    };
    // Back when a link certificate is due, if sooner (a second at least: a due one was just renewed).
    let wait = renew_at.map_or(wait, |at| {
        let until = at.duration_since(SystemTime::now()).unwrap_or_default();
        wait.min(until.max(Duration::from_secs(1)))
    });
    Ok((Action::requeue(wait), problem.is_some()))
}

/// One pool of the spec during a reconcile.
struct PoolState {
    name: String,
    /// Label selector of the pool's pods.
    selector: String,
    /// The pool's `GamePool` as stored (`spec.pools` only), whose replicas the Deployment got.
    game_pool: Option<GamePool>,
}

/// Makes the pool's `GamePool` exist and follow the spec (see [`crate::pool_sync`]), and gives the pool's
/// Deployment the replicas the `GamePool` holds (what `kubectl scale gamepool/...` or an HPA set). `None`
/// for the single-pool form, which has no `GamePool`.
async fn follow_game_pool(
    client: &Client,
    namespace: &str,
    pool: &mut PoolChildren,
) -> Result<Option<GamePool>, ReconcileError> {
    let Some(desired) = &pool.game_pool else {
        return Ok(None);
    };
    let stored = pool_sync::sync(client, namespace, desired)
        .await
        .map_err(ReconcileError::kube(format!(
            "keeping GamePool {} (the GamePool CRD comes with crds/gamecluster.yaml: apply it when upgrading)",
            desired.name_any()
        )))?;
    pool.deployment.spec.replicas = Some(stored.spec.replicas);
    Ok(Some(stored))
}

/// Records the route conflicts of one cluster for the gauge, and logs each pod whose routes annotation
/// cannot be read once.
fn note_routes(
    context: &Context,
    key: &ObjectRef<GameCluster>,
    name: &str,
    namespace: &str,
    check: &crate::conflicts::RouteCheck,
) {
    let mut state = context.state();
    state.route_conflicts.insert(key.clone(), check.conflicts.len());
    let known = state.unreadable_routes.entry(key.clone()).or_default();
    let now: BTreeSet<String> = check.unreadable.iter().map(|bad| bad.pod.clone()).collect();
    for bad in &check.unreadable {
        if !known.contains(&bad.pod) {
            tracing::warn!(cluster = %name, %namespace, pod = %bad.pod, error = %bad.error, "node pod's routes cannot be read; left out of the route-conflict check");
        }
    }
    *known = now;
}

mod apply;
mod roll;

use apply::{Applied, apply_all, prune};
use roll::roll_nodes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
