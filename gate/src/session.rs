//! Client sessions: one per connection, with its bound uid, its stateful node binding and its bounded
//! outbound queue. Whoever queues a packet for a client uses [`Session::send`], which never waits: a client
//! whose queue is full is too slow a reader and is disconnected rather than allowed to grow memory.
//!
//! The outbound queue is a plain deque behind the session's lock, not a channel: an idle connection's queue
//! allocates nothing, where a bounded channel costs about 1.5 KiB per connection up front, and a gate holds
//! tens of thousands of mostly idle connections. A connection's reader and writer are two futures of one
//! task, so one registered waker ([`AtomicWaker`]) is all it takes to wake them for a packet or a close.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use switchyard_protocol::link::{AckError, ConnectionId, NO_UID, Uid};

use crate::metrics::CloseReason;
use crate::nodes::NodeHandle;

/// Packets waiting for a connection's writer, and whether to close once they are written.
#[derive(Debug, Default)]
struct Outbox {
    /// Whole packets, size field included.
    packets: VecDeque<Bytes>,
    /// Bytes of `packets`.
    bytes: usize,
    /// Close after writing everything queued; nothing queued later is written.
    close_after: Option<CloseReason>,
}

/// How much one client's outbound queue may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboxLimits {
    pub(crate) packets: usize,
    pub(crate) bytes: usize,
}

/// A queue that grew past this many packets is given back when it empties, so a burst does not pin memory
/// on a connection that goes idle.
const KEPT_QUEUE_CAPACITY: usize = 64;

/// Requests timed per connection at once; a client pipelining deeper has its older requests untimed.
const TIMED_REQUESTS: usize = 8;

/// When the latest requests of a connection left for a node, by seq, to time their responses.
#[derive(Debug, Default)]
struct RequestClock {
    sent: [(i32, Option<Instant>); TIMED_REQUESTS],
    next: usize,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) cid: ConnectionId,
    /// The client's address, passed to nodes with every packet.
    pub(crate) peer: Option<SocketAddr>,
    uid: AtomicI64,
    /// The node holding this player's state (stateful routes) in each pool: (pool, node id). A handful at
    /// most, so a list beats a map.
    nodes: Mutex<Vec<(Arc<str>, Arc<str>)>>,
    /// Nodes this connection's packets reached: they hear of its disconnect.
    visited: Mutex<Vec<Arc<NodeHandle>>>,
    /// Allocated at the first request: an idle connection does not pay for it.
    requests: Mutex<Option<Box<RequestClock>>>,
    outbox: Mutex<Outbox>,
    /// The connection's task, woken when the outbox gains a packet or a close, or the session closes.
    task: AtomicWaker,
    outbox_limit: u32,
    outbox_byte_limit: u32,
    /// Set once, when the connection must end (the first reason recorded wins). A flag and the task's waker
    /// are all a connection needs; a `CancellationToken` would allocate a tree node per connection.
    closed: AtomicBool,
    close_reason: Mutex<Option<CloseReason>>,
}

impl Session {
    /// A session whose outbound queue holds at most `limits` packets and bytes.
    pub(crate) fn new(cid: ConnectionId, peer: Option<SocketAddr>, limits: OutboxLimits) -> Self {
        Session {
            cid,
            peer,
            uid: AtomicI64::new(NO_UID),
            nodes: Mutex::new(Vec::new()),
            visited: Mutex::new(Vec::new()),
            requests: Mutex::default(),
            outbox: Mutex::default(),
            task: AtomicWaker::new(),
            outbox_limit: u32::try_from(limits.packets).unwrap_or(u32::MAX),
            outbox_byte_limit: u32::try_from(limits.bytes).unwrap_or(u32::MAX),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
        }
    }

