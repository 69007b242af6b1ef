//! Building the Redis locator from the `--locator` URL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use switchyard_cluster::locator::{Locator, LocatorError};
use switchyard_cluster::redis_locator::{RedisLocator, RedisLocatorConfig};
use tokio_util::sync::CancellationToken;

/// How long a starting gate or node waits for an unreachable Redis (a managed Redis that is still starting,
/// say) before it exits. Kubernetes starts a cluster's pods in no particular order; exiting at once would
/// send every gate and node into crash-loop backoff (10 s, 20 s, 40 s ... on a real kubelet) while Redis
/// comes up. The wait stays below the 30 s that the operator's liveness probe allows before the admin
/// endpoint answers, so a Redis that stays away still ends in a clean exit (and `CrashLoopBackOff`).
pub(crate) const STARTUP_WAIT: Duration = Duration::from_secs(20);
/// The first pause between two attempts; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

pub(crate) async fn connect(
    url: &str,
    prefix: &str,
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn Locator>> {
    let mut config = RedisLocatorConfig::new(url);
    config.prefix = prefix.to_owned();
    let shown = config.redacted_url();
    // A URL that cannot work never will: no waiting for it.
    config
        .validate()
        .map_err(|error| anyhow::anyhow!("cannot use the Redis locator at {shown}: {error}"))?;
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
                    () = shutdown.cancelled() => {
                        anyhow::bail!("stopped while waiting for the Redis locator at {shown}")
                    }
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(error) => anyhow::bail!("cannot use the Redis locator at {shown}: {error}"),
        }
    }
}
