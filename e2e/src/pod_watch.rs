//! What the real node's kubelet did with the pods' containers, as a test sees it afterwards: how each
//! container ended (from the pod status the kubelet writes), and its log. Both vanish quickly on a real
//! node: a deleted pod's object goes right after its containers stop, and the kubelet removes their log
//! files when it removes the containers, so this module records the one and copies the other while they
//! exist.
//!
//! - Exits: a watch on every pod records each terminated container state once (exit code, reason, and for
//!   a pod being deleted, how long after the deletion was first seen the exit was seen).
//! - Logs: every 200 ms the kubelet's pod log directory (`podLogsDir`, `<namespace>_<pod>_<uid>/<container>/
//!   <restart>.log`) is copied, appending what is new, into a directory kept with the run.
//!
//! Bounded: at most [`MAX_EXITS`] exits are kept (the oldest go first), and each log copy stops at
//! [`MAX_LOG_BYTES`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// Exits kept (a journey sees a few hundred).
pub const MAX_EXITS: usize = 4096;
/// Bytes kept of one container log file.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;
/// Exit code of a process killed by SIGKILL (128 + 9), as runc reports it.
pub const SIGKILL_EXIT_CODE: i32 = 137;

/// How a container ended, from the kubelet's pod status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerExit {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// The container's runtime id (one per start).
    pub container_id: String,
    /// Its exit code (137: SIGKILL).
    pub exit_code: i32,
    /// The kubelet's reason (`Completed`, `Error`, ...).
    pub reason: String,
    /// For a pod being deleted: from the first sight of its deletion to the first sight of this exit.
    pub after_delete: Option<Duration>,
    /// For a pod being deleted: its grace period.
    pub grace: Option<Duration>,
}

impl ContainerExit {
    /// Killed by SIGKILL (the grace period's end, or a fault injected by a test).
    pub fn killed(&self) -> bool {
        self.exit_code == SIGKILL_EXIT_CODE
    }
}

#[derive(Debug)]
struct Inner {
    exits: Mutex<VecDeque<ContainerExit>>,
    changed: watch::Sender<u64>,
    /// Pod uid → when its deletion was first seen.
    deleting: Mutex<BTreeMap<String, Instant>>,
    /// Container ids whose exit is recorded.
    recorded: Mutex<BTreeSet<String>>,
    kept_logs: PathBuf,
}

/// The running watch and log copier; both stop when it is dropped.
#[derive(Debug)]
pub struct PodWatch {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PodWatch {
    /// Watches every pod through `client` and copies the kubelet's logs from `pod_logs` into `kept_logs`.
    ///
    /// # Errors
    /// When `kept_logs` cannot be created.
    pub fn start(client: kube::Client, pod_logs: PathBuf, kept_logs: PathBuf) -> Result<PodWatch, Error> {
        std::fs::create_dir_all(&kept_logs).map_err(Error::io(format!("create {}", kept_logs.display())))?;
        let inner = Arc::new(Inner {
            exits: Mutex::new(VecDeque::new()),
            changed: watch::Sender::new(0),
            deleting: Mutex::new(BTreeMap::new()),
            recorded: Mutex::new(BTreeSet::new()),
            kept_logs: kept_logs.clone(),
        });
        let watch_task = tokio::spawn(watch_pods(client, inner.clone()));
        let copy_task = tokio::spawn(async move {
            let mut offsets: BTreeMap<PathBuf, u64> = BTreeMap::new();
            loop {
                let (from, to) = (pod_logs.clone(), kept_logs.clone());
                let mut taken = std::mem::take(&mut offsets);
                offsets = tokio::task::spawn_blocking(move || {
                    copy_logs(&from, &to, &mut taken);
                    taken
                })
                .await
                .unwrap_or_default();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(PodWatch {
            inner,
            tasks: vec![watch_task, copy_task],
        })
    }

    /// Stops watching and copying (before the API server goes, so that it has no watch to wait for).
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    /// Every exit recorded so far, oldest first.
    pub fn exits(&self) -> Vec<ContainerExit> {
        lock(&self.inner.exits).iter().cloned().collect()
    }

    /// Waits (up to `timeout`) for an exit of `container` in pod `namespace/pod` that `accept`s.
    ///
    /// # Errors
    /// [`Error::Timeout`] naming the pod and the exits seen of it.
    pub async fn wait_exit(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        timeout: Duration,
        accept: impl Fn(&ContainerExit) -> bool,
    ) -> Result<ContainerExit, Error> {
        let mut changed = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let of_pod: Vec<ContainerExit> = self
                .exits()
                .into_iter()
                .filter(|e| e.namespace == namespace && e.pod == pod && e.container == container)
                .collect();
            if let Some(exit) = of_pod.iter().find(|e| accept(e)) {
                return Ok(exit.clone());
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(Error::Timeout {
                    what: format!("container {container} of {namespace}/{pod} to exit (seen: {of_pod:?})"),
                    after: timeout,
                });
            }
        }
    }

    /// Waits (up to `timeout`) for `container` of pod `namespace/pod` to exit after its pod's deletion.
    ///
    /// # Errors
    /// [`Error::Timeout`] naming the pod.
    pub async fn wait_deleted_exit(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        timeout: Duration,
    ) -> Result<ContainerExit, Error> {
        self.wait_exit(namespace, pod, container, timeout, |e| e.after_delete.is_some())
            .await
    }

    /// Everything `container` of pod `namespace/pod` logged (every start, in order), as the kubelet wrote
    /// it (CRI log lines: time, stream, tag, text).
    pub fn log(&self, namespace: &str, pod: &str, container: &str) -> String {
        let prefix = format!("{namespace}_{pod}_");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.inner.kept_logs)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .flat_map(|e| std::fs::read_dir(e.path().join(container)).into_iter().flatten())
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        // `<restart>.log`: in restart order.
        files.sort_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        });
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }
}

