//! `switchyard operator` (the GameCluster operator) and `switchyard crd` (print its CRD YAML). Flags and
//! environment are validated here; everything else is the `switchyard-operator` crate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args};
use switchyard_operator::{Defaults, LeaseSettings, OperatorConfig};
use tokio_util::sync::CancellationToken;

use switchyard_cluster::process::parse_duration;

#[derive(Debug, Args)]
pub(crate) struct OperatorCommand {
    /// Log filter, e.g. info or switchyard_operator=debug.
    #[arg(long, env = "SWITCHYARD_LOG", default_value = "info")]
    pub(crate) log: String,
    /// Watch only this namespace (a Role is then enough); default every namespace (needs a ClusterRole).
    #[arg(long, env = "SWITCHYARD_WATCH_NAMESPACE")]
    pub(crate) watch_namespace: Option<String>,
    /// Image of gates and nodes when a GameCluster names none (the chart passes the operator's own image).
    #[arg(long, env = "SWITCHYARD_DEFAULT_IMAGE", default_value = concat!("switchyard:", env!("CARGO_PKG_VERSION")))]
    pub(crate) default_image: String,
    /// Reconciles at once at most (never two for one GameCluster).
    #[arg(long, env = "SWITCHYARD_CONCURRENCY", default_value_t = 4)]
    pub(crate) concurrency: u16,
    /// Admin HTTP address: /healthz, /readyz (leader or standby that reaches the API), /metrics.
    #[arg(long, env = "SWITCHYARD_HTTP", default_value = "0.0.0.0:9090")]
    pub(crate) http: SocketAddr,
    /// Elect a leader on a Lease so that several replicas are safe (false: one replica only).
    #[arg(long, env = "SWITCHYARD_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub(crate) leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "SWITCHYARD_LEASE_NAME", default_value = "switchyard-operator")]
    pub(crate) lease_name: String,
    /// Namespace of the Lease; default the pod's namespace (SWITCHYARD_NAMESPACE), else --watch-namespace.
    #[arg(long, env = "SWITCHYARD_LEASE_NAMESPACE")]
    pub(crate) lease_namespace: Option<String>,
    /// The operator pod's namespace (downward API `metadata.namespace`).
    #[arg(long, env = "SWITCHYARD_NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// This replica's identity in the Lease and in Events; default the pod name (SWITCHYARD_POD_NAME),
    /// else the host name and process id.
    #[arg(long, env = "SWITCHYARD_POD_NAME")]
    pub(crate) identity: Option<String>,
    /// How long a Lease that is not renewed stays valid.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) lease_duration: Duration,
    /// How long the leader tries to renew before it steps down.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) renew_deadline: Duration,
    /// How often standbys retry and the leader renews.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) retry_period: Duration,
    /// After SIGTERM, how long in-flight reconciles may take.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) shutdown_grace: Duration,
    /// How often the leader reads every node pod's load (`/load` on its admin port) into the pod's
    /// bound-players, pod-deletion-cost and routes annotations.
    #[arg(long, env = "SWITCHYARD_LOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub(crate) load_interval: Duration,
    /// How long one node pod may take to answer its load.
    #[arg(long, env = "SWITCHYARD_LOAD_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub(crate) load_timeout: Duration,
}

impl OperatorCommand {
    fn config(&self) -> anyhow::Result<OperatorConfig> {
        let identity = self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "operator".to_owned());
            format!("{host}-{}", std::process::id())
        });
        let leader_election = if self.leader_elect {
            let namespace = self
                .lease_namespace
                .clone()
                .or_else(|| self.namespace.clone())
                .or_else(|| self.watch_namespace.clone())
                .context(
                    "leader election needs the Lease's namespace: set SWITCHYARD_NAMESPACE (the pod's \
                     namespace) or --lease-namespace, or pass --leader-elect=false for one replica",
                )?;
            Some(LeaseSettings {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
                ..LeaseSettings::new(namespace, self.lease_name.clone(), identity.clone())
            })
        } else {
            None
        };
        let config = OperatorConfig {
            namespace: self.watch_namespace.clone(),
            defaults: Defaults {
                image: self.default_image.clone(),
                operator_namespace: self.namespace.clone(),
            },
            concurrency: self.concurrency,
            admin: Some(self.http),
            leader_election,
            instance: identity,
            shutdown_grace: self.shutdown_grace,
            load: switchyard_operator::load::LoadSettings {
                interval: self.load_interval,
                timeout: self.load_timeout,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// `switchyard operator`: runs until SIGTERM / Ctrl-C, then finishes in-flight reconciles and releases the
/// Lease.
pub(crate) async fn run(command: OperatorCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = command.config()?;
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster or kubeconfig)")?;
    switchyard_operator::run(client, config, shutdown).await?;
    Ok(())
}

/// `switchyard crd`: prints the GameCluster CustomResourceDefinition (what `crds/gamecluster.yaml` holds).
pub(crate) fn crd() -> anyhow::Result<()> {
    let yaml = switchyard_operator::crd_yaml().context("cannot serialize the CRD")?;
    print!("{yaml}");
    Ok(())
}
