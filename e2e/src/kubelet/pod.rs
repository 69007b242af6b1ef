//! One pod's life on the node: an IP of its own on the namespace's loopback device, its volumes, one task per
//! container (start, probes, restarts with backoff), its status written through the status subresource, and
//! its end: SIGTERM on `deletionTimestamp`, up to the grace period, SIGKILL, then the final delete with
//! `gracePeriodSeconds=0` and a uid precondition (the kubelet's part of graceful deletion).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::downward::PodFacts;
use super::image::{Programs, classify, command_line};
use super::probe::{self, ProbeKind, Target};
use super::{ContainerExit, ExitCause, KubeletEvent, PodKey, Shared, env, lock, volumes};
use crate::process::{Process, Signal, Spec, describe};

/// What the kubelet tells a pod worker.
#[derive(Debug, Clone)]
pub(crate) enum Update {
    /// The pod as last seen by the watch.
    Latest(Arc<Pod>),
    /// The pod is gone from the API (force-deleted): kill at once.
    Gone,
    /// The harness stops: terminate with this grace, do not delete the pod.
    Shutdown(Duration),
}

/// What a pod worker (or a test) tells a container task.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ctl {
    /// SIGTERM, up to `grace`, SIGKILL; no restart.
    Stop { grace: Duration },
    /// SIGKILL now (fault injection); restarts per the restart policy.
    Kill,
}

/// Container control channels of a pod, by container name (for fault injection).
pub(crate) type Controls = Arc<Mutex<BTreeMap<String, mpsc::Sender<Ctl>>>>;

#[derive(Debug, Clone)]
enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: Timestamp },
    Terminated(Terminated),
}

#[derive(Debug, Clone)]
struct Terminated {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    started_at: Timestamp,
    finished_at: Timestamp,
    container_id: String,
}

#[derive(Debug, Clone)]
struct ContainerView {
    name: String,
    image: String,
    state: State,
    last: Option<Terminated>,
    ready: bool,
    started: bool,
    restart_count: i32,
    container_id: Option<String>,
}

/// What the status is computed from; shared by the pod worker and its container tasks.
#[derive(Debug)]
struct PodView {
    containers: Vec<ContainerView>,
    /// Condition type → (status, last transition).
    transitions: BTreeMap<&'static str, (bool, Timestamp)>,
}

/// Runs one pod until it is deleted, gone, or the kubelet shuts down.
pub(crate) async fn run(
    shared: Arc<Shared>,
    first: Arc<Pod>,
    updates: watch::Receiver<Update>,
    controls: Controls,
) {
    let key = PodKey::of(&first);
    let uid = first.metadata.uid.clone().unwrap_or_default();
    if first.metadata.deletion_timestamp.is_some() {
        // Deleted before it ever ran here: nothing to stop.
        finish_delete(&shared, &key, &uid).await;
        return;
    }
    let ip = lock(&shared.ipam).allocate();
    let Some(ip) = ip else {
        tracing::error!(pod = %key, "no pod IP left in 10.244.1.0-10.244.255.255");
        return;
    };
    if let Err(error) = ip_addr("add", ip).await {
        tracing::error!(pod = %key, %error, "cannot add the pod IP");
        return;
    }
    let short_uid: String = uid.chars().take(8).collect();
    let dir = shared
        .pods_dir
        .join(format!("{}_{}_{short_uid}", key.namespace, key.name));
    if let Err(error) = std::fs::create_dir_all(dir.join("volumes")) {
        tracing::error!(pod = %key, %error, "cannot create the pod directory");
        return;
    }
    shared.events.push(KubeletEvent::PodStarted {
        pod: key.clone(),
        uid: uid.clone(),
        ip,
    });
    let worker = Worker {
        shared: shared.clone(),
        key: key.clone(),
        uid: uid.clone(),
        facts: PodFacts {
            pod_ip: ip.to_string(),
            host_ip: shared.host_ip.clone(),
        },
        start_time: Timestamp::now(),
        dir,
        view: Arc::new(Mutex::new(PodView {
            containers: first
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(|c| ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    state: State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    },
                    last: None,
                    ready: false,
                    started: false,
                    restart_count: 0,
                    container_id: None,
                })
                .collect(),
            transitions: BTreeMap::new(),
        })),
        notify: Arc::new(Notify::new()),
        last_sent: None,
        controls,
    };
    worker.run(first, updates).await;
    if let Err(error) = ip_addr("del", ip).await {
        tracing::warn!(pod = %key, %error, "cannot remove the pod IP");
    }
    shared.events.push(KubeletEvent::PodRemoved { pod: key, uid });
}

