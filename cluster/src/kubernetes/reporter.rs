//! [`PodReporter`]: the bound-player count on the node's own pod, as two annotations, and the node's routes
//! as a third.
//!
//! `switchyard.dev/bound-players` is for people and the operator's status; `controller.kubernetes.io/
//! pod-deletion-cost` makes a ReplicaSet that scales down delete the pods with the fewest players first;
//! `switchyard.dev/routes` ([`ROUTES_ANNOTATION`]) lets the operator see two pools claiming one route. The
//! routes never change while the node runs: every patch carries them, so a pod that lost them gets them back.
//! Writes are JSON merge patches of `metadata.annotations` (field manager `switchyard`), made only when the
//! value differs from the last one written, at most one per interval, and always ending on the newest value.
//! The decisions are the pure [`Throttle`], tested without a server.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::config::ReporterConfig;
use super::{
    BOUND_PLAYERS_ANNOTATION, ErrorLatch, FIELD_MANAGER, KubernetesError, POD_DELETION_COST_ANNOTATION,
    ROUTES_ANNOTATION,
};
use crate::load::{MAX_REPORTED_ROUTES, format_routes};

/// The longest wait between two attempts while patches keep failing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Keeps this pod's bound-player annotations equal to a count fed on a [`watch`] channel.
///
/// The first value is always written (the pod may carry a stale one from an earlier container); after that
/// only changes are. At most one patch is sent per [`ReporterConfig::interval`]; a value that changes during
/// the wait is written once the interval has passed, so the pod always ends up with the newest count. Failed
/// patches are logged once and retried with a backoff that starts at the interval and doubles up to 30 s. The
/// task ends when the token is cancelled, when the reporter is dropped, or when the count's sender is dropped
/// and its last value has been written.
#[derive(Debug)]
pub struct PodReporter {
    written: watch::Receiver<Option<usize>>,
    _stop: DropGuard,
}

impl PodReporter {
    /// Validates `config` and starts reporting `bound`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`KubernetesError::Config`] when `config` is invalid; API errors are retried inside the task.
    pub fn start(
        client: Client,
        config: ReporterConfig,
        bound: watch::Receiver<usize>,
        shutdown: &CancellationToken,
    ) -> Result<Self, KubernetesError> {
        config.validate()?;
        let stop = shutdown.child_token();
        let api: Api<Pod> = Api::namespaced(client, &config.pod.namespace);
        let (written_tx, written) = watch::channel(None);
        tokio::spawn(run(api, config, bound, written_tx, stop.clone()));
        Ok(PodReporter {
            written,
            _stop: stop.drop_guard(),
        })
    }

    /// The last count successfully written to the pod (`None` before the first write).
    pub fn written(&self) -> watch::Receiver<Option<usize>> {
        self.written.clone()
    }
}

/// The merge patch that sets both count annotations to `bound` and the routes annotation to `routes` (a
/// [`format_routes`] value).
pub(crate) fn annotations_patch(bound: usize, routes: &str) -> serde_json::Value {
    // pod-deletion-cost is an int32; a count beyond it (never in practice) saturates.
    let cost = i32::try_from(bound).unwrap_or(i32::MAX);
    serde_json::json!({
        "metadata": {
            "annotations": {
                BOUND_PLAYERS_ANNOTATION: bound.to_string(),
                POD_DELETION_COST_ANNOTATION: cost.to_string(),
                ROUTES_ANNOTATION: routes,
            }
        }
    })
}

