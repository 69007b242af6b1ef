//! A real Kubernetes control plane for tests: etcd and kube-apiserver, plus kube-controller-manager
//! (Deployments get ReplicaSets and Pods, namespaces their `default` ServiceAccount, deletions cascade) and
//! kube-scheduler when asked for, from the binaries `e2e/toolchain/build.sh` builds (same flags as its
//! `smoke.sh`).
//!
//! Two shapes of the same thing: [`ControlPlaneConfig::local`] on 127.0.0.1 with free ports (the
//! `switchyard` package's and the cluster crate's tests; a loopback advertise address needs
//! `--endpoint-reconciler-type=none`), and a fixed address with the standard ports ([`Ports::standard`]),
//! which the e2e harness uses inside its private network namespace, where the `lease` endpoint reconciler
//! gives `default/kubernetes` an endpoint.
//!
//! Certificates come from [`pki`] (rcgen); each [`User`] gets a client certificate and
//! `<dir>/<user>.kubeconfig`. Each process runs under [`supervise`], so [`ControlPlane::stop`] stops them in
//! reverse start order (the API server before etcd: the other way round its graceful shutdown hangs),
//! dropping one stops them all at once, and nothing outlives the test binary. The directory (PKI,
//! kubeconfigs, etcd data, one log per process) is removed afterwards when the config says so, unless
//! `SWITCHYARD_KEEP_KUBE` is set.

mod pki;
mod supervise;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pki::Pki;
use supervise::Supervised;

use crate::{Error, HOW_TO_BUILD, free_port, toolchain_bin_dir};

/// The Service ClusterIP range.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's ClusterIP (first of [`SERVICE_CIDR`]).
pub const SERVICE_IP: &str = "10.96.0.1";

/// The control plane's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// etcd's client port.
    pub etcd: u16,
    /// etcd's peer port.
    pub etcd_peer: u16,
    /// The API server's port.
    pub api: u16,
    /// kube-controller-manager's (health) port.
    pub controller_manager: u16,
    /// kube-scheduler's (health) port.
    pub scheduler: u16,
}

impl Ports {
    /// The standard ports: 2379, 2380, 6443, 10257, 10259 (for an address of its own).
    pub fn standard() -> Ports {
        Ports {
            etcd: 2379,
            etcd_peer: 2380,
            api: 6443,
            controller_manager: 10257,
            scheduler: 10259,
        }
    }

    /// Free ports on 127.0.0.1 ([`free_port`]).
    pub fn free() -> Ports {
        Ports {
            etcd: free_port(),
            etcd_peer: free_port(),
            api: free_port(),
            controller_manager: free_port(),
            scheduler: free_port(),
        }
    }
}

/// A client identity: a certificate with this subject and `<file>.kubeconfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The file stem of its certificate, key and kubeconfig (`admin` -> `admin.kubeconfig`).
    pub file: String,
    /// The user name the API server sees (the certificate's CN).
    pub common_name: String,
    /// Its group (the certificate's O), e.g. `system:masters`.
    pub organization: Option<String>,
}

impl User {
    /// A user without a group.
    pub fn new(file: &str, common_name: &str) -> User {
        User {
            file: file.to_owned(),
            common_name: common_name.to_owned(),
            organization: None,
        }
    }

    /// The cluster admin: `admin.kubeconfig`, group `system:masters`. Always created.
    pub fn admin() -> User {
        User {
            organization: Some("system:masters".to_owned()),
            ..User::new("admin", "switchyard-admin")
        }
    }
}

/// What to start, where, and from which binaries.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Directory with `etcd`, `kube-apiserver`, `kubectl` (and the others asked for).
    pub bin_dir: PathBuf,
    /// The address everything binds to and advertises.
    pub address: IpAddr,
    /// The ports.
    pub ports: Ports,
    /// Where PKI, kubeconfigs, data and logs go (created).
    pub dir: PathBuf,
    /// Remove `dir` once the processes are stopped (at drop, stop, or when the test binary exits), unless
    /// `SWITCHYARD_KEEP_KUBE` is set.
    pub remove_dir: bool,
    /// Start kube-controller-manager.
    pub controller_manager: bool,
    /// Start kube-scheduler.
    pub scheduler: bool,
    /// Client identities besides the admin (and the controller-manager's and scheduler's own).
    pub users: Vec<User>,
    /// How long each component may take to become ready.
    pub ready_timeout: Duration,
}

