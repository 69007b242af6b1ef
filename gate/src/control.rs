//! Control messages to a node: acknowledgements of its bind and unbind requests and the notices that a
//! connection closed. They must never wait on the packet path, and a node that stops reading must not make
//! the gate pile up a task per message. So each goes straight onto the link when it has room, and
//! otherwise onto the link's one bounded control queue, which one task per link drains in order. When that
//! queue is full too the message is dropped and counted: the node's request then times out, as it would
//! for a lost link.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use switchyard_cluster::link::LinkSender;
use switchyard_protocol::link::GateToNode;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::nodes::NodeHandle;
use crate::shared::Gate;

/// Control messages one link may hold back while its node does not read. Each is a few dozen bytes (an
/// ack or a disconnect notice carries ids only), so this bounds the queue's memory to well under 1 MiB.
pub(crate) const CONTROL_QUEUE_CAPACITY: usize = 4096;

/// What became of a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// On the link, or queued behind earlier control messages.
    Queued,
    /// The link is gone: nobody is left to tell.
    LinkClosed,
    /// The link and its control queue are both full: dropped.
    Dropped,
}

/// One link's control queue (the sending end; the draining task holds the other).
#[derive(Debug)]
pub(crate) struct ControlQueue {
    tx: mpsc::Sender<GateToNode>,
    /// Messages queued or in the draining task's hands, not yet on the link: while any is, a new one
    /// must queue behind it (the queue alone can be empty while the task waits for room).
    unsent: Arc<AtomicUsize>,
    /// Whether a drop on this link was logged already (each link logs its first drop only).
    warned: AtomicBool,
}

impl ControlQueue {
    /// A queue for `link`, drained into it by one task on `tasks` until the link closes or `stop`.
    pub(crate) fn start(
        link: LinkSender<GateToNode>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> ControlQueue {
        let (tx, mut rx) = mpsc::channel::<GateToNode>(CONTROL_QUEUE_CAPACITY);
        let unsent = Arc::new(AtomicUsize::new(0));
        let task_unsent = unsent.clone();
        tasks.spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    message = rx.recv() => message,
                };
                let Some(message) = message else { return };
                let sent = tokio::select! {
                    _ = stop.cancelled() => return,
                    sent = link.send(message) => sent,
                };
                task_unsent.fetch_sub(1, Ordering::AcqRel);
                if sent.is_err() {
                    return;
                }
            }
        });
        ControlQueue {
            tx,
            unsent,
            warned: AtomicBool::new(false),
        }
    }

    /// A queue with no draining task, for tests of the routing tables (whose handles never send).
    #[cfg(test)]
    pub(crate) fn detached() -> ControlQueue {
        ControlQueue {
            tx: mpsc::channel(1).0,
            unsent: Arc::default(),
            warned: AtomicBool::new(false),
        }
    }

    /// Sends `message` on `link` now if nothing is queued ahead of it and the link has room; otherwise
    /// queues it behind the earlier ones, so a node sees its control messages in the order they were sent.
    pub(crate) fn send(&self, link: &LinkSender<GateToNode>, message: GateToNode) -> Sent {
        let message = if self.unsent.load(Ordering::Acquire) == 0 {
            match link.try_send(message) {
                Ok(()) => return Sent::Queued,
                Err(TrySendError::Closed(_)) => return Sent::LinkClosed,
                Err(TrySendError::Full(message)) => message,
            }
        } else {
            message
        };
        self.unsent.fetch_add(1, Ordering::AcqRel);
        let sent = match self.tx.try_send(message) {
            Ok(()) => return Sent::Queued,
            Err(TrySendError::Full(_)) => Sent::Dropped,
            Err(TrySendError::Closed(_)) => Sent::LinkClosed,
        };
        self.unsent.fetch_sub(1, Ordering::AcqRel);
        sent
    }
}

impl Gate {
    /// Sends a control message to `node` without waiting (see the module doc); a drop is counted, and
    /// logged once per link.
    pub(crate) fn send_control(&self, node: &NodeHandle, message: GateToNode) {
        if node.control.send(&node.tx, message) == Sent::Dropped {
            self.inner.metrics.link_control_dropped.inc();
            if !node.control.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    node = %node.id,
                    address = %node.address,
                    queued = CONTROL_QUEUE_CAPACITY,
                    "node does not read its link: control messages dropped (counted in \
                     switchyard_gate_link_control_dropped_total; logged once per link)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_cluster::link::queue::channel;
    use switchyard_protocol::link::NO_UID;

    use super::*;

    fn disconnected(cid: u64) -> GateToNode {
        GateToNode::Disconnected { cid, uid: NO_UID }
    }

    fn cid(message: GateToNode) -> u64 {
        match message {
            GateToNode::Disconnected { cid, .. } => cid,
            other => panic!("expected a disconnect notice, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_link_queues_in_order_without_a_task_per_message_and_drops_past_the_bound() {
        let (link, mut node) = channel::<GateToNode>(1, 1 << 20);
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let control = ControlQueue::start(link.clone(), &tasks, stop.clone());

        assert_eq!(
            control.send(&link, disconnected(0)),
            Sent::Queued,
            "room on the link: sent at once"
        );
        // The link is full now (one message): the rest wait on the control queue, in order.
        for n in 1..=CONTROL_QUEUE_CAPACITY as u64 {
            assert_eq!(control.send(&link, disconnected(n)), Sent::Queued, "message {n}");
        }
        // The draining task takes the first of them and waits for room on the link: one more fits.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let last = CONTROL_QUEUE_CAPACITY as u64 + 1;
        assert_eq!(control.send(&link, disconnected(last)), Sent::Queued);
        assert_eq!(
            control.send(&link, disconnected(0)),
            Sent::Dropped,
            "past the bound: dropped"
        );
        assert_eq!(tasks.len(), 1, "one draining task, however many messages wait");

        // The node reads again: everything queued arrives, in the order it was sent.
        for n in 0..=CONTROL_QUEUE_CAPACITY as u64 + 1 {
            let message = tokio::time::timeout(Duration::from_secs(5), node.recv())
                .await
                .expect("the queue drains")
                .expect("open");
            assert_eq!(cid(message), n);
        }

        drop(node);
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        assert_eq!(control.send(&link, disconnected(1)), Sent::LinkClosed);
    }
}
