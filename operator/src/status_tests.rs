//! Status aggregation and the events it implies, from hand-made Deployments and pods.

#![allow(clippy::field_reassign_with_default)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::crd::GameClusterSpec;

fn cluster(generation: i64, gates: i32, nodes: i32) -> GameCluster {
    let mut spec = GameClusterSpec::default();
    spec.gate.replicas = gates;
    spec.node_mut().replicas = nodes;
    let mut cluster = GameCluster::new("arena", spec);
    cluster.metadata.namespace = Some("games".into());
    cluster.metadata.generation = Some(generation);
    cluster
}

fn deployment(replicas: i32, ready: i32, updated: i32) -> Deployment {
    let mut deployment = Deployment::default();
    deployment.metadata.generation = Some(1);
    deployment.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        ready_replicas: Some(ready),
        updated_replicas: Some(updated),
        available_replicas: Some(ready),
        ..Default::default()
    });
    deployment
}

fn pod(players: Option<&str>, terminating: bool, drain: bool) -> ObjectMeta {
    let mut annotations = BTreeMap::new();
    if let Some(players) = players {
        annotations.insert(BOUND_PLAYERS_ANNOTATION.to_owned(), players.to_owned());
    }
    if drain {
        annotations.insert(DRAIN_ANNOTATION.to_owned(), "true".to_owned());
    }
    ObjectMeta {
        annotations: Some(annotations),
        deletion_timestamp: terminating.then_some(Time(Timestamp::UNIX_EPOCH)),
        ..Default::default()
    }
}

fn time(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).expect("a valid timestamp")
}

fn status_of(cond: &GameClusterStatus, type_: &str) -> (String, String) {
    let condition = condition(cond, type_).expect("condition present");
    (condition.status.clone(), condition.reason.clone())
}

fn observe<'a>(
    gate: &'a Deployment,
    node: &'a Deployment,
    redis: &'a Deployment,
    pods: &'a [ObjectMeta],
) -> Observed<'a> {
    Observed {
        gate: Some(gate),
        pools: single(Some(node), pods),
        redis: Some(redis),
        wants_redis: true,
        conflicts: &[],
        problem: None,
    }
}

/// The single pool `game` (its desired replicas from the spec).
fn single<'a>(node: Option<&'a Deployment>, pods: &'a [ObjectMeta]) -> &'a [ObservedPool<'a>] {
    // Leaked: a few bytes per test, so the tests can build an `Observed` in one expression.
    Box::leak(Box::new([ObservedPool {
        name: "game",
        desired: None,
        deployment: node,
        pods,
    }]))
}

#[test]
fn steady_cluster_is_ready_and_stable() {
    let (gate, node, redis) = (deployment(2, 2, 2), deployment(3, 3, 3), deployment(1, 1, 1));
    let pods = [
        pod(Some("5"), false, false),
        pod(Some("7"), false, false),
        pod(None, false, false),
    ];
    let status = aggregate(
        &cluster(4, 2, 3),
        None,
        &observe(&gate, &node, &redis, &pods),
        time(100),
    );
    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(status.bound_players, 12);
    assert_eq!(status.node.bound_players, 12);
    assert_eq!(
        status.node,
        NodeStatus {
            replicas: 3,
            desired: 3,
            ready: 3,
            updated: 3,
            draining: 0,
            bound_players: 12
        }
    );
    assert_eq!(
        status.gate,
        GateStatus {
            desired: 2,
            ready: 2,
            updated: 2
        }
    );
    assert_eq!(
        status.selector.as_deref(),
        Some(
            "app.kubernetes.io/component=node,app.kubernetes.io/instance=arena,app.kubernetes.io/name=switchyard"
        )
    );
    assert_eq!(
        status_of(&status, CONDITION_READY),
        ("True".into(), "AllReplicasReady".into())
    );
    assert_eq!(
        status_of(&status, CONDITION_PROGRESSING),
        ("False".into(), "Stable".into())
    );
    assert_eq!(
        status_of(&status, CONDITION_DEGRADED),
        ("False".into(), "AsExpected".into())
    );
    for condition in &status.conditions {
        assert_eq!(condition.observed_generation, Some(4));
    }
}