impl ControlPlaneConfig {
    /// etcd and kube-apiserver on 127.0.0.1 with free ports, in a fresh directory under the temp dir that
    /// is removed afterwards; binaries from [`toolchain_bin_dir`]; 180 s per component.
    ///
    /// # Errors
    /// When the toolchain script cannot say where the binaries are.
    pub fn local() -> Result<ControlPlaneConfig, Error> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() % 1_000_000_000_000)
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("sy-kube-{}-{stamp}", std::process::id()));
        Ok(ControlPlaneConfig {
            bin_dir: toolchain_bin_dir()?,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Ports::free(),
            dir,
            remove_dir: true,
            controller_manager: false,
            scheduler: false,
            users: Vec::new(),
            ready_timeout: Duration::from_secs(180),
        })
    }

    /// Adds a client identity.
    pub fn user(mut self, user: User) -> ControlPlaneConfig {
        self.users.push(user);
        self
    }

    /// Also starts kube-controller-manager.
    pub fn with_controller_manager(mut self) -> ControlPlaneConfig {
        self.controller_manager = true;
        self
    }

    fn binaries(&self) -> Vec<&'static str> {
        let mut binaries = vec!["etcd", "kube-apiserver", "kubectl"];
        if self.controller_manager {
            binaries.push("kube-controller-manager");
        }
        if self.scheduler {
            binaries.push("kube-scheduler");
        }
        binaries
    }
}

/// Removes a directory once its stdin closes (the control plane is gone, or the test binary exited),
/// after the supervisors had time to stop their processes.
#[derive(Debug)]
struct Janitor {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    bin_dir: PathBuf,
    server: String,
    api_address: SocketAddr,
    ca_file: PathBuf,
    /// In start order.
    processes: Vec<Supervised>,
    janitor: Option<Janitor>,
}

impl ControlPlane {
    /// Writes the PKI and kubeconfigs, starts the components in order and waits until each is ready:
    /// etcd's port, the API server's `/readyz`, the controller-manager's `default` ServiceAccount in
    /// `default`, the scheduler's port. Blocks (up to the config's timeout per component); from async code
    /// use [`ControlPlane::start_async`].
    ///
    /// # Errors
    /// When a binary is missing, a file cannot be written, a process exits early (with its log's tail) or
    /// is not ready in time (with every log's tail).
    pub fn start(config: ControlPlaneConfig) -> Result<ControlPlane, Error> {
        let started = Instant::now();
        let missing: Vec<&str> = config
            .binaries()
            .into_iter()
            .filter(|binary| !config.bin_dir.join(binary).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Setup(format!(
                "the Kubernetes binaries {missing:?} are missing from {}: {HOW_TO_BUILD}",
                config.bin_dir.display()
            )));
        }
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        supervise::install(&dir)?;
        let keep = std::env::var_os("SWITCHYARD_KEEP_KUBE").is_some();
        let janitor = if config.remove_dir && !keep {
            Some(Janitor::start(&dir)?)
        } else {
            None
        };
        let host = config.address.to_string();
        let ports = config.ports;
        let api_address = SocketAddr::new(config.address, ports.api);
        let server = format!("https://{api_address}");
        let mut users = vec![
            User::admin(),
            User::new("front-proxy-client", "front-proxy-client"),
            User::new("kcm", "system:kube-controller-manager"),
            User::new("scheduler", "system:kube-scheduler"),
        ];
        users.extend(config.users.iter().cloned());
        let pki = Pki::generate(&dir.join("pki"), config.address, SERVICE_IP, &users)?;
        for user in &users {
            pki.write_kubeconfig(&dir, &server, user)?;
        }
        let mut plane = ControlPlane {
            dir: dir.clone(),
            bin_dir: config.bin_dir.clone(),
            server,
            api_address,
            ca_file: pki.file("ca.crt"),
            processes: Vec::new(),
            janitor,
        };
        let path = |name: &str| pki.file(name).display().to_string();
        let kubeconfig = |user: &str| dir.join(format!("{user}.kubeconfig")).display().to_string();

