//! The operator against a real kube-apiserver + etcd + kube-controller-manager (no scheduler, no kubelet:
//! the harness marks pods ready itself). Run with
//! `cargo test --test operator_apiserver -- --ignored` once `e2e/toolchain/build.sh` has built the binaries
//! (`scripts/test.sh` does both). Missing binaries fail the tests with instructions.

#[path = "support/kube.rs"]
mod kube_support;
#[path = "operator_apiserver/lifecycle.rs"]
mod lifecycle;
#[path = "operator_apiserver/link_certificates.rs"]
mod link_certificates;
#[path = "operator_apiserver/operators.rs"]
mod operators;
#[path = "operator_apiserver/pools.rs"]
mod pools;
#[path = "operator_apiserver/validation.rs"]
mod validation;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use kube_support::{ControlPlane, LEASE_NAME, LeaseTimings, Operator, eventually, mark_pods_ready, metric};
use switchyard_cluster::link::tls::{LinkRole, check_pem};
use switchyard_operator::crd::NodeSpec;
use switchyard_operator::link_certs::{self, Leaf, LeafCheck, LinkCa, check_leaf};
use switchyard_operator::pools::RoutingPolicy;
use switchyard_operator::{GameCluster, GameClusterSpec, GameClusterStatus, GamePool, PoolSpec};

const WAIT: Duration = Duration::from_secs(60);

fn instance(name: &str) -> String {
    format!("app.kubernetes.io/instance={name}")
}

async fn setup(namespace: &str) -> (&'static ControlPlane, Client, String) {
    let plane = ControlPlane::shared_installed().await;
    let namespace = plane.namespace(namespace);
    (plane, plane.admin_client().await, namespace)
}

async fn create_cluster(client: &Client, namespace: &str, name: &str, spec: GameClusterSpec) -> GameCluster {
    let api: Api<GameCluster> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &GameCluster::new(name, spec))
        .await
        .expect("GameCluster created")
}

async fn names<K>(client: &Client, namespace: &str, selector: &str) -> Vec<String>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut names: Vec<String> = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .expect("list")
        .items
        .iter()
        .map(|object| object.name_any())
        .collect();
    names.sort();
    names
}

async fn owned_by<K>(client: &Client, namespace: &str, name: &str, uid: &str)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let object = api
        .get_metadata(name)
        .await
        .unwrap_or_else(|error| panic!("{}/{name} missing: {error}", K::kind(&())));
    let owner = object
        .owner_references()
        .iter()
        .find(|owner| owner.uid == uid)
        .unwrap_or_else(|| {
            panic!(
                "{}/{name} has no owner reference to the GameCluster",
                K::kind(&())
            )
        });
    assert_eq!(owner.kind, "GameCluster");
    assert_eq!(
        owner.controller,
        Some(true),
        "{}/{name}: controller owner",
        K::kind(&())
    );
}

async fn status(client: &Client, namespace: &str, name: &str) -> (Option<i64>, GameClusterStatus) {
    let api: Api<GameCluster> = Api::namespaced(client.clone(), namespace);
    let cluster = api.get(name).await.expect("GameCluster");
    (cluster.metadata.generation, cluster.status.unwrap_or_default())
}

fn condition(status: &GameClusterStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .map(|condition| (condition.status.clone(), condition.reason.clone()))
}

async fn event_reasons(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|event| event.reason)
        .collect()
}

async fn node_replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    api.get_opt(&format!("{name}-node"))
        .await
        .ok()
        .flatten()?
        .spec
        .replicas
}

async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    api.get_opt(LEASE_NAME)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|holder| !holder.is_empty())
}

fn pool_spec(name: &str, replicas: i32, routing: RoutingPolicy) -> PoolSpec {
    let node = NodeSpec {
        replicas,
        image: Some(format!("registry.example/game:{name}")),
        ..NodeSpec::default()
    };
    PoolSpec {
        name: name.to_owned(),
        routing,
        node,
    }
}

/// The data of a Secret, or `None` when it does not exist.
async fn secret_data(secrets: &Api<Secret>, name: &str) -> Option<BTreeMap<String, k8s_openapi::ByteString>> {
    secrets.get_opt(name).await.expect("read a Secret")?.data
}
