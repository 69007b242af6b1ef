//! A real Kubernetes node in the test's network namespace: Debian's containerd and runc behind the CRI,
//! the kubelet and kube-proxy (iptables mode) built from Go modules by `toolchain/build.sh`, pod
//! networking by the CNI `bridge` plugin (Debian's containernetworking-plugins), and CoreDNS as the
//! cluster DNS. Nothing here plays a kubelet: pods, probes, grace periods, security contexts and memory
//! limits are the kubelet's, runc's and the cgroups'; Services are kube-proxy's iptables rules;
//! NetworkPolicies are enforced by kube-network-policies (`crate::network_policy`).
//!
//! Images come from archives that `scripts/image.sh` wrote (e2e/run.sh builds them), imported into the
//! node's containerd; nothing is pulled (there is no registry), so every image name is fully qualified
//! (`registry.local/...`) and pods use `imagePullPolicy: IfNotPresent` or `Never`. The pod sandbox is our
//! own `pause` (toolchain/pause), named in containerd's `sandbox_image`.
//!
//! What the machine needs, as the kubelet's config says: the cgroup v1 hierarchy without systemd
//! (`failCgroupV1: false`, `cgroupDriver: cgroupfs`), and no CAP_SYS_RESOURCE (containerd's
//! `restrict_oom_score_adj = true`, or runc fails to lower the sandbox's `oom_score_adj`).
//!
//! Addresses: the node is [`NODE_ADDRESS`](crate::netns::NODE_ADDRESS) (on `lo`, like the control plane);
//! pods get [`POD_CIDR`] on the bridge `cni0` (gateway `.1`, masquerade out); Services are in
//! [`SERVICE_CIDR`](crate::control_plane::SERVICE_CIDR) with the DNS at [`CLUSTER_DNS`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Api;

use crate::Error;
use crate::control_plane::{ControlPlane, SERVICE_CIDR};
use crate::netns::NODE_ADDRESS;
use crate::process::{Process, Spec, describe};

mod config_files;
use config_files::{cni_config, containerd_config_text, kube_proxy_config_text, kubelet_config_text};

/// The node's name.
pub const NODE_NAME: &str = "e2e-node";
/// The pods' addresses (the CNI bridge's range).
pub const POD_CIDR: &str = "10.85.0.0/24";
/// The cluster DNS Service's ClusterIP (CoreDNS).
pub const CLUSTER_DNS: &str = "10.96.0.10";
/// The sandbox image (built from toolchain/pause by e2e/run.sh).
pub const PAUSE_IMAGE: &str = "registry.local/pause:e2e";
/// The CoreDNS image (the toolchain's coredns binary, packed by e2e/run.sh).
pub const COREDNS_IMAGE: &str = "registry.local/coredns:e2e";
const KUBELET_HEALTHZ_PORT: u16 = 10248;
const KUBE_PROXY_HEALTHZ_PORT: u16 = 10256;
pub(crate) const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the node runs from.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The toolchain's bin dir (kubelet, kube-proxy, crictl).
    pub bin_dir: PathBuf,
    /// Logs and configs (kept with the run).
    pub dir: PathBuf,
    /// Image archives to import before the kubelet starts (at least the pause and CoreDNS images).
    pub images: Vec<PathBuf>,
    /// How long each component may take to become ready.
    pub ready_timeout: Duration,
}

impl NodeConfig {
    /// The node for `plane`, logging into `dir`, with every `*.tar` in the images directory
    /// (`SWITCHYARD_E2E_IMAGES`, default `target/images/e2e`).
    ///
    /// # Errors
    /// When the image directory or the pause/CoreDNS archives are missing (run e2e/run.sh, which builds them).
    pub fn new(plane: &ControlPlane, dir: PathBuf) -> Result<NodeConfig, Error> {
        let images_dir = std::env::var_os("SWITCHYARD_E2E_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images/e2e"));
        let mut images: Vec<PathBuf> = std::fs::read_dir(&images_dir)
            .map_err(Error::io(format!(
                "read the image archives in {} (e2e/run.sh builds them with scripts/image.sh)",
                images_dir.display()
            )))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "tar"))
            .collect();
        images.sort();
        for needed in ["pause-e2e.tar", "coredns-e2e.tar"] {
            if !images.iter().any(|path| path.ends_with(needed)) {
                return Err(Error::Setup(format!(
                    "{needed} missing in {}: e2e/run.sh builds the node's images with scripts/image.sh",
                    images_dir.display()
                )));
            }
        }
        Ok(NodeConfig {
            bin_dir: plane.bin_dir().to_owned(),
            dir,
            images,
            ready_timeout: Duration::from_secs(180),
        })
    }
}