async fn run(
    api: Api<Pod>,
    config: ReporterConfig,
    mut bound: watch::Receiver<usize>,
    written: watch::Sender<Option<usize>>,
    stop: CancellationToken,
) {
    let pod = config.pod.name.clone();
    let mut latch = ErrorLatch::new(format!(
        "patching the bound-player annotations of pod {}/{}",
        config.pod.namespace, pod
    ));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let mut throttle = Throttle::new(config.interval);
    let mut source_open = true;
    let routes = format_routes(&config.routes);
    if config.routes.len() > MAX_REPORTED_ROUTES {
        tracing::warn!(
            pod,
            routes = config.routes.len(),
            "the node serves more than {MAX_REPORTED_ROUTES} routes; {ROUTES_ANNOTATION} lists the lowest only"
        );
    }
    loop {
        let latest = *bound.borrow_and_update();
        match throttle.next(latest, Instant::now()) {
            Step::Idle => {
                if !source_open {
                    break; // the count will not change again and is written
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    changed = bound.changed() => source_open = changed.is_ok(),
                }
            }
            Step::WaitUntil(at) => {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            Step::Write(value) => {
                let started = Instant::now();
                let patch = annotations_patch(value, &routes);
                let patch = Patch::Merge(&patch);
                let result = tokio::select! {
                    () = stop.cancelled() => break,
                    result = api.patch_metadata(&pod, &params, &patch) => result,
                };
                match result {
                    Ok(_) => {
                        latch.succeeded();
                        throttle.wrote(value, started);
                        written.send_replace(Some(value));
                        tracing::trace!(pod, bound = value, "bound-player annotations written");
                    }
                    Err(error) => {
                        let retry = throttle.failed(started);
                        latch.failed(&error, Some(retry));
                    }
                }
            }
        }
    }
    tracing::debug!(pod, "pod reporter stopped");
}

/// What the reporter does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The pod carries the latest value: wait for the count to change.
    Idle,
    /// A patch is due but the throttle forbids it before this instant.
    WaitUntil(Instant),
    /// Patch the pod with this value now.
    Write(usize),
}