async fn ip_addr(action: &'static str, ip: Ipv4Addr) -> Result<(), crate::Error> {
    let cidr = format!("{ip}/32");
    tokio::task::spawn_blocking(move || crate::netns::ip(&["addr", action, &cidr, "dev", "lo"]))
        .await
        .map_err(|e| crate::Error::Setup(format!("ip addr {action}: {e}")))?
}

/// Deletes the pod object for good (the kubelet's last step of graceful deletion).
async fn finish_delete(shared: &Shared, key: &PodKey, uid: &str) {
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &key.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&key.name, &params).await {
        Ok(_) => tracing::info!(pod = %key, "pod deleted"),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => tracing::warn!(pod = %key, %error, "final pod delete failed"),
    }
}

enum Outcome {
    Deleted(Duration),
    Gone,
    Shutdown(Duration),
}

struct Worker {
    shared: Arc<Shared>,
    key: PodKey,
    uid: String,
    facts: PodFacts,
    start_time: Timestamp,
    dir: PathBuf,
    view: Arc<Mutex<PodView>>,
    notify: Arc<Notify>,
    last_sent: Option<serde_json::Value>,
    controls: Controls,
}

impl Worker {
    async fn run(mut self, first: Arc<Pod>, mut updates: watch::Receiver<Update>) {
        let mut current = first;
        self.sync_status(&current, false).await;

        // Init containers are not run: say so and stay Pending rather than skip them silently.
        let has_init = current
            .spec
            .as_ref()
            .is_some_and(|s| s.init_containers.as_ref().is_some_and(|c| !c.is_empty()));
        if has_init {
            self.set_all_waiting(
                "InitContainersNotSupported",
                "the e2e pod runner does not run init containers",
            );
            self.sync_status(&current, false).await;
            while updates.changed().await.is_ok() {
                let update = updates.borrow_and_update().clone();
                match update {
                    Update::Latest(pod) if pod.metadata.deletion_timestamp.is_none() => {}
                    Update::Latest(_) => {
                        finish_delete(&self.shared, &self.key, &self.uid).await;
                        return;
                    }
                    Update::Gone | Update::Shutdown(_) => return,
                }
            }
            return;
        }

        // Volumes first; a missing ConfigMap or an unsupported volume keeps the containers waiting.
        let volumes = loop {
            match volumes::materialize(
                &self.shared.client,
                &current,
                &self.facts,
                &self.dir.join("volumes"),
            )
            .await
            {
                Ok(volumes) => break Arc::new(volumes),
                Err(message) => {
                    tracing::warn!(pod = %self.key, %message, "volumes not ready");
                    self.set_all_waiting("ContainerCreating", &message);
                    self.sync_status(&current, false).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                changed = updates.changed() => {
                    let update = if changed.is_ok() {
                        updates.borrow_and_update().clone()
                    } else {
                        Update::Shutdown(Duration::ZERO)
                    };
                    match update {
                        Update::Latest(pod) if pod.metadata.deletion_timestamp.is_none() => {}
                        Update::Latest(_) => {
                            finish_delete(&self.shared, &self.key, &self.uid).await;
                            return;
                        }
                        Update::Gone | Update::Shutdown(_) => return,
                    }
                }
            }
        };

        let mut runners = JoinSet::new();
        let restart_policy = current
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let pod_grace = grace_of(&current, &self.shared);
        for (index, container) in current.spec.iter().flat_map(|s| s.containers.iter()).enumerate() {
            let (tx, rx) = mpsc::channel(4);
            lock(&self.controls).insert(container.name.clone(), tx);
            let runner = Runner {
                shared: self.shared.clone(),
                key: self.key.clone(),
                pod: current.clone(),
                index,
                container: container.clone(),
                facts: self.facts.clone(),
                dir: self.dir.clone(),
                volumes: volumes.clone(),
                view: self.view.clone(),
                notify: self.notify.clone(),
                ctl: rx,
                restart_policy: restart_policy.clone(),
                grace: pod_grace,
            };
            runners.spawn(runner.run());
        }

        let mut retry = tokio::time::interval(Duration::from_secs(2));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        break Outcome::Shutdown(Duration::ZERO);
                    }
                    let update = updates.borrow_and_update().clone();
                    match update {
                        Update::Latest(pod) => {
                            if pod.metadata.deletion_timestamp.is_some() {
                                current = pod;
                                break Outcome::Deleted(grace_of(&current, &self.shared));
                            }
                            let metadata_changed = pod.metadata.labels != current.metadata.labels
                                || pod.metadata.annotations != current.metadata.annotations;
                            current = pod;
                            if metadata_changed && volumes::has_metadata_files(&current)
                                && let Err(error) = volumes::write_downward(&current, &self.facts, &volumes)
                            {
                                tracing::warn!(pod = %self.key, %error, "downward API refresh failed");
                            }
                        }
                        Update::Gone => break Outcome::Gone,
                        Update::Shutdown(grace) => break Outcome::Shutdown(grace),
                    }
                }
                _ = self.notify.notified() => self.sync_status(&current, false).await,
                _ = retry.tick() => self.sync_status(&current, false).await,
                Some(_) = runners.join_next(), if !runners.is_empty() => {
                    self.sync_status(&current, false).await;
                }
            }
        };

        let grace = match outcome {
            Outcome::Deleted(grace) | Outcome::Shutdown(grace) => grace,
            Outcome::Gone => Duration::ZERO,
        };
        tracing::info!(pod = %self.key, ?grace, "stopping the pod's containers");
        let senders: Vec<mpsc::Sender<Ctl>> = lock(&self.controls).values().cloned().collect();
        for sender in senders {
            let _ = sender.send(Ctl::Stop { grace }).await;
        }
        // Keep the status current while the containers stop (readiness still matters while draining).
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(10);
        while !runners.is_empty() {
            tokio::select! {
                _ = runners.join_next() => {}
                _ = self.notify.notified() => {
                    if !matches!(outcome, Outcome::Gone) {
                        self.sync_status(&current, true).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(pod = %self.key, "containers did not stop in time; aborting their tasks");
                    runners.abort_all();
                }
            }
        }
        lock(&self.controls).clear();
        match outcome {
            Outcome::Deleted(_) => {
                self.sync_status(&current, true).await;
                finish_delete(&self.shared, &self.key, &self.uid).await;
            }
            Outcome::Shutdown(_) | Outcome::Gone => {}
        }
    }

    fn set_all_waiting(&self, reason: &str, message: &str) {
        let mut view = lock(&self.view);
        for c in &mut view.containers {
            c.state = State::Waiting {
                reason: reason.into(),
                message: Some(message.into()),
            };
        }
    }

    /// Computes the status and patches it when it changed since the last successful patch.
    async fn sync_status(&mut self, pod: &Pod, terminating: bool) {
        let restart_policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
            .to_owned();
        let status = {
            let mut view = lock(&self.view);
            compute_status(
                &mut view,
                &restart_policy,
                &self.facts,
                self.start_time,
                terminating,
            )
        };
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.last_sent.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.key.namespace);
        let patch = serde_json::json!({"metadata": {"uid": self.uid}, "status": value});
        match api
            .patch_status(&self.key.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => self.last_sent = Some(value),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(error) => tracing::warn!(pod = %self.key, %error, "status update failed; retrying"),
        }
    }
}

