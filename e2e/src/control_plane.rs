//! A real Kubernetes control plane for one test: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, the binaries `e2e/toolchain/build.sh` builds from Go modules. This is `smoke.sh`'s logic
//! in Rust (same flags), with two differences: certificates come from `rcgen` (ECDSA P-256) instead of
//! openssl, and the ports are fixed because the network namespace is private.
//!
//! Everything binds to one address ([`NODE_ADDRESS`](crate::netns::NODE_ADDRESS) inside the e2e namespace),
//! so the API server's default `lease` endpoint reconciler works and `default/kubernetes` has an endpoint.
//! Files (PKI, kubeconfigs, etcd data, one log per process) live in the directory given in the config.
//! [`ControlPlane::stop`] stops the processes in reverse start order (the API server before etcd: the other
//! way round its graceful shutdown hangs); dropping a [`ControlPlane`] kills them all at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

use crate::Error;
use crate::process::{Process, Spec, describe};

/// The Service ClusterIP range.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's ClusterIP (first of [`SERVICE_CIDR`]).
pub const SERVICE_IP: &str = "10.96.0.1";
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
    /// Directory with `etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`.
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
    /// When the binaries are missing (the message says to run `e2e/toolchain/build.sh`).
    pub fn new(dir: PathBuf) -> Result<ControlPlaneConfig, Error> {
        let bin_dir = match std::env::var_os("SWITCHYARD_K8S_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => toolchain_bin_dir()?,
        };
        for binary in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            if !bin_dir.join(binary).is_file() {
                return Err(Error::Setup(format!(
                    "{} is missing: build the control plane with e2e/toolchain/build.sh (~19 min the first \
                     time, cached after) or point SWITCHYARD_K8S_BIN at the binaries",
                    bin_dir.join(binary).display()
                )));
            }
        }
        Ok(ControlPlaneConfig {
            bin_dir,
            address: crate::netns::NODE_ADDRESS,
            dir,
            ready_timeout: Duration::from_secs(180),
        })
    }
}