    /// Whether the connection must end.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn uid(&self) -> Uid {
        self.uid.load(Ordering::Acquire)
    }

    /// The node bound in `pool`.
    pub(crate) fn node(&self, pool: &str) -> Option<Arc<str>> {
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .find(|(bound, _)| &**bound == pool)
            .map(|(_, node)| node.clone())
    }

    /// Every (pool, node) binding.
    pub(crate) fn bound_nodes(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.nodes.lock().clone()
    }

    /// Sets the stateful binding in `pool`; returns the previous one.
    pub(crate) fn set_node(&self, pool: &Arc<str>, node: Option<Arc<str>>) -> Option<Arc<str>> {
        let mut nodes = self.nodes.lock();
        let at = nodes.iter().position(|(bound, _)| bound == pool);
        match (at, node) {
            (Some(at), Some(node)) => Some(std::mem::replace(&mut nodes[at].1, node)),
            (Some(at), None) => Some(nodes.swap_remove(at).1),
            (None, Some(node)) => {
                nodes.push((pool.clone(), node));
                None
            }
            (None, None) => None,
        }
    }

    /// Drops every node binding; returns them.
    pub(crate) fn clear_nodes(&self) -> Vec<(Arc<str>, Arc<str>)> {
        std::mem::take(&mut *self.nodes.lock())
    }

    /// Remembers that `node` saw this connection (cheap when it is the last one seen).
    pub(crate) fn visited(&self, node: &Arc<NodeHandle>) {
        let mut visited = self.visited.lock();
        if !visited.iter().any(|seen| Arc::ptr_eq(seen, node)) {
            visited.push(node.clone());
        }
    }

    pub(crate) fn take_visited(&self) -> Vec<Arc<NodeHandle>> {
        std::mem::take(&mut *self.visited.lock())
    }

    /// Notes that request `seq` left for a node now (seq 0 is a push's and is not timed).
    pub(crate) fn request_sent(&self, seq: i32) {
        if seq == 0 {
            return;
        }
        let mut clock = self.requests.lock();
        let clock = clock.get_or_insert_with(Box::default);
        let slot = clock.next;
        clock.sent[slot] = (seq, Some(Instant::now()));
        clock.next = (slot + 1) % TIMED_REQUESTS;
    }

    /// How long ago request `seq` left, if it was timed; forgets it.
    pub(crate) fn response_seen(&self, seq: i32) -> Option<Duration> {
        let mut clock = self.requests.lock();
        let slot = clock
            .as_mut()?
            .sent
            .iter_mut()
            .find(|(sent_seq, at)| *sent_seq == seq && at.is_some())?;
        slot.1.take().map(|at| at.elapsed())
    }

    /// Queues a packet without waiting. Returns false when the session is closing; a full queue closes the
    /// session as a slow reader.
    pub(crate) fn send(&self, packet: Bytes) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut outbox = self.outbox.lock();
        if outbox.close_after.is_some() {
            return false;
        }
        if outbox.packets.len() >= self.outbox_limit as usize
            || outbox.bytes + packet.len() > self.outbox_byte_limit as usize
        {
            drop(outbox);
            self.close(CloseReason::SlowReader);
            return false;
        }
        outbox.bytes += packet.len();
        outbox.packets.push_back(packet);
        drop(outbox);
        self.task.wake();
        true
    }

    /// Closes after the packets already queued are written.
    pub(crate) fn close_after_queued(&self, reason: CloseReason) {
        self.outbox.lock().close_after.get_or_insert(reason);
        self.record_reason(reason);
        self.task.wake();
    }

    /// Moves queued packets into `batch`, up to `max_packets` or until `max_bytes` is reached; returns the
    /// bytes moved and, once the queue is empty, the reason to close after writing them, if one was queued.
    pub(crate) fn take_outbound(
        &self,
        batch: &mut Vec<Bytes>,
        max_bytes: usize,
        max_packets: usize,
    ) -> (usize, Option<CloseReason>) {
        let mut outbox = self.outbox.lock();
        let mut bytes = 0;
        while bytes < max_bytes && batch.len() < max_packets {
            let Some(packet) = outbox.packets.pop_front() else {
                break;
            };
            bytes += packet.len();
            batch.push(packet);
        }
        outbox.bytes -= bytes;
        if !outbox.packets.is_empty() {
            return (bytes, None);
        }
        if outbox.packets.capacity() > KEPT_QUEUE_CAPACITY {
            outbox.packets = VecDeque::new();
        }
        (bytes, outbox.close_after)
    }

    /// Waits until the outbox holds a packet or a close, or the session closed.
    pub(crate) async fn outbound_ready(&self) {
        std::future::poll_fn(|cx| {
            self.task.register(cx.waker());
            let outbox = self.outbox.lock();
            if outbox.packets.is_empty() && outbox.close_after.is_none() && !self.is_closed() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Completes once the session is closed. Cancel-safe.
    pub(crate) async fn closed(&self) {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await;
    }

    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the check, so a close between the check and the wait is not missed.
        self.task.register(cx.waker());
        if self.is_closed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Closes now.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.record_reason(reason);
        self.closed.store(true, Ordering::Release);
        self.task.wake();
    }

    fn record_reason(&self, reason: CloseReason) {
        self.close_reason.lock().get_or_insert(reason);
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock()
    }
}

/// All sessions of the gate, by connection id and by bound uid.
#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    by_cid: Mutex<HashMap<ConnectionId, Arc<Session>>>,
    by_uid: Mutex<HashMap<Uid, Arc<Session>>>,
}

