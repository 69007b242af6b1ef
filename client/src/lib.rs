//! Rust client SDK for Switchyard gates, and the load generator behind `switchyard bench`.
//!
//! The client speaks the due-compatible client protocol (`docs/protocol.md`) over TCP or WebSocket, using
//! the packet codec of [`switchyard_protocol`]. Client, gate and node must share the packet settings
//! ([`PacketConfig`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_client::ClientError> {
//! use switchyard_client::{Client, ClientOptions, PacketConfig};
//!
//! let client = Client::connect_tcp("127.0.0.1:3553", PacketConfig::default(), ClientOptions::default()).await?;
//! let mut pushes = client.pushes().expect("first call");
//! let reply = client.request(1, &br#"{"message":"hi"}"#[..]).await?;
//! println!("{}", String::from_utf8_lossy(&reply));
//! if let Some(push) = pushes.recv().await {
//!     println!("push on route {}", push.route);
//! }
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! - [`Client`]: pipelined requests matched by seq (or FIFO per route without a seq field), pushes,
//!   heartbeats, reconnect-elsewhere and close signals.
//! - [`Reconnecting`]: a client that survives its connections: reconnection with backoff, the gate's
//!   reconnect-elsewhere signal honoured at once, and the game's login sent again on every new connection.
//! - [`TlsConfig`]: TLS over TCP ([`Transport::Tls`]) and `wss://`.
//! - [`bench`]: the load generator, with its clap flags ([`bench::BenchArgs`]) and report.

pub mod bench;
mod client;
mod error;
mod options;
mod pending;
mod reconnect;
mod tls;
mod transport;

pub use client::{Client, Event, Push, Status};
pub use error::{ClientError, Fault};
pub use options::{ClientOptions, Transport};
pub use reconnect::{Backoff, OnConnect, ReconnectEvent, Reconnecting};
pub use switchyard_protocol::{ByteOrder, PacketConfig};
pub use tls::TlsConfig;
