//! A client that outlives its connections: [`Reconnecting`] reconnects with exponential backoff when a
//! connection is lost, moves at once (no backoff) when the gate sends reconnect-elsewhere, and runs the
//! game's login ([`OnConnect`]) on every new connection before requests go out on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Client, ClientError, ClientOptions, PacketConfig, Push, Transport};

/// The login a game sends on every new connection: gets the connected [`Client`], resolves once logged in.
pub type OnConnect =
    Arc<dyn Fn(Client) -> Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>> + Send + Sync>;

/// Delays between reconnection attempts: `initial`, then times `factor` each attempt, at most `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay before the first attempt after a lost connection. Default 250 ms.
    pub initial: Duration,
    /// Longest delay. Default 5 s.
    pub max: Duration,
    /// Growth per attempt. Default 2.
    pub factor: f64,
    /// Attempts in a row before giving up; `None` (the default) never gives up.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            factor: 2.0,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based) after a lost connection.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let scaled = self.initial.as_secs_f64() * self.factor.powi(exponent);
        Duration::from_secs_f64(scaled.min(self.max.as_secs_f64()))
    }
}

/// What happens to a [`Reconnecting`] client's connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// A connection is open and logged in (`reconnect` is false for the first one).
    Connected {
        /// Where it goes.
        target: Transport,
        /// Whether it replaced an earlier connection.
        reconnect: bool,
    },
    /// The gate asked to reconnect elsewhere: the client is moving now.
    ReconnectElsewhere,
    /// The connection ended.
    Disconnected(ClientError),
    /// An attempt is about to be made after `delay`.
    Reconnecting {
        /// 1 for the first attempt after a loss.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// Reconnection gave up ([`Backoff::max_attempts`]); the client is closed.
    GaveUp(ClientError),
}

/// Where the client stands.
#[derive(Debug, Clone)]
enum State {
    Connecting,
    Up(Client),
    Closed(ClientError),
}

#[derive(Debug)]
struct Inner {
    targets: Vec<Transport>,
    config: PacketConfig,
    options: ClientOptions,
    backoff: Backoff,
    on_connect: Option<OnConnectDebug>,
    state: watch::Sender<State>,
    events: broadcast::Sender<ReconnectEvent>,
    push_tx: mpsc::Sender<Push>,
    push_rx: Mutex<Option<mpsc::Receiver<Push>>>,
    reconnects: AtomicU64,
    cancel: CancellationToken,
}

/// [`OnConnect`] with a `Debug` that says only that it is there.
struct OnConnectDebug(OnConnect);

impl std::fmt::Debug for OnConnectDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnConnect(..)")
    }
}

/// A client over a list of gates that survives connection losses and gate drains.
///
/// ```no_run
/// # async fn demo() -> Result<(), switchyard_client::ClientError> {
/// use std::sync::Arc;
/// use switchyard_client::{Backoff, ClientOptions, OnConnect, PacketConfig, Reconnecting, Transport};
///
/// let login: OnConnect = Arc::new(|client| {
///     Box::pin(async move {
///         client.request(2, &br#"{"uid":7,"name":"ada"}"#[..]).await?;
///         Ok(())
///     })
/// });
/// let gates = vec![Transport::Tcp("127.0.0.1:3553".into()), Transport::Tcp("127.0.0.1:4553".into())];
/// let client = Reconnecting::connect(gates, PacketConfig::default(), ClientOptions::default(), Backoff::default(), Some(login)).await?;
/// let whoami = client.request(3, &b"{}"[..]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Reconnecting {
    inner: Arc<Inner>,
}

