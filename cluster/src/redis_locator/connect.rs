//! Connecting at start-up (one server or a cluster), telling outages from misconfiguration, and the
//! subscriber task that keeps the event subscription alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::cluster::ClusterClientBuilder;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio_util::sync::CancellationToken;

use super::config::Endpoint;
use super::metrics::Op;
use super::{PUBSUB_PING_INTERVAL, RESUBSCRIBE_MAX_BACKOFF, RESUBSCRIBE_MIN_BACKOFF, Shared, Store};
use crate::locator::{LocatorError, LocatorEvent};

/// Whether a failed request is retried once, within the same timeout. After an outage the connection
/// manager answers the first request with the error that ended its last reconnect attempt, and only then
/// reconnects: a refused connection means nothing was sent, so any operation may be retried. A dropped
/// connection may have executed a write, so only reads are retried then.
pub(super) fn worth_retrying(op: Op, error: &RedisError) -> bool {
    let read = matches!(op, Op::LocateGate | Op::LocateNode);
    error.is_connection_refusal() || (read && (error.is_io_error() || error.is_connection_dropped()))
}

/// Whether an error means Redis could not serve (rather than served an error).
fn is_unavailable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        )
        || error.code() == Some("BUSY")
}

/// Whether Redis (or its TLS) refused this client: a wrong or missing password, an ACL user without the
/// right, a certificate the locator does not trust. Waiting does not cure these: the settings must change.
fn is_refusal(error: &RedisError) -> bool {
    if error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
    {
        return true;
    }
    // rustls's verdicts reach us as I/O errors; their text is all there is to tell them apart.
    let text = error.to_string();
    error.is_io_error()
        && [
            "invalid peer certificate",
            "UnknownIssuer",
            "NotValidForName",
            "certificate",
        ]
        .iter()
        .any(|needle| text.contains(needle))
}

/// What to check, for the message of a refusal.
fn refusal_hint(error: &RedisError) -> &'static str {
    if error.code() == Some("NOPERM") || error.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) {
        " (the Redis ACL user, SWITCHYARD_LOCATOR_USERNAME, may not use these keys or this channel: allow \
         the key prefix's keys ~PREFIX:* and channel &PREFIX:*, and the commands EVALSHA, EVAL, SCRIPT, \
         GET, SUBSCRIBE, PING, INFO)"
    } else if error.is_io_error() {
        " (the server's TLS certificate is not trusted: check the CA bundle, SWITCHYARD_LOCATOR_CA, and the \
         host name in the URL)"
    } else {
        " (check the password, SWITCHYARD_LOCATOR_PASSWORD, and the user, SWITCHYARD_LOCATOR_USERNAME)"
    }
}

/// A start-up failure: refused, unavailable (worth waiting for) or an unexpected answer.
fn classify_startup(message: String, error: &RedisError) -> LocatorError {
    if is_refusal(error) {
        LocatorError::Refused(format!("{message}{}", refusal_hint(error)))
    } else if is_unavailable(error) {
        LocatorError::Unavailable(message)
    } else {
        LocatorError::Protocol(message)
    }
}

pub(super) fn redis_error(target: &str, op: Op, error: &RedisError) -> LocatorError {
    if is_refusal(error) {
        LocatorError::Refused(format!(
            "Redis at {target} refused {op}: {error}{}",
            refusal_hint(error)
        ))
    } else if is_unavailable(error) {
        LocatorError::Unavailable(format!("Redis at {target} failed {op}: {error}"))
    } else {
        LocatorError::Protocol(format!("Redis at {target} answered {op} with an error: {error}"))
    }
}

