//! [`DrainSignal`]: tells when this pod gets the annotation `switchyard.dev/drain: "true"` (maintenance).
//!
//! Two sources, chosen by [`DrainSource`]: a downward API volume file with the pod's annotations, polled
//! (no API permissions needed, but the kubelet refreshes the file only on its sync period), or a metadata-only
//! watch on the pod itself (field selector `metadata.name=<pod>`; needs `get`/`list`/`watch` on the pod).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::config::{DrainConfig, DrainSource, PodRef};
use super::{DRAIN_ANNOTATION, ErrorLatch, KubernetesError};
use crate::annotations_file::{AnnotationsFileError, parse_annotations_file};

/// The largest annotations file read (Kubernetes caps all annotations of an object at 256 KiB; quoting can
/// make them up to four times longer).
const MAX_FILE_BYTES: u64 = 2 << 20;

/// Whether the pod is asked to drain, kept current by one task.
///
/// The value follows the annotation: it turns `true` when the annotation's value is exactly `"true"` and
/// back to `false` if the annotation is removed or changed (what to do then is the caller's choice; a node
/// that started draining keeps draining). Errors reading the source are logged once and retried; the value
/// stays as it was meanwhile. The task stops when the token is cancelled or the signal is dropped.
#[derive(Debug)]
pub struct DrainSignal {
    requested: watch::Receiver<bool>,
    _stop: DropGuard,
}

impl DrainSignal {
    /// Starts the source that `config` selects. `client` is only used by [`DrainSource::PodWatch`].
    ///
    /// # Errors
    /// [`KubernetesError::Config`] when `config` is invalid.
    pub fn start(
        client: Client,
        config: DrainConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, KubernetesError> {
        config.validate()?;
        match config.source {
            DrainSource::AnnotationsFile { path, poll_interval } => {
                Self::from_annotations_file(path, poll_interval, shutdown)
            }
            DrainSource::PodWatch => Self::from_pod_watch(client, config.pod, shutdown),
        }
    }

    /// Polls the downward API annotations file at `path` every `poll_interval` (no client needed).
    ///
    /// # Errors
    /// [`KubernetesError::Config`] when the path is empty or the interval is zero.
    pub fn from_annotations_file(
        path: impl Into<PathBuf>,
        poll_interval: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Self, KubernetesError> {
        let path = path.into();
        DrainConfig {
            pod: PodRef::new("", ""),
            source: DrainSource::AnnotationsFile {
                path: path.clone(),
                poll_interval,
            },
        }
        .validate()?;
        let stop = shutdown.child_token();
        let (tx, requested) = watch::channel(false);
        tokio::spawn(poll_file(path, poll_interval, tx, stop.clone()));
        Ok(DrainSignal {
            requested,
            _stop: stop.drop_guard(),
        })
    }

    /// Watches the pod's metadata through the API server.
    ///
    /// # Errors
    /// [`KubernetesError::Config`] when the pod's name or namespace is invalid.
    pub fn from_pod_watch(
        client: Client,
        pod: PodRef,
        shutdown: &CancellationToken,
    ) -> Result<Self, KubernetesError> {
        pod.validate()?;
        let stop = shutdown.child_token();
        let (tx, requested) = watch::channel(false);
        let api: Api<PartialObjectMeta<Pod>> = Api::namespaced(client, &pod.namespace);
        tokio::spawn(watch_pod(api, pod, tx, stop.clone()));
        Ok(DrainSignal {
            requested,
            _stop: stop.drop_guard(),
        })
    }

    /// Whether a drain is requested right now.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// A receiver of the current value, for callers that select on it.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.requested.clone()
    }

    /// Resolves when a drain is requested (at once if it already is).
    ///
    /// # Errors
    /// [`KubernetesError::Stopped`] when the task stopped (shutdown) before any request.
    pub async fn requested(&self) -> Result<(), KubernetesError> {
        let mut rx = self.requested.clone();
        rx.wait_for(|requested| *requested)
            .await
            .map(|_| ())
            .map_err(|_| KubernetesError::Stopped {
                component: "drain signal",
                awaited: "a drain request",
            })
    }
}

/// Whether these annotations ask for a drain: [`DRAIN_ANNOTATION`] is exactly `"true"`.
pub(crate) fn drain_requested(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(DRAIN_ANNOTATION))
        .is_some_and(|v| v == "true")
}

fn set(tx: &watch::Sender<bool>, requested: bool) {
    tx.send_if_modified(|current| {
        if *current == requested {
            return false;
        }
        if requested {
            tracing::info!("drain requested by the pod annotation {DRAIN_ANNOTATION}=\"true\"");
        } else {
            tracing::info!("drain annotation {DRAIN_ANNOTATION} removed");
        }
        *current = requested;
        true
    });
}

