//! The node's side of TCP links: [`TcpAcceptor`] accepts connections on the link port, keeps at most
//! [`TcpLinkConfig::max_links`] open, runs the mutual TLS handshake with its deadline when link TLS is on,
//! and hands each link to the node only then. A refused connection is closed before any frame, counted in
//! [`AcceptorMetrics`] by [`Refusal`] and logged at most once a minute per reason.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{LinkMetrics, NodeSide, TcpLinkConfig, spawn_bridge};
use crate::link::tls::Refusal;
use crate::link::{Acceptor, LinkError, NodeLink, queue};

/// Accepts TCP links from gates on a node's link port.
#[derive(Debug)]
pub struct TcpAcceptor {
    rx: mpsc::Receiver<NodeLink>,
    local_addr: SocketAddr,
    stop: CancellationToken,
    metrics: AcceptorMetrics,
}

/// What an acceptor counts: refused link connections by reason, the link connections open, and what its
/// links count ([`LinkMetrics`]).
#[derive(Debug, Clone, Default)]
pub struct AcceptorMetrics {
    pub refused: Family<RefusedLabels, Counter>,
    pub open: Gauge,
    pub links: LinkMetrics,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: &'static str,
}

impl AcceptorMetrics {
    /// Registers `link_refused`, `link_connections` and the [`LinkMetrics`] in `registry` (a node registers
    /// them under `switchyard_node`). Every reason is created at zero, so dashboards see the series before a
    /// refusal.
    pub fn register(&self, registry: &mut Registry) {
        self.links.register(registry);
        for refusal in Refusal::ALL {
            let _ = self.refused.get_or_create(&RefusedLabels {
                reason: refusal.as_str(),
            });
        }
        registry.register(
            "link_refused",
            "Link connections refused before any frame: no or foreign certificate, not TLS, handshake \
             timeout or failure, over the link cap",
            self.refused.clone(),
        );
        registry.register(
            "link_connections",
            "Link connections open (handshaking or linked)",
            self.open.clone(),
        );
    }
}

/// Logs each refusal reason at most once a minute, with the count since the last line: a stranger knocking
/// in a loop does not flood the log.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Mutex<HashMap<Refusal, (Instant, u64)>>,
}

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

impl RefusalLog {
    fn refused(&self, refusal: Refusal, peer: &SocketAddr, detail: &dyn fmt::Display) {
        let now = Instant::now();
        let suppressed = {
            let mut last = self.last.lock();
            match last.get_mut(&refusal) {
                Some((at, suppressed)) if now.duration_since(*at) < REFUSAL_LOG_EVERY => {
                    *suppressed += 1;
                    return;
                }
                Some((at, suppressed)) => {
                    *at = now;
                    std::mem::take(suppressed)
                }
                None => {
                    last.insert(refusal, (now, 0));
                    0
                }
            }
        };
        tracing::warn!(
            reason = refusal.as_str(),
            %peer,
            %detail,
            not_logged_since = suppressed,
            "link connection refused before any frame (logged at most once a minute per reason)"
        );
    }
}

/// What every accepted connection of one acceptor shares.
#[derive(Debug)]
struct AcceptShared {
    links: mpsc::Sender<NodeLink>,
    config: TcpLinkConfig,
    slots: Arc<Semaphore>,
    metrics: AcceptorMetrics,
    log: RefusalLog,
    stop: CancellationToken,
}

impl AcceptShared {
    fn refuse(&self, refusal: Refusal, peer: &SocketAddr, detail: &dyn fmt::Display) {
        self.metrics
            .refused
            .get_or_create(&RefusedLabels {
                reason: refusal.as_str(),
            })
            .inc();
        self.log.refused(refusal, peer, detail);
    }
}

/// A link connection's place under [`TcpLinkConfig::max_links`], released when the link ends.
#[derive(Debug)]
pub(super) struct LinkSlot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for LinkSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl TcpAcceptor {
    /// Listens on `address` and accepts links in the background until dropped.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(address: SocketAddr, config: TcpLinkConfig) -> Result<Self, LinkError> {
        let listener = TcpListener::bind(address).await.map_err(|source| LinkError::Io {
            address: address.to_string(),
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| LinkError::Io {
            address: address.to_string(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let metrics = AcceptorMetrics::default();
        let shared = Arc::new(AcceptShared {
            links: tx,
            slots: Arc::new(Semaphore::new(config.max_links.max(1))),
            config,
            metrics: metrics.clone(),
            log: RefusalLog::default(),
            stop: stop.clone(),
        });
        tokio::spawn(accept_links(listener, shared));
        Ok(TcpAcceptor {
            rx,
            local_addr,
            stop,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The acceptor's counters, to register where the process exposes its metrics.
    pub fn metrics(&self) -> &AcceptorMetrics {
        &self.metrics
    }
}

impl Drop for TcpAcceptor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl Acceptor for TcpAcceptor {
    async fn accept(&mut self) -> Option<NodeLink> {
        self.rx.recv().await
    }
}

async fn accept_links(listener: TcpListener, shared: Arc<AcceptShared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Over the cap: closed at once, before any byte is read (no handshake work for a flood).
                let Ok(permit) = Arc::clone(&shared.slots).try_acquire_owned() else {
                    shared.refuse(
                        Refusal::MaxLinks,
                        &peer,
                        &format_args!("{} link connections open", shared.config.max_links),
                    );
                    drop(stream);
                    continue;
                };
                shared.metrics.open.inc();
                let slot = LinkSlot {
                    _permit: permit,
                    open: shared.metrics.open.clone(),
                };
                tokio::spawn(open_link(Arc::clone(&shared), stream, peer, slot));
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a gate link failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Turns one accepted connection into a [`NodeLink`]: at once in plaintext, after a mutual TLS handshake
/// within the deadline otherwise (a refused peer is closed without a frame).
async fn open_link(shared: Arc<AcceptShared>, stream: TcpStream, peer: SocketAddr, slot: LinkSlot) {
    let _ = stream.set_nodelay(true);
    let config = &shared.config;
    let (out_tx, out_rx) = queue::channel(config.capacity, config.queue_bytes);
    let (in_tx, in_rx) = queue::channel(config.capacity, config.queue_bytes);
    match &config.tls {
        None => {
            let (read, write) = stream.into_split();
            let links = &shared.metrics.links;
            spawn_bridge::<NodeSide, _, _>(
                read,
                write,
                peer.to_string(),
                out_rx,
                in_tx,
                config,
                links,
                Some(slot),
            );
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            let handshake = tokio::select! {
                _ = shared.stop.cancelled() => return,
                handshake = tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream)) => handshake,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    shared.refuse(Refusal::of_handshake_error(&error), &peer, &error);
                    return;
                }
                Err(_) => {
                    shared.refuse(
                        Refusal::HandshakeTimeout,
                        &peer,
                        &format_args!("no TLS handshake within {:?}", config.handshake_timeout),
                    );
                    return;
                }
            };
            let (read, write) = tokio::io::split(stream);
            let links = &shared.metrics.links;
            spawn_bridge::<NodeSide, _, _>(
                read,
                write,
                peer.to_string(),
                out_rx,
                in_tx,
                config,
                links,
                Some(slot),
            );
        }
    }
    let _ = shared
        .links
        .send(NodeLink {
            tx: out_tx,
            rx: in_rx,
        })
        .await;
}
