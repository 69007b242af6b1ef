//! A node's settings and their validation.

use std::time::Duration;

use switchyard_protocol::PacketConfig;

use crate::codec::Codec;

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Instance id: the pod name in Kubernetes.
    pub id: String,
    pub packet: PacketConfig,
    pub codec: Codec,
    /// The node pool this node belongs to (locator bindings are per pool).
    pub pool: String,
    /// How long a draining node waits for its players before telling them to reconnect.
    pub drain_deadline: Duration,
    /// Packets queued for one connection at most; more are refused (counted as `lane_full`).
    pub lane_queue: usize,
    /// Payload bytes queued for one connection at most; more are refused (counted as `lane_full`).
    pub lane_queue_bytes: usize,
    /// Lanes (connections with a queue on this node) one gate link may hold at once; a packet for a further
    /// connection is refused (counted as `too_many_lanes`) until one of them disconnects.
    pub max_lanes_per_link: usize,
    /// Payload bytes queued on all the lanes of one gate link at most; more are refused (counted as
    /// `link_full`). With [`NodeConfig::max_lanes_per_link`], what one gate (or a peer posing as one) can
    /// make a node hold is bounded whatever connections it claims.
    pub link_lane_bytes: usize,
    /// How long an acknowledged operation waits for its gate.
    pub ack_timeout: Duration,
    /// How long a node-to-node call waits for its reply unless the call names its own deadline.
    pub call_timeout: Duration,
    /// Calls this node makes that may wait for replies at once; more fail at once as overloaded.
    pub max_calls_in_flight: usize,
    /// Calls from other nodes this node runs at once; more are refused as overloaded.
    pub max_incoming_calls: usize,
}

/// The default of [`NodeConfig::max_lanes_per_link`]: more connections than one gate holds (about 17,000 at
/// the usual file limit), so only a flood reaches it.
pub const DEFAULT_MAX_LANES_PER_LINK: usize = 65_536;
/// The default of [`NodeConfig::link_lane_bytes`].
pub const DEFAULT_LINK_LANE_BYTES: usize = 64 << 20;

/// The longest deadline a node-to-node call may have (gates forget unanswered calls after twice this).
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl NodeConfig {
    pub fn new(id: impl Into<String>) -> Self {
        NodeConfig {
            id: id.into(),
            packet: PacketConfig::default(),
            codec: Codec::Json,
            pool: switchyard_cluster::locator::DEFAULT_POOL.to_owned(),
            drain_deadline: Duration::from_secs(60),
            lane_queue: 256,
            lane_queue_bytes: 1 << 20,
            max_lanes_per_link: DEFAULT_MAX_LANES_PER_LINK,
            link_lane_bytes: DEFAULT_LINK_LANE_BYTES,
            ack_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            max_calls_in_flight: 1024,
            max_incoming_calls: 1024,
        }
    }

    /// # Errors
    /// The setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.is_empty() {
            return Err(ConfigError::EmptyId);
        }
        if self.id.len() > switchyard_protocol::link::codec::MAX_ID_BYTES {
            return Err(ConfigError::IdTooLong(self.id.len()));
        }
        if self.pool.is_empty() {
            return Err(ConfigError::EmptyPool);
        }
        if self.pool.len() > switchyard_protocol::link::codec::MAX_ID_BYTES {
            return Err(ConfigError::PoolTooLong(self.pool.len()));
        }
        if self.lane_queue == 0 {
            return Err(ConfigError::EmptyLaneQueue);
        }
        if self.max_lanes_per_link == 0 {
            return Err(ConfigError::NoLanes);
        }
        if self.call_timeout.is_zero() || self.call_timeout > MAX_CALL_TIMEOUT {
            return Err(ConfigError::CallTimeout(self.call_timeout));
        }
        if self.max_calls_in_flight == 0 || self.max_incoming_calls == 0 {
            return Err(ConfigError::NoCallSlots);
        }
        let largest_payload = self.packet.max_packet_bytes() as usize;
        if self.lane_queue_bytes < largest_payload {
            return Err(ConfigError::LaneQueueBytes {
                bytes: self.lane_queue_bytes,
                largest_payload,
            });
        }
        if self.link_lane_bytes < self.lane_queue_bytes {
            return Err(ConfigError::LinkLaneBytes {
                bytes: self.link_lane_bytes,
                lane_bytes: self.lane_queue_bytes,
            });
        }
        Ok(())
    }
}

/// A node setting that cannot work: the operator's (or the game's) fault, found before anything starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node id must not be empty")]
    EmptyId,
    #[error("node id is {0} bytes long; the link carries at most 255")]
    IdTooLong(usize),
    #[error("node pool must not be empty")]
    EmptyPool,
    #[error("lane queue must hold at least 1 packet")]
    EmptyLaneQueue,
    #[error("a gate link must be allowed at least 1 lane (--max-lanes-per-link)")]
    NoLanes,
    #[error(
        "lane bytes per link ({bytes}, --link-lane-bytes) cannot hold one full lane ({lane_bytes} bytes)"
    )]
    LinkLaneBytes { bytes: usize, lane_bytes: usize },
    #[error("lane queue of {bytes} bytes cannot hold one largest packet ({largest_payload} bytes)")]
    LaneQueueBytes { bytes: usize, largest_payload: usize },
    #[error("node pool name is {0} bytes long; the link carries at most 255")]
    PoolTooLong(usize),
    #[error("call timeout {0:?} must be above zero and at most 60s")]
    CallTimeout(Duration),
    #[error("calls in flight (outgoing and incoming) must allow at least 1")]
    NoCallSlots,
}
