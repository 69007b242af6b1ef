//! The reconciler's side of the link certificates ([`crate::link_certs`] decides, this module reads and
//! writes): the CA Secret `NAME-link-ca` is created once and then only read; each leaf Secret is created
//! when missing and replaced (an `update` on the version read, so a concurrent writer is a conflict, retried)
//! when [`check_leaf`] says so. All three are owned by the GameCluster (deleted with it) and labelled
//! `app.kubernetes.io/component: link`.
//!
//! A Secret of one of those names that the GameCluster does not own, or a CA Secret that cannot be used,
//! is not overwritten: every link of the cluster depends on the CA, and someone put it there. It becomes a
//! [`Problem`] (the `Degraded` condition, reason `LinkCertificates`), counted in
//! `switchyard_operator_link_certificate_errors_total{reason}`, and is looked at again later; it never
//! crashes the operator.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client, Resource as _, ResourceExt};

use crate::children::{APP_NAME, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY};
use crate::crd::GameCluster;
use crate::link_certs::{
    self, Issue, Leaf, LeafCheck, LinkCa, SECRET_TYPE, ca_secret_data, ca_secret_name, check_leaf,
    leaf_secret_data,
};
use crate::metrics::{IssuedLabels, Metrics, ReasonLabels};
use crate::reconcile::ReconcileError;
use crate::status::Problem;

/// `app.kubernetes.io/component` of the three link Secrets.
pub const LINK_COMPONENT: &str = "link";
/// The `Degraded` reason of a link certificate Secret the operator cannot keep.
pub const PROBLEM_REASON: &str = "LinkCertificates";

/// Name, namespace, labels and owner of one of the cluster's link Secrets.
fn meta(cluster: &GameCluster, namespace: &str, name: String) -> ObjectMeta {
    let labels = BTreeMap::from([
        (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), cluster.name_any()),
        (LABEL_COMPONENT.to_owned(), LINK_COMPONENT.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]);
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        owner_references: cluster.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..Default::default()
    }
}