/// A running node: containerd, the kubelet, kube-proxy and the NetworkPolicy controller (CoreDNS runs as
/// pods on it).
pub struct RealNode {
    /// In start order.
    processes: Vec<Process>,
    socket: PathBuf,
    state: PathBuf,
    dir: PathBuf,
    bin_dir: PathBuf,
}

impl std::fmt::Debug for RealNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealNode")
            .field("processes", &self.processes)
            .field("state", &self.state)
            .finish()
    }
}

impl RealNode {
    /// Sets up the pod network, starts containerd and imports the images, starts the kubelet (waits for the
    /// Node to be Ready), kube-proxy (waits for its healthz) and kube-network-policies (waits until it holds
    /// its netfilter queue), and deploys CoreDNS (waits until it answers).
    ///
    /// # Errors
    /// When a file or sysctl cannot be written, a process exits early (with its log's tail), or a component
    /// is not ready in time.
    pub async fn start(plane: &ControlPlane, config: NodeConfig) -> Result<RealNode, Error> {
        let started = Instant::now();
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        // Unix socket paths are at most 107 bytes and the kubelet puts several under its root dir: keep the
        // runtime state short, outside the run directory (it holds no logs).
        let state = std::env::temp_dir().join(format!(
            "sy-node-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() % 1_000_000_000_000)
                .unwrap_or(0)
        ));
        for sub in ["cni/net.d", "cni/ipam", "containerd", "kubelet"] {
            std::fs::create_dir_all(state.join(sub))
                .map_err(Error::io(format!("create {}", state.join(sub).display())))?;
        }
        std::fs::create_dir_all(dir.join("pods")).map_err(Error::io("create the pod log dir"))?;
        // The bridge's traffic must pass iptables (kube-proxy's DNAT for pod -> Service -> pod on the same
        // bridge), and the namespace must forward between the bridge and lo.
        for (key, value) in [
            ("/proc/sys/net/ipv4/ip_forward", "1"),
            ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
        ] {
            std::fs::write(key, value).map_err(Error::io(format!("sysctl {key}={value}")))?;
        }
        // The namespace has no default route: without a route to the Service range a connect() to a
        // ClusterIP fails before kube-proxy's OUTPUT rules could DNAT it to a pod. Through lo, from the
        // node's address (the rules re-route the packet to the bridge).
        let route = std::process::Command::new("ip")
            .args([
                "route",
                "replace",
                SERVICE_CIDR,
                "dev",
                "lo",
                "src",
                &NODE_ADDRESS.to_string(),
            ])
            .output()
            .map_err(Error::io("run ip route (iproute2)"))?;
        if !route.status.success() {
            return Err(Error::Setup(format!(
                "ip route replace {SERVICE_CIDR} dev lo: {}",
                String::from_utf8_lossy(&route.stderr).trim()
            )));
        }
        let socket = state.join("containerd.sock");
        let mut node = RealNode {
            processes: Vec::new(),
            socket: socket.clone(),
            state: state.clone(),
            dir: dir.clone(),
            bin_dir: config.bin_dir.clone(),
        };
        write(&state.join("cni/net.d/10-e2e.conflist"), &cni_config(&state))?;
        let containerd_config = dir.join("containerd.toml");
        write(&containerd_config, &containerd_config_text(&state))?;
        node.spawn(
            &dir,
            "containerd",
            PathBuf::from("containerd"),
            vec!["--config".into(), containerd_config.display().to_string()],
        )?;
        let ctr_socket = socket.clone();
        node.wait_ready(0, config.ready_timeout, || {
            let socket = ctr_socket.clone();
            async move { ctr(&socket, &["version"]).await.is_ok() }
        })
        .await?;
        for archive in &config.images {
            let out = ctr(&socket, &["images", "import", &archive.display().to_string()]).await?;
            tracing::info!(archive = %archive.display(), imported = %out.trim(), "image imported");
        }

        let kubelet_config = dir.join("kubelet.yaml");
        write(&kubelet_config, &kubelet_config_text(&state, &dir))?;
        write(&state.join("resolv.conf"), "# the node has no upstream DNS\n")?;
        let kubeconfig = plane.kubeconfig().display().to_string();
        node.spawn(
            &dir,
            "kubelet",
            config.bin_dir.join("kubelet"),
            vec![
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={kubeconfig}"),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_ADDRESS}"),
                format!("--root-dir={}", state.join("kubelet").display()),
                format!("--cert-dir={}", state.join("kubelet/pki").display()),
                "--v=1".into(),
            ],
        )?;
        let nodes: Api<NodeObject> = Api::all(plane.client());
        node.wait_ready(1, config.ready_timeout, || {
            let nodes = nodes.clone();
            async move {
                nodes
                    .get_opt(NODE_NAME)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|n| node_ready(&n))
            }
        })
        .await?;

        let proxy_config = dir.join("kube-proxy.yaml");
        write(&proxy_config, &kube_proxy_config_text(&kubeconfig))?;
        node.spawn(
            &dir,
            "kube-proxy",
            config.bin_dir.join("kube-proxy"),
            vec![format!("--config={}", proxy_config.display()), "--v=1".into()],
        )?;
        node.wait_ready(2, config.ready_timeout, || async move {
            let healthz = SocketAddr::from((NODE_ADDRESS, KUBE_PROXY_HEALTHZ_PORT));
            let get = switchyard_testkit::http_get(healthz, "/healthz");
            matches!(
                tokio::time::timeout(Duration::from_secs(2), get).await,
                Ok((200, _))
            )
        })
        .await?;

        let policy = crate::network_policy::prepare(
            plane.client(),
            plane.ca_file(),
            &config.bin_dir,
            &state.join("kube-network-policies"),
            dir.join(format!("{}.log", crate::network_policy::BINARY)),
            dir.clone(),
        )
        .await?;
        node.spawn_spec(&policy)?;
        node.wait_ready(3, config.ready_timeout, || async {
            crate::network_policy::queue_bound()
        })
        .await?;

        crate::coredns::deploy(plane.client(), config.ready_timeout).await?;
        tracing::info!(took = ?started.elapsed(), state = %state.display(), "node ready (containerd, kubelet, kube-proxy, kube-network-policies, CoreDNS)");
        Ok(node)
    }

    fn spawn(&mut self, dir: &Path, name: &str, program: PathBuf, args: Vec<String>) -> Result<(), Error> {
        let process = Process::spawn(&Spec {
            name: name.into(),
            program,
            args,
            env: vec![
                ("PATH".into(), PATH.into()),
                ("HOME".into(), self.state.display().to_string()),
            ],
            cwd: dir.to_owned(),
            log: dir.join(format!("{name}.log")),
        })?;
        tracing::info!(%name, pid = process.pid(), log = %process.log().display(), "started");
        self.processes.push(process);
        Ok(())
    }

    fn spawn_spec(&mut self, spec: &Spec) -> Result<(), Error> {
        let process = Process::spawn(spec)?;
        tracing::info!(name = %spec.name, pid = process.pid(), log = %process.log().display(), "started");
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
            return Err(Error::Setup(format!("no node process #{index}")));
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

    /// `crictl` against this node's containerd (for debugging and for tests that look at containers).
    pub fn crictl(&self) -> std::process::Command {
        let mut command = std::process::Command::new(self.bin_dir.join("crictl"));
        command.arg(format!("--runtime-endpoint=unix://{}", self.socket.display()));
        command
    }

    /// `ctr --namespace k8s.io ARGS` against the node's containerd (to import or tag images, say); its
    /// output.
    ///
    /// # Errors
    /// When ctr fails (the error carries its stderr).
    pub async fn ctr(&self, args: &[&str]) -> Result<String, Error> {
        ctr(&self.socket, args).await
    }

    /// The host pid of the running container `container` of pod `namespace/pod` (through crictl).
    ///
    /// # Errors
    /// When crictl fails or no such container runs.
    pub fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> Result<u32, Error> {
        let out = self
            .crictl()
            .args([
                "ps",
                "-q",
                "--state",
                "running",
                "--name",
                &format!("^{container}$"),
            ])
            .args(["--label", &format!("io.kubernetes.pod.namespace={namespace}")])
            .args(["--label", &format!("io.kubernetes.pod.name={pod}")])
            .output()
            .map_err(Error::io("run crictl ps"))?;
        let id = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_owned);
        let Some(id) = id else {
            return Err(Error::Setup(format!(
                "no running container {container} in pod {namespace}/{pod}"
            )));
        };
        let inspect = self
            .crictl()
            .args(["inspect", "-o", "go-template", "--template", "{{.info.pid}}", &id])
            .output()
            .map_err(Error::io("run crictl inspect"))?;
        String::from_utf8_lossy(&inspect.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                Error::Setup(format!(
                    "crictl inspect {id}: no pid ({})",
                    String::from_utf8_lossy(&inspect.stderr)
                ))
            })
    }

    /// SIGKILLs the process of the running container `container` of pod `namespace/pod` (a crash, as a
    /// test injects it: the kubelet sees the container die and restarts it). Returns the pid it killed.
    ///
    /// # Errors
    /// When no such container runs, or the signal cannot be sent.
    pub fn kill_container(&self, namespace: &str, pod: &str, container: &str) -> Result<u32, Error> {
        let pid = self.container_pid(namespace, pod, container)?;
        let raw = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(-1))
            .ok_or_else(|| Error::Setup(format!("pid {pid} of {namespace}/{pod} is not a pid")))?;
        rustix::process::kill_process(raw, rustix::process::Signal::KILL).map_err(|errno| Error::Io {
            what: format!("kill -9 {pid} ({container} of {namespace}/{pod})"),
            source: errno.into(),
        })?;
        Ok(pid)
    }

    /// The pods whose sandboxes run on the node, as `namespace/name` (through crictl).
    ///
    /// # Errors
    /// When crictl fails.
    pub fn running_pods(&self) -> Result<Vec<String>, Error> {
        let out = self
            .crictl()
            .args(["pods", "--state", "ready", "-o", "json"])
            .output()
            .map_err(Error::io("run crictl pods"))?;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::Setup(format!(
                "crictl pods: {e} ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|pod| {
                let meta = &pod["metadata"];
                format!(
                    "{}/{}",
                    meta["namespace"].as_str().unwrap_or_default(),
                    meta["name"].as_str().unwrap_or_default()
                )
            })
            .collect())
    }

    /// Where the kubelet writes the containers' logs (`podLogsDir`): `<namespace>_<pod>_<uid>/<container>/
    /// <restart>.log`. The kubelet removes them with the containers; see [`crate::PodWatch`].
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }

    /// Writes the namespace's addresses, routes and iptables rules to `<dir>/network.txt` (for a test that
    /// is about to fail on a connection) and returns the path.
    pub fn dump_network(&self) -> PathBuf {
        let mut text = String::new();
        for args in [
            &["ip", "addr"][..],
            &["ip", "route"],
            &["iptables-save"],
            &["cat", "/proc/net/netfilter/nfnetlink_queue"],
            &["conntrack", "-L"],
        ] {
            let out = std::process::Command::new(args[0]).args(&args[1..]).output();
            text.push_str(&format!("$ {}\n", args.join(" ")));
            match out {
                Ok(out) => {
                    text.push_str(&String::from_utf8_lossy(&out.stdout));
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                }
                Err(error) => text.push_str(&format!("{error}\n")),
            }
        }
        let path = self.dir.join("network.txt");
        let _ = std::fs::write(&path, text);
        path
    }

    /// Stops kube-network-policies, kube-proxy, the kubelet and containerd (SIGTERM, 10 s, SIGKILL), then removes every pod
    /// container and the runtime state.
    pub async fn stop(mut self) {
        while let Some(mut process) = self.processes.pop() {
            if process.name() == "containerd" {
                // Pods first, while containerd still answers, so no shim or container outlives the test.
                let _ = self.crictl().args(["rmp", "--all", "--force"]).output();
            }
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
        unmount_under(&self.state);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        // Processes die with their groups (Process's drop); the pid namespace takes the shims. What is left
        // are mounts and files under the state dir.
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
        if self.state.exists() {
            unmount_under(&self.state);
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

/// Unmounts everything mounted under `dir` (overlay snapshots, tmpfs volumes, netns files), deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = std::process::Command::new("umount").args(["-l", point]).status();
    }
}

fn node_ready(node: &NodeObject) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

async fn ctr(socket: &Path, args: &[&str]) -> Result<String, Error> {
    let out = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .await
        .map_err(Error::io("run ctr (Debian package containerd)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Setup(format!(
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(Error::io(format!("write {}", path.display())))
}
