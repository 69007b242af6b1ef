//! `--locator`: where player bindings live, memory (one process) or Redis, the Redis credentials and CA,
//! and the start-up wait for a Redis that is not reachable yet.

use std::path::PathBuf;
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
    /// `memory` (one process only) or a Redis URL: `redis://host:6379`, `rediss://host:6380` (TLS), or
    /// `redis+cluster://h1:p1,h2:p2`.
    #[arg(long, env = "SWITCHYARD_LOCATOR", default_value = "memory")]
    pub locator: String,
    /// Key prefix in Redis (one prefix per cluster sharing a Redis): 1 to 64 of A-Z a-z 0-9 : _ . -
    #[arg(long, env = "SWITCHYARD_LOCATOR_PREFIX", default_value = "switchyard", value_parser = contract::parse_locator_prefix)]
    pub locator_prefix: String,
    /// Redis ACL user (default: the URL's, else Redis's `default` user).
    #[arg(long, env = "SWITCHYARD_LOCATOR_USERNAME")]
    pub locator_username: Option<String>,
    /// Redis password (replaces the URL's). Prefer the environment variable: a flag shows in the process
    /// list.
    #[arg(long, env = "SWITCHYARD_LOCATOR_PASSWORD", hide_env_values = true)]
    pub locator_password: Option<String>,
    /// PEM CA bundle trusted for rediss:// instead of the system's roots (a private CA).
    #[arg(long, env = "SWITCHYARD_LOCATOR_CA")]
    pub locator_ca: Option<PathBuf>,
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
            redis::connect(self, registry, shutdown).await
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
        args: &super::LocatorArgs,
        registry: &mut Registry,
        shutdown: &CancellationToken,
    ) -> Result<Arc<dyn Locator>, ProcessError> {
        let mut config = RedisLocatorConfig::new(&args.locator);
        config.prefix = args.locator_prefix.clone();
        // An empty value is "not set": a Secret key may be present and empty.
        let non_empty = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
        config.username = non_empty(&args.locator_username);
        config.password = non_empty(&args.locator_password);
        if let Some(path) = &args.locator_ca {
            let pem = std::fs::read(path).map_err(|source| ProcessError::LocatorCa {
                path: path.clone(),
                source,
            })?;
            config.ca_pem = Some(pem);
        }
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
                // Refused (credentials, TLS trust) or a wrong kind of server: waiting does not help.
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
            locator_username: None,
            locator_password: None,
            locator_ca: None,
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

    #[test]
    fn prefixes_are_checked_when_parsed() {
        use clap::Parser;

        #[derive(Debug, Parser)]
        struct Command {
            #[command(flatten)]
            locator: LocatorArgs,
        }
        let parsed = Command::try_parse_from(["t", "--locator-prefix", "game:eu-1"]).map(|c| c.locator);
        assert_eq!(
            parsed.map(|args| args.locator_prefix).ok().as_deref(),
            Some("game:eu-1")
        );
        let refused = Command::try_parse_from(["t", "--locator-prefix", "{hot}"]).map(|c| c.locator);
        let message = refused.err().map(|error| error.to_string()).unwrap_or_default();
        assert!(message.contains("must be 1 to 64 characters"), "{message}");
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn an_unreadable_ca_is_named() {
        let mut args = args("rediss://127.0.0.1:1");
        args.locator_ca = Some("/nonexistent/ca.pem".into());
        let error = args
            .build(&mut Registry::default(), &CancellationToken::new())
            .await
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