/// `e2e/toolchain/build.sh --print-bin-dir`.
fn toolchain_bin_dir() -> Result<PathBuf, Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("toolchain/build.sh");
    let output = std::process::Command::new(&script)
        .arg("--print-bin-dir")
        .output()
        .map_err(Error::io(format!("run {} --print-bin-dir", script.display())))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.lines().last() {
        Some(line) if output.status.success() && !line.trim().is_empty() => Ok(PathBuf::from(line.trim())),
        _ => Err(Error::Setup(format!(
            "{} --print-bin-dir failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// What a pod needs to reach the API server (the pod runner writes it into the pod's kubeconfig).
#[derive(Debug, Clone)]
pub struct ApiAccess {
    /// `https://<address>:<port>`.
    pub server: String,
    /// The cluster CA certificate (PEM file).
    pub ca_file: PathBuf,
    /// The API server's address.
    pub address: SocketAddr,
}

/// A running control plane.
pub struct ControlPlane {
    /// In start order.
    processes: Vec<Process>,
    client: kube::Client,
    kubeconfig: PathBuf,
    access: ApiAccess,
    dir: PathBuf,
    bin_dir: PathBuf,
}

impl ControlPlane {
    /// Generates the PKI and kubeconfigs, starts the four components and waits until each is ready (etcd's
    /// port, the API server's `/readyz`, the others' `/healthz`).
    ///
    /// # Errors
    /// When a file cannot be written, a process exits early (the error carries its log's tail) or is not
    /// ready within the config's timeout.
    pub async fn start(config: ControlPlaneConfig) -> Result<ControlPlane, Error> {
        let started = Instant::now();
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let pki = Pki::generate(&dir.join("pki"), config.address)?;
        let host = config.address.to_string();
        let server = format!("https://{host}:{API_PORT}");
        let admin = write_kubeconfig(&dir, "admin", &server, &pki.ca_crt, &pki.client("admin"))?;
        let kcm = write_kubeconfig(&dir, "kcm", &server, &pki.ca_crt, &pki.client("kcm"))?;
        let scheduler = write_kubeconfig(&dir, "scheduler", &server, &pki.ca_crt, &pki.client("scheduler"))?;

        let mut plane = ControlPlane {
            processes: Vec::new(),
            client: client_from(&admin).await?,
            kubeconfig: admin,
            access: ApiAccess {
                server: server.clone(),
                ca_file: pki.ca_crt.clone(),
                address: SocketAddr::from((config.address, API_PORT)),
            },
            dir: dir.clone(),
            bin_dir: config.bin_dir.clone(),
        };
        let path = |p: &Path| p.display().to_string();

        let etcd_url = format!("http://{host}:{ETCD_PORT}");
        let peer_url = format!("http://{host}:{ETCD_PEER_PORT}");
        plane.spawn(
            &config,
            "etcd",
            vec![
                "--name=e2e".into(),
                format!("--data-dir={}", path(&dir.join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--initial-cluster-state=new".into(),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;
        let etcd_addr = SocketAddr::from((config.address, ETCD_PORT));
        plane
            .wait_ready(0, config.ready_timeout, || async move {
                tokio::net::TcpStream::connect(etcd_addr).await.is_ok()
            })
            .await?;

        plane.spawn(
            &config,
            "kube-apiserver",
            vec![
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={host}"),
                format!("--advertise-address={host}"),
                format!("--secure-port={API_PORT}"),
                format!("--tls-cert-file={}", path(&pki.dir.join("apiserver.crt"))),
                format!("--tls-private-key-file={}", path(&pki.dir.join("apiserver.key"))),
                format!("--client-ca-file={}", path(&pki.ca_crt)),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", path(&pki.dir.join("sa.pub"))),
                format!(
                    "--service-account-signing-key-file={}",
                    path(&pki.dir.join("sa.key"))
                ),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=RBAC".into(),
                format!("--requestheader-client-ca-file={}", path(&pki.ca_crt)),
                "--requestheader-allowed-names=front-proxy-client".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!(
                    "--proxy-client-cert-file={}",
                    path(&pki.dir.join("front-proxy-client.crt"))
                ),
                format!(
                    "--proxy-client-key-file={}",
                    path(&pki.dir.join("front-proxy-client.key"))
                ),
                "--endpoint-reconciler-type=lease".into(),
                // A real node's hostname does not resolve in the namespace: logs, exec and port-forward
                // reach its kubelet at its InternalIP.
                "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;
        let client = plane.client.clone();
        plane
            .wait_ready(1, config.ready_timeout, || {
                let client = client.clone();
                async move { get_ok(&client, "/readyz").await }
            })
            .await?;

        plane.spawn(
            &config,
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={}", path(&kcm)),
                format!("--authentication-kubeconfig={}", path(&kcm)),
                format!("--authorization-kubeconfig={}", path(&kcm)),
                format!("--bind-address={host}"),
                format!("--secure-port={KCM_PORT}"),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!(
                    "--service-account-private-key-file={}",
                    path(&pki.dir.join("sa.key"))
                ),
                format!("--root-ca-file={}", path(&pki.ca_crt)),
                format!("--cluster-signing-cert-file={}", path(&pki.ca_crt)),
                format!("--cluster-signing-key-file={}", path(&pki.dir.join("ca.key"))),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--v=1".into(),
            ],
        )?;
        plane.spawn(
            &config,
            "kube-scheduler",
            vec![
                format!("--kubeconfig={}", path(&scheduler)),
                format!("--authentication-kubeconfig={}", path(&scheduler)),
                format!("--authorization-kubeconfig={}", path(&scheduler)),
                format!("--bind-address={host}"),
                format!("--secure-port={SCHEDULER_PORT}"),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ],
        )?;
        for (index, port) in [(2, KCM_PORT), (3, SCHEDULER_PORT)] {
            let health = insecure_client(SocketAddr::from((config.address, port)))?;
            plane
                .wait_ready(index, config.ready_timeout, || {
                    let health = health.clone();
                    async move { get_ok(&health, "/healthz").await }
                })
                .await?;
        }
        tracing::info!(
            server = %server,
            kubeconfig = %plane.kubeconfig.display(),
            took = ?started.elapsed(),
            "control plane ready"
        );
        Ok(plane)
    }

    fn spawn(&mut self, config: &ControlPlaneConfig, name: &str, args: Vec<String>) -> Result<(), Error> {
        let process = Process::spawn(&Spec {
            name: name.into(),
            program: config.bin_dir.join(name),
            args,
            env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
            cwd: self.dir.clone(),
            log: self.dir.join(format!("{name}.log")),
        })?;
        tracing::info!(%name, pid = process.pid(), log = %process.log().display(), "started");
        self.processes.push(process);
        Ok(())
    }

    /// Polls `check` every 250 ms until it succeeds, the process `index` exits, or `timeout` passes.
    async fn wait_ready<F, Fut>(&mut self, index: usize, timeout: Duration, check: F) -> Result<(), Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        let Some(process) = self.processes.get_mut(index) else {
            return Err(Error::Setup(format!("no control-plane process #{index}")));
        };
        loop {
            if let Some(status) = process.try_wait() {
                return Err(Error::Exited {
                    what: process.name().to_owned(),
                    status: describe(status),
                    log: process.log().to_path_buf(),
                    tail: process.log_tail(30),
                });
            }
            if check().await {
                tracing::info!(name = process.name(), took = ?started.elapsed(), "ready");
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "{} to become ready (log: {})",
                        process.name(),
                        process.log().display()
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig (for kubectl and helm: `KUBECONFIG=<this>`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// How pods reach the API server.
    pub fn pod_api_access(&self) -> ApiAccess {
        self.access.clone()
    }

    /// The directory of the control-plane binaries (kubectl and helm are there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The directory with PKI, kubeconfigs and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the processes in reverse start order: SIGTERM, up to 10 s, SIGKILL.
    pub async fn stop(mut self) {
        while let Some(mut process) = self.processes.pop() {
            match process.stop(Duration::from_secs(10)).await {
                Ok(stopped) => tracing::info!(
                    name = process.name(),
                    status = %describe(stopped.status),
                    killed = stopped.killed,
                    took = ?stopped.took,
                    "stopped"
                ),
                Err(error) => tracing::warn!(name = process.name(), %error, "stop failed"),
            }
        }
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.access.server)
            .field("processes", &self.processes)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse order; each Process kills its group when dropped.
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
    }
}

/// GET `path`; true on a 2xx answer.
async fn get_ok(client: &kube::Client, path: &str) -> bool {
    let Ok(request) = http::Request::get(path).body(Vec::new()) else {
        return false;
    };
    tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
        .await
        .is_ok_and(|result| result.is_ok())
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

/// An anonymous client that does not verify the server's certificate (for the self-signed health ports of
/// the controller-manager and the scheduler).
fn insecure_client(address: SocketAddr) -> Result<kube::Client, Error> {
    let url: http::Uri = format!("https://{address}")
        .parse()
        .map_err(|error| Error::Setup(format!("bad URL for {address}: {error}")))?;
    let mut config = kube::Config::new(url);
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(config).map_err(Error::kube(format!("build a health client for {address}")))
}

/// A client certificate's files.
struct ClientCert {
    crt: PathBuf,
    key: PathBuf,
}

/// Writes `<dir>/<name>.kubeconfig` (JSON, which every kubeconfig reader accepts) with file references.
fn write_kubeconfig(
    dir: &Path,
    name: &str,
    server: &str,
    ca: &Path,
    client: &ClientCert,
) -> Result<PathBuf, Error> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": name, "user": {"client-certificate": client.crt, "client-key": client.key}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": name, "namespace": "default"}}],
        "current-context": "e2e",
    });
    let path = dir.join(format!("{name}.kubeconfig"));
    write(&path, config.to_string().as_bytes())?;
    Ok(path)
}

fn write(path: &Path, contents: &[u8]) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(Error::io(format!("write {}", path.display())))
}

/// The control plane's keys and certificates, in PEM files.
struct Pki {
    dir: PathBuf,
    ca_crt: PathBuf,
}

impl Pki {
    /// A CA; the API server's serving certificate; client certificates for the admin
    /// (`O=system:masters`), the controller-manager, the scheduler and the front proxy; and the
    /// service-account signing key.
    fn generate(dir: &Path, address: Ipv4Addr) -> Result<Pki, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params.distinguished_name = name(None, "switchyard-e2e-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write(&dir.join("ca.crt"), ca_cert.pem().as_bytes())?;
        write(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |file: &str,
                    organization: Option<&str>,
                    common_name: &str,
                    sans: Vec<String>,
                    usage: ExtendedKeyUsagePurpose|
         -> Result<(), Error> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name = name(organization, common_name);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer)?;
            write(&dir.join(format!("{file}.crt")), cert.pem().as_bytes())?;
            write(&dir.join(format!("{file}.key")), key.serialize_pem().as_bytes())
        };
        let sans = [
            address.to_string().as_str(),
            SERVICE_IP,
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(str::to_owned)
        .to_vec();
        leaf(
            "apiserver",
            None,
            "kube-apiserver",
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        leaf(
            "admin",
            Some("system:masters"),
            "switchyard-e2e-admin",
            Vec::new(),
            client.clone(),
        )?;
        leaf(
            "front-proxy-client",
            None,
            "front-proxy-client",
            Vec::new(),
            client.clone(),
        )?;
        leaf(
            "kcm",
            None,
            "system:kube-controller-manager",
            Vec::new(),
            client.clone(),
        )?;
        leaf("scheduler", None, "system:kube-scheduler", Vec::new(), client)?;

        let sa = KeyPair::generate()?;
        write(&dir.join("sa.key"), sa.serialize_pem().as_bytes())?;
        write(&dir.join("sa.pub"), sa.public_key_pem().as_bytes())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_crt: dir.join("ca.crt"),
        })
    }

    fn client(&self, name: &str) -> ClientCert {
        ClientCert {
            crt: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }
}

fn name(organization: Option<&str>, common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name.push(DnType::CommonName, common_name);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_and_kubeconfig_files() {
        let dir = std::env::temp_dir().join(format!("switchyard-e2e-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::generate(&dir.join("pki"), Ipv4Addr::new(10, 244, 0, 1)).unwrap();
        for file in [
            "ca.crt",
            "apiserver.crt",
            "apiserver.key",
            "admin.crt",
            "sa.key",
            "sa.pub",
        ] {
            let text = std::fs::read_to_string(pki.dir.join(file)).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{file}: {text}");
        }
        let path = write_kubeconfig(
            &dir,
            "admin",
            "https://10.244.0.1:6443",
            &pki.ca_crt,
            &pki.client("admin"),
        )
        .unwrap();
        let config = Kubeconfig::read_from(&path).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("e2e"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
