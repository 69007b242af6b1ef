//! The client connection: pipelined requests matched to responses, pushes, heartbeats, and the signals a
//! server sends about the connection itself (reconnect elsewhere, close).
//!
//! One connection runs two tasks: a reader that matches responses and routes pushes and heartbeats, and
//! a writer that owns the socket's sending side, hands out seq values in the order it writes (so FIFO
//! matching stays right) and batches whatever is queued into one write. A [`Client`] is a cheap handle;
//! clones share the connection, and dropping the last one closes it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchyard_protocol::{Frame, PacketConfig, extcode};
use tokio::net::ToSocketAddrs;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::pending::{Pending, Reply, Waiter};
use crate::transport::{self, ReadHalf, WriteHalf};
use crate::{ClientError, ClientOptions, Transport};

/// Most queued packets the writer takes before it writes them out.
const WRITE_BATCH: usize = 64;
/// How long [`Client::close`] waits for the connection's tasks to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A data packet from the server that answers no request in flight (typically seq 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The packet's route.
    pub route: i32,
    /// The packet's seq: 0 for a server push, or the seq of a request that is no longer waiting.
    pub seq: i32,
    /// The undecoded payload.
    pub payload: Bytes,
}

/// Something that happened to the connection. Subscribe with [`Client::events`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The server sent a heartbeat (an answer to ours, or one of its own).
    Heartbeat {
        /// The header's extcode bits (0 from due servers).
        extcode: u8,
        /// The server's clock in nanoseconds, when it attaches it.
        server_time_nanos: Option<i64>,
    },
    /// The server is going away and asks the client to reconnect (to any gate): a heartbeat carrying
    /// [`extcode::RECONNECT_ELSEWHERE`]. The connection stays usable until the server closes it.
    ReconnectElsewhere,
    /// The connection ended, and why. Sent once.
    Closed(ClientError),
}

/// The connection's state as a whole, watched with [`Client::status`].
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The server asked the client to reconnect elsewhere (sticky).
    pub reconnect_requested: bool,
    /// Why the connection ended; `None` while it is open.
    pub closed: Option<ClientError>,
}

/// What the writer task is asked to send.
#[derive(Debug)]
enum Outgoing {
    /// A request: the writer picks its seq and registers it before writing it.
    Request {
        id: u64,
        route: i32,
        payload: Bytes,
        reply: Reply,
    },
    /// A packet already encoded (raw sends and heartbeats).
    Packet(Bytes),
}

/// State shared by the handles and the connection's tasks.
#[derive(Debug)]
struct Shared {
    config: PacketConfig,
    pending: Mutex<Pending>,
    status: watch::Sender<Status>,
    events: broadcast::Sender<Event>,
    push_tx: mpsc::Sender<Push>,
    dropped_pushes: AtomicU64,
    cancel: CancellationToken,
}

impl Shared {
    /// Ends the connection for `reason` (first reason wins): fails every waiting request, updates the
    /// status, sends [`Event::Closed`] and stops both tasks.
    fn fail(&self, reason: ClientError) {
        let replies = self.pending.lock().close(reason.clone());
        let Some(replies) = replies else {
            return;
        };
        for reply in replies {
            let _ = reply.send(Err(reason.clone()));
        }
        self.status
            .send_modify(|status| status.closed = Some(reason.clone()));
        let _ = self.events.send(Event::Closed(reason));
        self.cancel.cancel();
    }

    fn close_reason(&self) -> Option<ClientError> {
        self.pending.lock().closed.clone()
    }

    fn dispatch(&self, frame: Frame) {
        match frame {
            Frame::Data(data) => {
                let (route, seq) = (data.route(), data.seq());
                let reply = self.pending.lock().take_response(route, seq);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(Ok(data.payload()));
                    }
                    None => self.push(Push {
                        route,
                        seq,
                        payload: data.payload(),
                    }),
                }
            }
            Frame::Heartbeat {
                extcode,
                server_time_nanos,
            } => {
                let _ = self.events.send(Event::Heartbeat {
                    extcode,
                    server_time_nanos,
                });
                if extcode == extcode::RECONNECT_ELSEWHERE {
                    self.status
                        .send_if_modified(|status| !std::mem::replace(&mut status.reconnect_requested, true));
                    let _ = self.events.send(Event::ReconnectElsewhere);
                }
            }
            Frame::Empty => {}
            Frame::Short { size } => tracing::debug!(size, "dropping a data packet shorter than its header"),
        }
    }

    fn push(&self, push: Push) {
        match self.push_tx.try_send(push) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(push)) => {
                self.dropped_pushes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(route = push.route, "push queue full, dropping a push");
            }
        }
    }

    /// Registers and encodes one request into the writer's buffer, or fails it.
    fn write_request(&self, write: &mut WriteHalf, id: u64, route: i32, payload: &[u8], reply: Reply) {
        let mut pending = self.pending.lock();
        if let Some(reason) = &pending.closed {
            let _ = reply.send(Err(reason.clone()));
            return;
        }
        if reply.is_closed() {
            return; // its caller gave up while it was queued
        }
        let Some(seq) = pending.alloc_seq() else {
            let _ = reply.send(Err(ClientError::SeqExhausted(self.config.max_seq())));
            return;
        };
        match self.config.encode_data(route, seq, payload, write.buffer()) {
            Ok(()) => {
                write.end_packet();
                pending.insert(seq, Waiter { id, route, reply });
            }
            Err(err) => {
                let _ = reply.send(Err(err.into()));
            }
        }
    }
}

