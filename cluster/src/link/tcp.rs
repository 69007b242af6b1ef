//! Gate ↔ node links over TCP, in the frame format of `switchyard_protocol::link::codec`.
//!
//! Each link is one TCP connection opened by the gate. Two tasks bridge it to the channel ends the gate and
//! node code use ([`GateLink`], [`NodeLink`]): a writer that drains whatever messages are queued into one
//! buffer and writes it in one call (many frames per syscall under load), and a reader that decodes frames
//! straight out of its read buffer (client packets stay slices of it) and forwards them, waiting when the
//! receiver is behind — backpressure onto the TCP window, never unbounded memory.
//!
//! Liveness: a side that has written nothing for [`TcpLinkConfig::heartbeat_interval`] sends a heartbeat;
//! a side that has read nothing for [`TcpLinkConfig::dead_after`] closes the link. Heartbeats are consumed
//! here and never reach the gate or node. A peer that keeps sending but stops reading is caught by the
//! write side: a write that makes no progress for [`TcpLinkConfig::write_timeout`] closes the link, so the
//! writer never blocks for good and what is queued for that peer is freed.
//!
//! Frames are never written over the peer's limit ([`TcpLinkConfig::max_frame_bytes`]): a delivery to a uid
//! list too long for one frame goes as several ([`switchyard_protocol::link::codec`]); any other message
//! over it is not sent (counted, logged once per link) and the link stays up. Every link end is counted by
//! its reason in [`LinkMetrics`].
//!
//! With [`TcpLinkConfig::tls`] set, every link is mutual TLS ([`super::tls`]): the acceptor hands a link to
//! the node only after a handshake in which the gate presented a certificate of the cluster's CA, within
//! [`TcpLinkConfig::handshake_timeout`]; anything else is closed before a single frame is read or written,
//! counted in [`AcceptorMetrics`] by [`Refusal`] and logged at most once a minute per reason. Plaintext or
//! TLS, a node keeps at most [`TcpLinkConfig::max_links`] link connections open; one more is closed at once.

use std::fmt;
use std::io;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use switchyard_protocol::link::codec::{
    LinkDecodeError, LinkDecoder, LinkEncodeError, encode_gate_to_node_within, encode_node_to_gate_within,
};
use switchyard_protocol::link::{GateToNode, NodeToGate};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::queue::{self, LinkReceiver, LinkSender, Weigh};
use super::tls::LinkTls;
use super::{Connector, GateLink, LinkError};

mod accept;
mod metrics;

use accept::LinkSlot;
pub use accept::{AcceptorMetrics, RefusedLabels, TcpAcceptor};
use metrics::LinkEnd;
pub use metrics::{LinkClose, LinkCloseLabels, LinkMetrics};

/// The default of [`TcpLinkConfig::max_links`].
pub const DEFAULT_MAX_LINKS: usize = 256;
/// The default of [`TcpLinkConfig::write_timeout`]: as long as a silent peer is given
/// ([`TcpLinkConfig::dead_after`]), since a peer that takes nothing for that long is as dead as one that
/// says nothing.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(6);

/// Settings of TCP links; gates and nodes of one cluster should agree on them.
#[derive(Debug, Clone)]
pub struct TcpLinkConfig {
    /// Largest frame accepted; see `switchyard_protocol::link::codec::max_frame_bytes_for`.
    pub max_frame_bytes: u32,
    /// Messages queued per direction before senders wait.
    pub capacity: usize,
    /// Bytes of packets, bodies and uid lists queued per direction before senders wait
    /// ([`super::queue`]).
    pub queue_bytes: usize,
    /// Bytes one write gathers at most.
    pub write_batch_bytes: usize,
    /// Send a heartbeat after this long without writing.
    pub heartbeat_interval: Duration,
    /// Close a link that has been silent this long.
    pub dead_after: Duration,
    /// Close a link whose write has made no progress this long (the peer stopped reading).
    pub write_timeout: Duration,
    /// How long opening a link may take.
    pub connect_timeout: Duration,
    /// Mutual TLS with the cluster's certificates; `None`: plaintext links.
    pub tls: Option<LinkTls>,
    /// How long a link's TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Link connections an acceptor keeps open at most (handshaking or linked); more are closed at once.
    pub max_links: usize,
}

