//! One connection of the load generator: a raw pipelined loop that keeps `pipeline` requests in flight
//! (closed loop) or sends on the plan's schedule (open loop), with no task, channel or allocation per
//! request. It writes every request due after one read (replacements, or scheduled ones) in a single write.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use switchyard_protocol::{Frame, PacketConfig};
use tokio::time::Instant;

use crate::transport::{self, ReadHalf, WriteHalf};
use crate::{ClientError, Transport};

/// What every connection of one run shares: the request, the phases and the request budget.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) transport: Transport,
    pub(super) config: PacketConfig,
    pub(super) route: i32,
    /// The JSON request payload.
    pub(super) payload: Bytes,
    /// The message the server must echo.
    pub(super) message: String,
    pub(super) pipeline: usize,
    pub(super) timeout: Duration,
    /// End of the warm-up: requests sent before it are not counted.
    pub(super) measure_start: Instant,
    /// Duration mode: no request is sent after it.
    pub(super) deadline: Option<Instant>,
    /// Request mode: counted requests still to send.
    pub(super) budget: Option<AtomicU64>,
    /// When the run (warm-up included) started: the origin of the open-loop schedule.
    pub(super) start: Instant,
    /// Open loop: time between two scheduled requests of one connection. `None`: closed loop.
    pub(super) interval: Option<Duration>,
    /// Connections of the run (open loop: connection `i` is offset by `i` schedule slots of the run).
    pub(super) connections: usize,
}

impl Plan {
    /// Whether another request may be sent at `now`, and whether it counts. Claims from the budget.
    fn claim(&self, now: Instant) -> Option<bool> {
        if now < self.measure_start {
            return Some(false);
        }
        if let Some(deadline) = self.deadline {
            return (now < deadline).then_some(true);
        }
        let budget = self.budget.as_ref()?;
        budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
            .ok()
            .map(|_| true)
    }

    /// Whether any request may still be sent at or after `now` (claims nothing).
    fn has_work(&self, now: Instant) -> bool {
        if now < self.measure_start {
            return true;
        }
        match (self.deadline, &self.budget) {
            (Some(deadline), _) => now < deadline,
            (None, Some(budget)) => budget.load(Ordering::Relaxed) > 0,
            (None, None) => false,
        }
    }
}

/// What one connection counted.
#[derive(Debug)]
pub(super) struct ConnStats {
    pub(super) hist: Histogram<u64>,
    pub(super) ok: u64,
    pub(super) errors: u64,
    pub(super) timeouts: u64,
    pub(super) reconnects: u64,
    pub(super) lost: bool,
    pub(super) unexpected: u64,
    /// When the last counted request was answered.
    pub(super) last_done: Option<Instant>,
}

impl ConnStats {
    pub(super) fn new(hist: Histogram<u64>) -> Self {
        ConnStats {
            hist,
            ok: 0,
            errors: 0,
            timeouts: 0,
            reconnects: 0,
            lost: false,
            unexpected: 0,
            last_done: None,
        }
    }
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: i32,
    start: Instant,
    counted: bool,
}

/// Why a connection is given up.
#[derive(Debug)]
enum Failure {
    /// The oldest request in flight was not answered in time.
    Timeout,
    /// The connection broke.
    Broken(ClientError),
}