impl Reconnecting {
    /// Connects to the first of `targets` that answers and runs `on_connect` there. Later connections
    /// go to the next target in turn.
    ///
    /// # Errors
    /// The last target's connection error, [`ClientError::Login`] when `on_connect` failed, or
    /// [`ClientError::NoTargets`] for an empty list.
    pub async fn connect(
        targets: Vec<Transport>,
        config: PacketConfig,
        options: ClientOptions,
        backoff: Backoff,
        on_connect: Option<OnConnect>,
    ) -> Result<Reconnecting, ClientError> {
        let (push_tx, push_rx) = mpsc::channel(options.push_capacity.max(1));
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let inner = Arc::new(Inner {
            targets,
            config,
            options,
            backoff,
            on_connect: on_connect.map(OnConnectDebug),
            state: watch::Sender::new(State::Connecting),
            events,
            push_tx,
            push_rx: Mutex::new(Some(push_rx)),
            reconnects: AtomicU64::new(0),
            cancel: CancellationToken::new(),
        });
        let mut last = ClientError::NoTargets;
        for index in 0..inner.targets.len() {
            match open(&inner, index, false).await {
                Ok(client) => {
                    tokio::spawn(supervise(Arc::clone(&inner), client, index));
                    return Ok(Reconnecting { inner });
                }
                Err(err @ ClientError::Login(_)) => return Err(err),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// Sends a request on the current connection, waiting for one (within the request timeout) while
    /// the client reconnects.
    ///
    /// # Errors
    /// As [`Client::request`]; [`ClientError::Timeout`] when no connection came up in time;
    /// [`ClientError::GaveUp`] or [`ClientError::Closed`] once the client is closed. A request in flight
    /// when its connection is lost fails with that connection's error (it may or may not have run).
    pub async fn request(&self, route: i32, payload: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let timeout = self.inner.options.request_timeout;
        let deadline = Instant::now() + timeout;
        let client = self.client_by(deadline, timeout).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        client.request_with_timeout(route, payload, left).await
    }

    /// The current connection, if one is up.
    pub fn current(&self) -> Option<Client> {
        match &*self.inner.state.borrow() {
            State::Up(client) => Some(client.clone()),
            _ => None,
        }
    }

    /// The pushes of every connection, in one bounded queue. Returns it on the first call only.
    pub fn pushes(&self) -> Option<mpsc::Receiver<Push>> {
        self.inner.push_rx.lock().take()
    }

    /// Subscribes to connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<ReconnectEvent> {
        self.inner.events.subscribe()
    }

    /// Connections opened after the first one.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Why the client is closed, or `None` while it is connected or reconnecting.
    pub fn close_reason(&self) -> Option<ClientError> {
        match &*self.inner.state.borrow() {
            State::Closed(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Closes the current connection and stops reconnecting.
    pub async fn close(&self) {
        self.inner.cancel.cancel();
        let previous = self.inner.state.send_replace(State::Closed(ClientError::Closed));
        if let State::Up(client) = previous {
            client.close().await;
        }
    }

    async fn client_by(&self, deadline: Instant, timeout: Duration) -> Result<Client, ClientError> {
        let mut state = self.inner.state.subscribe();
        let waited = tokio::time::timeout_at(
            deadline,
            state.wait_for(|s| matches!(s, State::Up(_) | State::Closed(_))),
        )
        .await;
        match waited {
            Err(_) => Err(ClientError::Timeout(timeout)),
            Ok(Err(_)) => Err(ClientError::Closed),
            Ok(Ok(s)) => match &*s {
                State::Up(client) => Ok(client.clone()),
                State::Closed(reason) => Err(reason.clone()),
                State::Connecting => Err(ClientError::Closed),
            },
        }
    }
}

/// Opens a connection to `targets[index]`, runs the login, forwards its pushes and makes it current.
async fn open(inner: &Arc<Inner>, index: usize, reconnect: bool) -> Result<Client, ClientError> {
    let target = &inner.targets[index];
    let client = Client::connect(target, inner.config, inner.options.clone()).await?;
    if let Some(pushes) = client.pushes() {
        tokio::spawn(forward_pushes(
            pushes,
            inner.push_tx.clone(),
            inner.cancel.clone(),
        ));
    }
    if let Some(OnConnectDebug(login)) = &inner.on_connect
        && let Err(err) = login(client.clone()).await
    {
        client.close().await;
        return Err(ClientError::Login(Arc::new(err)));
    }
    if inner.cancel.is_cancelled() {
        client.close().await;
        return Err(ClientError::Closed);
    }
    inner.state.send_replace(State::Up(client.clone()));
    let _ = inner.events.send(ReconnectEvent::Connected {
        target: target.clone(),
        reconnect,
    });
    Ok(client)
}

/// Moves the pushes of one connection into the client's queue until that connection's queue ends.
async fn forward_pushes(mut pushes: mpsc::Receiver<Push>, to: mpsc::Sender<Push>, cancel: CancellationToken) {
    loop {
        let push = tokio::select! {
            () = cancel.cancelled() => return,
            push = pushes.recv() => push,
        };
        let Some(push) = push else { return };
        // Full: the application is not reading; drop rather than stall this connection's reader.
        let _ = to.try_send(push);
    }
}

/// Watches the current connection; on a reconnect-elsewhere signal or a loss, opens the next one.
async fn supervise(inner: Arc<Inner>, mut client: Client, mut index: usize) {
    loop {
        let asked = tokio::select! {
            () = inner.cancel.cancelled() => return,
            asked = client.wait_reconnect_requested() => asked,
        };
        if asked {
            let _ = inner.events.send(ReconnectEvent::ReconnectElsewhere);
        } else {
            let reason = client.close_reason().unwrap_or(ClientError::ServerClosed);
            let _ = inner.events.send(ReconnectEvent::Disconnected(reason));
        }
        // Requests wait for the next connection. The old one lives on while requests in flight on it
        // hold it, so a draining gate can still answer them.
        inner.state.send_if_modified(|s| {
            if matches!(s, State::Closed(_)) {
                return false;
            }
            *s = State::Connecting;
            true
        });
        drop(client);
        let mut attempt = 0u32;
        client = loop {
            attempt += 1;
            let delay = if asked && attempt == 1 {
                Duration::ZERO
            } else {
                inner.backoff.delay(attempt)
            };
            let _ = inner.events.send(ReconnectEvent::Reconnecting { attempt, delay });
            tokio::select! {
                () = inner.cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            index = (index + 1) % inner.targets.len();
            match open(&inner, index, true).await {
                Ok(client) => break client,
                Err(err) => {
                    tracing::debug!(error = %err, attempt, "reconnection attempt failed");
                    if inner.backoff.max_attempts.is_some_and(|max| attempt >= max) {
                        let reason = ClientError::GaveUp {
                            attempts: attempt,
                            last: Arc::new(err),
                        };
                        inner.state.send_replace(State::Closed(reason.clone()));
                        let _ = inner.events.send(ReconnectEvent::GaveUp(reason));
                        return;
                    }
                }
            }
        };
        inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}