#[test]
fn rolling_update_with_draining_old_pods_is_progressing() {
    // Template changed: 1 of 3 updated, old pods still there; one old pod terminating (draining).
    let (gate, node, redis) = (deployment(2, 2, 2), deployment(4, 3, 1), deployment(1, 1, 1));
    let pods = [
        pod(Some("3"), true, false),
        pod(Some("4"), false, false),
        pod(Some("0"), false, false),
    ];
    let status = aggregate(
        &cluster(5, 2, 3),
        None,
        &observe(&gate, &node, &redis, &pods),
        time(100),
    );
    assert_eq!(status.node.draining, 1);
    assert_eq!(
        status.bound_players, 7,
        "draining pods keep counting their players"
    );
    assert_eq!(
        status_of(&status, CONDITION_PROGRESSING),
        ("True".into(), "RollingUpdate".into())
    );

    // Every pod updated, but an old one still drains its players: still progressing.
    let node = deployment(3, 3, 3);
    let status = aggregate(
        &cluster(5, 2, 3),
        None,
        &observe(&gate, &node, &redis, &pods),
        time(100),
    );
    assert_eq!(
        status_of(&status, CONDITION_PROGRESSING),
        ("True".into(), "Draining".into())
    );

    // A maintenance drain (annotation) counts as draining too.
    let pods = [pod(Some("1"), false, true)];
    let status = aggregate(
        &cluster(5, 2, 3),
        None,
        &observe(&gate, &node, &redis, &pods),
        time(100),
    );
    assert_eq!(status.node.draining, 1);
}

#[test]
fn unobserved_deployment_generation_is_progressing() {
    let (gate, redis) = (deployment(2, 2, 2), deployment(1, 1, 1));
    let mut node = deployment(3, 3, 3);
    node.metadata.generation = Some(2);
    let status = aggregate(
        &cluster(5, 2, 3),
        None,
        &observe(&gate, &node, &redis, &[]),
        time(1),
    );
    assert_eq!(
        status_of(&status, CONDITION_PROGRESSING),
        ("True".into(), "RollingUpdate".into())
    );
    assert_eq!(
        status_of(&status, CONDITION_READY),
        ("False".into(), "NodesNotReady".into())
    );
}

#[test]
fn missing_children_and_not_ready_pods() {
    let observed = Observed {
        gate: None,
        pools: single(None, &[]),
        redis: None,
        wants_redis: true,
        conflicts: &[],
        problem: None,
    };
    let status = aggregate(&cluster(1, 2, 2), None, &observed, time(1));
    assert_eq!(
        status_of(&status, CONDITION_READY),
        ("False".into(), "GatesNotReady".into())
    );
    assert_eq!(status_of(&status, CONDITION_PROGRESSING).0, "True");

    let (gate, node, redis) = (deployment(2, 2, 2), deployment(2, 2, 2), deployment(1, 0, 1));
    let status = aggregate(
        &cluster(1, 2, 2),
        None,
        &observe(&gate, &node, &redis, &[]),
        time(1),
    );
    assert_eq!(
        status_of(&status, CONDITION_READY),
        ("False".into(), "RedisNotReady".into())
    );
}

#[test]
fn invalid_spec_is_degraded_not_progressing() {
    let problem = Problem {
        reason: "InvalidSpec".into(),
        message: "packet.seqBytes must be 0, 1, 2 or 4".into(),
    };
    let observed = Observed {
        gate: None,
        pools: single(None, &[]),
        redis: None,
        wants_redis: true,
        conflicts: &[],
        problem: Some(&problem),
    };
    let status = aggregate(&cluster(3, 2, 2), None, &observed, time(1));
    let degraded = condition(&status, CONDITION_DEGRADED).expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert_eq!(degraded.message, "packet.seqBytes must be 0, 1, 2 or 4");
    assert_eq!(status_of(&status, CONDITION_READY).0, "False");
    assert_eq!(status_of(&status, CONDITION_PROGRESSING).0, "False");
    let notices = transitions(None, &status);
    assert!(notices.iter().any(|n| n.warning && n.reason == "InvalidSpec"));
    // The same problem again is not a new event.
    assert!(
        transitions(Some(&status), &status)
            .iter()
            .all(|n| n.reason != "InvalidSpec")
    );
}

