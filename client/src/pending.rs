//! Requests awaiting their response, and how responses find them.
//!
//! - With a seq field, each request takes a seq value that cycles through `1..=max_seq` of the width and
//!   wraps back to 1 (0 is never used: servers push with seq 0). A value still in flight is skipped. A
//!   response matches the request with its seq **and** route.
//! - Without a seq field (`seq_bytes = 0`), responses are matched in FIFO order per route: the oldest
//!   request on a route takes the next data packet on that route. A push on a route with requests in
//!   flight is then indistinguishable from a response, and a response that arrives after its request
//!   timed out goes to the next request on that route: prefer a seq field.
//!
//! Pure bookkeeping, no I/O: the writer registers requests in the order it writes them and the reader
//! takes them out, both under one mutex.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::ClientError;

/// Where a request's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<Bytes, ClientError>>;

/// One request awaiting its response.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) id: u64,
    pub(crate) route: i32,
    pub(crate) reply: Reply,
}

/// The requests in flight on one connection.
#[derive(Debug)]
pub(crate) struct Pending {
    /// 0 when there is no seq field (FIFO matching per route).
    max_seq: i32,
    next_seq: i32,
    by_seq: HashMap<i32, Waiter>,
    by_route: HashMap<i32, VecDeque<Waiter>>,
    in_flight: usize,
    /// Set once when the connection ends; later requests fail with it.
    pub(crate) closed: Option<ClientError>,
}

impl Pending {
    pub(crate) fn new(max_seq: i32) -> Self {
        Pending {
            max_seq: max_seq.max(0),
            next_seq: 1,
            by_seq: HashMap::new(),
            by_route: HashMap::new(),
            in_flight: 0,
            closed: None,
        }
    }

    /// Number of requests in flight.
    pub(crate) fn len(&self) -> usize {
        self.in_flight
    }

    /// The seq for the next request: 0 without a seq field, otherwise the next free value of
    /// `1..=max_seq` after the last one handed out, wrapping to 1. `None` when every value is in flight.
    pub(crate) fn alloc_seq(&mut self) -> Option<i32> {
        if self.max_seq == 0 {
            return Some(0);
        }
        for _ in 0..self.max_seq {
            let seq = self.next_seq;
            self.next_seq = if seq >= self.max_seq { 1 } else { seq + 1 };
            if !self.by_seq.contains_key(&seq) {
                return Some(seq);
            }
        }
        None
    }

    /// Registers a request written with `seq` (as returned by [`Pending::alloc_seq`]).
    pub(crate) fn insert(&mut self, seq: i32, waiter: Waiter) {
        self.in_flight += 1;
        if self.max_seq == 0 {
            self.by_route.entry(waiter.route).or_default().push_back(waiter);
        } else if let Some(old) = self.by_seq.insert(seq, waiter) {
            // alloc_seq never hands out a seq in flight; keep the count right regardless.
            self.in_flight -= 1;
            drop(old);
        }
    }

    /// Takes the request a data packet answers, or `None` when the packet is a push.
    pub(crate) fn take_response(&mut self, route: i32, seq: i32) -> Option<Reply> {
        let waiter = if self.max_seq == 0 {
            let queue = self.by_route.get_mut(&route)?;
            let waiter = queue.pop_front();
            if queue.is_empty() {
                self.by_route.remove(&route);
            }
            waiter?
        } else {
            if seq == 0 || self.by_seq.get(&seq).is_none_or(|w| w.route != route) {
                return None;
            }
            self.by_seq.remove(&seq)?
        };
        self.in_flight -= 1;
        Some(waiter.reply)
    }

    /// Forgets request `id` on `route` (timed out or abandoned by its caller). Returns whether it was found.
    pub(crate) fn cancel(&mut self, id: u64, route: i32) -> bool {
        let found = if self.max_seq == 0 {
            match self.by_route.get_mut(&route) {
                Some(queue) => {
                    let found = queue
                        .iter()
                        .position(|w| w.id == id)
                        .and_then(|at| queue.remove(at))
                        .is_some();
                    if queue.is_empty() {
                        self.by_route.remove(&route);
                    }
                    found
                }
                None => false,
            }
        } else {
            let seq = self.by_seq.iter().find(|(_, w)| w.id == id).map(|(&seq, _)| seq);
            seq.and_then(|seq| self.by_seq.remove(&seq)).is_some()
        };
        if found {
            self.in_flight -= 1;
        }
        found
    }

