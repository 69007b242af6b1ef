//! Accepting clients: the accept loop with its connection caps (the gate's, and per source address), the
//! PROXY protocol header when behind a load balancer, the TLS handshake and the WebSocket upgrade,
//! each kind of connection in a task of its own size.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::metrics::{RefuseReason, Transport};
use crate::per_ip::PerIpPermit;
use crate::proxy_protocol;
use crate::shared::Gate;
use crate::transport::{StreamSink, StreamSource, TcpSource, ws_halves};

/// How long a load balancer may take to send a connection's PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a WebSocket upgrade may take.
const WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer of a WebSocket connection (tungstenite keeps it for the connection's life, zero-filled, so
/// it is resident memory): 4 KiB holds a few pipelined 1 KiB packets per read and grows for larger messages.
const WS_READ_BUFFER: usize = 4 * 1024;

/// What a connection holds while it lives: one of the gate's slots and, with a per-address cap, one of its
/// address's. Both are given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _global: OwnedSemaphorePermit,
    per_ip: Option<PerIpPermit>,
}

impl Gate {
    pub(crate) async fn accept_loop(self, listener: TcpListener, transport: Transport) {
        let inner = &self.inner;
        loop {
            let accepted = tokio::select! {
                _ = inner.accepting.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, ?transport, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Behind PROXY protocol the peer is the load balancer: the client's address is counted once its
            // header is read.
            let proxied = inner.config.proxy_protocol;
            let per_ip = if proxied {
                None
            } else {
                let Ok(per_ip) = inner.per_ip.acquire(peer.ip()) else {
                    inner.metrics.refused(transport, RefuseReason::PerIp);
                    tracing::debug!(%peer, ?transport, "refused: the address is at its connection cap");
                    drop(stream);
                    continue;
                };
                per_ip
            };
            let Ok(global) = inner.connection_slots.clone().try_acquire_owned() else {
                inner.metrics.refused(transport, RefuseReason::MaxConnections);
                drop(stream);
                continue;
            };
            let permit = Slot {
                _global: global,
                per_ip,
            };
            let _ = stream.set_nodelay(true);
            let gate = self.clone();
            // Each kind of connection is its own task so that a task is only as large as its own future:
            // one future for all would reserve the TLS and WebSocket handshake states (over 11 KiB) in every
            // plain TCP connection.
            match (proxied, inner.config.tls.is_some(), transport) {
                (true, _, _) => inner
                    .tasks
                    .spawn(Box::pin(gate.serve_proxied(stream, peer, transport, permit))),
                (false, false, Transport::Tcp) => {
                    inner.tasks.spawn(gate.serve_plain_tcp(stream, peer, permit))
                }
                (false, false, Transport::Ws) => inner.tasks.spawn(gate.accept_ws(stream, peer, permit)),
                (false, true, _) => inner
                    .tasks
                    .spawn(Box::pin(gate.serve_tls(stream, peer, transport, permit))),
            };
        }
    }

    /// Reads the PROXY protocol header of a connection from the load balancer, counts the client's
    /// address against its cap, then serves the connection as any other.
    pub(crate) async fn serve_proxied(
        self,
        mut stream: TcpStream,
        balancer: SocketAddr,
        transport: Transport,
        mut permit: Slot,
    ) {
        let inner = &self.inner;
        let header = tokio::time::timeout(
            PROXY_HEADER_TIMEOUT,
            proxy_protocol::read_header(&mut stream, balancer),
        );
        let outcome = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            outcome = header => outcome,
        };
        let peer = match outcome {
            Ok(Ok(peer)) => peer,
            Ok(Err(error)) => {
                tracing::debug!(%balancer, %error, ?transport, "PROXY header refused");
                inner.metrics.refused(transport, RefuseReason::Handshake);
                return;
            }
            Err(_) => {
                tracing::debug!(%balancer, ?transport, "no PROXY header in time");
                inner.metrics.refused(transport, RefuseReason::Handshake);
                return;
            }
        };
        match inner.per_ip.acquire(peer.ip()) {
            Ok(per_ip) => permit.per_ip = per_ip,
            Err(()) => {
                inner.metrics.refused(transport, RefuseReason::PerIp);
                tracing::debug!(%peer, ?transport, "refused: the address is at its connection cap");
                return;
            }
        }
        match (inner.config.tls.is_some(), transport) {
            (false, Transport::Tcp) => self.serve_plain_tcp(stream, peer, permit).await,
            (false, Transport::Ws) => self.accept_ws(stream, peer, permit).await,
            (true, _) => self.serve_tls(stream, peer, transport, permit).await,
        }
    }

