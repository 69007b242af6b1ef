//! Pure status aggregation: from what the API server shows (the Deployments and the node pods of every
//! pool) to the `GameCluster` status, its per-pool counts, its `Ready` / `Progressing` / `Degraded` /
//! `RouteConflict` conditions, and the events worth telling an operator on call about. No I/O, so every rule
//! here is unit-tested.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use switchyard_cluster::kubernetes::{BOUND_PLAYERS_ANNOTATION, DRAIN_ANNOTATION};

use crate::children::{Component, selector_string};
use crate::conflicts::{RouteConflict, describe};
use crate::crd::{GameCluster, GameClusterStatus, GateStatus, NodeStatus};
use crate::pools::PoolStatus;

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_PROGRESSING: &str = "Progressing";
pub const CONDITION_DEGRADED: &str = "Degraded";
/// True while two pools serve one client route (see [`crate::conflicts`]).
pub const CONDITION_ROUTE_CONFLICT: &str = "RouteConflict";

/// Why the cluster cannot be what its spec asks, as found by the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason, e.g. `InvalidSpec` or `ChildRejected`.
    pub reason: String,
    /// What is wrong, naming the field or object.
    pub message: String,
}

/// One node pool as observed.
#[derive(Debug, Clone, Copy)]
pub struct ObservedPool<'a> {
    pub name: &'a str,
    /// Node pods wanted, when a `GamePool` holds them; `None`: the spec's (the single-pool form).
    pub desired: Option<i32>,
    pub deployment: Option<&'a Deployment>,
    /// Metadata of the pool's node pods.
    pub pods: &'a [ObjectMeta],
}

/// Everything the status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub gate: Option<&'a Deployment>,
    /// Every pool of the spec, in spec order.
    pub pools: &'a [ObservedPool<'a>],
    /// The managed Redis; `None` both when there is none and when it is not created yet.
    pub redis: Option<&'a Deployment>,
    /// Whether the spec asks for a managed Redis.
    pub wants_redis: bool,
    /// Routes served by two pools or more ([`crate::conflicts::route_conflicts`]).
    pub conflicts: &'a [RouteConflict],
    /// A spec that cannot work, or a child the API server refused.
    pub problem: Option<&'a Problem>,
}

/// Replica counts of one Deployment, as its controller last reported them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Counts {
    desired: i32,
    replicas: i32,
    ready: i32,
    updated: i32,
    available: i32,
    /// The Deployment controller has not yet seen the newest spec.
    stale: bool,
    /// `ReplicaFailure=True` or `Progressing=False/ProgressDeadlineExceeded`: (reason, message).
    failure: Option<(String, String)>,
}

fn counts(deployment: Option<&Deployment>, desired: i32) -> Counts {
    let Some(deployment) = deployment else {
        return Counts {
            desired,
            stale: true,
            ..Counts::default()
        };
    };
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let failure = status.conditions.iter().flatten().find_map(|condition| {
        let type_ = condition.type_.as_deref().unwrap_or_default();
        let status = condition.status.as_deref().unwrap_or_default();
        let failed = (type_ == "ReplicaFailure" && status == "True")
            || (type_ == "Progressing"
                && status == "False"
                && condition.reason.as_deref() == Some("ProgressDeadlineExceeded"));
        failed.then(|| {
            (
                condition.reason.clone().unwrap_or_else(|| type_.to_owned()),
                condition.message.clone().unwrap_or_default(),
            )
        })
    });
    Counts {
        desired,
        replicas: status.replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        stale: status.observed_generation.unwrap_or(0) < generation,
        failure,
    }
}

impl Counts {
    /// The counts of every pool together (failures: the first one's).
    fn sum(all: &[Counts]) -> Counts {
        all.iter().fold(Counts::default(), |total, one| Counts {
            desired: total.desired + one.desired,
            replicas: total.replicas + one.replicas,
            ready: total.ready + one.ready,
            updated: total.updated + one.updated,
            available: total.available + one.available,
            stale: total.stale || one.stale,
            failure: total.failure.or_else(|| one.failure.clone()),
        })
    }

