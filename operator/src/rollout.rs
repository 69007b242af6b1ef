//! Node rollouts: once a pod of the node Deployment's current template is ready, every node pod of an
//! older template is drained at once (annotation `switchyard.dev/drain: "true"`), so that no new player
//! lands on an old pod while the Deployment replaces them one surge at a time.
//!
//! Without this, a Deployment's rolling update keeps the old pods that it has not reached yet ready, and
//! they keep taking new players, who must then be drained again when their pod's turn comes. With it, the
//! old pods stop taking players as soon as a new one can, keep serving the players bound to them (until
//! these log out, or the drain deadline tells them to reconnect), turn unready, and the Deployment
//! controller removes them first (it scales unhealthy old replicas down before healthy ones).
//!
//! Old pods are not drained before a new pod is ready: draining them earlier would leave no node that
//! takes new players while the new pods start (an image pull can take minutes).
//!
//! A rollback (the template changed back while old pods drained) makes drained pods current again. They
//! stay unready (a drained node never takes players again), and a Deployment cannot make progress with
//! unready pods of its current template, so the operator deletes them: the ReplicaSet replaces them.
//! Only pods the operator drained itself are deleted (annotation [`DRAINED_BY_ANNOTATION`]); a pod drained
//! by hand for maintenance is left to whoever drained it.
//!
//! Everything here is pure; the reconciler lists the ReplicaSets and pods and applies the steps.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard_cluster::kubernetes::DRAIN_ANNOTATION;

/// Set (to [`DRAINED_BY_ROLLOUT`]) next to the drain annotation on the pods the operator drains.
pub const DRAINED_BY_ANNOTATION: &str = "switchyard.dev/drained-by";
/// The value of [`DRAINED_BY_ANNOTATION`].
pub const DRAINED_BY_ROLLOUT: &str = "rollout";
/// The label the Deployment controller puts on a ReplicaSet and its pods: a hash of their template.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The Deployment controller's revision of a Deployment and of each of its ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// What the reconciler does to one node pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Annotate it for draining: it takes no new players from now on.
    Drain(String),
    /// Delete it: a pod the operator drained whose template is current again (a rollback).
    Delete(String),
}

/// The template hash of the Deployment's current ReplicaSet: the one it owns whose revision is the
/// Deployment's. `None` while the Deployment controller has not caught up with the Deployment's spec (its
/// current ReplicaSet may not exist yet), or when nothing matches.
pub fn current_template_hash(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> Option<String> {
    let generation = deployment.metadata.generation?;
    let observed = deployment.status.as_ref()?.observed_generation?;
    if observed < generation {
        return None;
    }
    let uid = deployment.metadata.uid.as_deref()?;
    let revision = annotation(&deployment.metadata, REVISION_ANNOTATION)?;
    replica_sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.uid == uid && owner.controller == Some(true))
        })
        .find(|rs| annotation(&rs.metadata, REVISION_ANNOTATION) == Some(revision))
        .and_then(|rs| label(&rs.metadata, TEMPLATE_HASH_LABEL))
        .map(str::to_owned)
}

/// The steps that the node pods `pods` need, given the current template hash.
pub fn steps(current_hash: Option<&str>, pods: &[Pod]) -> Vec<Step> {
    let Some(current) = current_hash else {
        return Vec::new();
    };
    let live = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none());
    let is_current = |pod: &Pod| label(&pod.metadata, TEMPLATE_HASH_LABEL) == Some(current);
    let new_ready = live
        .clone()
        .any(|pod| is_current(pod) && is_ready(pod) && !is_drained(&pod.metadata));
    let mut steps = Vec::new();
    for pod in live {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if name.is_empty() || label(&pod.metadata, TEMPLATE_HASH_LABEL).is_none() {
            continue;
        }
        if is_current(pod) {
            if annotation(&pod.metadata, DRAINED_BY_ANNOTATION) == Some(DRAINED_BY_ROLLOUT) {
                steps.push(Step::Delete(name));
            }
        } else if new_ready && !is_drained(&pod.metadata) {
            steps.push(Step::Drain(name));
        }
    }
    steps
}

/// The merge patch that drains a pod.
pub fn drain_patch() -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "annotations": {
                DRAIN_ANNOTATION: "true",
                DRAINED_BY_ANNOTATION: DRAINED_BY_ROLLOUT,
            }
        }
    })
}

