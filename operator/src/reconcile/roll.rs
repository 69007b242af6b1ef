//! The node rollout stage of a reconcile: drain the node pods of older templates once a current one is
//! ready, and delete the pods a rollback made current again after the operator drained them.

use super::*;

/// Drains the node pods of older templates once a pod of the current one is ready, and deletes the pods
/// the operator drained that a rollback made current again (see [`crate::rollout`]). `pods` (the pool's
/// own) is updated with what changed, for the status.
pub(super) async fn roll_nodes(
    context: &Context,
    cluster: &GameCluster,
    namespace: &str,
    pool: &str,
    node: &Deployment,
    node_selector: &str,
    pods: &mut [Pod],
) -> Result<(), ReconcileError> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(context.client.clone(), namespace);
    let sets = replica_sets
        .list(&ListParams::default().labels(node_selector))
        .await
        .map_err(ReconcileError::kube("listing node ReplicaSets"))?
        .items;
    let current = rollout::current_template_hash(node, &sets);
    let steps = rollout::steps(current.as_deref(), pods);
    if steps.is_empty() {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let mut drained = Vec::new();
    let mut deleted = Vec::new();
    for step in steps {
        match step {
            rollout::Step::Drain(pod) => {
                match api
                    .patch(
                        &pod,
                        &PatchParams::default(),
                        &Patch::Merge(rollout::drain_patch()),
                    )
                    .await
                {
                    Ok(patched) => {
                        if let Some(slot) = pods.iter_mut().find(|p| p.metadata.name.as_deref() == Some(&pod))
                        {
                            *slot = patched;
                        }
                        drained.push(pod);
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(source) => {
                        return Err(ReconcileError::Kube {
                            action: format!("draining node pod {pod}"),
                            source,
                        });
                    }
                }
            }
            rollout::Step::Delete(pod) => match api.delete(&pod, &DeleteParams::default()).await {
                Ok(_) => deleted.push(pod),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(ReconcileError::Kube {
                        action: format!("deleting drained node pod {pod}"),
                        source,
                    });
                }
            },
        }
    }
    let name = cluster.name_any();
    let mut notes = Vec::new();
    if !drained.is_empty() {
        notes.push((
            "DrainingOldNodes",
            format!(
                "pool {pool}: draining {} node pod(s) of the previous template, which take no new players from now on: {}",
                drained.len(),
                drained.join(", ")
            ),
        ));
    }
    if !deleted.is_empty() {
        notes.push((
            "DeletingDrainedNodes",
            format!(
                "pool {pool}: deleting {} drained node pod(s) whose template is current again (rollback): {}",
                deleted.len(),
                deleted.join(", ")
            ),
        ));
    }
    let reference = cluster.object_ref(&());
    for (reason, note) in notes {
        tracing::info!(cluster = %name, %namespace, %note, "node rollout");
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Rollout".to_owned(),
            secondary: None,
        };
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            tracing::warn!(cluster = %name, %error, "cannot record an event");
        }
    }
    Ok(())
}