/// The handle every clone shares; dropping the last one stops the connection.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    options: ClientOptions,
    tx: mpsc::Sender<Outgoing>,
    permits: Semaphore,
    next_id: AtomicU64,
    pushes: Mutex<Option<mpsc::Receiver<Push>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// A connection to a Switchyard gate (or any due-compatible server). Cheap to clone; all clones share
/// the connection, and many requests may be in flight at once from any of them.
///
/// Responses are matched to requests by seq (and route): seq values cycle through `1..=max_seq` of the
/// configured width, wrapping back to 1, skipping values still in flight and never using 0 (servers
/// push with seq 0). With a seq width of 0 there is no seq on the wire and responses are matched in
/// FIFO order per route, which assumes the server answers each route's requests in order; a push on
/// such a route, or a response arriving after its request timed out, is then taken for the next
/// response on that route.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Handle>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.shared.config)
            .field("in_flight", &self.in_flight())
            .field("closed", &self.close_reason())
            .finish()
    }
}

impl Client {
    /// Connects over `transport`.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::ConnectTimeout`], [`ClientError::Handshake`],
    /// [`ClientError::Tls`] or [`ClientError::NoTlsConfig`].
    pub async fn connect(
        transport: &Transport,
        config: PacketConfig,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let (read, write) =
            transport::connect(transport, &config, options.connect_timeout, options.tls.as_ref()).await?;
        Ok(Client::start(read, write, config, options))
    }

    /// Connects over TCP to `addr` (`host:port` or a socket address).
    ///
    /// # Errors
    /// [`ClientError::Connect`] or [`ClientError::ConnectTimeout`].
    pub async fn connect_tcp(
        addr: impl ToSocketAddrs + fmt::Display,
        config: PacketConfig,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let target = addr.to_string();
        let (read, write) = transport::connect_tcp(addr, &target, &config, options.connect_timeout).await?;
        Ok(Client::start(read, write, config, options))
    }

    /// Connects over WebSocket to `url` (`ws://host:port/path`, or `wss://` with [`ClientOptions::tls`]);
    /// each packet travels as one binary message.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::ConnectTimeout`] or [`ClientError::Handshake`].
    pub async fn connect_ws(
        url: &str,
        config: PacketConfig,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let (read, write) =
            transport::connect_ws(url, &config, options.connect_timeout, options.tls.as_ref()).await?;
        Ok(Client::start(read, write, config, options))
    }