impl Default for TcpLinkConfig {
    fn default() -> Self {
        TcpLinkConfig {
            max_frame_bytes: switchyard_protocol::link::codec::DEFAULT_MAX_FRAME_BYTES,
            capacity: super::DEFAULT_LINK_CAPACITY,
            queue_bytes: super::DEFAULT_LINK_QUEUE_BYTES,
            write_batch_bytes: 256 * 1024,
            heartbeat_interval: Duration::from_secs(2),
            dead_after: Duration::from_secs(6),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            connect_timeout: Duration::from_secs(3),
            tls: None,
            handshake_timeout: Duration::from_secs(5),
            max_links: DEFAULT_MAX_LINKS,
        }
    }
}

/// One direction of the protocol: what this side writes and what it reads.
trait Side: Send + 'static {
    type Out: Weigh + Send + fmt::Debug + 'static;
    type In: Weigh + Send + 'static;
    const NAME: &'static str;
    /// Appends `message` as frames of at most `max_frame_bytes`; returns how many.
    fn encode(
        message: &Self::Out,
        max_frame_bytes: u32,
        dst: &mut BytesMut,
    ) -> Result<usize, LinkEncodeError>;
    fn decode(decoder: &mut LinkDecoder, src: &mut BytesMut) -> Result<Option<Self::In>, LinkDecodeError>;
    fn heartbeat() -> Self::Out;
    fn is_heartbeat(message: &Self::In) -> bool;
}

struct GateSide;
struct NodeSide;

impl Side for GateSide {
    type Out = GateToNode;
    type In = NodeToGate;
    const NAME: &'static str = "gate";

    fn encode(
        message: &GateToNode,
        max_frame_bytes: u32,
        dst: &mut BytesMut,
    ) -> Result<usize, LinkEncodeError> {
        encode_gate_to_node_within(message, max_frame_bytes, dst)
    }

    fn decode(decoder: &mut LinkDecoder, src: &mut BytesMut) -> Result<Option<NodeToGate>, LinkDecodeError> {
        decoder.decode_node_to_gate(src)
    }

    fn heartbeat() -> GateToNode {
        GateToNode::Heartbeat
    }

    fn is_heartbeat(message: &NodeToGate) -> bool {
        matches!(message, NodeToGate::Heartbeat)
    }
}

impl Side for NodeSide {
    type Out = NodeToGate;
    type In = GateToNode;
    const NAME: &'static str = "node";

    fn encode(
        message: &NodeToGate,
        max_frame_bytes: u32,
        dst: &mut BytesMut,
    ) -> Result<usize, LinkEncodeError> {
        encode_node_to_gate_within(message, max_frame_bytes, dst)
    }

    fn decode(decoder: &mut LinkDecoder, src: &mut BytesMut) -> Result<Option<GateToNode>, LinkDecodeError> {
        decoder.decode_gate_to_node(src)
    }

    fn heartbeat() -> NodeToGate {
        NodeToGate::Heartbeat
    }

    fn is_heartbeat(message: &GateToNode) -> bool {
        matches!(message, GateToNode::Heartbeat)
    }
}

/// Opens TCP links from a gate to nodes at `host:port` addresses.
#[derive(Debug, Clone, Default)]
pub struct TcpConnector {
    config: TcpLinkConfig,
    metrics: LinkMetrics,
}

impl TcpConnector {
    pub fn new(config: TcpLinkConfig) -> Self {
        TcpConnector {
            config,
            metrics: LinkMetrics::default(),
        }
    }

