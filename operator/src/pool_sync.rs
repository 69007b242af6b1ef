//! The reconciler's side of `GamePool`s (see [`crate::pools`] for why they exist): create each one with the
//! spec's replicas, copy `spec.pools[i].replicas` into it again only when that value changes, read the
//! replicas that `kubectl scale` or an HPA left there, and write its status. No server-side apply of
//! `spec.replicas`: the operator must not take the field back from the scale subresource's writers.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::FIELD_MANAGER;
use crate::pools::{GamePool, GamePoolStatus, SPEC_REPLICAS_ANNOTATION};

/// What to write to an existing `GamePool` so that it follows `desired` (a freshly rendered one): `None` when
/// its replicas stay as they are.
pub fn replicas_patch(current: &GamePool, desired: &GamePool) -> Option<serde_json::Value> {
    let copied = current.annotations().get(SPEC_REPLICAS_ANNOTATION);
    let wanted = desired.spec.replicas.to_string();
    if copied == Some(&wanted) {
        return None;
    }
    // The spec's value changed since it was last copied (or it never was): a deliberate scale.
    Some(serde_json::json!({
        "metadata": {"annotations": {SPEC_REPLICAS_ANNOTATION: wanted}},
        "spec": {"replicas": desired.spec.replicas},
    }))
}

/// Makes the `GamePool` `desired` exist and follow the spec's replicas as [`replicas_patch`] says; returns
/// it as stored (its `spec.replicas` is what the pool's Deployment gets).
///
/// # Errors
/// The API server's.
pub async fn sync(client: &Client, namespace: &str, desired: &GamePool) -> Result<GamePool, kube::Error> {
    let api: Api<GamePool> = Api::namespaced(client.clone(), namespace);
    let name = desired.name_any();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let current = match api.get_opt(&name).await? {
        Some(current) => current,
        None => match api.create(&params, desired).await {
            Ok(created) => return Ok(created),
            // Created meanwhile (a second reconcile, or a user's object of the same name): read it.
            Err(kube::Error::Api(status)) if status.code == 409 => api.get(&name).await?,
            Err(error) => return Err(error),
        },
    };
    match replicas_patch(&current, desired) {
        None => Ok(current),
        Some(patch) => {
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            api.patch(&name, &params, &Patch::Merge(&patch)).await
        }
    }
}

/// Writes `status` to the `GamePool` `current` unless it already carries it.
///
/// # Errors
/// The API server's.
pub async fn write_status(
    client: &Client,
    namespace: &str,
    current: &GamePool,
    status: GamePoolStatus,
) -> Result<(), kube::Error> {
    if current.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<GamePool> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": GamePool::api_version(&()),
        "kind": GamePool::kind(&()),
        "status": status,
    });
    api.patch_status(
        &current.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
}

/// Deletes the objects of kind `K` that select with `selector`, are owned by the cluster `owner_uid` and
/// are not named in `wanted`: the objects of pools removed from the spec. Returns the deleted names.
///
/// # Errors
/// The API server's.
pub async fn prune_unwanted<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: &str,
    wanted: &[String],
) -> Result<Vec<String>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let listed = api.list_metadata(&ListParams::default().labels(selector)).await?;
    let mut deleted = Vec::new();
    for object in listed.items {
        let name = object.name_any();
        let owned = object
            .owner_references()
            .iter()
            .any(|owner| owner.uid == owner_uid && owner.controller == Some(true));
        if !owned || wanted.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pools::GamePoolSpec;

    fn pool(replicas: i32, copied: Option<&str>) -> GamePool {
        let mut pool = GamePool::new(
            "arena-battle",
            GamePoolSpec {
                cluster: "arena".into(),
                pool: "battle".into(),
                replicas,
            },
        );
        pool.metadata.annotations =
            copied.map(|value| BTreeMap::from([(SPEC_REPLICAS_ANNOTATION.to_owned(), value.to_owned())]));
        pool
    }

    #[test]
    fn a_scaled_pool_keeps_its_replicas_while_the_spec_value_stays() {
        // Created with 2 from the spec; kubectl scale made it 5; the spec still says 2.
        assert_eq!(replicas_patch(&pool(5, Some("2")), &pool(2, Some("2"))), None);
    }

    #[test]
    fn a_changed_spec_value_is_copied_once() {
        let patch = replicas_patch(&pool(5, Some("2")), &pool(3, Some("3"))).expect("a patch");
        assert_eq!(
            patch,
            serde_json::json!({
                "metadata": {"annotations": {"switchyard.dev/spec-replicas": "3"}},
                "spec": {"replicas": 3},
            })
        );
        // Once copied, the pool's own value rules again.
        assert_eq!(replicas_patch(&pool(7, Some("3")), &pool(3, Some("3"))), None);
    }

    #[test]
    fn a_pool_without_the_annotation_takes_the_spec_value() {
        assert!(replicas_patch(&pool(1, None), &pool(2, Some("2"))).is_some());
    }
}
