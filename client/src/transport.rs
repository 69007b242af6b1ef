//! The two carriers of packets: a TCP byte stream and WebSocket binary messages (one whole packet each),
//! each plain or in TLS. Dialling, and read/write halves that turn them into [`Frame`]s and back, shared
//! by the [`Client`](crate::Client) and the load generator.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use switchyard_protocol::packet::SIZE_FIELD_BYTES;
use switchyard_protocol::{Decoder, Frame, PacketConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::tls::{Io, IoRead, IoWrite, TlsConfig};
use crate::{ClientError, Transport};

type WsStream = WebSocketStream<Io>;

/// Room kept free in the TCP read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Opens a connection of any kind within `timeout`; `tls` is needed for [`Transport::Tls`] and `wss://`.
pub(crate) async fn connect(
    transport: &Transport,
    config: &PacketConfig,
    timeout: Duration,
    tls: Option<&TlsConfig>,
) -> Result<(ReadHalf, WriteHalf), ClientError> {
    match transport {
        Transport::Tcp(addr) => connect_tcp(addr.as_str(), addr, config, timeout).await,
        Transport::Tls(addr) => {
            let tls = tls.ok_or_else(|| ClientError::NoTlsConfig(transport.to_string()))?;
            let deadline = tokio::time::Instant::now() + timeout;
            let stream = dial(addr.as_str(), addr, timeout).await?;
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(host, _)| host);
            let io = tls
                .handshake(stream, host, &transport.to_string(), deadline)
                .await?;
            let (read, write) = tokio::io::split(io);
            Ok(tcp_halves(IoRead::Tls(read), IoWrite::Tls(write), config))
        }
        Transport::WebSocket(url) => connect_ws(url, config, timeout, tls).await,
    }
}

/// Opens a TCP connection (with `TCP_NODELAY`) within `timeout`.
pub(crate) async fn connect_tcp<A: ToSocketAddrs>(
    addr: A,
    target: &(dyn fmt::Display + Sync),
    config: &PacketConfig,
    timeout: Duration,
) -> Result<(ReadHalf, WriteHalf), ClientError> {
    let stream = dial(addr, target, timeout).await?;
    let (read, write) = stream.into_split();
    Ok(tcp_halves(IoRead::Plain(read), IoWrite::Plain(write), config))
}

fn tcp_halves(read: IoRead, write: IoWrite, config: &PacketConfig) -> (ReadHalf, WriteHalf) {
    (
        ReadHalf::Tcp {
            half: read,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: config.decoder(),
        },
        WriteHalf::Tcp {
            half: write,
            buf: BytesMut::with_capacity(READ_CHUNK),
        },
    )
}

/// The TCP connection under every transport, with `TCP_NODELAY`, within `timeout`.
async fn dial<A: ToSocketAddrs>(
    addr: A,
    target: &(dyn fmt::Display + Sync),
    timeout: Duration,
) -> Result<TcpStream, ClientError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(ClientError::ConnectTimeout {
                target: target.to_string(),
                timeout,
            });
        }
        Ok(Err(err)) => {
            return Err(ClientError::Connect {
                target: target.to_string(),
                source: Arc::new(err),
            });
        }
        Ok(Ok(stream)) => stream,
    };
    stream.set_nodelay(true).map_err(ClientError::io)?;
    Ok(stream)
}

/// Opens a WebSocket connection (`ws://`, or `wss://` with `tls`; with `TCP_NODELAY`, messages capped at
/// one maximum packet) within `timeout`.
pub(crate) async fn connect_ws(
    url: &str,
    config: &PacketConfig,
    timeout: Duration,
    tls: Option<&TlsConfig>,
) -> Result<(ReadHalf, WriteHalf), ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let handshake_error = |err| ClientError::Handshake {
        target: url.to_owned(),
        source: Arc::new(err),
    };
    let request = url.into_client_request().map_err(handshake_error)?;
    let uri = request.uri();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let stream = dial((host.as_str(), port), &url, timeout).await?;
    let io = if secure {
        let tls = tls.ok_or_else(|| ClientError::NoTlsConfig(url.to_owned()))?;
        tls.handshake(stream, &host, url, deadline).await?
    } else {
        Io::Plain(stream)
    };
    let max_message = SIZE_FIELD_BYTES + config.max_packet_bytes() as usize;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let upgrade = tokio_tungstenite::client_async_with_config(request, io, Some(ws_config));
    let stream = match tokio::time::timeout_at(deadline, upgrade).await {
        Err(_) => {
            return Err(ClientError::ConnectTimeout {
                target: url.to_owned(),
                timeout,
            });
        }
        Ok(Err(tungstenite::Error::Io(err))) => {
            return Err(ClientError::Connect {
                target: url.to_owned(),
                source: Arc::new(err),
            });
        }
        Ok(Err(err)) => {
            return Err(ClientError::Handshake {
                target: url.to_owned(),
                source: Arc::new(err),
            });
        }
        Ok(Ok((stream, _response))) => stream,
    };
    let (sink, stream) = stream.split();
    Ok((
        ReadHalf::Ws {
            stream,
            config: *config,
        },
        WriteHalf::Ws {
            sink,
            buf: BytesMut::with_capacity(READ_CHUNK),
            batch: Vec::new(),
        },
    ))
}

/// The receiving side of a connection.
pub(crate) enum ReadHalf {
    Tcp {
        half: IoRead,
        buf: BytesMut,
        decoder: Decoder,
    },
    Ws {
        stream: SplitStream<WsStream>,
        config: PacketConfig,
    },
}