    /// Pods of the current template are still missing, or old ones still exist.
    fn rolling(&self) -> bool {
        self.stale || self.updated < self.desired || self.replicas > self.updated
    }

    fn all_ready(&self) -> bool {
        !self.stale && self.ready >= self.desired && self.updated >= self.desired
    }
}

/// Whether a node pod is draining: terminating, or annotated for a maintenance drain.
pub fn is_draining(pod: &ObjectMeta) -> bool {
    pod.deletion_timestamp.is_some()
        || pod
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(DRAIN_ANNOTATION))
            .is_some_and(|value| value == "true")
}

/// The players a node pod reports (`switchyard.dev/bound-players`); 0 when absent or unreadable.
pub fn bound_players(pod: &ObjectMeta) -> i64 {
    pod.annotations
        .as_ref()
        .and_then(|annotations| annotations.get(BOUND_PLAYERS_ANNOTATION))
        .and_then(|value| value.trim().parse::<i64>().ok())
        .filter(|players| *players >= 0)
        .unwrap_or(0)
}

/// The status of `cluster` given what was observed. Conditions keep their `lastTransitionTime` from the
/// previous status while their status does not change.
pub fn aggregate(
    cluster: &GameCluster,
    previous: Option<&GameClusterStatus>,
    observed: &Observed<'_>,
    now: Timestamp,
) -> GameClusterStatus {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let spec = &cluster.spec;
    let gate = counts(observed.gate, spec.gate.replicas);
    let pool_counts: Vec<Counts> = observed
        .pools
        .iter()
        .map(|pool| {
            let desired = pool.desired.unwrap_or_else(|| {
                crate::pools::pools(spec)
                    .iter()
                    .find(|spec_pool| spec_pool.name == pool.name)
                    .map_or(0, |spec_pool| spec_pool.node.replicas)
            });
            counts(pool.deployment, desired)
        })
        .collect();
    let pool_statuses: Vec<PoolStatus> = observed
        .pools
        .iter()
        .zip(&pool_counts)
        .map(|(pool, counts)| PoolStatus {
            name: pool.name.to_owned(),
            replicas: counts.replicas,
            desired: counts.desired,
            ready: counts.ready,
            updated: counts.updated,
            draining: count(pool.pods.iter().filter(|pod| is_draining(pod))),
            bound_players: pool.pods.iter().map(bound_players).sum(),
        })
        .collect();
    let node = Counts::sum(&pool_counts);
    let draining: i32 = pool_statuses.iter().map(|pool| pool.draining).sum();
    let players: i64 = pool_statuses.iter().map(|pool| pool.bound_players).sum();
    let generation = cluster.metadata.generation;

    let mut conditions = Vec::with_capacity(4);
    let previous_conditions = previous.map(|status| status.conditions.as_slice()).unwrap_or(&[]);
    let mut condition = |type_: &str, status: bool, reason: &str, message: String| {
        conditions.push(new_condition(
            previous_conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        ));
    };

    // Degraded: a spec that cannot work, a refused child, or a Deployment that cannot make progress.
    let pool_names: Vec<String> = observed
        .pools
        .iter()
        .map(|pool| {
            if observed.pools.len() == 1 {
                "node".to_owned()
            } else {
                format!("node pool {}", pool.name)
            }
        })
        .collect();
    let deployment_failure = std::iter::once(("gate", &gate))
        .chain(pool_names.iter().map(String::as_str).zip(&pool_counts))
        .find_map(|(what, counts)| {
            counts
                .failure
                .as_ref()
                .map(|(reason, message)| (what, reason, message))
        });
    let degraded = observed.problem.is_some() || deployment_failure.is_some();
    match (observed.problem, deployment_failure) {
        (Some(problem), _) => condition(CONDITION_DEGRADED, true, &problem.reason, problem.message.clone()),
        (None, Some((what, reason, message))) => condition(
            CONDITION_DEGRADED,
            true,
            reason,
            format!("{what} Deployment: {message}"),
        ),
        (None, None) => condition(
            CONDITION_DEGRADED,
            false,
            "AsExpected",
            "every object applied".to_owned(),
        ),
    }

    // Progressing: a rollout or scale of gates or nodes, or nodes still draining their players.
    let counts_text = format!(
        "gates {}/{} ready ({} updated), nodes {}/{} ready ({} updated), {} draining",
        gate.ready, gate.desired, gate.updated, node.ready, node.desired, node.updated, draining
    );
    if let Some(problem) = observed.problem {
        condition(
            CONDITION_PROGRESSING,
            false,
            &problem.reason,
            problem.message.clone(),
        );
    } else if gate.rolling() || node.rolling() {
        condition(CONDITION_PROGRESSING, true, "RollingUpdate", counts_text.clone());
    } else if draining > 0 {
        condition(CONDITION_PROGRESSING, true, "Draining", counts_text.clone());
    } else if !gate.all_ready() || !node.all_ready() {
        condition(CONDITION_PROGRESSING, true, "WaitingForPods", counts_text.clone());
    } else {
        condition(CONDITION_PROGRESSING, false, "Stable", counts_text.clone());
    }

    // RouteConflict: two pools serve one client route; gates cannot route it.
    if observed.conflicts.is_empty() {
        condition(
            CONDITION_ROUTE_CONFLICT,
            false,
            "NoConflict",
            "no client route is served by two pools".to_owned(),
        );
    } else {
        condition(
            CONDITION_ROUTE_CONFLICT,
            true,
            "RouteServedByTwoPools",
            describe(observed.conflicts),
        );
    }

    // Ready: every desired gate and node (and the managed Redis) is ready, and nothing is wrong.
    let redis_ready = !observed.wants_redis
        || observed
            .redis
            .and_then(|redis| redis.status.as_ref())
            .and_then(|status| status.ready_replicas)
            .unwrap_or(0)
            >= 1;
    if let Some(problem) = observed.problem {
        condition(CONDITION_READY, false, &problem.reason, problem.message.clone());
    } else if !gate.all_ready() {
        condition(CONDITION_READY, false, "GatesNotReady", counts_text);
    } else if !node.all_ready() {
        condition(CONDITION_READY, false, "NodesNotReady", counts_text);
    } else if !redis_ready {
        condition(
            CONDITION_READY,
            false,
            "RedisNotReady",
            "the managed Redis is not ready".to_owned(),
        );
    } else if degraded {
        condition(
            CONDITION_READY,
            false,
            "Degraded",
            "see the Degraded condition".to_owned(),
        );
    } else {
        condition(CONDITION_READY, true, "AllReplicasReady", counts_text);
    }

    GameClusterStatus {
        observed_generation: generation,
        conditions,
        gate: GateStatus {
            desired: gate.desired,
            ready: gate.ready,
            updated: gate.updated,
        },
        node: NodeStatus {
            replicas: node.replicas,
            desired: node.desired,
            ready: node.ready,
            updated: node.updated,
            draining,
            bound_players: players,
        },
        pools: pool_statuses,
        bound_players: players,
        selector: Some(selector_string(name, Component::Node)),
    }
}