    /// Runs the session of a plain TCP client.
    pub(crate) async fn serve_plain_tcp(self, mut stream: TcpStream, peer: SocketAddr, permit: Slot) {
        // Borrowed halves: reader and writer run in this one task, so the socket needs no shared handle.
        let (read, write) = stream.split();
        let mut source = TcpSource::new(read, &self.inner.config.packet);
        let mut sink = StreamSink::new(write);
        self.run_session(Transport::Tcp, Some(peer), &mut source, &mut sink)
            .await;
        drop(permit);
    }

    /// Takes an accepted socket through the TLS handshake and, on the WebSocket listener, the upgrade,
    /// then runs its session.
    pub(crate) async fn serve_tls(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        transport: Transport,
        permit: Slot,
    ) {
        let Some(acceptor) = self.inner.config.tls.clone().map(TlsAcceptor::from) else {
            return;
        };
        let Some(stream) = self.tls_handshake(&acceptor, stream, peer, transport).await else {
            return;
        };
        match transport {
            Transport::Tcp => {
                let (read, write) = tokio::io::split(stream);
                let mut source = StreamSource::new(read, &self.inner.config.packet);
                let mut sink = StreamSink::new(write);
                self.run_session(Transport::Tcp, Some(peer), &mut source, &mut sink)
                    .await;
                drop(permit);
            }
            Transport::Ws => self.accept_ws(stream, peer, permit).await,
        }
    }

    /// The server side of a TLS handshake, within the configured timeout; a failure is counted as a
    /// refused connection.
    pub(crate) async fn tls_handshake(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        transport: Transport,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let inner = &self.inner;
        let handshake = tokio::time::timeout(inner.config.tls_handshake_timeout, acceptor.accept(stream));
        let outcome = tokio::select! {
            _ = inner.shutdown.cancelled() => return None,
            outcome = handshake => outcome,
        };
        match outcome {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(error)) => tracing::debug!(%peer, %error, ?transport, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, ?transport, "TLS handshake timed out"),
        }
        inner.metrics.refused(transport, RefuseReason::Handshake);
        None
    }

    pub(crate) async fn accept_ws<S>(self, stream: S, peer: SocketAddr, permit: Slot)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = &self.inner.config;
        let max_message = config.packet.max_packet_bytes() as usize + 4;
        // tungstenite allocates its read buffer up front (128 KiB by default): for a mostly idle player
        // connection a small one that grows for a large message costs a fraction of the memory.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message))
            .max_write_buffer_size(config.write_batch_bytes.max(max_message) * 4);
        let path = config.ws_path.clone();
        #[allow(clippy::result_large_err)] // the signature is tungstenite's callback type
        let check_path = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            if request.uri().path() == path {
                Ok(response)
            } else {
                let mut refusal = ErrorResponse::new(Some("no WebSocket endpoint at this path".into()));
                *refusal.status_mut() = StatusCode::NOT_FOUND;
                Err(refusal)
            }
        };
        let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config));
        match tokio::time::timeout(WS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(ws)) => {
                let (mut source, mut sink) = ws_halves(ws, &config.packet);
                self.run_session(Transport::Ws, Some(peer), &mut source, &mut sink)
                    .await;
                drop(permit);
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "WebSocket handshake refused");
                self.inner.metrics.refused(Transport::Ws, RefuseReason::Handshake);
            }
            Err(_) => {
                tracing::debug!(%peer, "WebSocket handshake timed out");
                self.inner.metrics.refused(Transport::Ws, RefuseReason::Handshake);
            }
        }
    }
}