/// The reporter's decisions: changed values only, at most one attempt per interval, backoff on failures.
#[derive(Debug, Clone)]
pub(crate) struct Throttle {
    interval: Duration,
    /// The value the pod is known to carry.
    written: Option<usize>,
    /// No attempt before this instant.
    not_before: Option<Instant>,
    /// Failed attempts since the last success.
    failures: u32,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            written: None,
            not_before: None,
            failures: 0,
        }
    }

    /// The next step given the newest count.
    pub(crate) fn next(&self, latest: usize, now: Instant) -> Step {
        if self.written == Some(latest) {
            return Step::Idle;
        }
        match self.not_before {
            Some(at) if now < at => Step::WaitUntil(at),
            _ => Step::Write(latest),
        }
    }

    /// A patch of `value` that started at `started` succeeded.
    pub(crate) fn wrote(&mut self, value: usize, started: Instant) {
        self.written = Some(value);
        self.failures = 0;
        self.not_before = Some(started + self.interval);
    }

    /// A patch that started at `started` failed; returns the delay before the next attempt.
    pub(crate) fn failed(&mut self, started: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(16);
        let delay = self
            .interval
            .saturating_mul(1 << doublings)
            .min(MAX_RETRY_DELAY.max(self.interval));
        self.not_before = Some(started + delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn first_value_is_written_at_once_even_zero() {
        let throttle = Throttle::new(2 * SEC);
        let now = t0();
        assert_eq!(throttle.next(0, now), Step::Write(0));
        assert_eq!(throttle.next(7, now), Step::Write(7));
    }

    #[test]
    fn unchanged_values_are_not_written() {
        let mut throttle = Throttle::new(2 * SEC);
        let now = t0();
        throttle.wrote(5, now);
        assert_eq!(throttle.next(5, now), Step::Idle);
        assert_eq!(throttle.next(5, now + 10 * SEC), Step::Idle);
    }

    #[test]
    fn changes_wait_for_the_interval_then_write_the_newest() {
        let mut throttle = Throttle::new(2 * SEC);
        let start = t0();
        throttle.wrote(5, start);
        // a change right after a write waits until start + interval
        assert_eq!(
            throttle.next(6, start + SEC / 2),
            Step::WaitUntil(start + 2 * SEC)
        );
        // more changes during the wait: still the same deadline
        assert_eq!(throttle.next(9, start + SEC), Step::WaitUntil(start + 2 * SEC));
        // at the deadline the newest value is written
        assert_eq!(throttle.next(11, start + 2 * SEC), Step::Write(11));
        // and a value that came back to what the pod carries needs no write at all
        assert_eq!(throttle.next(5, start + SEC), Step::Idle);
    }

    #[test]
    fn interval_is_measured_from_the_start_of_the_previous_patch() {
        let mut throttle = Throttle::new(2 * SEC);
        let start = t0();
        throttle.wrote(1, start); // the patch may have returned much later
        assert_eq!(throttle.next(2, start + 3 * SEC), Step::Write(2));
    }

    #[test]
    fn a_burst_of_changes_gives_one_patch_per_interval() {
        let interval = 2 * SEC;
        let mut throttle = Throttle::new(interval);
        let start = t0();
        let mut writes = Vec::new();
        // the count changes every 100 ms for 10 s; the reporter acts on every change or deadline
        let mut now = start;
        let mut value = 0;
        while now < start + 10 * SEC {
            value += 1;
            if let Step::Write(v) = throttle.next(value, now) {
                throttle.wrote(v, now);
                writes.push((now, v));
            }
            now += SEC / 10;
        }
        assert!(
            writes.len() <= 6,
            "{} writes in 10 s at a 2 s interval",
            writes.len()
        );
        for pair in writes.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= interval,
                "writes closer than the interval: {pair:?}"
            );
        }
        // after the burst the last value is still written, once the interval allows
        match throttle.next(value, now) {
            Step::WaitUntil(at) => assert_eq!(throttle.next(value, at), Step::Write(value)),
            Step::Write(v) => assert_eq!(v, value),
            Step::Idle => panic!("the newest value {value} was never written"),
        }
    }

    #[test]
    fn failures_back_off_and_then_retry_the_newest_value() {
        let mut throttle = Throttle::new(2 * SEC);
        let start = t0();
        assert_eq!(throttle.next(3, start), Step::Write(3));
        assert_eq!(throttle.failed(start), 2 * SEC);
        assert_eq!(throttle.next(3, start + SEC), Step::WaitUntil(start + 2 * SEC));
        let second = start + 2 * SEC;
        assert_eq!(
            throttle.next(4, second),
            Step::Write(4),
            "the retry writes the newest value"
        );
        assert_eq!(throttle.failed(second), 4 * SEC);
        assert_eq!(throttle.failed(second), 8 * SEC);
        assert_eq!(throttle.failed(second), 16 * SEC);
        assert_eq!(throttle.failed(second), 30 * SEC, "capped");
        for _ in 0..100 {
            assert_eq!(throttle.failed(second), 30 * SEC);
        }
        // a failure never marks anything written: the same value is retried
        assert_eq!(throttle.next(4, second + 30 * SEC), Step::Write(4));
        // a success resets the backoff
        throttle.wrote(4, second + 30 * SEC);
        assert_eq!(throttle.failed(second + 40 * SEC), 2 * SEC);
    }

    #[test]
    fn long_intervals_are_not_shortened_by_the_backoff_cap() {
        let mut throttle = Throttle::new(60 * SEC);
        assert_eq!(throttle.failed(t0()), 60 * SEC);
        assert_eq!(throttle.failed(t0()), 60 * SEC);
    }

    #[test]
    fn patch_sets_every_annotation_as_strings() {
        assert_eq!(
            annotations_patch(42, "1,2,11"),
            serde_json::json!({"metadata": {"annotations": {
                "switchyard.dev/bound-players": "42",
                "controller.kubernetes.io/pod-deletion-cost": "42",
                "switchyard.dev/routes": "1,2,11",
            }}})
        );
        let huge = annotations_patch(usize::MAX, "");
        assert_eq!(
            huge["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"],
            i32::MAX.to_string()
        );
        assert_eq!(
            huge["metadata"]["annotations"]["switchyard.dev/bound-players"],
            usize::MAX.to_string()
        );
    }
}