#[test]
fn failing_deployment_is_degraded() {
    let (gate, redis) = (deployment(2, 2, 2), deployment(1, 1, 1));
    let mut node = deployment(0, 0, 0);
    if let Some(status) = node.status.as_mut() {
        status.conditions = Some(vec![DeploymentCondition {
            type_: Some("ReplicaFailure".into()),
            status: Some("True".into()),
            reason: Some("FailedCreate".into()),
            message: Some("exceeded quota".into()),
            ..Default::default()
        }]);
    }
    let status = aggregate(
        &cluster(1, 2, 2),
        None,
        &observe(&gate, &node, &redis, &[]),
        time(1),
    );
    let degraded = condition(&status, CONDITION_DEGRADED).expect("Degraded");
    assert_eq!(degraded.reason, "FailedCreate");
    assert!(degraded.message.contains("node Deployment: exceeded quota"));
}

#[test]
fn transition_times_survive_unchanged_conditions() {
    let (gate, node, redis) = (deployment(2, 2, 2), deployment(3, 3, 3), deployment(1, 1, 1));
    let first = aggregate(
        &cluster(1, 2, 3),
        None,
        &observe(&gate, &node, &redis, &[]),
        time(100),
    );
    let second = aggregate(
        &cluster(1, 2, 3),
        Some(&first),
        &observe(&gate, &node, &redis, &[]),
        time(200),
    );
    assert_eq!(
        first, second,
        "nothing changed: the status is identical (no write, no event)"
    );
    let rolling = deployment(4, 3, 1);
    let third = aggregate(
        &cluster(2, 2, 3),
        Some(&second),
        &observe(&gate, &rolling, &redis, &[]),
        time(300),
    );
    let progressing = condition(&third, CONDITION_PROGRESSING).expect("Progressing");
    assert_eq!(progressing.last_transition_time, Time(time(300)));
    let degraded = condition(&third, CONDITION_DEGRADED).expect("Degraded");
    assert_eq!(degraded.last_transition_time, Time(time(100)));
}

#[test]
fn rollout_and_scale_events() {
    let (gate, redis) = (deployment(2, 2, 2), deployment(1, 1, 1));
    let stable = deployment(3, 3, 3);
    let before = aggregate(
        &cluster(1, 2, 3),
        None,
        &observe(&gate, &stable, &redis, &[]),
        time(1),
    );

    let rolling = deployment(4, 3, 1);
    let during = aggregate(
        &cluster(2, 2, 3),
        Some(&before),
        &observe(&gate, &rolling, &redis, &[]),
        time(2),
    );
    let reasons: Vec<_> = transitions(Some(&before), &during)
        .iter()
        .map(|n| n.reason)
        .collect();
    assert_eq!(reasons, ["RolloutStarted"]);

    let after = aggregate(
        &cluster(2, 2, 3),
        Some(&during),
        &observe(&gate, &stable, &redis, &[]),
        time(3),
    );
    let reasons: Vec<_> = transitions(Some(&during), &after)
        .iter()
        .map(|n| n.reason)
        .collect();
    assert_eq!(reasons, ["RolloutFinished"]);

    let scaled_deployment = deployment(5, 3, 5);
    let scaled = aggregate(
        &cluster(3, 2, 5),
        Some(&after),
        &observe(&gate, &scaled_deployment, &redis, &[]),
        time(4),
    );
    let notices = transitions(Some(&after), &scaled);
    let scale = notices
        .iter()
        .find(|n| n.reason == "Scaled")
        .expect("a Scaled event");
    assert_eq!(scale.message, "node pool scaled from 3 to 5");
}

#[test]
fn bound_players_annotation_parsing() {
    assert_eq!(bound_players(&pod(Some("12"), false, false)), 12);
    assert_eq!(bound_players(&pod(Some(" 3 "), false, false)), 3);
    assert_eq!(bound_players(&pod(Some("lots"), false, false)), 0);
    assert_eq!(bound_players(&pod(Some("-4"), false, false)), 0);
    assert_eq!(bound_players(&pod(None, false, false)), 0);
    assert!(is_draining(&pod(None, true, false)));
    assert!(is_draining(&pod(None, false, true)));
    assert!(!is_draining(&pod(None, false, false)));
}
