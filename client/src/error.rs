//! The client's error type. Every variant says who is at fault (see [`Fault`]): the caller, the server,
//! the network, or this client having been closed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use switchyard_protocol::{DecodeError, EncodeError};
use tokio_tungstenite::tungstenite;

/// Who caused a [`ClientError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The caller asked for something the packet settings cannot carry.
    Caller,
    /// The server closed the connection, did not answer in time or broke the protocol.
    Server,
    /// The network or the operating system failed (connect, read or write).
    Network,
    /// This client was closed with [`Client::close`](crate::Client::close).
    Local,
}

/// Everything that can go wrong with a [`Client`](crate::Client). Cheap to clone: one error is handed to
/// every request that was waiting when a connection failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened (nobody listening, unreachable, refused).
    #[error("could not connect to {target}: {source}")]
    Connect {
        /// The address or URL dialled.
        target: String,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Opening the connection took longer than [`ClientOptions::connect_timeout`](crate::ClientOptions).
    #[error("connecting to {target} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The address or URL dialled.
        target: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The WebSocket upgrade failed (bad URL, refused upgrade, not a WebSocket server).
    #[error("WebSocket handshake with {target} failed: {source}")]
    Handshake {
        /// The URL dialled.
        target: String,
        /// The WebSocket library's error.
        #[source]
        source: Arc<tungstenite::Error>,
    },
    /// The server did not answer the request within its timeout. The connection stays open.
    #[error("request timed out after {0:?}: the server did not answer")]
    Timeout(Duration),
    /// The server closed the connection (end of stream, WebSocket close, reset).
    #[error("the server closed the connection")]
    ServerClosed,
    /// This client was closed with [`Client::close`](crate::Client::close).
    #[error("the connection was closed by this client")]
    Closed,
    /// The packet does not fit the packet settings (route or seq out of range, payload too large).
    /// Nothing was sent.
    #[error("packet refused before sending: {0}")]
    Encode(#[from] EncodeError),
    /// The server announced a packet over the maximum size; the stream cannot go on.
    #[error("the server broke the protocol: {0}")]
    Protocol(#[from] DecodeError),
    /// Reading from or writing to the socket failed.
    #[error("i/o error on the connection: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The WebSocket layer failed after the handshake.
    #[error("WebSocket error: {0}")]
    WebSocket(#[source] Arc<tungstenite::Error>),
    /// The TLS handshake failed (certificate not trusted, wrong server name, not a TLS server).
    #[error("TLS handshake with {target} failed: {source}")]
    Tls {
        /// The address or URL dialled.
        target: String,
        /// The TLS library's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A TLS transport (`Transport::Tls`, `wss://`) was asked for without
    /// [`ClientOptions::tls`](crate::ClientOptions::tls).
    #[error("{0} needs TLS settings: set ClientOptions::tls")]
    NoTlsConfig(String),
    /// [`Reconnecting::connect`](crate::Reconnecting::connect) was given no target to connect to.
    #[error("no target to connect to")]
    NoTargets,
    /// The trusted certificates given to [`TlsConfig`](crate::TlsConfig) are not usable.
    #[error("unusable TLS root certificates: {0}")]
    TlsRoots(std::borrow::Cow<'static, str>),
    /// The `on_connect` (login) hook of a [`Reconnecting`](crate::Reconnecting) client failed.
    #[error("the login after connecting failed: {0}")]
    Login(#[source] Arc<ClientError>),
    /// A [`Reconnecting`](crate::Reconnecting) client gave up after its maximum number of attempts.
    #[error("gave up reconnecting after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Arc<ClientError>,
    },
    /// Every seq value of the configured width is taken by a request in flight.
    #[error("all {0} seq values are taken by requests in flight")]
    SeqExhausted(i32),
}

impl ClientError {
    /// Who caused this error.
    pub fn fault(&self) -> Fault {
        match self {
            ClientError::Encode(_)
            | ClientError::NoTlsConfig(_)
            | ClientError::TlsRoots(_)
            | ClientError::NoTargets => Fault::Caller,
            ClientError::Login(inner) | ClientError::GaveUp { last: inner, .. } => inner.fault(),
            ClientError::Timeout(_)
            | ClientError::ServerClosed
            | ClientError::Protocol(_)
            | ClientError::Handshake { .. } => Fault::Server,
            ClientError::Connect { .. }
            | ClientError::ConnectTimeout { .. }
            | ClientError::Io(_)
            | ClientError::Tls { .. }
            | ClientError::WebSocket(_) => Fault::Network,
            ClientError::Closed | ClientError::SeqExhausted(_) => Fault::Local,
        }
    }

    /// Whether this error ended the connection (as opposed to failing one request).
    pub fn is_connection_lost(&self) -> bool {
        !matches!(
            self,
            ClientError::Timeout(_)
                | ClientError::Encode(_)
                | ClientError::SeqExhausted(_)
                | ClientError::NoTlsConfig(_)
                | ClientError::TlsRoots(_)
                | ClientError::NoTargets
        )
    }

    pub(crate) fn io(err: io::Error) -> Self {
        ClientError::Io(Arc::new(err))
    }
}
