//! The end-to-end test harness of Switchyard: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) and a real node (containerd + runc, the kubelet, the CNI
//! bridge, kube-proxy and CoreDNS), all built from Go modules or Debian packages by `e2e/toolchain/build.sh`
//! and `scripts/container-tools.sh`, all inside a network namespace that the test creates for itself. Pods
//! run the container images `scripts/image.sh` builds (e2e/run.sh imports them into the node).
//!
//! A test looks like this (see `tests/harness.rs`):
//!
//! ```no_run
//! # async fn body(run: switchyard_e2e::RunDir) -> Result<(), switchyard_e2e::Error> {
//! let harness = switchyard_e2e::Harness::start(run).await?;
//! let client = harness.client();
//! // ... create Deployments, Services, a GameCluster; talk to ClusterIPs, NodePorts, pod IPs ...
//! harness.shutdown().await;
//! # Ok(()) }
//! #[test]
//! #[ignore = "run via e2e/run.sh"]
//! fn my_journey() {
//!     // Outside a namespace this runs the same test again inside a new one and returns None.
//!     let Some(run) = switchyard_e2e::isolate().unwrap_or_else(|error| panic!("{error}")) else { return };
//!     switchyard_e2e::runtime().block_on(body(run)).expect("journey");
//! }
//! ```
//!
//! - [`netns`]: how a test gets into its own network (and pid, mount) namespace, with `10.244.0.1/16` on
//!   its loopback device; nothing listens outside it, and everything in it dies with the test.
//! - [`ControlPlane`]: certificates, kubeconfigs, the four control-plane processes, readiness, teardown.
//! - [`RealNode`]: the node `e2e-node`: containerd + runc, the kubelet, the CNI bridge, kube-proxy and
//!   CoreDNS. Pods get bridge addresses (`10.85.0.0/24`), Services are kube-proxy's iptables rules, names
//!   resolve through CoreDNS; the test process shares the node's network namespace, so it reaches pod IPs,
//!   ClusterIPs and NodePorts like a process on a node would.
//! - [`PodWatch`]: how the kubelet ended each container (from the pod status) and copies of the container
//!   logs, both kept after the kubelet removes a deleted pod's containers.
//! - [`conntrack`]: which pod behind a Service address a client connection reached (kube-proxy's DNAT).
//! - [`RunDir`]: the per-run directory that keeps every log (it is never removed by the run itself; only
//!   the oldest runs beyond [`run_dir::KEEP_RUNS`] are pruned when a new run starts).
//!
//! Teardown happens on every path: [`Harness::shutdown`] stops the node (pods first) and then the control
//! plane in reverse start order; dropping a [`Harness`] (a panicking test) kills every process group at
//! once; and the test process is the init of its pid namespace, so the kernel kills whatever is left when it
//! exits.

pub mod conntrack;
pub mod control_plane;
pub mod coredns;
pub mod netns;
pub mod network_policy;
pub mod node;
mod objects;
pub mod pod_watch;
pub mod process;
pub mod run_dir;

use std::path::PathBuf;
use std::time::Duration;

pub use control_plane::{ControlPlane, ControlPlaneConfig};
pub use netns::isolate;
pub use node::{NodeConfig, RealNode};
pub use pod_watch::{ContainerExit, PodWatch};
pub use run_dir::RunDir;

/// Errors of the harness. Each says what failed and, where the fix is on the caller's side, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The environment is not set up for the harness (a missing binary, no root, ...); the message says
    /// what to do.
    #[error("{0}")]
    Setup(String),
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        after: Duration,
    },
    /// A process of the harness exited early; its log says why.
    #[error("{what} exited early ({status}); last lines of {log}:\n{tail}")]
    Exited {
        /// Which process.
        what: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The control plane (`switchyard-testkit`) could not be started.
    #[error("control plane: {0}")]
    ControlPlane(#[from] switchyard_testkit::Error),
    /// The test run inside the network namespace failed; its output is above and its logs are in `run_dir`.
    #[error(
        "the test inside the network namespace failed ({status}); logs: {run_dir}; it panicked:\n{panics}"
    )]
    Isolated {
        /// The child's exit status.
        status: String,
        /// Where its logs are.
        run_dir: PathBuf,
        /// The child's last panic messages, repeated from its output.
        panics: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Kube {
            what,
            source: Box::new(source),
        }
    }
}