fn owned_by(secret: &Secret, cluster: &GameCluster) -> bool {
    let uid = cluster.uid().unwrap_or_default();
    !uid.is_empty()
        && secret
            .owner_references()
            .iter()
            .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

fn problem(metrics: &Metrics, reason: &'static str, message: String) -> Problem {
    metrics
        .link_certificate_errors
        .get_or_create(&ReasonLabels { reason })
        .inc();
    Problem {
        reason: PROBLEM_REASON.to_owned(),
        message,
    }
}

fn issued(metrics: &Metrics, kind: &'static str, reason: &'static str) {
    metrics
        .link_certificates_issued
        .get_or_create(&IssuedLabels { kind, reason })
        .inc();
}

/// Makes the cluster's link CA and leaves exist and be current. `Ok(Ok(t))`: all good, the next leaf renewal
/// is due at `t` (requeue by then); `Ok(Err(problem))`: a Secret the operator will not touch is in the way
/// (the spec's owner must act); `Err`: an API failure, retried.
pub(crate) async fn ensure(
    client: &Client,
    namespace: &str,
    cluster: &GameCluster,
    metrics: &Metrics,
) -> Result<Result<SystemTime, Problem>, ReconcileError> {
    let name = cluster.name_any();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let now = SystemTime::now();
    let ca = match ensure_ca(&api, namespace, cluster, metrics, now).await? {
        Ok(ca) => ca,
        Err(problem) => return Ok(Err(problem)),
    };
    let mut next = ca.not_after();
    for leaf in Leaf::ALL {
        let secret_name = leaf.secret_name(&name);
        let read = |source| ReconcileError::Kube {
            action: format!("reading Secret/{secret_name}"),
            source,
        };
        let stored = api.get_opt(&secret_name).await.map_err(read)?;
        if let Some(stored) = &stored
            && !owned_by(stored, cluster)
        {
            return Ok(Err(problem(
                metrics,
                "leaf_foreign",
                format!(
                    "Secret {secret_name} exists and is not owned by this GameCluster: the operator will not overwrite it (delete it, or rename the GameCluster)"
                ),
            )));
        }
        let why = match check_leaf(&ca, stored.as_ref().and_then(|s| s.data.as_ref()), leaf, now) {
            LeafCheck::Keep { renew_at } => {
                next = next.min(renew_at);
                continue;
            }
            LeafCheck::Issue(why) => why,
        };
        let pem = match ca.issue(leaf, &name, now) {
            Ok(pem) => pem,
            Err(error) => {
                return Ok(Err(problem(
                    metrics,
                    "mint_failed",
                    format!("{secret_name}: {error}"),
                )));
            }
        };
        let mut secret = Secret {
            metadata: meta(cluster, namespace, secret_name.clone()),
            type_: Some(SECRET_TYPE.to_owned()),
            data: Some(leaf_secret_data(&pem, &ca)),
            ..Default::default()
        };
        let write = |source| ReconcileError::Kube {
            action: format!("writing Secret/{secret_name}"),
            source,
        };
        match stored {
            None => {
                api.create(&PostParams::default(), &secret).await.map_err(write)?;
            }
            Some(stored) => {
                // On the version read: a Secret changed since is a conflict, and the next reconcile
                // looks again.
                secret.metadata.resource_version = stored.metadata.resource_version.clone();
                api.replace(&secret_name, &PostParams::default(), &secret)
                    .await
                    .map_err(write)?;
            }
        }
        issued(metrics, leaf.as_str(), why.as_str());
        tracing::info!(cluster = %name, %namespace, secret = %secret_name, reason = %why, "issued a link certificate");
        if let LeafCheck::Keep { renew_at } = check_leaf(&ca, secret.data.as_ref(), leaf, now) {
            next = next.min(renew_at);
        }
    }
    Ok(Ok(next))
}

/// The cluster's CA: read, or minted and created when there is none.
async fn ensure_ca(
    api: &Api<Secret>,
    namespace: &str,
    cluster: &GameCluster,
    metrics: &Metrics,
    now: SystemTime,
) -> Result<Result<LinkCa, Problem>, ReconcileError> {
    let name = cluster.name_any();
    let secret_name = ca_secret_name(&name);
    let kube = |action: &str| {
        let action = format!("{action} Secret/{secret_name}");
        move |source| ReconcileError::Kube { action, source }
    };
    if let Some(stored) = api.get_opt(&secret_name).await.map_err(kube("reading"))? {
        if !owned_by(&stored, cluster) {
            return Ok(Err(problem(
                metrics,
                "ca_foreign",
                format!(
                    "Secret {secret_name} exists and is not owned by this GameCluster: the operator will not use or overwrite a CA it did not mint (delete it, or rename the GameCluster)"
                ),
            )));
        }
        let data = stored.data.unwrap_or_default();
        return Ok(LinkCa::from_secret(&data, now).map_err(|error| {
            problem(
                metrics,
                "ca_invalid",
                format!(
                    "the link CA Secret {secret_name} cannot be used: {error} (to start over, delete it: a new CA and certificates are minted, and links re-handshake as gates and nodes reload them)"
                ),
            )
        }));
    }
    let (pem, ca) = match link_certs::new_ca(&name, namespace, now) {
        Ok(minted) => minted,
        Err(error) => return Ok(Err(problem(metrics, "mint_failed", error.to_string()))),
    };
    let secret = Secret {
        metadata: meta(cluster, namespace, secret_name.clone()),
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(ca_secret_data(&pem)),
        ..Default::default()
    };
    // Another writer first (a second replica during a leadership change) is a conflict: retried, then read.
    api.create(&PostParams::default(), &secret)
        .await
        .map_err(kube("creating"))?;
    issued(metrics, "ca", Issue::Missing.as_str());
    tracing::info!(cluster = %name, %namespace, secret = %secret_name, "minted the cluster's link CA");
    Ok(Ok(ca))
}