#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("it is not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Parse(#[from] AnnotationsFileError),
    #[error("the reading task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn read_annotations(path: &Path) -> Result<BTreeMap<String, String>, FileError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge);
    }
    let text = String::from_utf8(bytes).map_err(|_| FileError::NotUtf8)?;
    Ok(parse_annotations_file(&text)?)
}

async fn poll_file(path: PathBuf, poll_interval: Duration, tx: watch::Sender<bool>, stop: CancellationToken) {
    let mut latch = ErrorLatch::new(format!(
        "reading the downward API annotations file {}",
        path.display()
    ));
    let mut ticks = tokio::time::interval(poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let file = path.clone();
        let read = tokio::task::spawn_blocking(move || read_annotations(&file));
        let result = tokio::select! {
            () = stop.cancelled() => break,
            read = read => read.map_err(FileError::from).and_then(|r| r),
        };
        match result {
            Ok(annotations) => {
                latch.succeeded();
                set(&tx, drain_requested(Some(&annotations)));
            }
            Err(error) => latch.failed(&error, Some(poll_interval)),
        }
    }
    tracing::debug!(path = %path.display(), "drain signal (file) stopped");
}

async fn watch_pod(
    api: Api<PartialObjectMeta<Pod>>,
    pod: PodRef,
    tx: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut latch = ErrorLatch::new(format!(
        "watching pod {}/{} for the drain annotation",
        pod.namespace, pod.name
    ));
    let mut missing_logged = false;
    let events = watcher::watch_object(api, &pod.name).default_backoff();
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => break,
            event = events.next() => event,
        };
        match event {
            None => break,
            Some(Err(error)) => latch.failed(&error, None),
            Some(Ok(Some(meta))) => {
                latch.succeeded();
                set(&tx, drain_requested(meta.metadata.annotations.as_ref()));
            }
            Some(Ok(None)) => {
                latch.succeeded();
                if !missing_logged {
                    tracing::warn!(
                        namespace = pod.namespace,
                        pod = pod.name,
                        "drain signal: the pod does not exist (yet?); waiting for it"
                    );
                    missing_logged = true;
                }
            }
        }
    }
    tracing::debug!(pod = pod.name, "drain signal (pod watch) stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_exactly_true_requests_a_drain() {
        assert!(drain_requested(Some(&annotations(&[(
            "switchyard.dev/drain",
            "true"
        )]))));
        for value in ["false", "True", "TRUE", "yes", "1", "", " true"] {
            assert!(
                !drain_requested(Some(&annotations(&[("switchyard.dev/drain", value)]))),
                "{value:?}"
            );
        }
        assert!(!drain_requested(Some(&annotations(&[("other", "true")]))));
        assert!(!drain_requested(None));
    }

    #[test]
    fn file_contents_to_drain_state() {
        let text = "switchyard.dev/bound-players=\"3\"\nswitchyard.dev/drain=\"true\"";
        let parsed = parse_annotations_file(text).ok();
        assert!(drain_requested(parsed.as_ref()));
        let parsed = parse_annotations_file("switchyard.dev/drain=\"false\"").ok();
        assert!(!drain_requested(parsed.as_ref()));
    }

    fn temp_file(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("switchyard-drain-{}-{name}", std::process::id()))
    }

    #[tokio::test]
    async fn file_source_follows_the_file() {
        let path = temp_file("follows");
        let _ = std::fs::remove_file(&path);
        let shutdown = CancellationToken::new();
        let signal = DrainSignal::from_annotations_file(&path, Duration::from_millis(20), &shutdown)
            .expect("valid config");
        // missing file: logged, not requested
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!signal.is_requested());
        std::fs::write(&path, "a=\"1\"\nswitchyard.dev/drain=\"false\"").expect("write");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!signal.is_requested());
        // a malformed file changes nothing
        std::fs::write(&path, "garbage").expect("write");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!signal.is_requested());
        std::fs::write(&path, "a=\"1\"\nswitchyard.dev/drain=\"true\"").expect("write");
        tokio::time::timeout(Duration::from_secs(5), signal.requested())
            .await
            .expect("drain seen within 5 s")
            .expect("task running");
        assert!(signal.is_requested());
        let mut rx = signal.subscribe();
        std::fs::write(&path, "a=\"1\"").expect("write");
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| !*r))
            .await
            .expect("removal seen within 5 s")
            .expect("task running");
        shutdown.cancel();
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn requested_fails_once_the_task_stops() {
        let shutdown = CancellationToken::new();
        let signal =
            DrainSignal::from_annotations_file(temp_file("stops"), Duration::from_millis(10), &shutdown)
                .expect("valid config");
        shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), signal.requested())
            .await
            .expect("resolves after shutdown");
        assert!(
            matches!(result, Err(KubernetesError::Stopped { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn bad_config_is_refused() {
        let shutdown = CancellationToken::new();
        let result = DrainSignal::from_annotations_file("/x", Duration::ZERO, &shutdown);
        assert!(matches!(result, Err(KubernetesError::Config(_))));
    }
}