fn grace_of(pod: &Pod, shared: &Shared) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(shared.config.max_grace)
}

fn time(ts: Timestamp) -> Time {
    Time(ts)
}

/// The pod status from the view (see the kubelet's `getPhase` and `generateAPIPodStatus`).
fn compute_status(
    view: &mut PodView,
    restart_policy: &str,
    facts: &PodFacts,
    start_time: Timestamp,
    terminating: bool,
) -> PodStatus {
    let total = view.containers.len();
    let running = view
        .containers
        .iter()
        .filter(|c| matches!(c.state, State::Running { .. }))
        .count();
    let never_ran = view
        .containers
        .iter()
        .filter(|c| matches!(c.state, State::Waiting { .. }) && c.last.is_none() && c.restart_count == 0)
        .count();
    let terminated: Vec<&Terminated> = view
        .containers
        .iter()
        .filter_map(|c| match &c.state {
            State::Terminated(t) => Some(t),
            _ => None,
        })
        .collect();
    let all_succeeded = terminated.len() == total && terminated.iter().all(|t| t.exit_code == 0);
    let phase = if never_ran > 0 && running == 0 && !terminating {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if terminated.len() == total && total > 0 {
        match restart_policy {
            "Never" if all_succeeded => "Succeeded",
            "Never" => "Failed",
            "OnFailure" if all_succeeded => "Succeeded",
            _ => "Running",
        }
    } else {
        "Running"
    };
    let all_ready = total > 0 && view.containers.iter().all(|c| c.ready);
    let completed = phase == "Succeeded" || phase == "Failed";
    let now = Timestamp::now();
    let mut condition = |kind: &'static str, value: bool, reason: Option<&str>| {
        let entry = view.transitions.entry(kind).or_insert((value, now));
        if entry.0 != value {
            *entry = (value, now);
        }
        PodCondition {
            type_: kind.into(),
            status: if value { "True" } else { "False" }.into(),
            last_transition_time: Some(time(entry.1)),
            reason: if value { None } else { reason.map(str::to_owned) },
            ..PodCondition::default()
        }
    };
    let not_ready_reason = if completed {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", true, None),
        condition("Initialized", true, None),
        condition("ContainersReady", all_ready, Some(not_ready_reason)),
        condition("Ready", all_ready, Some(not_ready_reason)),
        condition("PodScheduled", true, None),
    ];
    let container_statuses = view
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: format!("switchyard-e2e://{}", c.image),
            container_id: c.container_id.clone(),
            ready: c.ready,
            started: Some(c.started),
            restart_count: c.restart_count,
            state: Some(container_state(&c.state)),
            last_state: c
                .last
                .as_ref()
                .map(|t| container_state(&State::Terminated(t.clone()))),
            ..ContainerStatus::default()
        })
        .collect();
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(container_statuses),
        host_ip: Some(facts.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: facts.host_ip.clone(),
        }]),
        pod_ip: Some(facts.pod_ip.clone()),
        pod_ips: Some(vec![PodIP {
            ip: facts.pod_ip.clone(),
        }]),
        start_time: Some(time(start_time)),
        ..PodStatus::default()
    }
}

