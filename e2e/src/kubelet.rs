//! The pod runner: plays the kubelet's part for the pods scheduled to one Node, running each container as a
//! local process. It exists to run Switchyard's own pods (gates, nodes, the operator, Redis), so it is small
//! and refuses what it cannot do honestly rather than pretending.
//!
//! What it does:
//!
//! - **Node**: registers `e2e-node` (Ready, capacity, addresses) and keeps it alive (node Lease renewed every
//!   10 s, status every 20 s), so the scheduler uses it and the node lifecycle controller never taints it.
//! - **Pods**: watches pods with `spec.nodeName=<node>`; each gets a worker (`kubelet/pod.rs`) that allocates
//!   an IP (`10.244.1.1` upwards, never reused within a run) on the namespace's loopback, materialises
//!   volumes, runs the containers and writes the status (phase, IPs, start time, container statuses,
//!   conditions `PodScheduled`, `Initialized`, `PodReadyToStartContainers`, `ContainersReady`, `Ready`).
//! - **Images**: the Switchyard image runs the local `switchyard` binary, a Redis image Debian's `redis-
//!   server` on the pod IP (`kubelet/image.rs`); any other image stays `Waiting` (`ImageNotSupported`).
//! - **Env**: as the kubelet resolves it (`kubelet/env.rs`), plus `KUBERNETES_SERVICE_HOST`/`PORT` (the API
//!   server's real address: there is no kube-proxy), `HOSTNAME`, `HOME` (the pod's directory), `PATH` and,
//!   for a container that mounts the service-account volume, `KUBECONFIG` (`kubelet/volumes.rs`).
//! - **Probes**: startup, readiness and liveness (`kubelet/probe.rs`) drive `started`, `ready` and restarts.
//! - **Restarts**: per `restartPolicy`, with exponential backoff from [`KubeletConfig::restart_backoff`] up
//!   to [`KubeletConfig::max_restart_backoff`] (shorter than the kubelet's 10 s–5 min, so tests are quick),
//!   counted in `restartCount`, the previous run in `lastState`.
//! - **Deletion**: on `deletionTimestamp`, SIGTERM to each container's process group, up to the grace period
//!   (`deletionGracePeriodSeconds`, capped by [`KubeletConfig::max_grace`]), SIGKILL, then the final delete
//!   (`gracePeriodSeconds=0`, uid precondition). Readiness keeps being probed during the grace period.
//! - **Tests**: [`Kubelet::events`] and [`Kubelet::wait_for_event`] tell what happened to which process
//!   (started, exited and why: by itself, SIGTERM within the grace period, SIGKILL, fault injection, probe);
//!   [`Kubelet::kill_container`] SIGKILLs a container (fault injection). Each container's stdout and stderr
//!   go to `<run>/pods/<namespace>_<pod>_<uid>/<container>.log`, kept across restarts.
//!
//! Not done (see `e2e/README.md`): init and ephemeral containers, preStop/postStart hooks, resource limits
//! and cgroups, image pulls, service environment variables (`enableServiceLinks`), `hostNetwork` semantics
//! (every pod has its own IP), token and ConfigMap volume refresh. Service names and ClusterIPs are the
//! [`ServiceProxy`](crate::ServiceProxy)'s job.

mod downward;
mod env;
mod image;
mod node;
mod pod;
mod probe;
mod volumes;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use probe::{http_get, http_status};

use crate::Error;
use crate::control_plane::ApiAccess;
use crate::process::{Killer, Signal};

/// How many events [`Kubelet::events`] keeps (the oldest are dropped).
pub const MAX_EVENTS: usize = 4096;

/// Settings of the pod runner.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The Node's name.
    pub node_name: String,
    /// The node's address (`status.hostIP`).
    pub node_address: Ipv4Addr,
    /// The `switchyard` binary; `None`: `SWITCHYARD_BIN`, else `switchyard` in Cargo's profile directory
    /// (`target/debug/switchyard`, built by `cargo build --bin switchyard` or by `cargo test --workspace`).
    pub switchyard_bin: Option<PathBuf>,
    /// Repository names (the last path segment, without tag or digest) run as the `switchyard` binary.
    pub switchyard_images: Vec<String>,
    /// Repository names run as `redis-server`.
    pub redis_images: Vec<String>,
    /// `redis-server`; `None`: looked up in `PATH`.
    pub redis_server: Option<PathBuf>,
    /// The first restart delay of a crashed container (doubled each time).
    pub restart_backoff: Duration,
    /// The longest restart delay.
    pub max_restart_backoff: Duration,
    /// The most pods this node runs at once (also its `pods` capacity).
    pub max_pods: usize,
    /// The longest grace period honoured (a longer one is cut to this).
    pub max_grace: Duration,
    /// Added to every container's environment (after the kubelet's own variables, before the pod's).
    pub extra_env: Vec<(String, String)>,
}

