//! [`KubernetesRegistry`]: the node set from the EndpointSlices of the node Services (one per pool), kept
//! current by a kube-rs reflector.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::config::RegistryConfig;
use super::translate::node_endpoints;
use super::{ErrorLatch, KubernetesError};
use crate::registry::{NodeEndpoint, Registry};

/// A [`Registry`] fed by the EndpointSlices of the node Services of every pool.
///
/// One tokio task watches the slices labelled `kubernetes.io/service-name` with one of the configured
/// Services ([`RegistryConfig::label_selector`]) in the configured namespace (list + watch, with kube's default backoff on errors), keeps them in a reflector store, and
/// publishes [`node_endpoints`] of the whole store whenever it changes. The set starts empty and is first
/// published complete after the initial list ([`KubernetesRegistry::wait_synced`]); while the API server is
/// unreachable the last known set stays published. The task stops when the token given to
/// [`KubernetesRegistry::start`] is cancelled or when the registry is dropped.
#[derive(Debug)]
pub struct KubernetesRegistry {
    nodes: watch::Receiver<Vec<NodeEndpoint>>,
    store: Store<EndpointSlice>,
    config: RegistryConfig,
    _stop: DropGuard,
}

impl KubernetesRegistry {
    /// Validates `config` and starts watching. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`KubernetesError::Config`] when `config` is invalid; API errors are retried inside the task.
    pub fn start(
        client: Client,
        config: RegistryConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, KubernetesError> {
        config.validate()?;
        let stop = shutdown.child_token();
        let api: Api<EndpointSlice> = Api::namespaced(client, &config.namespace);
        let (store, writer) = reflector::store();
        let (tx, nodes) = watch::channel(Vec::new());
        tokio::spawn(run(api, config.clone(), store.clone(), writer, tx, stop.clone()));
        Ok(KubernetesRegistry {
            nodes,
            store,
            config,
            _stop: stop.drop_guard(),
        })
    }

    /// Resolves once the initial list of slices has been received and published.
    ///
    /// # Errors
    /// [`KubernetesError::Stopped`] when the task stopped before that.
    pub async fn wait_synced(&self) -> Result<(), KubernetesError> {
        self.store
            .wait_until_ready()
            .await
            .map_err(|_| KubernetesError::Stopped {
                component: "registry",
                awaited: "the first list of EndpointSlices",
            })
    }

    /// The configuration the registry runs with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }
}

impl Registry for KubernetesRegistry {
    fn nodes(&self) -> watch::Receiver<Vec<NodeEndpoint>> {
        self.nodes.clone()
    }
}

async fn run(
    api: Api<EndpointSlice>,
    config: RegistryConfig,
    store: Store<EndpointSlice>,
    writer: reflector::store::Writer<EndpointSlice>,
    tx: watch::Sender<Vec<NodeEndpoint>>,
    stop: CancellationToken,
) {
    let selector = config.label_selector();
    let mut latch = ErrorLatch::new(format!(
        "watching EndpointSlices of Service(s) {}/{}",
        config.namespace,
        config.services.join(",")
    ));
    let events = watcher(api, watcher::Config::default().labels(&selector))
        // Managed fields are large and never read: keep them out of the store.
        .map_ok(|event| event.modify(|slice| slice.metadata.managed_fields = None))
        .default_backoff()
        .reflect(writer);
    let mut events = std::pin::pin!(events);
    tracing::debug!(selector, namespace = config.namespace, "registry watch starting");
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => break,
            event = events.next() => event,
        };
        match event {
            None => break, // the watcher never ends by itself; be safe anyway
            Some(Err(error)) => latch.failed(&error, None),
            Some(Ok(event)) => {
                latch.succeeded();
                match event {
                    // The store swaps in the new list atomically at InitDone: publish then, not per item.
                    watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                        publish(&store, &config.port_name, &tx)
                    }
                }
            }
        }
    }
    tracing::debug!(
        namespace = config.namespace,
        services = config.services.join(","),
        "registry watch stopped"
    );
}

fn publish(store: &Store<EndpointSlice>, port_name: &str, tx: &watch::Sender<Vec<NodeEndpoint>>) {
    let slices: Vec<Arc<EndpointSlice>> = store.state();
    let nodes = node_endpoints(slices.iter().map(Arc::as_ref), port_name);
    tx.send_if_modified(|current| {
        if *current == nodes {
            false
        } else {
            tracing::debug!(nodes = nodes.len(), "registry: node set changed");
            *current = nodes;
            true
        }
    });
}
