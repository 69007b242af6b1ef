//! One direction of a link: a channel bounded in messages and in bytes.
//!
//! Counting messages alone does not bound memory: 4096 queued deliveries of 64 KiB packets are 256 MiB,
//! held for as long as the peer takes nothing. Each [`LinkSender`] therefore also reserves the message's
//! [`Weigh::weight`] (the bytes of the packets, bodies and uid lists it holds) against a byte budget, which
//! the [`LinkReceiver`] gives back as it takes the message. A sender over the budget waits exactly as it
//! waits for a free slot ([`LinkSender::send`]) or is refused ([`LinkSender::try_send`]). One message is
//! always admitted into an empty queue, whatever its weight, so nothing is too large to ever go.
//!
//! The hot path is two atomic operations per message and no lock: the budget's [`Notify`] is only touched
//! while a sender waits for room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchyard_protocol::link::{GateToNode, NodeToGate, Target};
pub use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};
use tokio::sync::{Notify, mpsc};

/// The default byte budget of one link direction.
pub const DEFAULT_LINK_QUEUE_BYTES: usize = 4 << 20;

/// The bytes a queued message holds beyond its fixed size.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for GateToNode {
    fn weight(&self) -> usize {
        match self {
            GateToNode::Packet { body, .. }
            | GateToNode::Call { body, .. }
            | GateToNode::CallReply { body, .. } => body.len(),
            GateToNode::Hello { gate_id, .. } => gate_id.len(),
            GateToNode::Disconnected { .. } | GateToNode::Ack { .. } | GateToNode::Heartbeat => 0,
        }
    }
}

impl Weigh for NodeToGate {
    fn weight(&self) -> usize {
        let target = |target: &Target| match target {
            Target::Users(uids) => 8 * uids.len(),
            _ => 0,
        };
        match self {
            NodeToGate::Deliver {
                target: to, packet, ..
            } => target(to) + packet.len(),
            NodeToGate::Disconnect { target: to } => target(to),
            NodeToGate::Call { body, .. } | NodeToGate::CallReply { body, .. } => body.len(),
            NodeToGate::Hello { routes, .. } => 5 * routes.len(),
            NodeToGate::State(_)
            | NodeToGate::BindUser { .. }
            | NodeToGate::UnbindUser { .. }
            | NodeToGate::UserNode { .. }
            | NodeToGate::Heartbeat => 0,
        }
    }
}

/// A link direction bounded to `capacity` messages and `bytes` of message weight.
pub fn channel<T: Weigh>(capacity: usize, bytes: usize) -> (LinkSender<T>, LinkReceiver<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let budget = Arc::new(Budget {
        queued: AtomicUsize::new(0),
        limit: bytes,
        waiters: AtomicUsize::new(0),
        room: Notify::new(),
    });
    (
        LinkSender {
            tx,
            budget: budget.clone(),
        },
        LinkReceiver { rx, budget },
    )
}

#[derive(Debug)]
struct Budget {
    queued: AtomicUsize,
    limit: usize,
    /// Senders waiting for room: the receiver only wakes them when there are some.
    waiters: AtomicUsize,
    room: Notify,
}

impl Budget {
    /// Reserves `weight` bytes if they fit (or the queue holds none).
    fn try_take(&self, weight: usize) -> bool {
        let mut queued = self.queued.load(Ordering::SeqCst);
        loop {
            if queued != 0 && queued.saturating_add(weight) > self.limit {
                return false;
            }
            match self.queued.compare_exchange_weak(
                queued,
                queued + weight,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => queued = now,
            }
        }
    }

    fn give(&self, weight: usize) {
        if weight != 0 {
            self.queued.fetch_sub(weight, Ordering::SeqCst);
        }
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.room.notify_waiters();
        }
    }
}

/// Gives reserved bytes back unless the message they were for was queued.
struct Reserved<'a> {
    budget: &'a Budget,
    weight: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.give(self.weight);
    }
}

/// Counts a waiting sender for as long as it waits (also when its future is dropped).
struct Waiting<'a>(&'a Budget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The sending end of a link direction. Cheap to clone.
#[derive(Debug)]
pub struct LinkSender<T> {
    tx: mpsc::Sender<T>,
    budget: Arc<Budget>,
}