fn container_state(state: &State) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..ContainerState::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: t.signal,
                reason: Some(t.reason.clone()),
                started_at: Some(time(t.started_at)),
                finished_at: Some(time(t.finished_at)),
                container_id: Some(t.container_id.clone()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        },
    }
}

/// One container's task: start, probe, restart, stop.
struct Runner {
    shared: Arc<Shared>,
    key: PodKey,
    pod: Arc<Pod>,
    index: usize,
    container: Container,
    facts: PodFacts,
    dir: PathBuf,
    volumes: Arc<volumes::Volumes>,
    view: Arc<Mutex<PodView>>,
    notify: Arc<Notify>,
    ctl: mpsc::Receiver<Ctl>,
    restart_policy: String,
    grace: Duration,
}

enum Pause {
    Elapsed,
    Stop,
}

impl Runner {
    fn update(&self, change: impl FnOnce(&mut ContainerView)) {
        if let Some(view) = lock(&self.view).containers.get_mut(self.index) {
            change(view);
        }
        self.notify.notify_one();
    }

    /// Sleeps `delay` unless told to stop (a fault-injection kill while nothing runs is ignored).
    async fn pause(&mut self, delay: Duration) -> Pause {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Pause::Elapsed,
                ctl = self.ctl.recv() => match ctl {
                    Some(Ctl::Kill) => {}
                    Some(Ctl::Stop { .. }) | None => return Pause::Stop,
                },
            }
        }
    }

    async fn run(mut self) {
        let mut backoff_step = 0u32;
        let name = self.container.name.clone();
        loop {
            let spec = match self.prepare().await {
                Ok(spec) => spec,
                Err((reason, message)) => {
                    tracing::warn!(
                        pod = %self.key, container = %name, %reason, %message,
                        "container not started"
                    );
                    self.update(|c| {
                        c.state = State::Waiting {
                            reason: reason.into(),
                            message: Some(message),
                        }
                    });
                    match self.pause(Duration::from_secs(3)).await {
                        Pause::Elapsed => continue,
                        Pause::Stop => return,
                    }
                }
            };
            let mut process = match Process::spawn(&spec) {
                Ok(process) => process,
                Err(error) => {
                    self.update(|c| {
                        c.state = State::Waiting {
                            reason: "RunContainerError".into(),
                            message: Some(error.to_string()),
                        }
                    });
                    match self.pause(Duration::from_secs(3)).await {
                        Pause::Elapsed => continue,
                        Pause::Stop => return,
                    }
                }
            };
            let pid = process.pid();
            let killer = process.killer();
            lock(&self.shared.live).insert(pid, killer);
            let started_at = Timestamp::now();
            let began = Instant::now();
            let startup = self.container.startup_probe.clone();
            let readiness = self.container.readiness_probe.clone();
            let liveness = self.container.liveness_probe.clone();
            let container_id = format!("switchyard-e2e://{pid}");
            let restart_count = {
                let mut restart_count = 0;
                self.update(|c| {
                    c.state = State::Running { started_at };
                    c.container_id = Some(container_id.clone());
                    c.started = startup.is_none();
                    c.ready = c.started && readiness.is_none();
                    restart_count = c.restart_count;
                });
                restart_count
            };
            tracing::info!(
                pod = %self.key, container = %name, pid, log = %spec.log.display(),
                "container started"
            );
            self.shared.events.push(KubeletEvent::ContainerStarted {
                pod: self.key.clone(),
                container: name.clone(),
                pid,
                restart_count,
            });

            let target = Target {
                pod_ip: self.facts.pod_ip.clone(),
                ports: self.container.ports.clone().unwrap_or_default(),
                env: spec.env.iter().cloned().collect(),
                cwd: self.dir.clone(),
            };
            let (tx, mut results) = mpsc::channel(8);
            let mut probes = JoinSet::new();
            let spawn_main_probes = |probes: &mut JoinSet<()>| {
                if let Some(p) = readiness.clone() {
                    probes.spawn(probe::run(ProbeKind::Readiness, p, target.clone(), tx.clone()));
                }
                if let Some(p) = liveness.clone() {
                    probes.spawn(probe::run(ProbeKind::Liveness, p, target.clone(), tx.clone()));
                }
            };
            match startup.clone() {
                Some(p) => {
                    probes.spawn(probe::run(ProbeKind::Startup, p, target.clone(), tx.clone()));
                }
                None => spawn_main_probes(&mut probes),
            }

            // Set once the container is being stopped: (why, grace, when SIGTERM was sent).
            let mut stopping: Option<(ExitCause, Duration, Instant)> = None;
            let mut killed = false;
            let mut fault = false;
            let mut stop_for_good = false;
            let status = loop {
                let kill_at = stopping
                    .as_ref()
                    .map(|(_, grace, at)| tokio::time::Instant::from_std(*at + *grace));
                tokio::select! {
                    status = process.wait() => break status,
                    Some(result) = results.recv() => match (result.kind, result.success) {
                        (ProbeKind::Readiness, ready) => {
                            if stopping.is_none() || stop_for_good {
                                self.update(|c| c.ready = ready);
                            }
                        }
                        (ProbeKind::Startup, true) => {
                            self.update(|c| {
                                c.started = true;
                                c.ready = readiness.is_none();
                            });
                            spawn_main_probes(&mut probes);
                        }
                        (ProbeKind::Liveness, true) => {}
                        (ProbeKind::Startup | ProbeKind::Liveness, false) => {
                            if stopping.is_none() {
                                let cause = if result.kind == ProbeKind::Startup {
                                    ExitCause::StartupProbe
                                } else {
                                    ExitCause::LivenessProbe
                                };
                                tracing::info!(
                                    pod = %self.key, container = %name, ?cause,
                                    "probe failed: restarting the container"
                                );
                                killer.signal(Signal::Term);
                                stopping = Some((cause, self.grace, Instant::now()));
                            }
                        }
                    },
                    ctl = self.ctl.recv() => match ctl {
                        Some(Ctl::Kill) => {
                            tracing::info!(pod = %self.key, container = %name, pid, "fault injection: SIGKILL");
                            fault = true;
                            killer.signal(Signal::Kill);
                        }
                        Some(Ctl::Stop { grace }) => {
                            stop_for_good = true;
                            tracing::info!(pod = %self.key, container = %name, pid, ?grace, "SIGTERM");
                            killer.signal(Signal::Term);
                            let cause = ExitCause::Terminated { grace, took: Duration::ZERO, killed: false };
                            stopping = Some((cause, grace, Instant::now()));
                        }
                        None => {
                            stop_for_good = true;
                            killer.signal(Signal::Kill);
                        }
                    },
                    _ = async {
                        match kill_at {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    }, if !killed => {
                        tracing::info!(pod = %self.key, container = %name, pid, "grace period over: SIGKILL");
                        killed = true;
                        killer.signal(Signal::Kill);
                    }
                }
            };
            drop(probes);
            killer.signal(Signal::Kill);
            lock(&self.shared.live).remove(&pid);
            let finished_at = Timestamp::now();
            let (status_text, exit_code, signal) = match &status {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt as _;
                    let signal = status.signal();
                    let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
                    (describe(*status), code, signal)
                }
                Err(error) => (error.to_string(), 128 + 9, None),
            };
            let cause = match stopping {
                Some((ExitCause::Terminated { grace, .. }, _, at)) => ExitCause::Terminated {
                    grace,
                    took: at.elapsed(),
                    killed,
                },
                Some((cause, _, _)) => cause,
                None if fault => ExitCause::FaultInjected,
                None => ExitCause::Exited,
            };
            tracing::info!(
                pod = %self.key, container = %name, pid, status = %status_text, ?cause,
                "container exited"
            );
            let terminated = Terminated {
                exit_code,
                signal,
                reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                started_at,
                finished_at,
                container_id: container_id.clone(),
            };
            self.update(|c| {
                c.state = State::Terminated(terminated.clone());
                c.ready = false;
                c.started = false;
            });
            self.shared.events.push(KubeletEvent::ContainerExited {
                pod: self.key.clone(),
                container: name.clone(),
                exit: ContainerExit {
                    pid,
                    status: status_text,
                    exit_code,
                    cause: cause.clone(),
                    ran_for: began.elapsed(),
                },
            });
            if stop_for_good {
                return;
            }
            let failed = exit_code != 0 || !matches!(cause, ExitCause::Exited);
            let restart = match self.restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => failed,
                _ => true,
            };
            if !restart {
                return;
            }
            if began.elapsed() > self.shared.config.max_restart_backoff * 2 {
                backoff_step = 0;
            }
            let delay = self
                .shared
                .config
                .restart_backoff
                .saturating_mul(2u32.saturating_pow(backoff_step))
                .min(self.shared.config.max_restart_backoff);
            backoff_step = backoff_step.saturating_add(1);
            self.update(|c| {
                c.last = Some(terminated.clone());
                c.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {delay:?} restarting failed container {}",
                        c.name
                    )),
                };
            });
            if let Pause::Stop = self.pause(delay).await {
                self.update(|c| c.state = State::Terminated(terminated.clone()));
                return;
            }
            self.update(|c| c.restart_count = c.restart_count.saturating_add(1));
        }
    }

    /// Resolves the image, env, command and args into a process spec. Errors are (reason, message) for
    /// the container's waiting state.
    async fn prepare(&self) -> Result<Spec, (&'static str, String)> {
        let config = &self.shared.config;
        let container = &self.container;
        let image = container.image.clone().unwrap_or_default();
        let kind = classify(&image, &config.switchyard_images, &config.redis_images).ok_or_else(|| {
            (
                "ImageNotSupported",
                format!(
                    "image {image:?} is neither a Switchyard image ({:?}) nor a Redis image ({:?}): the e2e pod \
                     runner only runs those",
                    config.switchyard_images, config.redis_images
                ),
            )
        })?;
        let namespace = &self.key.namespace;
        let (config_map_names, secret_names) = env::references(container);
        let mut sources = env::Sources::default();
        for name in config_map_names {
            let api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), namespace);
            match api.get_opt(&name).await {
                Ok(Some(map)) => {
                    sources.config_maps.insert(name, map);
                }
                Ok(None) => {}
                Err(e) => return Err(("CreateContainerConfigError", format!("get configmap {name}: {e}"))),
            }
        }
        for name in secret_names {
            let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), namespace);
            match api.get_opt(&name).await {
                Ok(Some(secret)) => {
                    sources.secrets.insert(name, secret);
                }
                Ok(None) => {}
                Err(e) => return Err(("CreateContainerConfigError", format!("get secret {name}: {e}"))),
            }
        }
        let mounts = volumes::mounts(container, &self.volumes);
        let api = &self.shared.api;
        let mut base: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOSTNAME".into(), self.key.name.clone()),
            ("HOME".into(), self.dir.display().to_string()),
            ("KUBERNETES_SERVICE_HOST".into(), api.address.ip().to_string()),
            ("KUBERNETES_SERVICE_PORT".into(), api.address.port().to_string()),
            (
                "KUBERNETES_SERVICE_PORT_HTTPS".into(),
                api.address.port().to_string(),
            ),
            ("KUBERNETES_PORT".into(), format!("tcp://{}", api.address)),
        ];
        let kubeconfig = volumes::service_account_kubeconfig(&mounts, api, namespace, &self.dir)
            .map_err(|e| ("CreateContainerConfigError", e))?;
        base.extend(config.extra_env.iter().cloned());
        let mut env = env::resolve(&self.pod, container, &self.facts, &sources, &base)
            .map_err(|e| ("CreateContainerConfigError", e))?;
        for value in env.values_mut() {
            *value = volumes::rewrite(value, &mounts);
        }
        // Added after the rewrite: it is a host path already, and a pod mounting a volume at a prefix of it
        // (an emptyDir at /tmp, with the run directory under /tmp) would have it rewritten into the volume.
        // A container that sets KUBECONFIG itself keeps its own.
        if let Some(path) = kubeconfig {
            env.entry("KUBECONFIG".into())
                .or_insert_with(|| path.display().to_string());
        }
        let expand = |items: &Option<Vec<String>>| {
            items.as_ref().map(|items| {
                items
                    .iter()
                    .map(|item| volumes::rewrite(&env::expand(item, |name| env.get(name).cloned()), &mounts))
                    .collect::<Vec<String>>()
            })
        };
        let command = expand(&container.command);
        let args = expand(&container.args).unwrap_or_default();
        let redis_server = config
            .redis_server
            .clone()
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let (program, args) = command_line(
            kind,
            container,
            command,
            args,
            &Programs {
                switchyard: &self.shared.switchyard_bin,
                redis_server: &redis_server,
            },
            &self.facts.pod_ip,
            &self.dir,
        )
        .map_err(|e| ("CreateContainerError", e))?;
        Ok(Spec {
            name: format!("{}/{}", self.key, container.name),
            program,
            args,
            env: env.into_iter().collect(),
            cwd: self.dir.clone(),
            log: self.dir.join(format!("{}.log", container.name)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(states: Vec<(State, bool)>) -> PodView {
        PodView {
            containers: states
                .into_iter()
                .enumerate()
                .map(|(i, (state, ready))| ContainerView {
                    name: format!("c{i}"),
                    image: "switchyard:dev".into(),
                    state,
                    last: None,
                    ready,
                    started: ready,
                    restart_count: 0,
                    container_id: None,
                })
                .collect(),
            transitions: BTreeMap::new(),
        }
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: "10.244.1.3".into(),
            host_ip: "10.244.0.1".into(),
        }
    }

    fn condition(status: &PodStatus, kind: &str) -> String {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .map(|c| c.status.clone())
            .unwrap()
    }

    fn terminated(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: "Error".into(),
            started_at: Timestamp::now(),
            finished_at: Timestamp::now(),
            container_id: "x".into(),
        })
    }

    #[test]
    fn phases_and_readiness() {
        let now = Timestamp::now();
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        let running = State::Running { started_at: now };
        let mut v = view(vec![(waiting.clone(), false)]);
        let s = compute_status(&mut v, "Always", &facts(), now, false);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(condition(&s, "Ready"), "False");
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.3"));

        let mut v = view(vec![(running.clone(), true), (running.clone(), false)]);
        let s = compute_status(&mut v, "Always", &facts(), now, false);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&s, "Ready"), "False");
        assert_eq!(condition(&s, "ContainersReady"), "False");
        v.containers[1].ready = true;
        let s = compute_status(&mut v, "Always", &facts(), now, false);
        assert_eq!(condition(&s, "Ready"), "True");
        assert_eq!(condition(&s, "PodScheduled"), "True");

        let mut v = view(vec![(terminated(0), false)]);
        assert_eq!(
            compute_status(&mut v, "Never", &facts(), now, false)
                .phase
                .as_deref(),
            Some("Succeeded")
        );
        let mut v = view(vec![(terminated(1), false)]);
        assert_eq!(
            compute_status(&mut v, "Never", &facts(), now, false)
                .phase
                .as_deref(),
            Some("Failed")
        );
        assert_eq!(
            compute_status(&mut v, "Always", &facts(), now, false)
                .phase
                .as_deref(),
            Some("Running")
        );
    }

    #[test]
    fn transition_times_change_only_with_the_status() {
        let now = Timestamp::now();
        let mut v = view(vec![(State::Running { started_at: now }, false)]);
        let first = compute_status(&mut v, "Always", &facts(), now, false);
        let t = |s: &PodStatus| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .unwrap()
                .last_transition_time
                .clone()
        };
        std::thread::sleep(Duration::from_millis(5));
        let again = compute_status(&mut v, "Always", &facts(), now, false);
        assert_eq!(t(&first), t(&again));
        v.containers[0].ready = true;
        let ready = compute_status(&mut v, "Always", &facts(), now, false);
        assert_ne!(t(&first), t(&ready));
    }
}