impl Default for KubeletConfig {
    fn default() -> KubeletConfig {
        KubeletConfig {
            node_name: "e2e-node".into(),
            node_address: crate::netns::NODE_ADDRESS,
            switchyard_bin: None,
            switchyard_images: vec!["switchyard".into()],
            redis_images: vec!["redis".into()],
            redis_server: None,
            restart_backoff: Duration::from_secs(1),
            max_restart_backoff: Duration::from_secs(20),
            max_pods: 110,
            max_grace: Duration::from_secs(300),
            extra_env: Vec::new(),
        }
    }
}

/// A pod by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl PodKey {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> PodKey {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub(crate) fn of(pod: &Pod) -> PodKey {
        PodKey::new(
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What happened on the node, in order.
#[derive(Debug, Clone)]
pub enum KubeletEvent {
    /// A pod got its IP and its worker started.
    PodStarted {
        /// The pod.
        pod: PodKey,
        /// Its uid.
        uid: String,
        /// Its IP.
        ip: Ipv4Addr,
    },
    /// A container's process started.
    ContainerStarted {
        /// The pod.
        pod: PodKey,
        /// The container.
        container: String,
        /// The process id (and process group id).
        pid: u32,
        /// The container's restart count at this start.
        restart_count: i32,
    },
    /// A container's process exited.
    ContainerExited {
        /// The pod.
        pod: PodKey,
        /// The container.
        container: String,
        /// How and why.
        exit: ContainerExit,
    },
    /// A pod's processes are all gone and its IP released (after the final delete, for a deleted pod).
    PodRemoved {
        /// The pod.
        pod: PodKey,
        /// Its uid.
        uid: String,
    },
}

/// How a container's process ended.
#[derive(Debug, Clone)]
pub struct ContainerExit {
    /// Its process id.
    pub pid: u32,
    /// `exit code N` or `signal N (...)`.
    pub status: String,
    /// The exit code as Kubernetes reports it (128 + signal for a signal).
    pub exit_code: i32,
    /// Why it ended.
    pub cause: ExitCause,
    /// How long it ran.
    pub ran_for: Duration,
}

/// Why a container's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCause {
    /// By itself (crash or completion).
    Exited,
    /// Killed by [`Kubelet::kill_container`].
    FaultInjected,
    /// Its liveness probe failed; it was stopped (SIGTERM, grace, SIGKILL) to be restarted.
    LivenessProbe,
    /// Its startup probe failed; it was stopped to be restarted.
    StartupProbe,
    /// Stopped for good: pod deletion (or the harness's shutdown). `killed` is true when it outlived
    /// `grace` and got SIGKILL; `took` is the time from SIGTERM to exit.
    Terminated {
        /// The grace period.
        grace: Duration,
        /// From SIGTERM to exit.
        took: Duration,
        /// Whether SIGKILL was needed.
        killed: bool,
    },
}

/// A bounded, ordered event log with a change counter for waiters.
#[derive(Debug)]
pub(crate) struct EventLog {
    entries: Mutex<VecDeque<KubeletEvent>>,
    changed: watch::Sender<u64>,
}

impl EventLog {
    fn new() -> EventLog {
        EventLog {
            entries: Mutex::new(VecDeque::new()),
            changed: watch::Sender::new(0),
        }
    }

    pub(crate) fn push(&self, event: KubeletEvent) {
        tracing::debug!(?event, "kubelet event");
        {
            let mut entries = lock(&self.entries);
            if entries.len() >= MAX_EVENTS {
                entries.pop_front();
            }
            entries.push_back(event);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn snapshot(&self) -> Vec<KubeletEvent> {
        lock(&self.entries).iter().cloned().collect()
    }
}

/// Locks a std mutex, ignoring poisoning (the data stays usable: every critical section is short and
/// leaves it consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Pod IPs: `10.244.1.1` upwards (skipping `.0` and `.255`), never reused within a run.
#[derive(Debug)]
pub(crate) struct Ipam {
    next: u32,
    end: u32,
}

impl Ipam {
    fn new() -> Ipam {
        Ipam {
            next: u32::from(Ipv4Addr::new(10, 244, 1, 1)),
            end: u32::from(Ipv4Addr::new(10, 244, 255, 254)),
        }
    }

    pub(crate) fn allocate(&mut self) -> Option<Ipv4Addr> {
        while self.next <= self.end {
            let ip = Ipv4Addr::from(self.next);
            self.next += 1;
            if !matches!(ip.octets()[3], 0 | 255) {
                return Some(ip);
            }
        }
        None
    }
}

/// What every pod worker shares.
pub(crate) struct Shared {
    pub(crate) client: kube::Client,
    pub(crate) config: KubeletConfig,
    pub(crate) switchyard_bin: PathBuf,
    pub(crate) api: ApiAccess,
    pub(crate) pods_dir: PathBuf,
    pub(crate) host_ip: String,
    pub(crate) ipam: Mutex<Ipam>,
    pub(crate) events: EventLog,
    /// Running container processes (pid → killer), killed at once when the [`Kubelet`] is dropped.
    pub(crate) live: Mutex<BTreeMap<u32, Killer>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.config.node_name)
            .finish()
    }
}

