//! Connection options of the [`Client`](crate::Client) and the transports it can dial.

use std::fmt;
use std::time::Duration;

use crate::TlsConfig;

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain TCP to `host:port`: a byte stream of packets.
    Tcp(String),
    /// TLS over TCP to `host:port` (a gate started with `--tls-cert`); needs [`ClientOptions::tls`]. The
    /// host is the name the server's certificate must carry.
    Tls(String),
    /// WebSocket to a `ws://host:port/path` URL, or `wss://` (with [`ClientOptions::tls`]): one whole
    /// packet per binary message.
    WebSocket(String),
}

impl Transport {
    /// The address or URL, as dialled.
    pub fn target(&self) -> &str {
        match self {
            Transport::Tcp(addr) | Transport::Tls(addr) => addr,
            Transport::WebSocket(url) => url,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp(addr) => write!(f, "tcp://{addr}"),
            Transport::Tls(addr) => write!(f, "tls://{addr}"),
            Transport::WebSocket(url) => f.write_str(url),
        }
    }
}

/// Tunables of a [`Client`](crate::Client). Every queue is bounded by one of these.
///
/// ```
/// # use std::time::Duration;
/// let options = switchyard_client::ClientOptions {
///     request_timeout: Duration::from_secs(3),
///     heartbeat_interval: Some(Duration::from_secs(10)),
///     ..Default::default()
/// };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long [`Client::request`](crate::Client::request) waits for its response, queueing included.
    /// Default 10 s.
    pub request_timeout: Duration,
    /// How long opening the connection (TCP connect and WebSocket upgrade) may take. Default 10 s.
    pub connect_timeout: Duration,
    /// Send a heartbeat every interval while connected. `None` (the default) sends none; a due server
    /// with heartbeats on closes a connection that stays silent for twice its own interval.
    pub heartbeat_interval: Option<Duration>,
    /// Most requests awaiting a response at once; further requests wait for a slot (within their
    /// timeout). Also capped by the number of seq values of the seq width. Default 1024.
    pub max_in_flight: usize,
    /// Packets queued for the writer before senders wait. Default 1024.
    pub send_queue: usize,
    /// Pushes buffered for [`Client::pushes`](crate::Client::pushes); when full, further pushes are
    /// dropped and counted ([`Client::dropped_pushes`](crate::Client::dropped_pushes)) so that a slow
    /// push consumer never stalls responses. Default 1024.
    pub push_capacity: usize,
    /// Events buffered per [`Client::events`](crate::Client::events) subscriber before the slowest one
    /// lags. Default 64.
    pub event_capacity: usize,
    /// Whom TLS connections ([`Transport::Tls`], `wss://`) trust. Default `None`: plain connections only.
    pub tls: Option<TlsConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            heartbeat_interval: None,
            max_in_flight: 1024,
            send_queue: 1024,
            push_capacity: 1024,
            event_capacity: 64,
            tls: None,
        }
    }
}