impl SessionTable {
    pub(crate) fn insert(&self, session: Arc<Session>) {
        self.by_cid.lock().insert(session.cid, session);
    }

    /// Forgets a closed session, and its uid binding if it still holds it; returns that uid, if any.
    pub(crate) fn remove(&self, session: &Session) -> Option<Uid> {
        self.by_cid.lock().remove(&session.cid);
        let mut by_uid = self.by_uid.lock();
        let uid = session.uid();
        if uid != NO_UID && by_uid.get(&uid).is_some_and(|bound| bound.cid == session.cid) {
            by_uid.remove(&uid);
            return Some(uid);
        }
        None
    }

    pub(crate) fn get(&self, cid: ConnectionId) -> Option<Arc<Session>> {
        self.by_cid.lock().get(&cid).cloned()
    }

    pub(crate) fn by_uid(&self, uid: Uid) -> Option<Arc<Session>> {
        self.by_uid.lock().get(&uid).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        self.by_cid.lock().values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_cid.lock().len()
    }

    /// Binds `uid` to connection `cid`. A different connection of this gate that held `uid` loses it (and
    /// stays open: closing it is the game's decision); it is returned. The session keeps its node binding
    /// only if it was for the same uid.
    ///
    /// # Errors
    /// The connection is gone.
    pub(crate) fn bind(&self, cid: ConnectionId, uid: Uid) -> Result<Option<Arc<Session>>, AckError> {
        let session = self.get(cid).ok_or(AckError::UnknownConnection)?;
        let mut by_uid = self.by_uid.lock();
        let previous_uid = session.uid.swap(uid, Ordering::AcqRel);
        if previous_uid != uid {
            session.clear_nodes();
            if previous_uid != NO_UID && by_uid.get(&previous_uid).is_some_and(|s| s.cid == cid) {
                by_uid.remove(&previous_uid);
            }
        }
        let displaced = by_uid.insert(uid, session).filter(|old| old.cid != cid);
        if let Some(old) = &displaced {
            old.uid.store(NO_UID, Ordering::Release);
            old.clear_nodes();
        }
        Ok(displaced)
    }