impl<T> Clone for LinkSender<T> {
    fn clone(&self) -> Self {
        LinkSender {
            tx: self.tx.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<T: Weigh> LinkSender<T> {
    /// Queues `message` once there is room for it, in messages and in bytes.
    ///
    /// # Errors
    /// The receiving end is gone; the message comes back.
    pub async fn send(&self, message: T) -> Result<(), SendError<T>> {
        let weight = message.weight();
        let budget = &*self.budget;
        while !budget.try_take(weight) {
            if self.tx.is_closed() {
                return Err(SendError(message));
            }
            let room = budget.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            budget.waiters.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(budget);
            // Room made between the check above and the registration is seen here.
            if budget.try_take(weight) {
                break;
            }
            room.await;
        }
        let reserved = Reserved { budget, weight };
        self.tx.send(message).await?;
        std::mem::forget(reserved);
        Ok(())
    }

    /// Queues `message` if there is room for it now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the queue is at its message or byte bound, [`TrySendError::Closed`] when
    /// the receiving end is gone; the message comes back.
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        let weight = message.weight();
        if !self.budget.try_take(weight) {
            return Err(if self.tx.is_closed() {
                TrySendError::Closed(message)
            } else {
                TrySendError::Full(message)
            });
        }
        let reserved = Reserved {
            budget: &self.budget,
            weight,
        };
        self.tx.try_send(message)?;
        std::mem::forget(reserved);
        Ok(())
    }
}

impl<T> LinkSender<T> {
    /// Whether the receiving end is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Messages queued now.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Bytes of message weight queued now.
    pub fn queued_bytes(&self) -> usize {
        self.budget.queued.load(Ordering::Relaxed)
    }
}

/// The receiving end of a link direction.
#[derive(Debug)]
pub struct LinkReceiver<T> {
    rx: mpsc::Receiver<T>,
    budget: Arc<Budget>,
}

impl<T: Weigh> LinkReceiver<T> {
    /// The next message, or `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        let message = self.rx.recv().await?;
        self.budget.give(message.weight());
        Some(message)
    }

    /// The next message if one is queued.
    ///
    /// # Errors
    /// Nothing is queued, or every sender is gone.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let message = self.rx.try_recv()?;
        self.budget.give(message.weight());
        Ok(message)
    }
}

impl<T> Drop for LinkReceiver<T> {
    fn drop(&mut self) {
        // Senders waiting for room must see that none will come.
        self.rx.close();
        self.budget.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn packet(bytes: usize) -> GateToNode {
        GateToNode::Packet {
            cid: 1,
            uid: 1,
            body: Bytes::from(vec![0; bytes]),
            trace: None,
            peer: None,
        }
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_as_in_messages() {
        let (tx, mut rx) = channel::<GateToNode>(100, 1000);
        tx.try_send(packet(600)).unwrap();
        tx.try_send(packet(400)).unwrap();
        assert_eq!(tx.queued_bytes(), 1000);
        assert!(matches!(tx.try_send(packet(1)), Err(TrySendError::Full(_))));
        // Weightless messages still pass while bytes are full: only the message bound holds them.
        tx.try_send(GateToNode::Heartbeat).unwrap();
        // A sender over the budget waits until the receiver takes enough.
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(packet(500)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        rx.recv().await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("woken when room was made")
            .unwrap()
            .unwrap();
        assert_eq!(tx.queued_bytes(), 900);
        assert_eq!(tx.queued(), 3);
    }

    #[tokio::test]
    async fn one_message_over_the_budget_still_goes_into_an_empty_queue() {
        let (tx, mut rx) = channel::<GateToNode>(10, 100);
        tx.send(packet(5000)).await.unwrap();
        assert!(matches!(tx.try_send(packet(1)), Err(TrySendError::Full(_))));
        rx.try_recv().unwrap();
        assert_eq!(tx.queued_bytes(), 0);
        tx.try_send(packet(1)).unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_or_failed_send_gives_its_bytes_back() {
        let (tx, rx) = channel::<GateToNode>(1, 1000);
        tx.try_send(packet(10)).unwrap();
        // Waits for a message slot, then is dropped: its reservation is returned.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), tx.send(packet(20))).await;
        assert!(cancelled.is_err());
        assert_eq!(tx.queued_bytes(), 10);
        // A sender waiting for bytes learns that the receiver is gone.
        let (tx2, rx2) = channel::<GateToNode>(10, 100);
        tx2.try_send(packet(100)).unwrap();
        let waiting = tokio::spawn(async move { tx2.send(packet(50)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(rx2);
        let result = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(result, Err(SendError(_))));
        drop(rx);
        assert!(matches!(tx.try_send(packet(1)), Err(TrySendError::Closed(_))));
    }
}