pub(super) async fn connect_standalone(
    endpoint: Endpoint,
    timeout: Duration,
    target: &str,
) -> Result<Store, LocatorError> {
    let startup_error = |step: &str, error: &RedisError| {
        let hint = if error.kind() == ErrorKind::RESP3NotSupported {
            " (RESP3 needs Redis 6 or later; add ?protocol=resp2 to the URL for older servers)"
        } else {
            ""
        };
        classify_startup(
            format!("Redis at {target} failed {step} at startup: {error}{hint}"),
            error,
        )
    };
    let client = endpoint
        .client()
        .map_err(|error| startup_error("to configure", &error))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let manager = ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|error| startup_error("to configure", &error))?;

    // A cluster node behind a redis:// URL would answer MOVED to most keys: refuse it now.
    let mut connection = manager.clone();
    let mut info_cmd = redis::cmd("INFO");
    info_cmd.arg("cluster");
    let info_cluster = info_cmd.query_async::<String>(&mut connection);
    match tokio::time::timeout(timeout, info_cluster).await {
        Err(_) => {
            return Err(LocatorError::Unavailable(format!(
                "Redis at {target} did not answer within {timeout:?} at startup"
            )));
        }
        Ok(Ok(text)) if text.contains("cluster_enabled:1") => {
            return Err(LocatorError::Unavailable(format!(
                "Redis at {target} is a Redis Cluster node: use a \
                 redis+cluster://host:port,host:port URL"
            )));
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) if is_unavailable(&error) => return Err(startup_error("INFO", &error)),
        // INFO may be renamed or forbidden: PING is enough.
        Ok(Err(_)) => {
            let ping_cmd = redis::cmd("PING");
            let ping = ping_cmd.query_async::<String>(&mut connection);
            match tokio::time::timeout(timeout, ping).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(startup_error("PING", &error)),
                Err(_) => {
                    return Err(LocatorError::Unavailable(format!(
                        "Redis at {target} did not answer PING within {timeout:?} at startup"
                    )));
                }
            }
        }
    }
    Ok(Store::Standalone(manager))
}

pub(super) async fn connect_cluster(
    seeds: Vec<Endpoint>,
    timeout: Duration,
    target: &str,
) -> Result<Store, LocatorError> {
    let startup_error = |error: &RedisError| {
        classify_startup(
            format!("Redis at {target} failed to connect to the cluster at startup: {error}"),
            error,
        )
    };
    let client = ClusterClientBuilder::new(seeds.into_iter().map(|seed| seed.info))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()
        .map_err(|error| startup_error(&error))?;
    match tokio::time::timeout(timeout, client.get_async_connection()).await {
        Ok(Ok(connection)) => Ok(Store::Cluster(connection)),
        Ok(Err(error)) => Err(startup_error(&error)),
        Err(_) => Err(LocatorError::Unavailable(format!(
            "Redis at {target} did not complete the cluster connection within {timeout:?} at startup"
        ))),
    }
}

/// A live subscription: the sink sends `PING`s, the stream yields messages.
pub(super) type Subscription = (PubSubSink, PubSubStream);

/// A failed attempt to subscribe; `refused` when Redis or TLS refused this client (see [`is_refusal`]).
#[derive(Debug)]
pub(super) struct SubscribeError {
    pub(super) message: String,
    pub(super) refused: bool,
}

impl SubscribeError {
    fn from_redis(error: &RedisError) -> Self {
        let refused = is_refusal(error);
        let hint = if refused { refusal_hint(error) } else { "" };
        SubscribeError {
            message: format!("{error}{hint}"),
            refused,
        }
    }

    fn timeout(message: String) -> Self {
        SubscribeError {
            message,
            refused: false,
        }
    }
}

/// Subscribes through the first of `infos` (starting at `start`, wrapping) that works. Returns the
/// subscription and the index to start from next time; the error names every failed attempt.
pub(super) async fn subscribe_any(
    endpoints: &[Endpoint],
    start: usize,
    channel: &str,
    timeout: Duration,
) -> Result<(Subscription, usize), SubscribeError> {
    let mut failures = Vec::new();
    let mut refused = false;
    for offset in 0..endpoints.len() {
        let index = (start + offset) % endpoints.len();
        let Some(endpoint) = endpoints.get(index) else {
            continue;
        };
        match subscribe_one(endpoint, channel, timeout).await {
            Ok(subscription) => return Ok((subscription, index)),
            Err(error) if endpoints.len() == 1 => return Err(error),
            Err(error) => {
                refused |= error.refused;
                failures.push(format!("{}: {}", endpoint.addr(), error.message));
            }
        }
    }
    Err(SubscribeError {
        message: failures.join("; "),
        refused,
    })
}

