//! `--locator`: where player bindings live, memory (one process) or Redis, and the start-up wait for a
//! Redis that is not reachable yet.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::ProcessError;
use crate::contract;
use crate::locator::{Locator, MemoryLocator};

/// How long a starting gate or node waits for an unreachable Redis (a managed Redis that is still starting,
/// say) before it exits. Kubernetes starts a cluster's pods in no particular order; exiting at once would
/// send every gate and node into crash-loop backoff (10 s, 20 s, 40 s ... on a real kubelet) while Redis
/// comes up. The wait stays below the 30 s that the operator's liveness probe allows before the admin
/// endpoint answers, so a Redis that stays away still ends in a clean exit (and `CrashLoopBackOff`).
pub const STARTUP_WAIT: Duration = Duration::from_secs(20);

/// Where player bindings live.
#[derive(Debug, Clone, Args)]
pub struct LocatorArgs {
    /// `memory` (one process only) or a Redis URL: `redis://host:6379`, or `redis+cluster://h1:p1,h2:p2`.
    #[arg(long, env = "SWITCHYARD_LOCATOR", default_value = "memory")]
    pub locator: String,
    /// Key prefix in Redis (one prefix per cluster sharing a Redis).
    #[arg(long, env = "SWITCHYARD_LOCATOR_PREFIX", default_value = "switchyard")]
    pub locator_prefix: String,
}

impl LocatorArgs {
    /// The locator; a Redis that cannot be reached yet is waited for (see [`STARTUP_WAIT`]) unless
    /// `shutdown` comes first. The Redis locator's metrics go into `registry`.
    ///
    /// # Errors
    /// A URL that is neither `memory` nor Redis, a Redis URL that cannot work, Redis still away after the
    /// wait, or shutdown during it.
    pub async fn build(
        &self,
        registry: &mut Registry,
        shutdown: &CancellationToken,
    ) -> Result<Arc<dyn Locator>, ProcessError> {
        if self.locator == contract::MEMORY_LOCATOR {
            return Ok(Arc::new(MemoryLocator::default()));
        }
        if !contract::is_redis_url(&self.locator) {
            return Err(ProcessError::LocatorUrl(self.locator.clone()));
        }
        #[cfg(feature = "redis")]
        {
            redis::connect(&self.locator, &self.locator_prefix, registry, shutdown).await
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = (registry, shutdown);
            Err(ProcessError::RedisNotBuilt(crate::process::locator::redacted(
                &self.locator,
            )))
        }
    }
}

/// The URL without its password, for messages of a build without the Redis locator (which redacts its own).
#[cfg(not(feature = "redis"))]
fn redacted(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (userinfo, hosts) = rest.split_once('@')?;
        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
        Some(format!("{scheme}://{user}:***@{hosts}"))
    }) {
        Some(shown) => shown,
        None => url.to_owned(),
    }
}

#[cfg(feature = "redis")]
mod redis {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use prometheus_client::registry::Registry;
    use tokio_util::sync::CancellationToken;

    use super::STARTUP_WAIT;
    use crate::locator::{Locator, LocatorError};
    use crate::process::ProcessError;
    use crate::redis_locator::{RedisLocator, RedisLocatorConfig};

    /// The first pause between two attempts; it doubles up to [`MAX_RETRY_DELAY`].
    const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
    const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

    pub(super) async fn connect(
        url: &str,
        prefix: &str,
        registry: &mut Registry,
        shutdown: &CancellationToken,
    ) -> Result<Arc<dyn Locator>, ProcessError> {
        let mut config = RedisLocatorConfig::new(url);
        config.prefix = prefix.to_owned();
        let shown = config.redacted_url();
        let refused = |reason: String| ProcessError::Redis {
            url: shown.clone(),
            reason,
        };
        // A URL that cannot work never will: no waiting for it.
        config.validate().map_err(|error| refused(error.to_string()))?;
        let started = Instant::now();
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            match RedisLocator::connect(config.clone(), registry).await {
                Ok(locator) => {
                    if started.elapsed() > FIRST_RETRY_DELAY {
                        tracing::info!(redis = %shown, waited = ?started.elapsed(), "Redis locator reachable");
                    }
                    return Ok(Arc::new(locator));
                }
                Err(LocatorError::Unavailable(error)) if started.elapsed() + delay < STARTUP_WAIT => {
                    tracing::warn!(redis = %shown, %error, retry_in = ?delay, "Redis locator unreachable; waiting for it");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(ProcessError::RedisWaitStopped(shown)),
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(error) => return Err(refused(error.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(locator: &str) -> LocatorArgs {
        LocatorArgs {
            locator: locator.to_owned(),
            locator_prefix: "switchyard".to_owned(),
        }
    }

    #[tokio::test]
    async fn memory_and_refusals() {
        let mut registry = Registry::default();
        let shutdown = CancellationToken::new();
        assert!(args("memory").build(&mut registry, &shutdown).await.is_ok());
        let error = args("http://redis:6379")
            .build(&mut registry, &shutdown)
            .await
            .err()
            .unwrap();
        assert!(matches!(error, ProcessError::LocatorUrl(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("redis://, rediss:// or redis+cluster://")
        );
    }
}
