//! The figures a bench run produces: counts, throughput and latency percentiles, printable for people
//! ([`fmt::Display`]) and as JSON for benchmark harnesses ([`BenchReport::to_json`]).

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BenchTransport;

/// Request latency summary, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LatencyMicros {
    /// Fastest request.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest request.
    pub max: u64,
}

impl LatencyMicros {
    /// Summarises a histogram of microseconds (all zeros when it is empty).
    pub(crate) fn from_histogram(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return LatencyMicros::default();
        }
        LatencyMicros {
            min: hist.min(),
            mean: hist.mean(),
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        }
    }
}

/// The result of [`run`](super::run). Requests sent during the warm-up are not counted anywhere.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// `tcp` or `ws`.
    pub transport: BenchTransport,
    /// The address (TCP) or URL (WebSocket) measured.
    pub target: String,
    /// Connections opened.
    pub connections: usize,
    /// Requests kept in flight per connection (open loop: the most allowed in flight).
    pub pipeline: usize,
    /// Open loop: the offered requests per second, latency counted from each scheduled send time.
    /// `None`: closed loop, latency counted from the actual send.
    pub offered_rate: Option<f64>,
    /// Length of the echoed message string.
    pub payload_bytes: usize,
    /// Bytes of one request on the wire (size field included).
    pub request_bytes: usize,
    /// Requests answered with code 0 and the message sent.
    pub requests_ok: u64,
    /// Requests answered wrongly (code other than 0, another message, not JSON) or lost with their
    /// connection.
    pub errors: u64,
    /// Requests not answered within the timeout (their connection is then replaced).
    pub timeouts: u64,
    /// Connections reopened after a timeout or a failure.
    pub reconnects: u64,
    /// Connections that could not be reopened and stopped early.
    pub connections_lost: u64,
    /// Data packets that answered no request in flight (pushes, late or unknown responses).
    pub unexpected_packets: u64,
    /// Measured time: from the end of the warm-up to the last counted answer, in seconds.
    pub elapsed_secs: f64,
    /// Successful requests per second over `elapsed_secs`.
    pub tps: f64,
    /// Latency of the successful requests.
    pub latency_us: LatencyMicros,
}

impl BenchReport {
    /// The report as one line of JSON.
    ///
    /// # Errors
    /// Only if serialization itself fails, which these plain fields never make it do.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "target       {} {}", self.transport, self.target)?;
        writeln!(
            f,
            "connections  {} x pipeline {}",
            self.connections, self.pipeline
        )?;
        if let Some(rate) = self.offered_rate {
            writeln!(
                f,
                "open loop    {rate:.1} requests/s offered, latency from the scheduled send time"
            )?;
        }
        writeln!(
            f,
            "payload      {}-letter message ({} B per request on the wire)",
            self.payload_bytes, self.request_bytes
        )?;
        writeln!(
            f,
            "requests     {} ok, {} errors, {} timeouts",
            self.requests_ok, self.errors, self.timeouts
        )?;
        if self.reconnects + self.connections_lost + self.unexpected_packets > 0 {
            writeln!(
                f,
                "connections  {} reconnects, {} lost; {} unexpected packets",
                self.reconnects, self.connections_lost, self.unexpected_packets
            )?;
        }
        writeln!(f, "elapsed      {:.3} s", self.elapsed_secs)?;
        writeln!(f, "throughput   {:.1} requests/s", self.tps)?;
        let l = &self.latency_us;
        write!(
            f,
            "latency      p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (mean {:.3} ms)",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.mean / 1000.0
        )
    }
}
