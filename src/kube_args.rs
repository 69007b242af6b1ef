//! Kubernetes wiring of gate and node processes: where the node list comes from (the EndpointSlices of the
//! node Service), how a node learns it must drain (its pod's `switchyard.dev/drain` annotation), and how it
//! reports its bound players on its pod. The operator sets these through the environment variables below.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use switchyard_cluster::kubernetes::{
    DrainConfig, DrainSignal, DrainSource, KubernetesRegistry, PodRef, PodReporter, RegistryConfig,
    ReporterConfig,
};
use switchyard_node::Node;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub(crate) struct KubernetesArgs {
    /// Namespace of this pod (downward API `metadata.namespace`).
    #[arg(long, env = "SWITCHYARD_NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// Name of this pod (downward API `metadata.name`).
    #[arg(long, env = "SWITCHYARD_POD_NAME")]
    pub(crate) pod_name: Option<String>,
    /// Headless Service of the node pool whose EndpointSlices list the nodes (gates).
    #[arg(long, env = "SWITCHYARD_NODE_SERVICE")]
    pub(crate) node_service: Option<String>,
    /// Name of the node Service port that carries gate links.
    #[arg(long, env = "SWITCHYARD_LINK_PORT_NAME", default_value = "link")]
    pub(crate) link_port_name: String,
    /// Keep this pod's `switchyard.dev/bound-players` and pod-deletion-cost annotations up to date (nodes).
    #[arg(long, env = "SWITCHYARD_REPORT_POD")]
    pub(crate) report_pod: bool,
    /// Downward API annotations file to watch for `switchyard.dev/drain="true"` (nodes); without it, a node
    /// with --report-pod watches its pod through the API instead.
    #[arg(long, env = "SWITCHYARD_DRAIN_FILE")]
    pub(crate) drain_file: Option<PathBuf>,
}

impl KubernetesArgs {
    fn pod(&self) -> anyhow::Result<PodRef> {
        let namespace = self
            .namespace
            .clone()
            .context("SWITCHYARD_NAMESPACE (--namespace) is not set")?;
        let name = self
            .pod_name
            .clone()
            .context("SWITCHYARD_POD_NAME (--pod-name) is not set")?;
        Ok(PodRef::new(namespace, name))
    }

    async fn client() -> anyhow::Result<kube::Client> {
        kube::Client::try_default()
            .await
            .context("cannot reach the Kubernetes API (in-cluster or kubeconfig)")
    }

    /// The node registry of a gate: the EndpointSlices of the node Service.
    pub(crate) async fn node_registry(
        &self,
        shutdown: CancellationToken,
    ) -> anyhow::Result<KubernetesRegistry> {
        let namespace = self
            .namespace
            .clone()
            .context("--registry kubernetes needs SWITCHYARD_NAMESPACE")?;
        let service = self
            .node_service
            .clone()
            .context("--registry kubernetes needs SWITCHYARD_NODE_SERVICE")?;
        let config = RegistryConfig::new(namespace, service).with_port_name(self.link_port_name.clone());
        Ok(KubernetesRegistry::start(
            Self::client().await?,
            config,
            &shutdown,
        )?)
    }

    /// Starts what a node does in Kubernetes (the pod reporter) and returns a token cancelled when the
    /// pod is annotated for draining. Outside Kubernetes (no flags) the token is never cancelled.
    pub(crate) async fn drain_signal(
        &self,
        node: &Node,
        shutdown: CancellationToken,
    ) -> anyhow::Result<CancellationToken> {
        let requested = CancellationToken::new();
        if !self.report_pod && self.drain_file.is_none() {
            return Ok(requested);
        }
        let signal = match &self.drain_file {
            Some(path) => DrainSignal::from_annotations_file(
                path.clone(),
                DrainSource::DEFAULT_POLL_INTERVAL,
                &shutdown,
            )?,
            None => {
                let config = DrainConfig {
                    pod: self.pod()?,
                    source: DrainSource::PodWatch,
                };
                DrainSignal::start(Self::client().await?, config, &shutdown)?
            }
        };
        let reporter = if self.report_pod {
            let config = ReporterConfig::new(self.pod()?);
            Some(PodReporter::start(
                Self::client().await?,
                config,
                node.watch_bound_players(),
                &shutdown,
            )?)
        } else {
            None
        };
        let fire = requested.clone();
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
}