    /// What the links this connector opened count, to register where the gate exposes its metrics.
    pub fn metrics(&self) -> &LinkMetrics {
        &self.metrics
    }
}

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(&self, address: &str) -> Result<GateLink, LinkError> {
        let io_error = |source| LinkError::Io {
            address: address.to_owned(),
            source,
        };
        let stream = tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| io_error(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
            .map_err(io_error)?;
        let _ = stream.set_nodelay(true);
        let (out_tx, out_rx) = queue::channel(self.config.capacity, self.config.queue_bytes);
        let (in_tx, in_rx) = queue::channel(self.config.capacity, self.config.queue_bytes);
        let peer = address.to_owned();
        match &self.config.tls {
            None => {
                let (read, write) = stream.into_split();
                spawn_bridge::<GateSide, _, _>(
                    read,
                    write,
                    peer,
                    out_rx,
                    in_tx,
                    &self.config,
                    &self.metrics,
                    None,
                );
            }
            Some(tls) => {
                let handshake_error = |reason: String| LinkError::Handshake {
                    address: address.to_owned(),
                    reason,
                };
                let connector = tokio_rustls::TlsConnector::from(tls.client_config());
                let stream = tokio::time::timeout(
                    self.config.handshake_timeout,
                    connector.connect(LinkTls::server_name(), stream),
                )
                .await
                .map_err(|_| {
                    handshake_error(format!(
                        "no TLS handshake within {:?}",
                        self.config.handshake_timeout
                    ))
                })?
                .map_err(|error| handshake_error(format!("TLS: {error}")))?;
                let (read, write) = tokio::io::split(stream);
                spawn_bridge::<GateSide, _, _>(
                    read,
                    write,
                    peer,
                    out_rx,
                    in_tx,
                    &self.config,
                    &self.metrics,
                    None,
                );
            }
        }
        Ok(GateLink {
            tx: out_tx,
            rx: in_rx,
        })
    }
}

/// Bridges one connection (its two halves: a TCP stream's, or a TLS stream's) to a link's channel ends.
/// `slot`, the connection's place under the acceptor's cap, is held until the link ends.
#[allow(clippy::too_many_arguments)]
fn spawn_bridge<S, R, W>(
    read: R,
    write: W,
    peer: String,
    outgoing: LinkReceiver<S::Out>,
    incoming: LinkSender<S::In>,
    config: &TcpLinkConfig,
    metrics: &LinkMetrics,
    slot: Option<LinkSlot>,
) where
    S: Side,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let end = LinkEnd::new(metrics.clone(), S::NAME, peer);
    tokio::spawn(write_frames::<S, W>(write, outgoing, config.clone(), end.clone()));
    let config = config.clone();
    tokio::spawn(async move {
        read_frames::<S, R>(read, incoming, config, end).await;
        drop(slot);
    });
}