/// Runs one connection (the `index`-th of the run) until the plan has no more work, reopening it after a
/// timeout or a failure (its requests in flight are counted as timeouts or errors). A connection that
/// cannot be reopened stops.
pub(super) async fn drive(
    plan: &Plan,
    index: usize,
    read: ReadHalf,
    write: WriteHalf,
    mut stats: ConnStats,
) -> ConnStats {
    let schedule = plan.interval.map(|interval| Schedule {
        next: plan.start + interval.mul_f64(index as f64 / plan.connections.max(1) as f64),
        interval,
    });
    let mut state = Loop {
        plan,
        inflight: VecDeque::with_capacity(plan.pipeline),
        next_seq: 1,
        stats: &mut stats,
        schedule,
    };
    let mut halves = (read, write);
    loop {
        let (read, write) = &mut halves;
        let failure = match state.session(read, write).await {
            Ok(()) => {
                write.shutdown().await;
                break;
            }
            Err(failure) => failure,
        };
        match &failure {
            Failure::Timeout => tracing::debug!("bench connection timed out"),
            Failure::Broken(err) => tracing::debug!(error = %err, "bench connection failed"),
        }
        for request in state.inflight.drain(..) {
            if request.counted {
                match failure {
                    Failure::Timeout => state.stats.timeouts += 1,
                    Failure::Broken(_) => state.stats.errors += 1,
                }
            }
        }
        if !plan.has_work(Instant::now()) {
            break;
        }
        match transport::connect(&plan.transport, &plan.config, plan.timeout, None).await {
            Ok(reopened) => {
                state.stats.reconnects += 1;
                halves = reopened;
            }
            Err(err) => {
                tracing::warn!(error = %err, "bench connection could not be reopened");
                state.stats.lost = true;
                break;
            }
        }
    }
    stats
}

/// The open-loop schedule of one connection.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// When the next request is due.
    next: Instant,
    interval: Duration,
}

struct Loop<'a> {
    plan: &'a Plan,
    inflight: VecDeque<InFlight>,
    next_seq: i32,
    stats: &'a mut ConnStats,
    /// Open loop only.
    schedule: Option<Schedule>,
}

impl fmt::Debug for Loop<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loop")
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

impl Loop<'_> {
    /// Fills the pipeline, then answers each response with a new request until there is no more work
    /// and nothing in flight.
    async fn session(&mut self, read: &mut ReadHalf, write: &mut WriteHalf) -> Result<(), Failure> {
        if self.schedule.is_some() {
            return self.open_session(read, write).await;
        }
        let now = Instant::now();
        while self.inflight.len() < self.plan.pipeline && self.send_one(write, now)? {}
        write.flush().await.map_err(Failure::Broken)?;
        loop {
            let Some(oldest) = self.inflight.front() else {
                return Ok(());
            };
            let expires = oldest.start + self.plan.timeout;
            let frame = match tokio::time::timeout_at(expires, read.next()).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(err)) => return Err(Failure::Broken(err)),
                Ok(Ok(frame)) => frame,
            };
            let now = Instant::now();
            self.answer(frame, write, now)?;
            while let Some(frame) = read.next_buffered().map_err(Failure::Broken)? {
                self.answer(frame, write, now)?;
            }
            write.flush().await.map_err(Failure::Broken)?;
        }
    }

    /// Open loop: sends every request whose scheduled time has come (while there is room in flight) and
    /// reads answers in between, until the plan has no more work and nothing is in flight.
    async fn open_session(&mut self, read: &mut ReadHalf, write: &mut WriteHalf) -> Result<(), Failure> {
        loop {
            let now = Instant::now();
            self.send_due(write, now)?;
            write.flush().await.map_err(Failure::Broken)?;
            let next_send = self
                .schedule
                .map(|schedule| schedule.next)
                .filter(|&next| self.plan.has_work(next) && self.inflight.len() < self.plan.pipeline);
            let expires = self
                .inflight
                .front()
                .map(|oldest| oldest.start + self.plan.timeout);
            let wake = match (next_send, expires) {
                (None, None) => return Ok(()),
                (Some(at), None) | (None, Some(at)) => at,
                (Some(send), Some(expiry)) => send.min(expiry),
            };
            let frame = tokio::select! {
                biased;
                read = read.next(), if !self.inflight.is_empty() => read.map_err(Failure::Broken)?,
                () = tokio::time::sleep_until(wake) => {
                    if expires.is_some_and(|at| at <= Instant::now()) {
                        return Err(Failure::Timeout);
                    }
                    continue;
                }
            };
            let now = Instant::now();
            self.answer(frame, write, now)?;
            while let Some(frame) = read.next_buffered().map_err(Failure::Broken)? {
                self.answer(frame, write, now)?;
            }
        }
    }

    /// Open loop: encodes the requests scheduled at or before `now`, as long as there is room in flight.
    fn send_due(&mut self, write: &mut WriteHalf, now: Instant) -> Result<(), Failure> {
        while let Some(schedule) = self.schedule
            && schedule.next <= now
            && self.inflight.len() < self.plan.pipeline
        {
            if !self.send_one(write, schedule.next)? {
                break;
            }
            self.schedule = Some(Schedule {
                next: schedule.next + schedule.interval,
                ..schedule
            });
        }
        Ok(())
    }

    /// Encodes one request into the write buffer if the plan allows one at `now` (open loop: its
    /// scheduled time, from which its latency counts). Returns whether it did.
    fn send_one(&mut self, write: &mut WriteHalf, now: Instant) -> Result<bool, Failure> {
        let Some(counted) = self.plan.claim(now) else {
            return Ok(false);
        };
        let seq = self.alloc_seq();
        self.plan
            .config
            .encode_data(self.plan.route, seq, &self.plan.payload, write.buffer())
            .map_err(|err| Failure::Broken(err.into()))?;
        write.end_packet();
        self.inflight.push_back(InFlight {
            seq,
            start: now,
            counted,
        });
        Ok(true)
    }

    /// The next seq of `1..=max_seq` not in flight (0 without a seq field). The pipeline depth is
    /// checked to be at most `max_seq`, so one is always free.
    fn alloc_seq(&mut self) -> i32 {
        let max_seq = self.plan.config.max_seq();
        if max_seq == 0 {
            return 0;
        }
        let mut seq = self.next_seq;
        for _ in 0..=self.inflight.len() {
            seq = self.next_seq;
            self.next_seq = if seq >= max_seq { 1 } else { seq + 1 };
            if !self.inflight.iter().any(|request| request.seq == seq) {
                break;
            }
        }
        seq
    }

    /// Matches one received packet with its request, records it and sends the next request.
    fn answer(&mut self, frame: Frame, write: &mut WriteHalf, now: Instant) -> Result<(), Failure> {
        let Frame::Data(data) = frame else {
            return Ok(()); // heartbeats and empty packets
        };
        let position = if data.route() != self.plan.route {
            None
        } else if self.plan.config.seq_bytes() == 0 {
            (!self.inflight.is_empty()).then_some(0)
        } else if data.seq() == 0 {
            None
        } else {
            self.inflight.iter().position(|request| request.seq == data.seq())
        };
        let Some(request) = position.and_then(|at| self.inflight.remove(at)) else {
            self.stats.unexpected += 1;
            return Ok(());
        };
        if request.counted {
            self.stats.last_done = Some(now);
            if is_echo(
                &data.body()[self.plan.config.data_header_len()..],
                &self.plan.message,
            ) {
                self.stats.ok += 1;
                let micros = now.saturating_duration_since(request.start).as_micros();
                self.stats
                    .hist
                    .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
            } else {
                self.stats.errors += 1;
            }
        }
        if self.schedule.is_none() && self.inflight.len() < self.plan.pipeline {
            self.send_one(write, now)?;
        }
        Ok(())
    }
}