    /// Marks the connection closed (first reason wins) and hands back every waiting request, so that the
    /// caller can fail them outside the lock. Returns `None` when it was already closed.
    pub(crate) fn close(&mut self, reason: ClientError) -> Option<Vec<Reply>> {
        if self.closed.is_some() {
            return None;
        }
        self.closed = Some(reason);
        self.in_flight = 0;
        let mut replies: Vec<Reply> = self.by_seq.drain().map(|(_, w)| w.reply).collect();
        replies.extend(
            self.by_route
                .drain()
                .flat_map(|(_, q)| q.into_iter().map(|w| w.reply)),
        );
        Some(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(id: u64, route: i32) -> (Waiter, oneshot::Receiver<Result<Bytes, ClientError>>) {
        let (reply, rx) = oneshot::channel();
        (Waiter { id, route, reply }, rx)
    }

    #[test]
    fn seq_cycles_from_one_to_max_and_never_zero() {
        let mut pending = Pending::new(127);
        let seqs: Vec<i32> = (0..300).map(|_| pending.alloc_seq().unwrap()).collect();
        assert_eq!(seqs[0], 1);
        assert_eq!(seqs[126], 127);
        assert_eq!(seqs[127], 1);
        assert!(seqs.iter().all(|&s| (1..=127).contains(&s)));
    }

    #[test]
    fn seq_skips_values_in_flight_and_reports_exhaustion() {
        let mut pending = Pending::new(3);
        for id in 0..2 {
            let seq = pending.alloc_seq().unwrap();
            pending.insert(seq, waiter(id, 1).0);
        }
        assert_eq!(pending.alloc_seq(), Some(3));
        // 3 was handed out but not registered; 1 and 2 are in flight.
        assert_eq!(pending.alloc_seq(), Some(3));
        pending.insert(3, waiter(9, 1).0);
        assert_eq!(pending.alloc_seq(), None);
        assert!(pending.take_response(1, 2).is_some());
        assert_eq!(pending.alloc_seq(), Some(2));
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn response_needs_matching_route_and_nonzero_seq() {
        let mut pending = Pending::new(i32::MAX);
        let seq = pending.alloc_seq().unwrap();
        pending.insert(seq, waiter(1, 7).0);
        assert!(pending.take_response(8, seq).is_none());
        assert!(pending.take_response(7, 0).is_none());
        assert!(pending.take_response(7, seq).is_some());
        assert!(pending.take_response(7, seq).is_none());
    }

    #[test]
    fn fifo_per_route_without_seq() {
        let mut pending = Pending::new(0);
        let mut rxs = Vec::new();
        for (id, route) in [(1, 5), (2, 6), (3, 5)] {
            let (w, rx) = waiter(id, route);
            let seq = pending.alloc_seq().unwrap();
            pending.insert(seq, w);
            rxs.push(rx);
        }
        assert!(pending.cancel(1, 5));
        assert!(!pending.cancel(1, 5));
        let reply = pending.take_response(5, 0).unwrap();
        reply.send(Ok(Bytes::from_static(b"three"))).unwrap();
        assert_eq!(rxs[2].try_recv().unwrap().unwrap(), "three");
        assert!(pending.take_response(5, 0).is_none());
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn close_hands_back_everything_once() {
        let mut pending = Pending::new(0x7fff);
        for id in 0..3 {
            let seq = pending.alloc_seq().unwrap();
            pending.insert(seq, waiter(id, 1).0);
        }
        assert_eq!(pending.close(ClientError::ServerClosed).map(|r| r.len()), Some(3));
        assert!(pending.close(ClientError::Closed).is_none());
        assert!(matches!(pending.closed, Some(ClientError::ServerClosed)));
        assert_eq!(pending.len(), 0);
    }
}