fn is_drained(meta: &ObjectMeta) -> bool {
    annotation(meta, DRAIN_ANNOTATION) == Some("true")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn pod(name: &str, hash: &str, ready: bool, drained_by: Option<&str>, terminating: bool) -> Pod {
        let mut annotations = BTreeMap::new();
        if let Some(by) = drained_by {
            annotations.insert(DRAIN_ANNOTATION.to_owned(), "true".to_owned());
            if !by.is_empty() {
                annotations.insert(DRAINED_BY_ANNOTATION.to_owned(), by.to_owned());
            }
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(
                    TEMPLATE_HASH_LABEL.to_owned(),
                    hash.to_owned(),
                )])),
                annotations: Some(annotations),
                deletion_timestamp: terminating.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_owned(),
                    status: if ready { "True" } else { "False" }.to_owned(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn drain(name: &str) -> Step {
        Step::Drain(name.to_owned())
    }

    #[test]
    fn nothing_to_do_without_a_current_template_or_when_every_pod_is_current() {
        let pods = [
            pod("a", "new", true, None, false),
            pod("b", "old", true, None, false),
        ];
        assert_eq!(steps(None, &pods), []);
        let current = [
            pod("a", "new", true, None, false),
            pod("b", "new", false, None, false),
        ];
        assert_eq!(steps(Some("new"), &current), []);
    }

    #[test]
    fn old_pods_keep_taking_players_until_a_new_pod_is_ready() {
        let mut pods = vec![
            pod("old-1", "old", true, None, false),
            pod("old-2", "old", true, None, false),
            pod("new-1", "new", false, None, false),
        ];
        assert_eq!(steps(Some("new"), &pods), [], "the new pod is not ready yet");
        pods[2] = pod("new-1", "new", true, None, false);
        assert_eq!(steps(Some("new"), &pods), [drain("old-1"), drain("old-2")]);
        // A terminating new pod does not count, nor does a drained one.
        pods[2] = pod("new-1", "new", true, None, true);
        assert_eq!(steps(Some("new"), &pods), []);
        pods[2] = pod("new-1", "new", true, Some(""), false);
        assert_eq!(steps(Some("new"), &pods), []);
    }

    #[test]
    fn drained_and_terminating_old_pods_are_left_alone() {
        let pods = [
            pod("old-1", "old", false, Some(DRAINED_BY_ROLLOUT), false),
            pod("old-2", "old", true, None, true),
            pod("older", "older", true, None, false),
            pod("new-1", "new", true, None, false),
        ];
        assert_eq!(steps(Some("new"), &pods), [drain("older")]);
    }

    #[test]
    fn a_rollback_deletes_the_pods_the_rollout_drained_only() {
        let pods = [
            pod("a", "v1", false, Some(DRAINED_BY_ROLLOUT), false),
            pod("b", "v1", false, Some(""), false),
            pod("c", "v1", false, Some(DRAINED_BY_ROLLOUT), true),
            pod("d", "v2", true, None, false),
        ];
        assert_eq!(
            steps(Some("v1"), &pods),
            [Step::Delete("a".to_owned())],
            "b was drained by hand and c is going already; d stays: no v1 pod is ready"
        );
        let pods = [
            pod("a", "v1", false, Some(DRAINED_BY_ROLLOUT), false),
            pod("e", "v1", true, None, false),
            pod("d", "v2", true, None, false),
        ];
        assert_eq!(
            steps(Some("v1"), &pods),
            [Step::Delete("a".to_owned()), drain("d")]
        );
    }

    fn replica_set(name: &str, owner: &str, revision: &str, hash: &str) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(
                    TEMPLATE_HASH_LABEL.to_owned(),
                    hash.to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    REVISION_ANNOTATION.to_owned(),
                    revision.to_owned(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    uid: owner.to_owned(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn node_deployment(generation: i64, observed: i64, revision: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                uid: Some("d-uid".to_owned()),
                generation: Some(generation),
                annotations: Some(BTreeMap::from([(
                    REVISION_ANNOTATION.to_owned(),
                    revision.to_owned(),
                )])),
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_current_hash_is_the_owned_replica_set_of_the_deployment_revision() {
        let sets = [
            replica_set("rs-1", "d-uid", "1", "h1"),
            replica_set("rs-2", "d-uid", "2", "h2"),
            replica_set("other", "x-uid", "3", "h3"),
        ];
        assert_eq!(
            current_template_hash(&node_deployment(4, 4, "2"), &sets).as_deref(),
            Some("h2")
        );
        assert_eq!(
            current_template_hash(&node_deployment(5, 4, "2"), &sets),
            None,
            "the Deployment controller has not seen the newest spec"
        );
        assert_eq!(current_template_hash(&node_deployment(4, 4, "3"), &sets), None);
    }
}
