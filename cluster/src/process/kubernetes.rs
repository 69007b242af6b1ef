//! Kubernetes settings of gate and node processes: where a gate's node list comes from (the EndpointSlices
//! of the node Services of every pool), how a node learns it must drain (its pod's `switchyard.dev/drain`
//! annotation), and how it reports its bound players and routes on its pod. The operator sets them through
//! the pod contract.
//!
//! The flags exist in every build, so that a build without the `kubernetes` feature refuses them with a
//! clear error instead of ignoring what the operator asked.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ProcessError;
use crate::registry::Registry;

#[derive(Debug, Clone, Args)]
pub struct KubernetesArgs {
    /// Namespace of this pod (downward API `metadata.namespace`).
    #[arg(long, env = "SWITCHYARD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of this pod (downward API `metadata.name`).
    #[arg(long, env = "SWITCHYARD_POD_NAME")]
    pub pod_name: Option<String>,
    /// Headless Service(s) of the node pools whose EndpointSlices list the nodes (gates): one name, or a
    /// comma-separated list, one per pool (`NAME-node-lobby,NAME-node-battle`).
    #[arg(long, env = "SWITCHYARD_NODE_SERVICE")]
    pub node_service: Option<String>,
    /// Name of the node Service port that carries gate links.
    #[arg(long, env = "SWITCHYARD_LINK_PORT_NAME", default_value = "link")]
    pub link_port_name: String,
    /// Keep this pod's `switchyard.dev/bound-players` and pod-deletion-cost annotations up to date (nodes).
    #[arg(long, env = "SWITCHYARD_REPORT_POD")]
    pub report_pod: bool,
    /// Downward API annotations file to watch for `switchyard.dev/drain="true"` (nodes); without it, a node
    /// with --report-pod watches its pod through the API instead.
    #[arg(long, env = "SWITCHYARD_DRAIN_FILE")]
    pub drain_file: Option<PathBuf>,
}

impl KubernetesArgs {
    /// Whether a node has anything to do in Kubernetes (report its pod, watch for the drain annotation).
    pub fn node_in_kubernetes(&self) -> bool {
        self.report_pod || self.drain_file.is_some()
    }

    /// The node registry of a gate: the EndpointSlices of the node Services (every pool), watched until
    /// `shutdown`.
    ///
    /// # Errors
    /// A missing namespace or Service, no reachable API, or a build without the `kubernetes` feature.
    pub async fn node_registry(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Arc<dyn Registry>, ProcessError> {
        #[cfg(feature = "kubernetes")]
        {
            use crate::contract::env;
            use crate::kubernetes::{KubernetesRegistry, RegistryConfig};
            let needed_by = "--registry kubernetes";
            let namespace = self.namespace.clone().ok_or(ProcessError::Missing {
                needed_by,
                env: env::NAMESPACE,
                flag: "namespace",
            })?;
            let service = self.node_service.clone().ok_or(ProcessError::Missing {
                needed_by,
                env: env::NODE_SERVICE,
                flag: "node-service",
            })?;
            let config = RegistryConfig::for_services(namespace, RegistryConfig::parse_services(&service))
                .with_port_name(self.link_port_name.clone());
            Ok(Arc::new(KubernetesRegistry::start(
                client().await?,
                config,
                shutdown,
            )?))
        }
        #[cfg(not(feature = "kubernetes"))]
        {
            let _ = shutdown;
            Err(ProcessError::KubernetesNotBuilt("--registry kubernetes"))
        }
    }

    /// Starts what a node does in Kubernetes: the pod reporter (with `--report-pod`, fed by `bound`, also
    /// writing `routes`, the routes the node serves to clients) and the drain signal (the annotations file, else a watch on the pod). Returns a token cancelled when the pod
    /// is annotated for draining; outside Kubernetes (neither flag) it is never cancelled. Everything stops
    /// with `shutdown`.
    ///
    /// # Errors
    /// A missing pod name or namespace, no reachable API, or a build without the `kubernetes` feature.
    pub async fn start_node(
        &self,
        bound: watch::Receiver<usize>,
        routes: Vec<i32>,
        shutdown: &CancellationToken,
    ) -> Result<CancellationToken, ProcessError> {
        let requested = CancellationToken::new();
        if !self.node_in_kubernetes() {
            return Ok(requested);
        }
        #[cfg(feature = "kubernetes")]
        {
            use crate::kubernetes::{DrainConfig, DrainSignal, DrainSource, PodReporter, ReporterConfig};
            let signal = match &self.drain_file {
                Some(path) => DrainSignal::from_annotations_file(
                    path.clone(),
                    DrainSource::DEFAULT_POLL_INTERVAL,
                    shutdown,
                )?,
                None => {
                    let config = DrainConfig {
                        pod: self.pod()?,
                        source: DrainSource::PodWatch,
                    };
                    DrainSignal::start(client().await?, config, shutdown)?
                }
            };
            let reporter = if self.report_pod {
                let config = ReporterConfig::new(self.pod()?).with_routes(routes);
                Some(PodReporter::start(client().await?, config, bound, shutdown)?)
            } else {
                None
            };
            let fire = requested.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // Both live as long as the node: dropping them stops their tasks.
                let _reporter = reporter;
                if signal.requested().await.is_ok() {
                    fire.cancel();
                }
                shutdown.cancelled().await;
            });
            Ok(requested)
        }
        #[cfg(not(feature = "kubernetes"))]
        {
            let _ = (bound, routes, shutdown);
            Err(ProcessError::KubernetesNotBuilt(
                "--report-pod / --drain-file (SWITCHYARD_REPORT_POD / SWITCHYARD_DRAIN_FILE)",
            ))
        }
    }

    #[cfg(feature = "kubernetes")]
    fn pod(&self) -> Result<crate::kubernetes::PodRef, ProcessError> {
        use crate::contract::env;
        let needed_by = "--report-pod";
        let namespace = self.namespace.clone().ok_or(ProcessError::Missing {
            needed_by,
            env: env::NAMESPACE,
            flag: "namespace",
        })?;
        let name = self.pod_name.clone().ok_or(ProcessError::Missing {
            needed_by,
            env: env::POD_NAME,
            flag: "pod-name",
        })?;
        Ok(crate::kubernetes::PodRef::new(namespace, name))
    }
}

#[cfg(feature = "kubernetes")]
async fn client() -> Result<kube::Client, ProcessError> {
    kube::Client::try_default()
        .await
        .map_err(ProcessError::KubernetesClient)
}