async fn subscribe_one(
    endpoint: &Endpoint,
    channel: &str,
    timeout: Duration,
) -> Result<Subscription, SubscribeError> {
    let client = endpoint
        .client()
        .map_err(|error| SubscribeError::from_redis(&error))?;
    let pubsub = match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
        Ok(result) => result.map_err(|error| SubscribeError::from_redis(&error))?,
        Err(_) => {
            return Err(SubscribeError::timeout(format!(
                "no connection within {timeout:?}"
            )));
        }
    };
    let (mut sink, stream) = pubsub.split();
    match tokio::time::timeout(timeout, sink.subscribe(channel)).await {
        Ok(result) => result.map_err(|error| SubscribeError::from_redis(&error))?,
        Err(_) => {
            return Err(SubscribeError::timeout(format!(
                "SUBSCRIBE not confirmed within {timeout:?}"
            )));
        }
    }
    Ok((sink, stream))
}

/// Why a subscription ended.
enum Ended {
    Cancelled,
    Lost(String),
}

/// The task that owns the subscription: forwards events, notices outages, resubscribes.
pub(super) struct Subscriber {
    pub(super) shared: Arc<Shared>,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) next_seed: usize,
    pub(super) channel: String,
    pub(super) timeout: Duration,
}

impl Subscriber {
    pub(super) async fn run(mut self, first: Subscription, cancel: CancellationToken) {
        let mut subscription = first;
        loop {
            let reason = match self.pump(&mut subscription, &cancel).await {
                Ended::Cancelled => return,
                Ended::Lost(reason) => reason,
            };
            self.shared.set_subscribed(false);
            let address = self.address();
            tracing::warn!(
                redis = %address,
                %reason,
                "lost the Redis locator subscription; locate_gate skips its cache and locator events are \
                 missed until it is back"
            );
            let down_since = Instant::now();
            // Try another seed first: this one just failed.
            self.next_seed += 1;
            match self.resubscribe(&cancel).await {
                Some(next) => subscription = next,
                None => return,
            }
            self.shared.set_subscribed(true);
            tracing::info!(
                redis = %self.address(),
                outage = ?down_since.elapsed(),
                "Redis locator subscription is back; bindings are restored"
            );
            // Redis may have restarted empty: whoever holds bindings writes them again.
            let _ = self.shared.events.send(LocatorEvent::Reconnected);
        }
    }

    fn address(&self) -> String {
        self.endpoints
            .get(self.next_seed % self.endpoints.len().max(1))
            .map_or_else(String::new, Endpoint::addr)
    }

    /// Forwards messages until the subscription breaks or the locator is dropped.
    async fn pump(&self, (sink, stream): &mut Subscription, cancel: &CancellationToken) -> Ended {
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + PUBSUB_PING_INTERVAL,
            PUBSUB_PING_INTERVAL,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ended::Cancelled,
                message = stream.next() => match message {
                    Some(message) => self.shared.deliver(message.get_payload_bytes()),
                    None => return Ended::Lost("connection closed".to_owned()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Ended::Lost(format!("PING failed: {error}")),
                        Err(_) => {
                            return Ended::Lost(format!("no answer to PING within {:?}", self.timeout));
                        }
                    }
                }
            }
        }
    }

    /// Tries until subscribed again (or cancelled), with exponential backoff, one seed per attempt.
    async fn resubscribe(&mut self, cancel: &CancellationToken) -> Option<Subscription> {
        let mut backoff = RESUBSCRIBE_MIN_BACKOFF;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            let index = self.next_seed % self.endpoints.len().max(1);
            let endpoint = self.endpoints.get(index)?;
            let attempt = tokio::select! {
                () = cancel.cancelled() => return None,
                attempt = subscribe_one(endpoint, &self.channel, self.timeout) => attempt,
            };
            match attempt {
                Ok(subscription) => {
                    self.next_seed = index;
                    return Some(subscription);
                }
                Err(error) => {
                    self.shared.metrics.error(Op::Subscribe);
                    tracing::debug!(redis = %endpoint.addr(), error = %error.message, ?backoff, "Redis locator resubscribe failed");
                    self.next_seed = index + 1;
                    backoff = (backoff * 2).min(RESUBSCRIBE_MAX_BACKOFF);
                }
            }
        }
    }
}
