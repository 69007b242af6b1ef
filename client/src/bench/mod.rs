//! The load generator behind `switchyard bench`: many connections, each keeping a fixed number of echo
//! requests in flight (closed loop), or, with `--rate`, each sending on a fixed schedule whatever the
//! answers do (open loop), with latency recorded per request in HDR histograms merged at the end.
//!
//! Open loop: connection `i` of `n` sends its `k`-th request at `start + (i + k·n) / rate`, and a
//! request's latency runs from that scheduled time, not from when it actually left. A server that falls
//! behind therefore shows its queueing in the latency instead of slowing the load down (no coordinated
//! omission). `--pipeline` still bounds the requests in flight per connection; a request that has to wait
//! for room is sent late, and its wait counts.
//!
//! The request is due's benchmark request: `{"message":"<N letters>"}` on an echo route that answers
//! `{"code":0,"message":<the same letters>}`. An answer with another code or message counts as an error.
//! Each connection runs a raw pipelined loop (see `conn`) rather than the general [`Client`](crate::Client):
//! one task per connection and no allocation per request, because the load generator usually shares the
//! machine with the server it measures.

mod conn;
mod report;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use switchyard_protocol::packet::DEFAULT_MAX_PACKET_BYTES;
use switchyard_protocol::{ByteOrder, ConfigError, EncodeError, PacketConfig};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use report::{BenchReport, LatencyMicros};

use crate::{ClientError, Transport, transport};

/// Duration of a run given neither `--requests` nor `--duration`.
pub const DEFAULT_DURATION_SECS: f64 = 10.0;
/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 64;
/// Highest latency the histograms hold: one hour, in microseconds.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// The transport a bench run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchTransport {
    /// Plain TCP.
    #[default]
    Tcp,
    /// WebSocket, one packet per binary message.
    Ws,
}

impl fmt::Display for BenchTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenchTransport::Tcp => "tcp",
            BenchTransport::Ws => "ws",
        })
    }
}

/// Flags of `switchyard bench`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct BenchArgs {
    /// Gate address, host:port.
    #[arg(long, default_value = "127.0.0.1:3553")]
    pub addr: String,
    /// Transport: tcp, or ws (URL ws://ADDR followed by --ws-path).
    #[arg(long, value_enum, default_value_t = BenchTransport::Tcp)]
    pub transport: BenchTransport,
    /// Path of the WebSocket URL.
    #[arg(long, default_value = "/")]
    pub ws_path: String,
    /// Connections to open.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Requests kept in flight per connection.
    #[arg(long, value_name = "DEPTH", default_value_t = 1)]
    pub pipeline: usize,
    /// Length of the echoed message string (due's benchmark uses 1024 letters).
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Stop after this many counted requests in total (across connections).
    #[arg(long, value_name = "TOTAL", conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Stop sending after this many seconds of measurement (default 10 when --requests is not given).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Route of the echo handler.
    #[arg(long, default_value_t = 1)]
    pub route: i32,
    /// Byte order of the packet fields: big or little.
    #[arg(long, default_value_t = ByteOrder::Big)]
    pub byte_order: ByteOrder,
    /// Width of the route field: 1, 2 or 4 bytes.
    #[arg(long, default_value_t = 2)]
    pub route_bytes: u8,
    /// Width of the seq field: 0, 1, 2 or 4 bytes (0: responses are matched in order).
    #[arg(long, default_value_t = 2)]
    pub seq_bytes: u8,
    /// Largest packet accepted or sent (bytes after the size field).
    #[arg(long, default_value_t = DEFAULT_MAX_PACKET_BYTES)]
    pub max_packet_bytes: u32,
    /// Time a request may wait for its answer (and a connection may take to open), in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Seconds of load before measuring starts (requests then are not counted).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Open loop: offered requests per second in total, sent on a fixed schedule spread over the
    /// connections; latency counts from each request's scheduled time. Without it the run is closed
    /// loop (each answer releases the next request).
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,
    /// Print the report as JSON (for the caller of `run` to honour).
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// What the run dials: the TCP address, or the WebSocket URL built from address and path.
    pub fn target(&self) -> Transport {
        match self.transport {
            BenchTransport::Tcp => Transport::Tcp(self.addr.clone()),
            BenchTransport::Ws => {
                let slash = if self.ws_path.starts_with('/') { "" } else { "/" };
                Transport::WebSocket(format!("ws://{}{slash}{}", self.addr, self.ws_path))
            }
        }
    }

    /// The packet settings the flags describe.
    ///
    /// # Errors
    /// A width or maximum due does not allow.
    pub fn packet_config(&self) -> Result<PacketConfig, ConfigError> {
        PacketConfig::new(
            self.byte_order,
            self.route_bytes,
            self.seq_bytes,
            self.max_packet_bytes,
        )
    }
}

/// Why a bench run could not be carried out. Failures during the run are counted in the report instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The packet flags describe settings due does not allow.
    #[error("invalid packet settings: {0}")]
    Config(#[from] ConfigError),
    /// A flag is out of range.
    #[error("invalid bench flags: {0}")]
    Args(String),
    /// The request does not fit the packet settings (route range, --max-packet-bytes).
    #[error("the benchmark request does not fit the packet settings: {0}")]
    Encode(#[from] EncodeError),
    /// A connection could not be opened before the run started.
    #[error("could not open the connections: {0}")]
    Connect(#[source] ClientError),
    /// The latency histograms could not be created or merged.
    #[error("latency histogram: {0}")]
    Histogram(String),
}

/// The benchmark's request payload: `{"message":"<len letters a..z repeated>"}`, and the message.
pub fn echo_request(len: usize) -> (Bytes, String) {
    let message: String = (b'a'..=b'z').cycle().take(len).map(char::from).collect();
    let payload = format!(r#"{{"message":"{message}"}}"#);
    (Bytes::from(payload), message)
}

fn secs(name: &str, value: f64) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        BenchError::Args(format!(
            "{name} must be a non-negative number of seconds, not {value}"
        ))
    })
}

