//! The apply stage of a reconcile: server-side apply of every child, the managed Redis's password Secret
//! (created once, never updated), and the pruning of optional children the spec no longer wants.

use super::*;

/// The Deployments as the API server returned them from the apply.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub(super) gate: Option<Deployment>,
    /// By pool name.
    pub(super) pools: HashMap<String, Deployment>,
    pub(super) redis: Option<Deployment>,
}

/// Server-side applies every child. The outer error is an API failure (retried); the inner one a child the
/// API server refused as invalid (the spec's fault: reported, not retried).
pub(super) async fn apply_all(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<Result<Applied, Problem>, ReconcileError> {
    let mut applied = Applied::default();
    // The managed Redis's password first: Redis and every gate and node read it at start.
    if let Some(redis) = &children.redis {
        ensure_auth_secret(client, namespace, &redis.auth_secret).await?;
    }
    for child in children.all() {
        let result = match &child {
            Child::ServiceAccount(object) => apply(client, namespace, object).await.map(drop),
            Child::Role(object) => apply(client, namespace, object).await.map(drop),
            Child::RoleBinding(object) => apply(client, namespace, object).await.map(drop),
            Child::ConfigMap(object) => apply(client, namespace, object).await.map(drop),
            Child::Service(object) => apply(client, namespace, object).await.map(drop),
            Child::PodDisruptionBudget(object) => apply(client, namespace, object).await.map(drop),
            Child::NetworkPolicy(object) => apply(client, namespace, object).await.map(drop),
            Child::Deployment(object) => apply(client, namespace, object).await.map(|deployment| {
                let labels = deployment.labels();
                let component = labels
                    .get(LABEL_COMPONENT)
                    .map(String::as_str)
                    .unwrap_or_default();
                match (component, labels.get(LABEL_POOL).cloned()) {
                    ("gate", _) => applied.gate = Some(deployment),
                    ("node", Some(pool)) => {
                        applied.pools.insert(pool, deployment);
                    }
                    _ => applied.redis = Some(deployment),
                }
            }),
        };
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
                return Ok(Err(Problem {
                    reason: "ChildRejected".to_owned(),
                    message: format!("the API server refused {}: {}", child.describe(), status.message),
                }));
            }
            Err(source) => {
                return Err(ReconcileError::Kube {
                    action: format!("applying {}", child.describe()),
                    source,
                });
            }
        }
    }
    Ok(Ok(applied))
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// Creates the managed Redis's password Secret unless it exists. Never an update: the password is made once
/// (the Secret is immutable) and lives as long as the GameCluster, which owns it. The operator may only
/// create Secrets, not read them: "exists" is the API server's `409 AlreadyExists`. To rotate the password,
/// delete the Secret and restart Redis, gates and nodes (docs/security.md).
async fn ensure_auth_secret(
    client: &Client,
    namespace: &str,
    meta: &ObjectMeta,
) -> Result<(), ReconcileError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = meta.name.clone().unwrap_or_default();
    let secret = crate::locator::auth_secret(meta.clone(), &crate::locator::generate_password());
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %name, %namespace, "generated the managed Redis's password");
            Ok(())
        }
        // Made by an earlier reconcile: keep it.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(ReconcileError::Kube {
            action: format!("creating Secret/{name}"),
            source,
        }),
    }
}

/// Deletes optional children the spec no longer wants (the managed Redis once a Redis URL is given, the
/// NetworkPolicies once disabled, the objects of pools removed from the spec, `NAME-node` once the spec
/// moved to `spec.pools`), if this cluster owns them.
pub(super) async fn prune(
    client: &Client,
    namespace: &str,
    cluster: &GameCluster,
    children: &Children,
) -> Result<(), ReconcileError> {
    let name = cluster.name_any();
    let uid = cluster.uid().unwrap_or_default();
    let redis = child_name(&name, "redis");
    let wanted_policies: Vec<String> = children
        .network_policies
        .iter()
        .filter_map(|policy| policy.metadata.name.clone())
        .collect();
    for policy in [
        child_name(&name, "gate"),
        child_name(&name, "node"),
        redis.clone(),
    ] {
        if !wanted_policies.contains(&policy) {
            delete_owned::<NetworkPolicy>(client, namespace, &policy, &uid).await?;
        }
    }
    if children.redis.is_none() {
        delete_owned::<Deployment>(client, namespace, &redis, &uid).await?;
        delete_owned::<Service>(client, namespace, &redis, &uid).await?;
        // Its password Secret stays (the operator may not read Secrets, so not check that it owns one):
        // unused, and deleted with the GameCluster.
    }
    let selector = selector_string(&name, Component::Node);
    let wanted: Vec<String> = children
        .pools
        .iter()
        .filter_map(|pool| pool.deployment.metadata.name.clone())
        .collect();
    let wanted_pools: Vec<String> = children
        .pools
        .iter()
        .filter_map(|pool| pool.game_pool.as_ref().map(ResourceExt::name_any))
        .collect();
    let failed = |kind: &str| ReconcileError::kube(format!("deleting the {kind}s of removed pools"));
    let mut deleted = Vec::new();
    deleted.extend(
        pool_sync::prune_unwanted::<Deployment>(client, namespace, &selector, &uid, &wanted)
            .await
            .map_err(failed("Deployment"))?,
    );
    deleted.extend(
        pool_sync::prune_unwanted::<Service>(client, namespace, &selector, &uid, &wanted)
            .await
            .map_err(failed("Service"))?,
    );
    deleted.extend(
        pool_sync::prune_unwanted::<PodDisruptionBudget>(client, namespace, &selector, &uid, &wanted)
            .await
            .map_err(failed("PodDisruptionBudget"))?,
    );
    deleted.extend(
        pool_sync::prune_unwanted::<GamePool>(client, namespace, &selector, &uid, &wanted_pools)
            .await
            .map_err(failed("GamePool"))?,
    );
    if !deleted.is_empty() {
        tracing::info!(cluster = %name, %namespace, deleted = %deleted.join(", "), "deleted the objects of pools the spec no longer has");
    }
    Ok(())
}

async fn delete_owned<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<(), ReconcileError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let what = format!("{}/{name}", K::kind(&()));
    let Some(object) = api
        .get_metadata_opt(name)
        .await
        .map_err(ReconcileError::kube(format!("reading {what}")))?
    else {
        return Ok(());
    };
    let owned = object
        .owner_references()
        .iter()
        .any(|owner| owner.uid == owner_uid && owner.controller == Some(true));
    if owned {
        tracing::info!(%what, %namespace, "deleting a child the spec no longer wants");
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ReconcileError::Kube {
                    action: format!("deleting {what}"),
                    source,
                });
            }
        }
    }
    Ok(())
}