async fn watch_pods(client: kube::Client, inner: Arc<Inner>) {
    let api: Api<Pod> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod) | Event::Delete(pod)) => record(&inner, &pod),
            Ok(Event::Init | Event::InitDone) => {}
            Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
        }
    }
}

fn record(inner: &Inner, pod: &Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let deleting_since = pod
        .metadata
        .deletion_timestamp
        .is_some()
        .then(|| *lock(&inner.deleting).entry(uid).or_insert_with(Instant::now));
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs);
    let statuses = pod.status.iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
    });
    for status in statuses {
        for (terminated, current) in terminations(status) {
            let id = terminated.container_id.clone().unwrap_or_default();
            if id.is_empty() || !lock(&inner.recorded).insert(id.clone()) {
                continue;
            }
            let exit = ContainerExit {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                pod: pod.metadata.name.clone().unwrap_or_default(),
                container: status.name.clone(),
                container_id: id,
                exit_code: terminated.exit_code,
                reason: terminated.reason.clone().unwrap_or_default(),
                after_delete: deleting_since.filter(|_| current).map(|since| since.elapsed()),
                grace: grace.filter(|_| current),
            };
            tracing::info!(?exit, "container exited");
            {
                let mut exits = lock(&inner.exits);
                if exits.len() >= MAX_EXITS {
                    exits.pop_front();
                }
                exits.push_back(exit);
            }
            inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// The terminated states of a container status: the current one (`true`) and the last one before a
/// restart (`false`).
fn terminations(
    status: &ContainerStatus,
) -> Vec<(&k8s_openapi::api::core::v1::ContainerStateTerminated, bool)> {
    let current = status.state.as_ref().and_then(|s| s.terminated.as_ref());
    let last = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    last.map(|t| (t, false))
        .into_iter()
        .chain(current.map(|t| (t, true)))
        .collect()
}

/// Appends what is new in every `<pod>/<container>/<n>.log` under `from` to the same path under `to`.
fn copy_logs(from: &Path, to: &Path, offsets: &mut BTreeMap<PathBuf, u64>) {
    let Ok(pods) = std::fs::read_dir(from) else {
        return;
    };
    for pod in pods.filter_map(Result::ok) {
        let Ok(containers) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for container in containers.filter_map(Result::ok) {
            let Ok(files) = std::fs::read_dir(container.path()) else {
                continue;
            };
            for file in files.filter_map(Result::ok) {
                let source = file.path();
                let Ok(relative) = source.strip_prefix(from) else {
                    continue;
                };
                let target = to.join(relative);
                let offset = offsets.entry(source.clone()).or_insert(0);
                if let Err(error) = append_new(&source, &target, offset) {
                    tracing::debug!(source = %source.display(), %error, "log copy");
                }
            }
        }
    }
}

fn append_new(source: &Path, target: &Path, offset: &mut u64) -> std::io::Result<()> {
    let mut input = std::fs::File::open(source)?;
    let len = input.metadata()?.len().min(MAX_LOG_BYTES);
    if len <= *offset {
        return Ok(());
    }
    input.seek(SeekFrom::Start(*offset))?;
    let mut new = Vec::new();
    input.take(len - *offset).read_to_end(&mut new)?;
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target)?;
    output.write_all(&new)?;
    *offset += new.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_copies_append_only_what_is_new_and_stay_bounded() {
        let dir = std::env::temp_dir().join(format!("sy-podwatch-{}", std::process::id()));
        let (from, to) = (dir.join("from"), dir.join("to"));
        let file = from.join("ns_pod_uid/node/0.log");
        std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
        std::fs::write(&file, "one\n").expect("write");
        let mut offsets = BTreeMap::new();
        copy_logs(&from, &to, &mut offsets);
        std::fs::write(&file, "one\ntwo\n").expect("write");
        copy_logs(&from, &to, &mut offsets);
        copy_logs(&from, &to, &mut offsets);
        let copy = std::fs::read_to_string(to.join("ns_pod_uid/node/0.log")).expect("copy");
        assert_eq!(copy, "one\ntwo\n");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn exits_of_a_deleted_pod_and_of_a_restart() {
        let inner = Inner {
            exits: Mutex::new(VecDeque::new()),
            changed: watch::Sender::new(0),
            deleting: Mutex::new(BTreeMap::new()),
            recorded: Mutex::new(BTreeSet::new()),
            kept_logs: PathBuf::new(),
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u",
                         "deletionTimestamp": "2026-01-01T00:00:20Z", "deletionGracePeriodSeconds": 20},
            "status": {"containerStatuses": [{
                "name": "node", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "containerID": "c2"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "Error", "containerID": "c1"}},
            }]},
        }))
        .expect("pod");
        record(&inner, &pod);
        record(&inner, &pod);
        let exits: Vec<ContainerExit> = lock(&inner.exits).iter().cloned().collect();
        assert_eq!(exits.len(), 2, "each container id once: {exits:?}");
        assert!(exits[0].killed() && exits[0].after_delete.is_none());
        assert_eq!(exits[1].exit_code, 0);
        assert_eq!(exits[1].grace, Some(Duration::from_secs(20)));
        assert!(exits[1].after_delete.is_some());
    }
}