async fn write_frames<S: Side, W: AsyncWrite + Unpin>(
    mut write: W,
    mut outgoing: LinkReceiver<S::Out>,
    config: TcpLinkConfig,
    end: LinkEnd,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // One timer for the link's lifetime, pushed back after every write: a busy link must not register a
    // new timer per batch.
    let idle = tokio::time::sleep(config.heartbeat_interval);
    tokio::pin!(idle);
    let reason = loop {
        let first = tokio::select! {
            _ = end.done.cancelled() => break None,
            message = outgoing.recv() => match message {
                Some(message) => message,
                None => break Some(LinkClose::Local), // the gate or node let go of the link
            },
            _ = &mut idle => S::heartbeat(),
        };
        encode_or_refuse::<S>(&first, &mut buf, &config, &end);
        while buf.len() < config.write_batch_bytes {
            match outgoing.try_recv() {
                Ok(message) => encode_or_refuse::<S>(&message, &mut buf, &config, &end),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            _ = end.done.cancelled() => break None,
            written = write_within(&mut write, &buf, config.write_timeout) => written,
        };
        match written {
            Ok(()) => {}
            Err(WriteFailed::Stalled) => {
                tracing::warn!(
                    side = S::NAME,
                    peer = %end.peer,
                    queued_bytes = buf.len(),
                    deadline = ?config.write_timeout,
                    "closing a link whose peer stopped reading (a write made no progress within the deadline)"
                );
                break Some(LinkClose::WriteTimeout);
            }
            Err(WriteFailed::Io(error)) => {
                tracing::debug!(side = S::NAME, peer = %end.peer, %error, "link write failed");
                break Some(LinkClose::Io);
            }
        }
        buf.clear();
        idle.as_mut().reset(Instant::now() + config.heartbeat_interval);
        if buf.capacity() > 4 * config.write_batch_bytes {
            buf = BytesMut::with_capacity(16 * 1024);
        }
    };
    if let Some(reason) = reason {
        end.end(reason);
    }
    drop(outgoing);
    drop(buf);
    // A peer that stopped reading must not hold this task either (a TLS close_notify is a write).
    let _ = tokio::time::timeout(config.write_timeout, write.shutdown()).await;
}

/// Why a write did not go through.
enum WriteFailed {
    /// No progress within the deadline.
    Stalled,
    Io(io::Error),
}

/// Writes all of `bytes` and flushes (a TLS stream holds records until flushed; for TCP the flush is free),
/// each step within `deadline` of the previous one's progress: a slow peer that keeps reading is given
/// time, one that stopped is not.
async fn write_within<W: AsyncWrite + Unpin>(
    write: &mut W,
    mut bytes: &[u8],
    deadline: Duration,
) -> Result<(), WriteFailed> {
    while !bytes.is_empty() {
        match tokio::time::timeout(deadline, write.write(bytes)).await {
            Err(_) => return Err(WriteFailed::Stalled),
            Ok(Err(error)) => return Err(WriteFailed::Io(error)),
            Ok(Ok(0)) => return Err(WriteFailed::Io(io::ErrorKind::WriteZero.into())),
            Ok(Ok(written)) => bytes = &bytes[written..],
        }
    }
    match tokio::time::timeout(deadline, write.flush()).await {
        Err(_) => Err(WriteFailed::Stalled),
        Ok(result) => result.map_err(WriteFailed::Io),
    }
}

/// Appends `message` within the peer's frame limit (a long uid list split over several frames). A message
/// that cannot be framed even so (an id over 255 bytes, a body over the limit) is the sender's bug: it is
/// not sent, counted, and logged once per link, rather than taking the whole link down.
fn encode_or_refuse<S: Side>(message: &S::Out, buf: &mut BytesMut, config: &TcpLinkConfig, end: &LinkEnd) {
    match S::encode(message, config.max_frame_bytes, buf) {
        Ok(1) => {}
        Ok(_) => {
            end.metrics.split.inc();
        }
        Err(error) => end.refused(&error),
    }
}

async fn read_frames<S: Side, R: AsyncRead + Unpin>(
    mut read: R,
    incoming: LinkSender<S::In>,
    config: TcpLinkConfig,
    end: LinkEnd,
) {
    let mut decoder = LinkDecoder::new(config.max_frame_bytes);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut last_read = Instant::now();
    let reason = 'link: loop {
        loop {
            match S::decode(&mut decoder, &mut buf) {
                Ok(Some(message)) if S::is_heartbeat(&message) => {}
                Ok(Some(message)) => {
                    let forwarded = tokio::select! {
                        _ = end.done.cancelled() => break 'link None,
                        forwarded = incoming.send(message) => forwarded,
                    };
                    if forwarded.is_err() {
                        break 'link Some(LinkClose::Local);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(side = S::NAME, peer = %end.peer, %error, "closing a link that sent an invalid frame");
                    break 'link Some(LinkClose::InvalidFrame);
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let silence = config.dead_after.saturating_sub(last_read.elapsed());
        let read_result = tokio::select! {
            _ = end.done.cancelled() => break None,
            read_result = tokio::time::timeout(silence, read.read_buf(&mut buf)) => read_result,
        };
        match read_result {
            Ok(Ok(0)) => break Some(LinkClose::PeerClosed),
            Ok(Ok(_)) => last_read = Instant::now(),
            Ok(Err(error)) => {
                tracing::debug!(side = S::NAME, peer = %end.peer, %error, "link read failed");
                break Some(LinkClose::Io);
            }
            Err(_) => {
                tracing::warn!(side = S::NAME, peer = %end.peer, silent = ?config.dead_after, "closing a silent link");
                break Some(LinkClose::Silent);
            }
        }
    };
    if let Some(reason) = reason {
        end.end(reason);
    }
}

#[cfg(test)]
mod tests;