fn count<T>(items: impl Iterator<Item = T>) -> i32 {
    i32::try_from(items.count()).unwrap_or(i32::MAX)
}

fn new_condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|condition| condition.type_ == type_ && condition.status == status)
        .map(|condition| condition.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        // The API server limits messages to 32 KiB; keep them short.
        message: truncate(message, 1024),
        observed_generation: generation,
        last_transition_time,
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The condition of `type_` in `status`, if any.
pub fn condition<'a>(status: &'a GameClusterStatus, type_: &str) -> Option<&'a Condition> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

fn is_true(status: Option<&GameClusterStatus>, type_: &str) -> bool {
    status
        .and_then(|status| condition(status, type_))
        .is_some_and(|condition| condition.status == "True")
}

/// Whether `status` says a rollout (or drain) is under way.
pub fn is_progressing(status: &GameClusterStatus) -> bool {
    is_true(Some(status), CONDITION_PROGRESSING)
}

/// An event for the cluster's event stream (see [`transitions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason: `InvalidSpec`, `Recovered`, `RolloutStarted`, `RolloutFinished`, `Scaled`,
    /// `RouteConflict`, `RouteConflictResolved`.
    pub reason: &'static str,
    pub message: String,
}

/// The events that the move from `previous` to `next` is worth: a spec found invalid (or fixed), a rollout
/// started or finished, a pool scaled.
pub fn transitions(previous: Option<&GameClusterStatus>, next: &GameClusterStatus) -> Vec<Notice> {
    let mut notices = Vec::new();
    let degraded_before = previous.and_then(|status| condition(status, CONDITION_DEGRADED));
    let degraded_now = condition(next, CONDITION_DEGRADED);
    match (degraded_before, degraded_now) {
        (before, Some(now)) if now.status == "True" => {
            let same = before.is_some_and(|before| {
                before.status == "True" && before.reason == now.reason && before.message == now.message
            });
            if !same {
                notices.push(Notice {
                    warning: true,
                    reason: if now.reason == "InvalidSpec"
                        || now.reason == "ReservedEnv"
                        || now.reason == "ReservedAnnotation"
                        || now.reason == "ChildRejected"
                    {
                        "InvalidSpec"
                    } else {
                        "Degraded"
                    },
                    message: format!("{}: {}", now.reason, now.message),
                });
            }
        }
        (Some(before), Some(_)) if before.status == "True" => notices.push(Notice {
            warning: false,
            reason: "Recovered",
            message: "the spec is valid again and every object applied".to_owned(),
        }),
        _ => {}
    }

    let was_progressing = is_true(previous, CONDITION_PROGRESSING);
    let progressing = condition(next, CONDITION_PROGRESSING);
    match progressing {
        Some(now) if now.status == "True" && !was_progressing => notices.push(Notice {
            warning: false,
            reason: "RolloutStarted",
            message: format!("{}: {}", now.reason, now.message),
        }),
        Some(now) if now.status == "False" && was_progressing && now.reason == "Stable" => {
            notices.push(Notice {
                warning: false,
                reason: "RolloutFinished",
                message: format!("every gate and node is updated and ready: {}", now.message),
            });
        }
        _ => {}
    }

    let conflict_before = is_true(previous, CONDITION_ROUTE_CONFLICT);
    match condition(next, CONDITION_ROUTE_CONFLICT) {
        Some(now) if now.status == "True" => {
            let same = previous
                .and_then(|status| condition(status, CONDITION_ROUTE_CONFLICT))
                .is_some_and(|before| before.status == "True" && before.message == now.message);
            if !same {
                notices.push(Notice {
                    warning: true,
                    reason: "RouteConflict",
                    message: now.message.clone(),
                });
            }
        }
        Some(_) if conflict_before => notices.push(Notice {
            warning: false,
            reason: "RouteConflictResolved",
            message: "no client route is served by two pools any more".to_owned(),
        }),
        _ => {}
    }

    if let Some(previous) = previous.filter(|status| status.observed_generation.is_some()) {
        let several = next.pools.len() > 1;
        for pool in next.pools.iter().filter(|_| several) {
            if let Some(before) = previous.pools.iter().find(|before| before.name == pool.name)
                && before.desired != pool.desired
            {
                notices.push(Notice {
                    warning: false,
                    reason: "Scaled",
                    message: format!(
                        "node pool {} scaled from {} to {}",
                        pool.name, before.desired, pool.desired
                    ),
                });
            }
        }
        if !several && previous.node.desired != next.node.desired {
            notices.push(Notice {
                warning: false,
                reason: "Scaled",
                message: format!(
                    "node pool scaled from {} to {}",
                    previous.node.desired, next.node.desired
                ),
            });
        }
        if previous.gate.desired != next.gate.desired {
            notices.push(Notice {
                warning: false,
                reason: "Scaled",
                message: format!(
                    "gates scaled from {} to {}",
                    previous.gate.desired, next.gate.desired
                ),
            });
        }
    }
    notices
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