    fn start(read: ReadHalf, write: WriteHalf, config: PacketConfig, options: ClientOptions) -> Client {
        let (tx, rx) = mpsc::channel(options.send_queue.max(1));
        let (push_tx, push_rx) = mpsc::channel(options.push_capacity.max(1));
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let shared = Arc::new(Shared {
            config,
            pending: Mutex::new(Pending::new(config.max_seq())),
            status: watch::Sender::new(Status::default()),
            events,
            push_tx,
            dropped_pushes: AtomicU64::new(0),
            cancel: CancellationToken::new(),
        });
        let seq_values = if config.seq_bytes() == 0 {
            usize::MAX
        } else {
            usize::try_from(config.max_seq()).unwrap_or(usize::MAX)
        };
        let permits = options
            .max_in_flight
            .min(seq_values)
            .clamp(1, Semaphore::MAX_PERMITS);
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), read));
        let writer = tokio::spawn(write_loop(
            Arc::clone(&shared),
            write,
            rx,
            options.heartbeat_interval,
        ));
        Client {
            inner: Arc::new(Handle {
                shared,
                options,
                tx,
                permits: Semaphore::new(permits),
                next_id: AtomicU64::new(0),
                pushes: Mutex::new(Some(push_rx)),
                tasks: Mutex::new(vec![reader, writer]),
            }),
        }
    }

    /// The packet settings of this connection.
    pub fn config(&self) -> &PacketConfig {
        &self.inner.shared.config
    }

    /// The options this client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Sends a request on `route` and waits for its response's payload, at most
    /// [`ClientOptions::request_timeout`].
    ///
    /// # Errors
    /// [`ClientError::Encode`] when route or payload do not fit the settings (nothing is sent);
    /// [`ClientError::Timeout`] when no response came in time (a late response is then delivered as a
    /// [`Push`] when seq is on); the reason the connection ended when it did.
    pub async fn request(&self, route: i32, payload: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        self.request_with_timeout(route, payload, self.inner.options.request_timeout)
            .await
    }

    /// [`Client::request`] with its own timeout.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn request_with_timeout(
        &self,
        route: i32,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let payload = payload.into();
        self.check_fits(route, payload.len())?;
        if let Some(reason) = self.close_reason() {
            return Err(reason);
        }
        let inner = &*self.inner;
        let deadline = Instant::now() + timeout;
        let _permit = match tokio::time::timeout_at(deadline, inner.permits.acquire()).await {
            Err(_) => return Err(ClientError::Timeout(timeout)),
            Ok(Err(_)) => return Err(self.closed_error()),
            Ok(Ok(permit)) => permit,
        };
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let mut guard = WaitGuard {
            shared: &inner.shared,
            id,
            route,
            rx: Some(rx),
            settled: false,
        };
        let request = Outgoing::Request {
            id,
            route,
            payload,
            reply,
        };
        match tokio::time::timeout_at(deadline, inner.tx.send(request)).await {
            Err(_) => return Err(ClientError::Timeout(timeout)),
            Ok(Err(_)) => return Err(self.closed_error()),
            Ok(Ok(())) => {}
        }
        let Some(rx) = guard.rx.as_mut() else {
            return Err(self.closed_error());
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => {
                guard.settled = true;
                result
            }
            Ok(Err(_)) => {
                guard.settled = true;
                Err(self.closed_error())
            }
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// Sends one data packet with the given route and seq as is, without waiting for anything: for
    /// tests and for messages that expect no answer. A packet that comes back with that seq while no
    /// request holds it is delivered as a [`Push`]. Waits for room in the send queue.
    ///
    /// # Errors
    /// [`ClientError::Encode`] when route, seq or payload do not fit the settings; the reason the
    /// connection ended when it did.
    pub async fn send(&self, route: i32, seq: i32, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        let packet = self
            .inner
            .shared
            .config
            .data_packet(route, seq, &payload.into())?;
        self.send_packet(packet).await
    }

    /// Sends one heartbeat now (the header alone), on top of any automatic ones.
    ///
    /// # Errors
    /// The reason the connection ended when it did.
    pub async fn heartbeat(&self) -> Result<(), ClientError> {
        self.send_packet(self.inner.shared.config.heartbeat_packet(0, None))
            .await
    }

    async fn send_packet(&self, packet: Bytes) -> Result<(), ClientError> {
        if let Some(reason) = self.close_reason() {
            return Err(reason);
        }
        self.inner
            .tx
            .send(Outgoing::Packet(packet))
            .await
            .map_err(|_| self.closed_error())
    }

    /// The receiver of pushes, bounded by [`ClientOptions::push_capacity`]. Returns it on the first
    /// call and `None` afterwards (one consumer per connection). Pushes that arrive while it is full are
    /// dropped and counted by [`Client::dropped_pushes`]; dropping the receiver discards later pushes.
    pub fn pushes(&self) -> Option<mpsc::Receiver<Push>> {
        self.inner.pushes.lock().take()
    }

    /// How many pushes were dropped because the push queue was full.
    pub fn dropped_pushes(&self) -> u64 {
        self.inner.shared.dropped_pushes.load(Ordering::Relaxed)
    }

    /// Subscribes to the connection's [`Event`]s from now on, bounded by
    /// [`ClientOptions::event_capacity`] (a subscriber that falls behind skips the oldest events).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.shared.events.subscribe()
    }

    /// A watch of the connection's [`Status`], which, unlike events, also tells what happened before.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.shared.status.subscribe()
    }

    /// Whether the server asked this client to reconnect elsewhere.
    pub fn reconnect_requested(&self) -> bool {
        self.inner.shared.status.borrow().reconnect_requested
    }

    /// Resolves once the server asks this client to reconnect elsewhere (at once if it already has), or
    /// when the connection ends without such a request, returning whether it was asked.
    pub fn wait_reconnect_requested(&self) -> impl Future<Output = bool> + Send + 'static {
        let mut status = self.status();
        async move {
            status
                .wait_for(|s| s.reconnect_requested || s.closed.is_some())
                .await
                .is_ok_and(|s| s.reconnect_requested)
        }
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<ClientError> {
        self.inner.shared.close_reason()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.close_reason().is_some()
    }

    /// Resolves when the connection ends, with the reason (for example [`ClientError::ServerClosed`]).
    pub fn closed(&self) -> impl Future<Output = ClientError> + Send + 'static {
        let mut status = self.status();
        async move {
            match status.wait_for(|s| s.closed.is_some()).await {
                Ok(s) => s.closed.clone().unwrap_or(ClientError::Closed),
                Err(_) => ClientError::Closed,
            }
        }
    }

    /// Number of requests awaiting a response.
    pub fn in_flight(&self) -> usize {
        self.inner.shared.pending.lock().len()
    }

    /// Closes the connection: requests in flight fail with [`ClientError::Closed`], packets already
    /// queued by [`Client::send`] and [`Client::heartbeat`] are written, then the sending side is shut
    /// (TCP FIN or a WebSocket close frame). Waits (briefly) for the connection's tasks to finish. Calling
    /// it again, or after the server closed, does nothing more.
    pub async fn close(&self) {
        self.inner.shared.fail(ClientError::Closed);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for mut task in tasks {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    fn closed_error(&self) -> ClientError {
        self.close_reason().unwrap_or(ClientError::Closed)
    }

    /// Refuses, before queueing, a request the settings cannot carry.
    fn check_fits(&self, route: i32, payload_len: usize) -> Result<(), ClientError> {
        let config = &self.inner.shared.config;
        let max_route = config.max_route();
        if route > max_route || route < -max_route - 1 {
            return Err(switchyard_protocol::EncodeError::RouteOutOfRange {
                route,
                bytes: config.route_bytes(),
            }
            .into());
        }
        let size = config.data_header_len() as u64 + payload_len as u64;
        if size > u64::from(config.max_packet_bytes()) {
            return Err(switchyard_protocol::EncodeError::TooLarge {
                size,
                max: config.max_packet_bytes(),
            }
            .into());
        }
        Ok(())
    }
}

/// Forgets a request whose caller stopped waiting (timeout, or the request future was dropped), so that
/// its seq is free again and a late response becomes a push.
struct WaitGuard<'a> {
    shared: &'a Shared,
    id: u64,
    route: i32,
    rx: Option<oneshot::Receiver<Result<Bytes, ClientError>>>,
    settled: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Close the receiver first: a writer that has not registered the request yet then skips it.
        drop(self.rx.take());
        self.shared.pending.lock().cancel(self.id, self.route);
    }
}