impl fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadHalf::Tcp { buf, .. } => f
                .debug_struct("ReadHalf::Tcp")
                .field("buffered", &buf.len())
                .finish(),
            ReadHalf::Ws { .. } => f.write_str("ReadHalf::Ws"),
        }
    }
}

impl ReadHalf {
    /// The next packet. Cancel-safe: a partly read packet stays buffered.
    ///
    /// # Errors
    /// [`ClientError::ServerClosed`] at the end of the stream or on a WebSocket close; a read error;
    /// [`ClientError::Protocol`] for an oversize packet on TCP (on WebSocket such a message is dropped,
    /// as due does).
    pub(crate) async fn next(&mut self) -> Result<Frame, ClientError> {
        match self {
            ReadHalf::Tcp { half, buf, decoder } => loop {
                if let Some(frame) = decoder.decode(buf)? {
                    return Ok(frame);
                }
                if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                    buf.reserve(READ_CHUNK);
                }
                let read = half.read_buf(buf).await.map_err(|err| match err.kind() {
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                        ClientError::ServerClosed
                    }
                    _ => ClientError::io(err),
                })?;
                if read == 0 {
                    return Err(ClientError::ServerClosed);
                }
            },
            ReadHalf::Ws { stream, config } => loop {
                match stream.next().await {
                    None | Some(Ok(Message::Close(_))) => return Err(ClientError::ServerClosed),
                    Some(Ok(Message::Binary(message))) => match config.parse_message(message) {
                        Ok(frame) => return Ok(frame),
                        Err(err) => tracing::debug!(error = %err, "dropping a WebSocket message"),
                    },
                    Some(Ok(_)) => {} // text, ping, pong: not packets
                    Some(Err(err)) => return Err(ws_error(err)),
                }
            },
        }
    }

    /// A packet already received and buffered, if any, without waiting (TCP only; a WebSocket message
    /// is one packet, so there is never more than [`ReadHalf::next`] returned).
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for an oversize packet.
    pub(crate) fn next_buffered(&mut self) -> Result<Option<Frame>, ClientError> {
        match self {
            ReadHalf::Tcp { buf, decoder, .. } => Ok(decoder.decode(buf)?),
            ReadHalf::Ws { .. } => Ok(None),
        }
    }
}

/// The sending side of a connection: packets are encoded into [`WriteHalf::buffer`], closed with
/// [`WriteHalf::end_packet`], and written in one go by [`WriteHalf::flush`].
pub(crate) enum WriteHalf {
    Tcp {
        half: IoWrite,
        buf: BytesMut,
    },
    Ws {
        sink: SplitSink<WsStream, Message>,
        buf: BytesMut,
        batch: Vec<Bytes>,
    },
}

impl fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteHalf::Tcp { buf, .. } => f
                .debug_struct("WriteHalf::Tcp")
                .field("buffered", &buf.len())
                .finish(),
            WriteHalf::Ws { batch, .. } => f
                .debug_struct("WriteHalf::Ws")
                .field("batched", &batch.len())
                .finish(),
        }
    }
}

impl WriteHalf {
    /// Where the next packet is encoded. Call [`WriteHalf::end_packet`] after each packet.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        match self {
            WriteHalf::Tcp { buf, .. } | WriteHalf::Ws { buf, .. } => buf,
        }
    }

    /// Closes the packet just encoded into [`WriteHalf::buffer`] (WebSocket: it becomes one message).
    pub(crate) fn end_packet(&mut self) {
        if let WriteHalf::Ws { buf, batch, .. } = self
            && !buf.is_empty()
        {
            batch.push(buf.split().freeze());
        }
    }

    /// Queues one packet encoded elsewhere.
    pub(crate) fn push_packet(&mut self, packet: Bytes) {
        match self {
            WriteHalf::Tcp { buf, .. } => buf.extend_from_slice(&packet),
            WriteHalf::Ws { batch, .. } => batch.push(packet),
        }
    }

    /// Whether anything waits to be flushed.
    pub(crate) fn has_queued(&self) -> bool {
        match self {
            WriteHalf::Tcp { buf, .. } => !buf.is_empty(),
            WriteHalf::Ws { batch, .. } => !batch.is_empty(),
        }
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// A write error, or [`ClientError::ServerClosed`] when the peer has gone.
    pub(crate) async fn flush(&mut self) -> Result<(), ClientError> {
        match self {
            WriteHalf::Tcp { half, buf } => {
                if buf.is_empty() {
                    return Ok(());
                }
                let written = half.write_all(buf).await;
                buf.clear();
                written.map_err(|err| match err.kind() {
                    std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted => ClientError::ServerClosed,
                    _ => ClientError::io(err),
                })
            }
            WriteHalf::Ws { sink, batch, .. } => {
                if batch.is_empty() {
                    return Ok(());
                }
                for packet in batch.drain(..) {
                    sink.feed(Message::Binary(packet)).await.map_err(ws_error)?;
                }
                sink.flush().await.map_err(ws_error)
            }
        }
    }

    /// Ends the sending direction: TCP FIN, or a WebSocket close frame.
    pub(crate) async fn shutdown(&mut self) {
        let result = match self {
            WriteHalf::Tcp { half, .. } => half.shutdown().await.map_err(ClientError::io),
            WriteHalf::Ws { sink, .. } => sink.close().await.map_err(ws_error),
        };
        if let Err(err) = result {
            tracing::debug!(error = %err, "shutting a connection down");
        }
    }
}

fn ws_error(err: tungstenite::Error) -> ClientError {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ClientError::ServerClosed
        }
        tungstenite::Error::Io(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            ClientError::ServerClosed
        }
        tungstenite::Error::Io(err) => ClientError::io(err),
        err => ClientError::WebSocket(Arc::new(err)),
    }
}
