//! What TCP links count, on the gate's and the node's side alike: how each link ended ([`LinkClose`]),
//! messages split to fit the peer's frame limit, and messages refused because they fit it in no way.
//! [`LinkEnd`] is one link's share: it names the link's end once, whichever of its reader and writer
//! sees it first.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Why a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkClose {
    /// A write made no progress within [`super::TcpLinkConfig::write_timeout`]: the peer stopped reading.
    WriteTimeout,
    /// Nothing was read for [`super::TcpLinkConfig::dead_after`].
    Silent,
    /// The peer sent a frame that breaks the link grammar (oversize, unknown type, truncated, ...).
    InvalidFrame,
    /// The peer closed the connection.
    PeerClosed,
    /// The socket failed (reset, broken pipe, TLS error).
    Io,
    /// This side let go of the link (the gate or node closed it).
    Local,
}

impl LinkClose {
    pub const ALL: [LinkClose; 6] = [
        LinkClose::WriteTimeout,
        LinkClose::Silent,
        LinkClose::InvalidFrame,
        LinkClose::PeerClosed,
        LinkClose::Io,
        LinkClose::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkClose::WriteTimeout => "write_timeout",
            LinkClose::Silent => "silent",
            LinkClose::InvalidFrame => "invalid_frame",
            LinkClose::PeerClosed => "peer_closed",
            LinkClose::Io => "io_error",
            LinkClose::Local => "local",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LinkCloseLabels {
    pub reason: &'static str,
}

/// The counters of every link of one connector (gate) or acceptor (node).
#[derive(Debug, Clone, Default)]
pub struct LinkMetrics {
    pub closed: Family<LinkCloseLabels, Counter>,
    /// Messages sent as several frames (a uid list too long for one).
    pub split: Counter,
    /// Messages not sent because they fit no frame the peer accepts.
    pub refused: Counter,
}

impl LinkMetrics {
    /// Registers `link_closed`, `link_messages_split` and `link_messages_refused` in `registry` (a gate
    /// registers them under `switchyard_gate`, a node under `switchyard_node`). Every reason is created at
    /// zero, so dashboards see the series before a link ends.
    pub fn register(&self, registry: &mut Registry) {
        for reason in LinkClose::ALL {
            let _ = self.closed.get_or_create(&LinkCloseLabels {
                reason: reason.as_str(),
            });
        }
        registry.register(
            "link_closed",
            "Gate-node links ended, by reason: write_timeout (the peer stopped reading), silent, \
             invalid_frame, peer_closed, io_error, local",
            self.closed.clone(),
        );
        registry.register(
            "link_messages_split",
            "Link messages sent as several frames to fit the peer's frame limit (long uid lists)",
            self.split.clone(),
        );
        registry.register(
            "link_messages_refused",
            "Link messages not sent because no frame within the peer's limit can carry them",
            self.refused.clone(),
        );
    }

    /// How many links ended for `reason`.
    pub fn closed_by(&self, reason: LinkClose) -> u64 {
        self.closed
            .get_or_create(&LinkCloseLabels {
                reason: reason.as_str(),
            })
            .get()
    }
}

/// One link's end, shared by its reader and writer.
#[derive(Debug, Clone)]
pub(super) struct LinkEnd {
    pub(super) done: CancellationToken,
    pub(super) metrics: LinkMetrics,
    pub(super) peer: Arc<str>,
    side: &'static str,
    counted: Arc<AtomicBool>,
    warned_refusal: Arc<AtomicBool>,
}

impl LinkEnd {
    pub(super) fn new(metrics: LinkMetrics, side: &'static str, peer: String) -> Self {
        LinkEnd {
            done: CancellationToken::new(),
            metrics,
            peer: Arc::from(peer),
            side,
            counted: Arc::default(),
            warned_refusal: Arc::default(),
        }
    }

    /// Ends the link for `reason`: counted once per link (the first reason wins), then both tasks stop.
    pub(super) fn end(&self, reason: LinkClose) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.metrics
                .closed
                .get_or_create(&LinkCloseLabels {
                    reason: reason.as_str(),
                })
                .inc();
        }
        self.done.cancel();
    }

    /// A message that fits no frame was not sent: counted, and logged the first time on this link.
    pub(super) fn refused(&self, error: &dyn fmt::Display) {
        self.metrics.refused.inc();
        if !self.warned_refusal.swap(true, Ordering::Relaxed) {
            tracing::error!(
                side = self.side,
                peer = %self.peer,
                %error,
                "a link message was not sent: it fits no frame the peer accepts (the sender's bug; \
                 logged once per link, counted in link_messages_refused)"
            );
        }
    }
}
