//! The e2e harness's control plane: `switchyard-testkit`'s (the one every test of the workspace starts)
//! with all four components (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) on the
//! standard ports of one address ([`NODE_ADDRESS`](crate::netns::NODE_ADDRESS) inside the e2e namespace),
//! so the API server's default `lease` endpoint reconciler works and `default/kubernetes` has an endpoint.
//!
//! Files (PKI, kubeconfigs, etcd data, one log per process) live in the directory given in the config and
//! are kept with the run. [`ControlPlane::stop`] stops the processes in reverse start order; dropping a
//! [`ControlPlane`] stops them all at once.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use switchyard_testkit::{Ports, control_plane as testkit};

use crate::Error;

pub use switchyard_testkit::control_plane::{SERVICE_CIDR, SERVICE_IP};

/// etcd's client port.
pub const ETCD_PORT: u16 = 2379;
/// etcd's peer port.
pub const ETCD_PEER_PORT: u16 = 2380;
/// The API server's port.
pub const API_PORT: u16 = 6443;
/// kube-controller-manager's health port.
pub const KCM_PORT: u16 = 10257;
/// kube-scheduler's health port.
pub const SCHEDULER_PORT: u16 = 10259;

/// Where the control plane runs and from which binaries.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Directory with `etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `kubectl`.
    pub bin_dir: PathBuf,
    /// The address everything binds to and advertises (not loopback).
    pub address: Ipv4Addr,
    /// Where PKI, kubeconfigs, data and logs go (created).
    pub dir: PathBuf,
    /// How long each component may take to become ready.
    pub ready_timeout: Duration,
}

impl ControlPlaneConfig {
    /// The default config for the e2e namespace: binaries from `SWITCHYARD_K8S_BIN`, else from
    /// `e2e/toolchain/build.sh --print-bin-dir` (which builds nothing); address
    /// [`NODE_ADDRESS`](crate::netns::NODE_ADDRESS); 180 s per component.
    ///
    /// # Errors
    /// When the toolchain script cannot say where the binaries are (missing binaries are reported by
    /// [`ControlPlane::start`], with what to do).
    pub fn new(dir: PathBuf) -> Result<ControlPlaneConfig, Error> {
        Ok(ControlPlaneConfig {
            bin_dir: switchyard_testkit::toolchain_bin_dir()?,
            address: crate::netns::NODE_ADDRESS,
            dir,
            ready_timeout: Duration::from_secs(180),
        })
    }
}

/// A running control plane.
pub struct ControlPlane {
    plane: testkit::ControlPlane,
    client: kube::Client,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Generates the PKI and kubeconfigs, starts the four components and waits until each is ready.
    ///
    /// # Errors
    /// When a binary is missing, a file cannot be written, a process exits early (the error carries its
    /// log's tail) or is not ready within the config's timeout.
    pub async fn start(config: ControlPlaneConfig) -> Result<ControlPlane, Error> {
        let plane = testkit::ControlPlane::start_async(testkit::ControlPlaneConfig {
            bin_dir: config.bin_dir,
            address: config.address.into(),
            ports: Ports {
                etcd: ETCD_PORT,
                etcd_peer: ETCD_PEER_PORT,
                api: API_PORT,
                controller_manager: KCM_PORT,
                scheduler: SCHEDULER_PORT,
            },
            dir: config.dir,
            remove_dir: false,
            controller_manager: true,
            scheduler: true,
            users: Vec::new(),
            ready_timeout: config.ready_timeout,
        })
        .await?;
        let kubeconfig = plane.admin_kubeconfig();
        let client = client_from(&kubeconfig).await?;
        tracing::info!(server = %plane.server(), dir = %plane.dir().display(), "control plane ready");
        Ok(ControlPlane {
            plane,
            client,
            kubeconfig,
        })
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig (for kubectl and helm: `KUBECONFIG=<this>`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA certificate (PEM file): what a component on the node trusts the API server with.
    pub fn ca_file(&self) -> &Path {
        self.plane.ca_file()
    }

    /// The directory of the control-plane binaries (kubectl and helm are there too).
    pub fn bin_dir(&self) -> &Path {
        self.plane.bin_dir()
    }

    /// The directory with PKI, kubeconfigs and logs.
    pub fn dir(&self) -> &Path {
        self.plane.dir()
    }

    /// Stops the processes in reverse start order: SIGTERM, up to 10 s, SIGKILL.
    pub async fn stop(self) {
        self.plane.stop_async().await;
        tracing::info!("control plane stopped");
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("plane", &self.plane)
            .finish_non_exhaustive()
    }
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let file = Kubeconfig::read_from(kubeconfig).map_err(|error| {
        Error::Setup(format!(
            "cannot read the kubeconfig {}: {error}",
            kubeconfig.display()
        ))
    })?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|error| Error::Setup(format!("bad kubeconfig {}: {error}", kubeconfig.display())))?;
    kube::Client::try_from(config).map_err(Error::kube("build the admin client"))
}