async fn read_loop(shared: Arc<Shared>, mut read: ReadHalf) {
    let cancel = shared.cancel.clone();
    loop {
        let frame = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            frame = read.next() => frame,
        };
        match frame {
            Ok(frame) => {
                shared.dispatch(frame);
                loop {
                    match read.next_buffered() {
                        Ok(Some(frame)) => shared.dispatch(frame),
                        Ok(None) => break,
                        Err(err) => {
                            shared.fail(err);
                            return;
                        }
                    }
                }
            }
            Err(err) => {
                shared.fail(err);
                return;
            }
        }
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    mut write: WriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    heartbeat_interval: Option<Duration>,
) {
    let cancel = shared.cancel.clone();
    let mut ticker = heartbeat_interval.filter(|d| !d.is_zero()).map(|period| {
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    let heartbeat = shared.config.heartbeat_packet(0, None);
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(ticker) => {
                    ticker.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            item = rx.recv() => {
                let Some(item) = item else { break };
                take(&shared, &mut write, item);
                for _ in 1..WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(item) => take(&shared, &mut write, item),
                        Err(_) => break,
                    }
                }
            }
            () = tick => write.push_packet(heartbeat.clone()),
        }
        if let Err(err) = write.flush().await {
            shared.fail(err);
            break;
        }
    }
    // Closing: write what was queued before the close (requests are refused by now), then shut down.
    rx.close();
    while let Ok(item) = rx.try_recv() {
        take(&shared, &mut write, item);
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if write.has_queued() {
            let _ = write.flush().await;
        }
        write.shutdown().await;
    })
    .await;
}

fn take(shared: &Shared, write: &mut WriteHalf, item: Outgoing) {
    match item {
        Outgoing::Request {
            id,
            route,
            payload,
            reply,
        } => shared.write_request(write, id, route, &payload, reply),
        Outgoing::Packet(packet) => write.push_packet(packet),
    }
}