/// Runs the benchmark: opens all connections (failing if any cannot be opened), warms up, then
/// measures until the request budget or the duration is used up and every counted request is answered
/// or timed out.
///
/// Must be called within a tokio runtime; connections run as tasks on it.
///
/// # Errors
/// [`BenchError`] for invalid flags or when the connections cannot be opened.
pub async fn run(args: BenchArgs) -> Result<BenchReport, BenchError> {
    let config = args.packet_config()?;
    if args.connections == 0 {
        return Err(BenchError::Args("--connections must be at least 1".into()));
    }
    if args.pipeline == 0 {
        return Err(BenchError::Args("--pipeline must be at least 1".into()));
    }
    if config.seq_bytes() > 0 && args.pipeline > usize::try_from(config.max_seq()).unwrap_or(usize::MAX) {
        return Err(BenchError::Args(format!(
            "--pipeline {} exceeds the {} seq values of a {}-byte seq",
            args.pipeline,
            config.max_seq(),
            config.seq_bytes()
        )));
    }
    if args.requests == Some(0) {
        return Err(BenchError::Args("--requests must be at least 1".into()));
    }
    if args.timeout_ms == 0 {
        return Err(BenchError::Args("--timeout-ms must be at least 1".into()));
    }
    let warmup = secs("--warmup-secs", args.warmup_secs)?;
    let duration = match (args.requests, args.duration) {
        (Some(_), _) => None,
        (None, Some(d)) => Some(secs("--duration", d)?),
        (None, None) => Some(secs("--duration", DEFAULT_DURATION_SECS)?),
    };
    if duration.is_some_and(|d| d.is_zero()) {
        return Err(BenchError::Args("--duration must be more than 0".into()));
    }
    let interval = match args.rate {
        None => None,
        Some(rate) if rate.is_finite() && rate > 0.0 => Some(secs("--rate", args.connections as f64 / rate)?),
        Some(rate) => {
            return Err(BenchError::Args(format!(
                "--rate must be a positive number of requests per second, not {rate}"
            )));
        }
    };
    let (payload, message) = echo_request(args.payload_bytes);
    let request_bytes = config
        .data_packet(args.route, config.max_seq().min(1), &payload)?
        .len();
    let timeout = Duration::from_millis(args.timeout_ms);
    let target = args.target();

    let mut connections = Vec::with_capacity(args.connections);
    let mut opening = futures_util::stream::iter(0..args.connections)
        .map(|_| transport::connect(&target, &config, timeout, None))
        .buffer_unordered(CONNECT_CONCURRENCY);
    while let Some(opened) = opening.next().await {
        connections.push(opened.map_err(BenchError::Connect)?);
    }
    drop(opening);

    let new_histogram = || {
        Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
            .map_err(|e| BenchError::Histogram(e.to_string()))
    };
    let mut total = new_histogram()?;
    let start = Instant::now();
    let plan = Arc::new(conn::Plan {
        transport: target.clone(),
        config,
        route: args.route,
        payload,
        message,
        pipeline: args.pipeline,
        timeout,
        measure_start: start + warmup,
        deadline: duration.map(|d| start + warmup + d),
        budget: args.requests.map(AtomicU64::new),
        start,
        interval,
        connections: args.connections,
    });
    let mut tasks = JoinSet::new();
    for (index, (read, write)) in connections.into_iter().enumerate() {
        let plan = Arc::clone(&plan);
        let stats = conn::ConnStats::new(new_histogram()?);
        tasks.spawn(async move { conn::drive(&plan, index, read, write, stats).await });
    }

    let mut report = BenchReport {
        transport: args.transport,
        target: target.target().to_owned(),
        connections: args.connections,
        pipeline: args.pipeline,
        offered_rate: args.rate,
        payload_bytes: args.payload_bytes,
        request_bytes,
        requests_ok: 0,
        errors: 0,
        timeouts: 0,
        reconnects: 0,
        connections_lost: 0,
        unexpected_packets: 0,
        elapsed_secs: 0.0,
        tps: 0.0,
        latency_us: LatencyMicros::default(),
    };
    let mut last_done: Option<Instant> = None;
    while let Some(joined) = tasks.join_next().await {
        let stats = match joined {
            Ok(stats) => stats,
            Err(err) => {
                tracing::error!(error = %err, "bench connection task failed");
                report.connections_lost += 1;
                continue;
            }
        };
        total
            .add(&stats.hist)
            .map_err(|e| BenchError::Histogram(format!("{e:?}")))?;
        report.requests_ok += stats.ok;
        report.errors += stats.errors;
        report.timeouts += stats.timeouts;
        report.reconnects += stats.reconnects;
        report.connections_lost += u64::from(stats.lost);
        report.unexpected_packets += stats.unexpected;
        last_done = last_done.max(stats.last_done);
    }
    let elapsed = last_done.map_or(Duration::ZERO, |done| {
        done.saturating_duration_since(plan.measure_start)
    });
    report.elapsed_secs = elapsed.as_secs_f64();
    report.tps = if report.elapsed_secs > 0.0 {
        report.requests_ok as f64 / report.elapsed_secs
    } else {
        0.0
    };
    report.latency_us = LatencyMicros::from_histogram(&total);
    Ok(report)
}
