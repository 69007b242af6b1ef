//! The per-connection packet-rate limit: a token bucket owned by the connection's reader task (no lock, no
//! allocation per packet), plus a detector for clients that keep exceeding it. Time is passed in, so the
//! logic is pure and tested without sleeping.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// Nanoseconds in a second: one token is worth this many units, so refills are exact integer arithmetic.
const UNITS_PER_TOKEN: u64 = 1_000_000_000;
/// A connection that drops more than `ABUSE_FACTOR × burst` packets within `ABUSE_WINDOW` is closed.
pub(crate) const ABUSE_FACTOR: u64 = 10;
pub(crate) const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// `rate` tokens per second, at most `burst` saved up; one packet takes one token.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Units added per elapsed nanosecond: the rate in packets per second.
    rate: u64,
    /// Most units the bucket holds.
    capacity: u64,
    units: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        let capacity = u64::from(limit.burst.max(1)) * UNITS_PER_TOKEN;
        TokenBucket {
            rate: u64::from(limit.per_second),
            capacity,
            units: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one. A `now` earlier than the last call (it cannot happen with a
    /// monotonic clock) adds nothing.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if now > self.last {
            let elapsed = now.duration_since(self.last);
            // Saturating: a long idle time simply fills the bucket.
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            self.units = self
                .units
                .saturating_add(nanos.saturating_mul(self.rate))
                .min(self.capacity);
            self.last = now;
        }
        if self.units >= UNITS_PER_TOKEN {
            self.units -= UNITS_PER_TOKEN;
            true
        } else {
            false
        }
    }
}

/// What to do with one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit: handle it.
    Pass,
    /// Over the limit: drop it.
    Drop,
    /// Over the limit, and persistently so: drop it and close the connection.
    Abuse,
}

/// A token bucket plus a count of drops per window.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    bucket: TokenBucket,
    /// Drops tolerated per window.
    abuse_drops: u64,
    window_start: Instant,
    window_drops: u64,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        RateLimiter {
            bucket: TokenBucket::new(limit, now),
            abuse_drops: ABUSE_FACTOR * u64::from(limit.burst.max(1)),
            window_start: now,
            window_drops: 0,
        }
    }

    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.try_take(now) {
            return Verdict::Pass;
        }
        // A window opens with the first drop after the previous one ran out.
        if self.window_drops == 0 || now.saturating_duration_since(self.window_start) >= ABUSE_WINDOW {
            self.window_start = now;
            self.window_drops = 0;
        }
        self.window_drops += 1;
        if self.window_drops > self.abuse_drops {
            Verdict::Abuse
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10,
        burst: 5,
    };

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        let passed = (0..20).filter(|_| bucket.try_take(start)).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_no_faster() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for _ in 0..5 {
            assert!(bucket.try_take(start));
        }
        // 10 per second: one token every 100 ms, exactly.
        assert!(!bucket.try_take(start + ms(99)));
        assert!(bucket.try_take(start + ms(100)));
        assert!(!bucket.try_take(start + ms(100)));
        assert!(!bucket.try_take(start + ms(199)));
        assert!(bucket.try_take(start + ms(200)));
        // Three tokens' worth of time gives three packets.
        let later = start + ms(500);
        assert_eq!((0..10).filter(|_| bucket.try_take(later)).count(), 3);
    }

    #[test]
    fn a_long_pause_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        while bucket.try_take(start) {}
        let much_later = start + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| bucket.try_take(much_later)).count(), 5);
    }

    #[test]
    fn a_steady_rate_at_the_limit_always_passes() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        while bucket.try_take(start) {}
        for tick in 1..=1000 {
            assert!(bucket.try_take(start + ms(100 * tick)), "tick {tick}");
        }
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(LIMIT, start);
        while bucket.try_take(start) {}
        assert!(!bucket.try_take(start - ms(500)));
        assert!(!bucket.try_take(start + ms(50)));
        assert!(bucket.try_take(start + ms(100)));
    }

    #[test]
    fn a_huge_rate_does_not_overflow() {
        let limit = RateLimit {
            per_second: u32::MAX,
            burst: u32::MAX,
        };
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit, start);
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn drops_beyond_ten_bursts_in_a_window_are_abuse() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(LIMIT, start);
        let verdicts: Vec<Verdict> = (0..5 + 50 + 1).map(|_| limiter.check(start)).collect();
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Pass));
        assert!(verdicts[5..55].iter().all(|v| *v == Verdict::Drop));
        assert_eq!(verdicts[55], Verdict::Abuse);
    }

    #[test]
    fn occasional_overruns_spread_over_windows_are_not_abuse() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(LIMIT, start);
        // Every 11 s, a burst of 45 packets: 5 pass (the bucket refilled), 40 drop, always under 50 a window.
        for round in 0..20 {
            let now = start + Duration::from_secs(11 * round);
            let verdicts: Vec<Verdict> = (0..45).map(|_| limiter.check(now)).collect();
            assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Pass).count(), 5);
            assert!(!verdicts.contains(&Verdict::Abuse), "round {round}");
        }
    }

    #[test]
    fn the_drop_count_of_a_window_expires_with_it() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(LIMIT, start);
        while limiter.check(start) == Verdict::Pass {}
        // 1 drop so far; 49 more stay under the threshold.
        for _ in 0..49 {
            assert_eq!(limiter.check(start), Verdict::Drop);
        }
        // The window has passed: its drops no longer count, but a refilled bucket passes 5 first.
        let next = start + ABUSE_WINDOW;
        for _ in 0..5 {
            assert_eq!(limiter.check(next), Verdict::Pass);
        }
        for _ in 0..50 {
            assert_eq!(limiter.check(next), Verdict::Drop);
        }
        assert_eq!(limiter.check(next), Verdict::Abuse);
    }
}
