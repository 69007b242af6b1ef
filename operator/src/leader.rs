//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas never reconcile at
//! once.
//!
//! The algorithm is client-go's: a candidate takes the Lease when it is free (no holder, e.g. released on a
//! graceful shutdown) or when its record has not changed for `leaseDurationSeconds` *as observed on this
//! candidate's own clock* (so clock skew between replicas does not matter). Every write is an optimistic
//! `replace` with the `resourceVersion` that was read, so two candidates can never both win. The leader
//! renews every `retry_period`; when it could not renew for `renew_deadline` (shorter than the lease
//! duration) it considers itself deposed and stops reconciling before anybody else may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Where the Lease lives and how it is timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This candidate's identity (`holderIdentity`), unique per replica: the pod name.
    pub identity: String,
    /// How long a Lease whose record does not change stays valid.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        LeaseSettings {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks that the timings make sense.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        if self.identity.is_empty() || self.name.is_empty() || self.namespace.is_empty() {
            return Err(Error::Config(
                "the leader-election lease needs a namespace, a name and an identity".into(),
            ));
        }
        if self.retry_period.is_zero()
            || self.renew_deadline <= self.retry_period
            || self.lease_duration <= self.renew_deadline
        {
            return Err(Error::Config(format!(
                "leader election needs retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            )));
        }
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// This candidate holds the Lease now.
    Held,
    /// Somebody else does (or won the race).
    Other(Option<String>),
}

/// A candidate for leadership.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last record seen (resourceVersion) and when this candidate first saw it.
    observed: Option<(String, Instant)>,
}

/// Held while this candidate leads. Dropping it stops renewing (without releasing: use
/// [`Leadership::release`] on a graceful shutdown).
#[derive(Debug)]
pub struct Leadership {
    lost: CancellationToken,
    stop: CancellationToken,
    renewer: Option<JoinHandle<LeaderElector>>,
}

impl LeaderElector {
    /// A candidate; nothing happens until [`LeaderElector::acquire`].
    ///
    /// # Errors
    /// Invalid settings.
    pub fn new(client: Client, settings: LeaseSettings) -> Result<Self, Error> {
        settings.validate()?;
        Ok(LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        })
    }

    /// Waits until this candidate holds the Lease, retrying every retry period. `reachable` is called with
    /// whether each attempt reached the API server (for readiness). Returns `None` when `shutdown` is
    /// cancelled first.
    pub async fn acquire(
        mut self,
        shutdown: &CancellationToken,
        reachable: impl Fn(bool),
    ) -> Option<Leadership> {
        let mut last_holder: Option<Option<String>> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    reachable(true);
                    tracing::info!(
                        lease = %self.settings.name,
                        identity = %self.settings.identity,
                        "became the leader"
                    );
                    return Some(self.lead(shutdown));
                }
                Ok(Attempt::Other(holder)) => {
                    reachable(true);
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(
                            lease = %self.settings.name,
                            holder = holder.as_deref().unwrap_or("-"),
                            "standing by: another replica leads"
                        );
                        last_holder = Some(holder);
                    }
                }
                Err(error) => {
                    reachable(false);
                    tracing::warn!(lease = %self.settings.name, %error, "leader election attempt failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
    }

    fn lead(self, shutdown: &CancellationToken) -> Leadership {
        let lost = CancellationToken::new();
        let stop = shutdown.child_token();
        let renewer = tokio::spawn(renew(self, lost.clone(), stop.clone()));
        Leadership {
            lost,
            stop,
            renewer: Some(renewer),
        }
    }

    /// One attempt: create, renew or take over the Lease.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let me = self.settings.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.settings.duration_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Held)
                }
                Err(error) if is_conflict(&error) => Ok(Attempt::Other(None)),
                Err(error) => Err(error),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|holder| !holder.is_empty());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        if !held_by_me && holder.is_some() && !self.expired(spec) {
            return Ok(Attempt::Other(holder));
        }
        if !held_by_me {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(self.settings.duration_seconds());
        spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(replaced) => {
                self.observe(&replaced);
                Ok(Attempt::Held)
            }
            Err(error) if is_conflict(&error) => Ok(Attempt::Other(holder)),
            Err(error) => Err(error),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().map(|(seen, _)| seen) != Some(&version) {
            self.observed = Some((version, Instant::now()));
        }
    }

    /// The holder has not renewed for its lease duration, as seen on this candidate's clock.
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.settings.lease_duration);
        self.observed
            .as_ref()
            .is_some_and(|(_, seen)| seen.elapsed() >= duration)
    }

    /// Gives the Lease up if this candidate still holds it, so a standby takes over at once.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let now = Timestamp::now();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(now));
        spec.acquire_time = Some(MicroTime(now));
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// The leader's renew loop: ends (returning the elector) when `stop` is cancelled or leadership is lost.
async fn renew(
    mut elector: LeaderElector,
    lost: CancellationToken,
    stop: CancellationToken,
) -> LeaderElector {
    let mut last_renewal = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return elector,
            _ = tokio::time::sleep(elector.settings.retry_period) => {}
        }
        let attempt =
            tokio::time::timeout(elector.settings.renew_deadline, elector.try_acquire_or_renew()).await;
        match attempt {
            Ok(Ok(Attempt::Held)) => last_renewal = Instant::now(),
            Ok(Ok(Attempt::Other(holder))) => {
                tracing::warn!(
                    lease = %elector.settings.name,
                    holder = holder.as_deref().unwrap_or("-"),
                    "leadership lost: another replica holds the lease"
                );
                lost.cancel();
                return elector;
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %elector.settings.name, %error, "renewing the lease failed")
            }
            Err(_) => tracing::warn!(lease = %elector.settings.name, "renewing the lease timed out"),
        }
        if last_renewal.elapsed() >= elector.settings.renew_deadline {
            tracing::warn!(
                lease = %elector.settings.name,
                "leadership lost: the lease could not be renewed within the renew deadline"
            );
            lost.cancel();
            return elector;
        }
    }
}

impl Leadership {
    /// Cancelled when this replica stops being the leader.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and, if this replica still holds the Lease, releases it so a standby takes over at
    /// once rather than after the lease duration.
    pub async fn release(mut self) {
        self.stop.cancel();
        let Some(renewer) = self.renewer.take() else {
            return;
        };
        match renewer.await {
            Ok(mut elector) => {
                if self.lost.is_cancelled() {
                    return;
                }
                match elector.release().await {
                    Ok(()) => tracing::info!(lease = %elector.settings.name, "released the lease"),
                    Err(error) => {
                        tracing::warn!(lease = %elector.settings.name, %error, "releasing the lease failed")
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "the lease renewer panicked"),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_must_nest() {
        let ok = LeaseSettings::new("ns".into(), "lease".into(), "me".into());
        assert!(ok.validate().is_ok());
        let bad = LeaseSettings {
            renew_deadline: Duration::from_secs(20),
            ..ok.clone()
        };
        assert!(bad.validate().is_err());
        let no_identity = LeaseSettings {
            identity: String::new(),
            ..ok
        };
        assert!(no_identity.validate().is_err());
    }
}