struct PodHandle {
    key: PodKey,
    updates: watch::Sender<pod::Update>,
    controls: pod::Controls,
    task: JoinHandle<()>,
}

type Pods = Arc<Mutex<BTreeMap<String, PodHandle>>>;

/// The running pod runner. Dropping it SIGKILLs every container at once; [`Kubelet::shutdown`] stops them
/// gracefully.
pub struct Kubelet {
    shared: Arc<Shared>,
    pods: Pods,
    watch: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
}

impl fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kubelet")
            .field("node", &self.shared.config.node_name)
            .field("pods", &lock(&self.pods).len())
            .finish()
    }
}

impl Kubelet {
    /// Registers the Node and starts watching its pods. Pod files and logs go under `pods_dir`.
    ///
    /// # Errors
    /// Outside the e2e namespace, when the `switchyard` binary is missing, or when the Node cannot be
    /// registered.
    pub async fn start(
        client: kube::Client,
        api: ApiAccess,
        pods_dir: PathBuf,
        config: KubeletConfig,
    ) -> Result<Kubelet, Error> {
        if !crate::netns::inside() {
            return Err(Error::Setup(
                "the pod runner adds pod IPs to the loopback device: run it inside the e2e namespace \
                 (switchyard_e2e::isolate)"
                    .into(),
            ));
        }
        let switchyard_bin = match &config.switchyard_bin {
            Some(path) => path.clone(),
            None => match std::env::var_os("SWITCHYARD_BIN") {
                Some(path) => PathBuf::from(path),
                None => crate::run_dir::target_profile_dir()?.join("switchyard"),
            },
        };
        if !switchyard_bin.is_file() {
            return Err(Error::Setup(format!(
                "{} is missing: build it with `cargo build --bin switchyard` (or set SWITCHYARD_BIN)",
                switchyard_bin.display()
            )));
        }
        let mut config = config;
        if config.redis_server.is_none() {
            config.redis_server = find_in_path("redis-server");
        }
        std::fs::create_dir_all(&pods_dir).map_err(Error::io(format!("create {}", pods_dir.display())))?;
        let host_ip = config.node_address.to_string();
        node::register(&client, &config.node_name, &host_ip, config.max_pods).await?;
        let heartbeat = tokio::spawn(node::heartbeat(
            client.clone(),
            config.node_name.clone(),
            host_ip.clone(),
            config.max_pods,
        ));
        tracing::info!(
            node = %config.node_name,
            switchyard = %switchyard_bin.display(),
            redis = ?config.redis_server,
            "pod runner started"
        );
        let shared = Arc::new(Shared {
            client,
            config,
            switchyard_bin,
            api,
            pods_dir,
            host_ip,
            ipam: Mutex::new(Ipam::new()),
            events: EventLog::new(),
            live: Mutex::new(BTreeMap::new()),
        });
        let pods: Pods = Arc::new(Mutex::new(BTreeMap::new()));
        let watch = tokio::spawn(watch_pods(shared.clone(), pods.clone()));
        Ok(Kubelet {
            shared,
            pods,
            watch,
            heartbeat,
        })
    }

    /// Every event so far (the last [`MAX_EVENTS`]).
    pub fn events(&self) -> Vec<KubeletEvent> {
        self.shared.events.snapshot()
    }