        let etcd_url = format!("http://{host}:{}", ports.etcd);
        let peer_url = format!("http://{host}:{}", ports.etcd_peer);
        plane.spawn(
            "etcd",
            vec![
                "--name=test".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=test={peer_url}"),
                "--initial-cluster-state=new".into(),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;
        let etcd_address = SocketAddr::new(config.address, ports.etcd);
        plane.wait_ready("etcd", config.ready_timeout, |_| {
            TcpStream::connect_timeout(&etcd_address, Duration::from_secs(1)).is_ok()
        })?;

        // The lease reconciler refuses a loopback advertise address.
        let reconciler = if config.address.is_loopback() {
            "none"
        } else {
            "lease"
        };
        plane.spawn(
            "kube-apiserver",
            vec![
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={host}"),
                format!("--advertise-address={host}"),
                format!("--secure-port={}", ports.api),
                format!("--tls-cert-file={}", path("apiserver.crt")),
                format!("--tls-private-key-file={}", path("apiserver.key")),
                format!("--client-ca-file={}", path("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", path("sa.pub")),
                format!("--service-account-signing-key-file={}", path("sa.key")),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=RBAC".into(),
                format!("--requestheader-client-ca-file={}", path("ca.crt")),
                "--requestheader-allowed-names=front-proxy-client".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!("--proxy-client-cert-file={}", path("front-proxy-client.crt")),
                format!("--proxy-client-key-file={}", path("front-proxy-client.key")),
                format!("--endpoint-reconciler-type={reconciler}"),
                // A real node's hostname may not resolve: logs, exec and port-forward reach its kubelet at
                // its InternalIP.
                "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;
        plane.wait_ready("kube-apiserver /readyz", config.ready_timeout, |plane| {
            plane
                .kubectl_output(&["get", "--raw", "/readyz"])
                .is_ok_and(|out| out.status.success())
        })?;

        if config.controller_manager {
            let kcm = kubeconfig("kcm");
            plane.spawn(
                "kube-controller-manager",
                vec![
                    format!("--kubeconfig={kcm}"),
                    format!("--authentication-kubeconfig={kcm}"),
                    format!("--authorization-kubeconfig={kcm}"),
                    format!("--bind-address={host}"),
                    format!("--secure-port={}", ports.controller_manager),
                    "--leader-elect=false".into(),
                    "--use-service-account-credentials=true".into(),
                    format!("--service-account-private-key-file={}", path("sa.key")),
                    format!("--root-ca-file={}", path("ca.crt")),
                    format!("--cluster-signing-cert-file={}", path("ca.crt")),
                    format!("--cluster-signing-key-file={}", path("ca.key")),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    "--v=1".into(),
                ],
            )?;
            // The service-account controller creates `default` in every namespace once it runs.
            plane.wait_ready("kube-controller-manager", config.ready_timeout, |plane| {
                plane
                    .kubectl_output(&["-n", "default", "get", "serviceaccount", "default"])
                    .is_ok_and(|out| out.status.success())
            })?;
        }
        if config.scheduler {
            let scheduler = kubeconfig("scheduler");
            plane.spawn(
                "kube-scheduler",
                vec![
                    format!("--kubeconfig={scheduler}"),
                    format!("--authentication-kubeconfig={scheduler}"),
                    format!("--authorization-kubeconfig={scheduler}"),
                    format!("--bind-address={host}"),
                    format!("--secure-port={}", ports.scheduler),
                    "--leader-elect=false".into(),
                    "--v=1".into(),
                ],
            )?;
            let address = SocketAddr::new(config.address, ports.scheduler);
            plane.wait_ready("kube-scheduler", config.ready_timeout, |_| {
                TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
            })?;
        }
        eprintln!(
            "control plane up in {:.1}s: {} (logs in {})",
            started.elapsed().as_secs_f64(),
            plane.server,
            plane.dir.display()
        );
        Ok(plane)
    }

    /// [`ControlPlane::start`] on a blocking thread of the current tokio runtime.
    ///
    /// # Errors
    /// As [`ControlPlane::start`].
    pub async fn start_async(config: ControlPlaneConfig) -> Result<ControlPlane, Error> {
        tokio::task::spawn_blocking(move || ControlPlane::start(config))
            .await
            .map_err(|error| Error::Setup(format!("the control plane's start-up thread failed: {error}")))?
    }

    fn spawn(&mut self, name: &str, args: Vec<String>) -> Result<(), Error> {
        let process = Supervised::start(&self.dir, name, &self.bin_dir.join(name), &args)?;
        self.processes.push(process);
        Ok(())
    }

    /// Polls `ready` until it holds; fails when a process exits or `within` passes.
    fn wait_ready(
        &mut self,
        what: &str,
        within: Duration,
        mut ready: impl FnMut(&ControlPlane) -> bool,
    ) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(dead) = self.processes.iter_mut().position(|process| !process.alive()) {
                let dead = &self.processes[dead];
                return Err(Error::Exited {
                    what: format!("{} (while waiting for {what})", dead.name),
                    log: dead.log.clone(),
                    tail: dead.log_tail(30),
                });
            }
            if started.elapsed() > within {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: within,
                    logs: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The end of every process's log (for failure messages).
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|process| process.log_tail(30))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `https://<address>:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The API server's address.
    pub fn api_address(&self) -> SocketAddr {
        self.api_address
    }

    /// The cluster CA certificate (PEM file).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The admin (`system:masters`) kubeconfig: `KUBECONFIG=<this>` for kubectl and helm.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.kubeconfig("admin")
    }

    /// The kubeconfig of a [`User`] of the config, by its `file`.
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.kubeconfig"))
    }

    /// The directory of the binaries (kubectl and helm are there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The directory with PKI, kubeconfigs and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// kubectl as the admin, with a 60 s request timeout.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin_dir.join("kubectl"));
        command
            .env("KUBECONFIG", self.admin_kubeconfig())
            .arg("--request-timeout=60s")
            .stdin(Stdio::null());
        command
    }

    fn kubectl_output(&self, args: &[&str]) -> std::io::Result<Output> {
        self.kubectl().args(args).output()
    }

    /// Stops the processes in reverse start order (each SIGTERM, then SIGKILL after 10 s) and removes the
    /// directory when the config said so.
    pub fn stop(mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
    }

    /// [`ControlPlane::stop`] on a blocking thread of the current tokio runtime.
    pub async fn stop_async(self) {
        let _ = tokio::task::spawn_blocking(move || self.stop()).await;
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // All at once: each supervisor stops its process.
        for process in &mut self.processes {
            process.signal_stop();
        }
        if let Some(janitor) = &mut self.janitor {
            drop(janitor.stdin.take());
        }
    }
}

impl Janitor {
    fn start(dir: &Path) -> Result<Janitor, Error> {
        let mut child = Command::new("bash")
            .args([
                "-c",
                "read -r _ || true; sleep 12; rm -rf \"$0\"",
                &dir.display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io("start the directory janitor"))?;
        let stdin = child.stdin.take();
        Ok(Janitor { child, stdin })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // Not waited for: it outlives the test on purpose (it waits for the supervisors).
        let _ = self.child.try_wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_named_with_the_fix() {
        let dir = crate::TempDir::new("no-bins");
        let config = ControlPlaneConfig {
            bin_dir: dir.path().to_owned(),
            dir: dir.path().join("plane"),
            ..ControlPlaneConfig::local().expect("config")
        }
        .with_controller_manager();
        let error = ControlPlane::start(config).expect_err("no binaries").to_string();
        assert!(
            error.contains("kube-controller-manager") && error.contains("e2e/toolchain/build.sh"),
            "{error}"
        );
    }
}