    /// Drops `uid`'s binding to its connection; returns the session that held it, node bindings still set.
    pub(crate) fn unbind(&self, uid: Uid) -> Option<Arc<Session>> {
        let session = self.by_uid.lock().remove(&uid)?;
        session.uid.store(NO_UID, Ordering::Release);
        // The caller releases the node bindings, keeping the per-node counts right.
        Some(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(table: &SessionTable, cid: ConnectionId, queue: usize) -> Arc<Session> {
        let session = Arc::new(Session::new(
            cid,
            None,
            OutboxLimits {
                packets: queue,
                bytes: usize::MAX,
            },
        ));
        table.insert(session.clone());
        session
    }

    #[test]
    fn binding_a_uid_elsewhere_displaces_the_older_session() {
        let table = SessionTable::default();
        let first = session(&table, 1, 4);
        let second = session(&table, 2, 4);
        assert!(table.bind(1, 42).unwrap().is_none());
        first.set_node(&Arc::from("game"), Some("node-a".into()));
        let displaced = table.bind(2, 42).unwrap().expect("first session displaced");
        assert_eq!(displaced.cid, 1);
        assert_eq!((first.uid(), first.node("game")), (NO_UID, None));
        assert_eq!(table.by_uid(42).map(|s| s.cid), Some(2));
        // Removing the displaced session must not drop the new owner's binding.
        table.remove(&first);
        assert_eq!(table.by_uid(42).map(|s| s.cid), Some(2));
        assert_eq!(table.bind(9, 1).unwrap_err(), AckError::UnknownConnection);
        assert_eq!(table.unbind(42).map(|s| s.cid), Some(2));
        assert_eq!(second.uid(), NO_UID);
    }

    #[test]
    fn responses_are_timed_by_seq() {
        let table = SessionTable::default();
        let session = session(&table, 1, 2);
        session.request_sent(0);
        assert_eq!(session.response_seen(0), None, "pushes are not timed");
        for seq in 1..=10 {
            session.request_sent(seq);
        }
        assert!(
            session.response_seen(1).is_none(),
            "only the latest requests are timed"
        );
        assert!(session.response_seen(10).is_some());
        assert!(session.response_seen(10).is_none(), "a response is timed once");
        assert!(session.response_seen(3).is_some());
    }

    #[test]
    fn a_full_queue_closes_the_session_as_slow_reader() {
        let table = SessionTable::default();
        let session = session(&table, 1, 2);
        assert!(session.send(Bytes::from_static(b"a")));
        assert!(session.send(Bytes::from_static(b"b")));
        assert!(!session.send(Bytes::from_static(b"c")));
        assert!(session.is_closed());
        assert_eq!(session.close_reason(), Some(CloseReason::SlowReader));
    }

    #[test]
    fn a_queue_over_its_bytes_closes_the_session_as_slow_reader_and_writing_frees_bytes() {
        let session = Session::new(
            1,
            None,
            OutboxLimits {
                packets: 100,
                bytes: 10,
            },
        );
        assert!(session.send(Bytes::from_static(b"12345")));
        assert!(session.send(Bytes::from_static(b"1234")));
        // Written: its bytes no longer count.
        let mut batch = Vec::new();
        assert_eq!(session.take_outbound(&mut batch, 5, 1).0, 5);
        assert!(session.send(Bytes::from_static(b"123456")));
        assert!(!session.is_closed());
        // 4 + 6 queued: one byte more is over the limit.
        assert!(!session.send(Bytes::from_static(b"x")));
        assert_eq!(session.close_reason(), Some(CloseReason::SlowReader));
    }

    #[test]
    fn the_writer_takes_batches_and_closes_after_the_queued_packets() {
        let table = SessionTable::default();
        let session = session(&table, 1, 8);
        for packet in [&b"a"[..], b"bb", b"ccc"] {
            assert!(session.send(Bytes::copy_from_slice(packet)));
        }
        session.close_after_queued(CloseReason::Kicked);
        assert!(
            !session.send(Bytes::from_static(b"late")),
            "nothing is queued after a close"
        );
        let mut batch = Vec::new();
        assert_eq!(
            session.take_outbound(&mut batch, 3, 8),
            (3, None),
            "stops at the byte budget"
        );
        assert_eq!(batch, [&b"a"[..], b"bb"]);
        batch.clear();
        assert_eq!(
            session.take_outbound(&mut batch, 1024, 8),
            (3, Some(CloseReason::Kicked)),
            "the close comes once the queue is empty"
        );
        assert_eq!(batch, [&b"ccc"[..]]);
        assert!(!session.is_closed(), "the writer closes after writing");
    }

    #[tokio::test]
    async fn a_queued_packet_wakes_a_writer_that_waits_or_has_not_started_waiting() {
        let table = SessionTable::default();
        let session = session(&table, 1, 8);
        // Queued before the writer waits: it does not wait at all.
        assert!(session.send(Bytes::from_static(b"early")));
        tokio::time::timeout(std::time::Duration::from_secs(5), session.outbound_ready())
            .await
            .expect("a queued packet is seen without waiting");
        assert_eq!(session.take_outbound(&mut Vec::new(), 1024, 8), (5, None));
        let waiter = {
            let session = session.clone();
            tokio::spawn(async move { session.outbound_ready().await })
        };
        tokio::task::yield_now().await;
        assert!(session.send(Bytes::from_static(b"later")));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by a packet queued while waiting")
            .unwrap();
    }

    #[tokio::test]
    async fn closing_wakes_the_connection_task_and_later_waits_return_at_once() {
        let table = SessionTable::default();
        let session = session(&table, 1, 8);
        let waiter = {
            let session = session.clone();
            tokio::spawn(async move { session.closed().await })
        };
        tokio::task::yield_now().await;
        assert!(!session.is_closed());
        session.close(CloseReason::Kicked);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiting task is woken")
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), session.closed())
            .await
            .expect("a later wait returns at once");
        tokio::time::timeout(std::time::Duration::from_secs(5), session.outbound_ready())
            .await
            .expect("the writer sees the close");
    }
}