    /// Waits until an event (past or future) matches `predicate`, for at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] naming `what`.
    pub async fn wait_for_event(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&KubeletEvent) -> bool,
    ) -> Result<KubeletEvent, Error> {
        let mut changed = self.shared.events.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            if let Some(event) = self.events().into_iter().find(|e| predicate(e)) {
                return Ok(event);
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(Error::Timeout {
                    what: what.into(),
                    after: timeout,
                });
            }
        }
    }

    /// SIGKILLs the process of `container` in `pod` (fault injection); it restarts per the pod's restart
    /// policy, and the exit is reported as [`ExitCause::FaultInjected`].
    ///
    /// # Errors
    /// When the pod or container does not run here.
    pub async fn kill_container(&self, pod: &PodKey, container: &str) -> Result<(), Error> {
        let sender = {
            let pods = lock(&self.pods);
            pods.values()
                .find(|h| &h.key == pod)
                .and_then(|h| lock(&h.controls).get(container).cloned())
        };
        let sender = sender
            .ok_or_else(|| Error::Setup(format!("container {container} of pod {pod} does not run here")))?;
        sender
            .send(pod::Ctl::Kill)
            .await
            .map_err(|_| Error::Setup(format!("container {container} of pod {pod} has stopped")))
    }

    /// The pods running here.
    pub fn pods(&self) -> Vec<PodKey> {
        // A worker's entry stays until the next pod event prunes it; a finished one runs nothing.
        lock(&self.pods)
            .values()
            .filter(|h| !h.task.is_finished())
            .map(|h| h.key.clone())
            .collect()
    }

    /// The directory of pod files and logs.
    pub fn pods_dir(&self) -> &Path {
        &self.shared.pods_dir
    }

    /// Stops watching, then stops every pod (SIGTERM, up to `grace`, SIGKILL) without deleting it from the
    /// API, and waits for them (bounded by `grace` + 15 s).
    pub async fn shutdown(self, grace: Duration) {
        self.watch.abort();
        let handles: Vec<PodHandle> = std::mem::take(&mut *lock(&self.pods)).into_values().collect();
        for handle in &handles {
            handle.updates.send_replace(pod::Update::Shutdown(grace));
        }
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(15);
        for handle in handles {
            let abort = handle.task.abort_handle();
            if tokio::time::timeout_at(deadline, handle.task).await.is_err() {
                tracing::warn!(pod = %handle.key, "pod did not stop in time");
                abort.abort();
            }
        }
        self.heartbeat.abort();
        tracing::info!("pod runner stopped");
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.watch.abort();
        self.heartbeat.abort();
        for handle in lock(&self.pods).values() {
            handle.task.abort();
        }
        for killer in lock(&self.shared.live).values() {
            killer.signal(Signal::Kill);
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Watches the pods bound to the node and drives one worker per pod uid.
async fn watch_pods(shared: Arc<Shared>, pods: Pods) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.config.node_name));
    let stream = watcher::watcher(api, config).default_backoff();
    futures_util::pin_mut!(stream);
    let mut listed: Vec<String> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(pod)) => upsert(&shared, &pods, pod),
            Ok(Event::InitApply(pod)) => {
                listed.push(pod.metadata.uid.clone().unwrap_or_default());
                upsert(&shared, &pods, pod);
            }
            Ok(Event::Delete(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(handle) = lock(&pods).get(&uid) {
                    handle.updates.send_replace(pod::Update::Gone);
                }
            }
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitDone) => {
                // Pods that disappeared while the watch was down.
                for (uid, handle) in lock(&pods).iter() {
                    if !listed.contains(uid) {
                        handle.updates.send_replace(pod::Update::Gone);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
        }
    }
}

/// Hands a pod to its worker, starting one for a new uid.
fn upsert(shared: &Arc<Shared>, pods: &Pods, pod: Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod = Arc::new(pod);
    let mut map = lock(pods);
    map.retain(|_, handle| !handle.task.is_finished());
    if let Some(handle) = map.get(&uid) {
        handle.updates.send_replace(pod::Update::Latest(pod));
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        // A finished pod has nothing to run; it only needs deleting if it is being deleted.
        return;
    }
    if map.len() >= shared.config.max_pods {
        tracing::warn!(pod = %PodKey::of(&pod), max = shared.config.max_pods, "too many pods on the node; ignored");
        return;
    }
    let (updates, receiver) = watch::channel(pod::Update::Latest(pod.clone()));
    let controls: pod::Controls = Arc::new(Mutex::new(BTreeMap::new()));
    let task = tokio::spawn(pod::run(shared.clone(), pod.clone(), receiver, controls.clone()));
    map.insert(
        uid,
        PodHandle {
            key: PodKey::of(&pod),
            updates,
            controls,
            task,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_skips_network_and_broadcast_octets() {
        let mut ipam = Ipam::new();
        assert_eq!(ipam.allocate(), Some(Ipv4Addr::new(10, 244, 1, 1)));
        ipam.next = u32::from(Ipv4Addr::new(10, 244, 1, 254));
        assert_eq!(ipam.allocate(), Some(Ipv4Addr::new(10, 244, 1, 254)));
        assert_eq!(ipam.allocate(), Some(Ipv4Addr::new(10, 244, 2, 1)));
        ipam.next = ipam.end;
        assert_eq!(ipam.allocate(), Some(Ipv4Addr::new(10, 244, 255, 254)));
        assert_eq!(ipam.allocate(), None);
    }

    #[test]
    fn event_log_is_bounded() {
        let log = EventLog::new();
        for i in 0..(MAX_EVENTS + 10) {
            log.push(KubeletEvent::PodRemoved {
                pod: PodKey::new("ns", format!("p{i}")),
                uid: String::new(),
            });
        }
        let events = log.snapshot();
        assert_eq!(events.len(), MAX_EVENTS);
        assert!(matches!(&events[0], KubeletEvent::PodRemoved { pod, .. } if pod.name == "p10"));
    }
}
