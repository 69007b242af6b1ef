//! Client transports reduced to two small interfaces: a [`FrameSource`] that yields decoded packets and a
//! [`PacketSink`] that writes batches of whole packets. TCP is a byte stream cut by the packet decoder;
//! WebSocket carries exactly one packet per binary message. The session logic above is the same for both.
//!
//! Memory per idle connection is what limits how many players a gate holds, so a plain TCP connection
//! keeps no read buffer while it waits: [`TcpSource`] waits for readiness first and borrows a buffer only
//! while bytes are in hand.

use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use switchyard_protocol::packet::MessageError;
use switchyard_protocol::{DecodeError, Decoder, Frame, PacketConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::ReadHalf;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// Read buffer a TCP connection reads into; it grows up to one maximum packet when a packet needs it.
const READ_CHUNK: usize = 4 * 1024;

/// What reading from a client produced.
#[derive(Debug)]
pub(crate) enum SourceEvent {
    /// A packet and the bytes it took on the wire.
    Frame(Frame, usize),
    /// A WebSocket message that is not exactly one packet: dropped, the connection stays.
    Malformed,
    /// A packet over the maximum: the connection must close.
    Oversize(DecodeError),
    /// The client closed the connection.
    Closed,
    Failed(io::Error),
}

/// Decoded packets from a client. `next` must be cancel-safe: the session drops it to check timers.
pub(crate) trait FrameSource: Send {
    fn next(&mut self) -> impl Future<Output = SourceEvent> + Send;
}

/// Writes to a client.
pub(crate) trait PacketSink: Send {
    /// Writes whole packets, in order.
    fn write(&mut self, packets: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends the connection politely.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// A byte stream cut into packets (TLS and other wrapped streams, which keep buffers of their own).
pub(crate) struct StreamSource<R> {
    read: R,
    buf: BytesMut,
    decoder: Decoder,
}

impl<R> StreamSource<R> {
    pub(crate) fn new(read: R, config: &PacketConfig) -> Self {
        StreamSource {
            read,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: config.decoder(),
        }
    }
}

impl<R: AsyncRead + Unpin + Send> FrameSource for StreamSource<R> {
    async fn next(&mut self) -> SourceEvent {
        loop {
            if let Some(event) = decode_next(&mut self.decoder, &mut self.buf) {
                return event;
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_CHUNK);
            }
            match self.read.read_buf(&mut self.buf).await {
                Ok(0) => return SourceEvent::Closed,
                Ok(_) => {}
                Err(error) => return SourceEvent::Failed(error),
            }
        }
    }
}

/// A plain TCP connection cut into packets, holding a read buffer only while part of a packet is in it.
pub(crate) struct TcpSource<'a> {
    read: ReadHalf<'a>,
    buf: BytesMut,
    decoder: Decoder,
}

impl<'a> TcpSource<'a> {
    pub(crate) fn new(read: ReadHalf<'a>, config: &PacketConfig) -> Self {
        TcpSource {
            read,
            buf: BytesMut::new(),
            decoder: config.decoder(),
        }
    }
}

impl TcpSource<'_> {
    /// Waits until the socket has bytes (or an error or EOF) to read, without a buffer. Polled directly
    /// rather than through `readable()`, whose future would add to every connection's task.
    async fn read_ready(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.read.as_ref().poll_read_ready(cx)).await
    }
}

impl FrameSource for TcpSource<'_> {
    async fn next(&mut self) -> SourceEvent {
        loop {
            if let Some(event) = decode_next(&mut self.decoder, &mut self.buf) {
                return event;
            }
            if self.buf.is_empty() {
                // Whole packets only so far: give the buffer back while the client is quiet. Under load this
                // costs one allocation per read, which the packets split off the buffer often cost anyway.
                self.buf = BytesMut::new();
                if let Err(error) = self.read_ready().await {
                    return SourceEvent::Failed(error);
                }
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_CHUNK);
            }
            match self.read.as_ref().try_read_buf(&mut self.buf) {
                Ok(0) => return SourceEvent::Closed,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if !self.buf.is_empty() {
                        // Part of a packet is buffered: wait with it.
                        if let Err(error) = self.read_ready().await {
                            return SourceEvent::Failed(error);
                        }
                    }
                }
                Err(error) => return SourceEvent::Failed(error),
            }
        }
    }
}