/// A multi-threaded tokio runtime for a test body (two worker threads: the machine is small).
///
/// # Panics
/// When the runtime cannot be built (out of threads or file descriptors), which no test can survive.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A running control plane plus a real node on it, and a [`PodWatch`] over both. Dropping it kills
/// everything at once; call [`Harness::shutdown`] for the orderly path.
#[derive(Debug)]
pub struct Harness {
    // Field order is drop order: the pods' watch, then the node, before the control plane they talk to.
    pods: PodWatch,
    node: Option<RealNode>,
    control_plane: Option<ControlPlane>,
    run: RunDir,
}

impl Harness {
    /// Starts the control plane in `run`'s directory and the real node on it (with every image archive
    /// of [`NodeConfig::new`]), and installs a tracing subscriber that logs to stderr and to `harness.log`
    /// (see [`RunDir::init_tracing`]).
    ///
    /// # Errors
    /// When a binary or an image archive is missing, a process exits early, or the control plane or the
    /// node is not ready in time.
    pub async fn start(run: RunDir) -> Result<Harness, Error> {
        run.init_tracing();
        tracing::info!(dir = %run.path().display(), "e2e run directory (kept)");
        let config = ControlPlaneConfig::new(run.path().join("control-plane"))?;
        let control_plane = ControlPlane::start(config).await?;
        let node_config = NodeConfig::new(&control_plane, run.path().join("node"))?;
        let node = RealNode::start(&control_plane, node_config).await?;
        let pods = PodWatch::start(
            control_plane.client(),
            node.pod_logs_dir(),
            run.path().join("pod-logs"),
        )?;
        Ok(Harness {
            pods,
            node: Some(node),
            control_plane: Some(control_plane),
            run,
        })
    }

    /// An admin (system:masters) client of the API server.
    pub fn client(&self) -> kube::Client {
        self.control_plane().client()
    }

    /// The control plane (kubeconfig path, API address, binaries).
    ///
    /// # Panics
    /// Never: the control plane lives as long as the harness (only `shutdown` takes it).
    pub fn control_plane(&self) -> &ControlPlane {
        self.control_plane
            .as_ref()
            .expect("the control plane lives until shutdown")
    }

    /// The real node (crictl, fault injection, network dumps).
    ///
    /// # Panics
    /// Never: the node lives as long as the harness (only `shutdown` takes it).
    pub fn node(&self) -> &RealNode {
        self.node.as_ref().expect("the node lives until shutdown")
    }

    /// How containers ended, and their logs.
    pub fn pods(&self) -> &PodWatch {
        &self.pods
    }

    /// Creates namespace `name` (if it does not exist) and waits (up to 60 s) for its `default`
    /// ServiceAccount, without which the API server refuses pods.
    ///
    /// # Errors
    /// When the API refuses the namespace or the controller-manager does not create the account in time.
    pub async fn create_namespace(&self, name: &str) -> Result<(), Error> {
        use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
        use kube::api::{Api, PostParams};
        let namespaces: Api<Namespace> = Api::all(self.client());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .map_err(|e| Error::Setup(format!("namespace object: {e}")))?;
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(Error::kube(format!("create namespace {name}"))(error)),
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), name);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = accounts.get_opt("default").await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("ServiceAccount {name}/default (kube-controller-manager)"),
                    after: Duration::from_secs(60),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The run directory.
    pub fn run(&self) -> &RunDir {
        &self.run
    }

    /// Stops the node (its pods, kube-proxy, the kubelet, containerd) and the control plane in reverse
    /// start order. Logs stay in the run directory.
    pub async fn shutdown(mut self) {
        if let Some(node) = self.node.take() {
            node.stop().await;
        }
        self.pods.stop();
        if let Some(control_plane) = self.control_plane.take() {
            control_plane.stop().await;
        }
        tracing::info!(dir = %self.run.path().display(), "e2e harness stopped; logs kept");
    }
}
