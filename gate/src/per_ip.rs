//! The per-source-IP connection cap: live client connections are counted per source address, and one more
//! than the cap is refused at accept (before any TLS or WebSocket work), so one host cannot take all of a
//! gate's connection slots. The table holds only addresses with a live connection, so it is bounded by the
//! gate's connection cap.
//!
//! Addresses are counted whole (an IPv4-mapped IPv6 address as its IPv4 address). Behind a NAT or a load
//! balancer that does not keep the client address, many players share one address: set the cap with that in
//! mind, or leave it off (0).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Live connections per source address, with a cap.
#[derive(Debug)]
pub(crate) struct PerIpLimit {
    /// Connections one address may hold at once; 0 turns the cap off.
    cap: usize,
    live: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; the count goes down when it is dropped.
#[derive(Debug)]
pub(crate) struct PerIpPermit {
    limit: Arc<PerIpLimit>,
    ip: IpAddr,
}

impl PerIpLimit {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(PerIpLimit {
            cap,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection from `ip`: `Ok(None)` when the cap is off, `Err(())` when `ip` is at the cap.
    #[allow(clippy::result_unit_err)]
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Option<PerIpPermit>, ()> {
        if self.cap == 0 {
            return Ok(None);
        }
        let ip = ip.to_canonical();
        let mut live = self.live.lock();
        let count = live.entry(ip).or_insert(0);
        if *count >= self.cap {
            return Err(());
        }
        *count += 1;
        Ok(Some(PerIpPermit {
            limit: Arc::clone(self),
            ip,
        }))
    }

    /// Addresses with a live connection (for tests and debugging).
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        self.live.lock().len()
    }
}

impl Drop for PerIpPermit {
    fn drop(&mut self) {
        let mut live = self.limit.live.lock();
        if let Some(count) = live.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_live_connections_per_address() {
        let limit = PerIpLimit::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = limit.acquire(a).expect("under the cap");
        let second = limit.acquire(mapped).expect("the same address, mapped");
        assert!(limit.acquire(a).is_err(), "a third from one address is refused");
        let other = limit.acquire(b).expect("another address is not affected");
        drop(first);
        let again = limit.acquire(a).expect("a slot freed by a closed connection");
        drop((second, other, again));
        assert_eq!(
            limit.addresses(),
            0,
            "addresses without connections are forgotten"
        );
    }

    #[test]
    fn zero_turns_the_cap_off() {
        let limit = PerIpLimit::new(0);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..100 {
            assert!(matches!(limit.acquire(ip), Ok(None)));
        }
    }
}