/// Whether `payload` is the echo route's success answer `{"code":0,"message":<message>}` (the message
/// may be left out).
pub(super) fn is_echo(payload: &[u8], message: &str) -> bool {
    #[derive(Deserialize)]
    struct EchoReply<'a> {
        code: i64,
        #[serde(borrow)]
        message: Option<Text<'a>>,
    }
    match serde_json::from_slice::<EchoReply<'_>>(payload) {
        Ok(reply) => reply.code == 0 && reply.message.is_none_or(|text| text.0 == message),
        Err(_) => false,
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }

        deserializer.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::is_echo;

    #[test]
    fn echo_answers() {
        assert!(is_echo(br#"{"code":0,"message":"abc"}"#, "abc"));
        assert!(is_echo(br#"{"message":"abc","code":0}"#, "abc"));
        assert!(is_echo(br#"{"code":0}"#, "abc"));
        assert!(is_echo(br#"{"code":0,"message":"a\u0062c"}"#, "abc"));
        assert!(!is_echo(br#"{"code":1,"message":"abc"}"#, "abc"));
        assert!(!is_echo(br#"{"code":0,"message":"abd"}"#, "abc"));
        assert!(!is_echo(br#"{"message":"abc"}"#, "abc"));
        assert!(!is_echo(b"not json", "abc"));
    }
}