/// The next packet already in `buf`, or the oversize error that ends the connection.
fn decode_next(decoder: &mut Decoder, buf: &mut BytesMut) -> Option<SourceEvent> {
    match decoder.decode(buf) {
        Ok(Some(frame)) => {
            let wire = wire_len(&frame);
            Some(SourceEvent::Frame(frame, wire))
        }
        Ok(None) => None,
        Err(error) => Some(SourceEvent::Oversize(error)),
    }
}

fn wire_len(frame: &Frame) -> usize {
    4 + match frame {
        Frame::Empty => 0,
        Frame::Heartbeat {
            server_time_nanos, ..
        } => 1 + server_time_nanos.map_or(0, |_| 8),
        Frame::Data(data) => data.body().len(),
        Frame::Short { size } => *size as usize,
    }
}

/// A byte stream that packets are written to, coalesced into one write per batch.
pub(crate) struct StreamSink<W> {
    write: W,
    buf: BytesMut,
}

impl<W> StreamSink<W> {
    pub(crate) fn new(write: W) -> Self {
        StreamSink {
            write,
            buf: BytesMut::new(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> PacketSink for StreamSink<W> {
    async fn write(&mut self, packets: &[Bytes]) -> io::Result<()> {
        if let [packet] = packets {
            return self.write.write_all(packet).await;
        }
        self.buf.clear();
        for packet in packets {
            self.buf.extend_from_slice(packet);
        }
        self.write.write_all(&self.buf).await?;
        // Do not keep a large batch buffer around for an idle connection.
        if self.buf.capacity() > 64 * 1024 {
            self.buf = BytesMut::new();
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        let _ = self.write.shutdown().await;
    }
}

/// The reading half of a WebSocket connection.
pub(crate) struct WsSource<S> {
    stream: futures_util::stream::SplitStream<WebSocketStream<S>>,
    config: PacketConfig,
}

/// The writing half of a WebSocket connection.
pub(crate) struct WsSink<S> {
    sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
}

/// Splits an accepted WebSocket into its two halves.
pub(crate) fn ws_halves<S>(ws: WebSocketStream<S>, config: &PacketConfig) -> (WsSource<S>, WsSink<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (sink, stream) = ws.split();
    (
        WsSource {
            stream,
            config: *config,
        },
        WsSink { sink },
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> FrameSource for WsSource<S> {
    async fn next(&mut self) -> SourceEvent {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Binary(message))) => {
                    let wire = message.len();
                    return match self.config.parse_message(message) {
                        Ok(frame) => SourceEvent::Frame(frame, wire),
                        Err(MessageError::Oversize(error)) => SourceEvent::Oversize(error),
                        Err(MessageError::NoSizeField { .. } | MessageError::NotOnePacket { .. }) => {
                            SourceEvent::Malformed
                        }
                    };
                }
                // Text frames and ping/pong are not packets and do not count as liveness.
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return SourceEvent::Closed,
                Some(Err(tungstenite::Error::Capacity(error))) => {
                    tracing::debug!(%error, "WebSocket message over the size limit");
                    let max = self.config.max_packet_bytes();
                    return SourceEvent::Oversize(DecodeError::Oversize {
                        size: max.saturating_add(1),
                        max,
                    });
                }
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                    return SourceEvent::Closed;
                }
                Some(Err(error)) => return SourceEvent::Failed(io::Error::other(error)),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> PacketSink for WsSink<S> {
    async fn write(&mut self, packets: &[Bytes]) -> io::Result<()> {
        for packet in packets {
            self.sink
                .feed(Message::Binary(packet.clone()))
                .await
                .map_err(io::Error::other)?;
        }
        self.sink.flush().await.map_err(io::Error::other)
    }

    async fn shutdown(&mut self) {
        let _ = self.sink.close().await;
    }
}
