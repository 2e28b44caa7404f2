//! Rooms: every message a member sends reaches every other member. Behind a small trait, so
//! that the Redis backplane ([`super::backplane`]) can stand in for the in-process rooms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sockeye::Message;
use tokio::sync::mpsc;

/// A member's identity within the rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MemberId(u64);

/// The sending side of a member's queue, bounded in messages and in bytes.
#[derive(Debug, Clone)]
pub(crate) struct MemberQueue {
    tx: mpsc::Sender<Message>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

/// The receiving side of a member's queue.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: mpsc::Receiver<Message>,
    queued: Arc<AtomicUsize>,
}

/// A queue of at most `messages` messages and `bytes` payload bytes.
pub(crate) fn member_queue(messages: usize, bytes: usize) -> (MemberQueue, Inbox) {
    let (tx, rx) = mpsc::channel(messages.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    (
        MemberQueue {
            tx,
            queued: Arc::clone(&queued),
            budget: bytes,
        },
        Inbox { rx, queued },
    )
}

impl MemberQueue {
    /// Queues without waiting; `false` when the member is over either bound (or gone).
    fn offer(&self, message: &Message) -> bool {
        let len = message.len();
        if self.queued.load(Ordering::Relaxed).saturating_add(len) > self.budget {
            return false;
        }
        if self.tx.try_send(message.clone()).is_err() {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        true
    }
}

impl Inbox {
    /// The next queued message; `None` once the room dropped this member.
    pub(crate) async fn recv(&mut self) -> Option<Message> {
        let message = self.rx.recv().await?;
        self.queued.fetch_sub(message.len(), Ordering::Relaxed);
        Some(message)
    }
}

/// The message could not be taken: the way to the other nodes is full (or gone). The sender is
/// told to try again later (1013) rather than have the room wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overloaded;

/// Where room membership and fan-out live.
pub(crate) trait Rooms: Send + Sync + 'static {
    /// Adds a member. Dropping its queue (when the member is too slow to keep up) is how a
    /// member is told to leave.
    fn join(&self, room: &str, queue: MemberQueue) -> MemberId;
    /// Removes a member.
    fn leave(&self, room: &str, member: MemberId);
    /// Sends `message` to every member of `room` but `from`, never waiting: a member whose
    /// queue is full is dropped from the room.
    ///
    /// # Errors
    /// [`Overloaded`] when the message cannot be passed on to the other nodes.
    fn publish(&self, room: &str, from: MemberId, message: &Message) -> Result<(), Overloaded>;
}

type Members = HashMap<MemberId, MemberQueue>;

/// Rooms held in this process.
#[derive(Debug, Default)]
pub(crate) struct MemoryRooms {
    rooms: Mutex<HashMap<String, Members>>,
    next_id: AtomicU64,
}

impl MemoryRooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Members>> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl MemoryRooms {
    /// Adds a member; `first` runs, under the lock, when the room is new in this process.
    pub(crate) fn join_then(
        &self,
        room: &str,
        queue: MemberQueue,
        first: impl FnOnce(&str),
    ) -> MemberId {
        let id = MemberId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut rooms = self.lock();
        let members = rooms.entry(room.to_owned()).or_insert_with(|| {
            first(room);
            Members::default()
        });
        members.insert(id, queue);
        id
    }

    /// Removes a member; `last` runs, under the lock, when that empties the room.
    pub(crate) fn leave_then(&self, room: &str, member: MemberId, last: impl FnOnce(&str)) {
        let mut rooms = self.lock();
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&member);
            if members.is_empty() {
                rooms.remove(room);
                last(room);
            }
        }
    }

    /// Hands `message` to every member of `room` but `except`, never waiting.
    pub(crate) fn deliver(&self, room: &str, except: Option<MemberId>, message: &Message) {
        let mut rooms = self.lock();
        let Some(members) = rooms.get_mut(room) else {
            return;
        };
        // Messages carry `Bytes`: each member's copy shares the one payload.
        members.retain(|id, queue| {
            let keep = Some(*id) == except || queue.offer(message);
            if !keep {
                tracing::info!(room, member = id.0, "member too slow, dropping it");
            }
            keep
        });
    }

    /// Whether `room` has members here.
    pub(crate) fn has(&self, room: &str) -> bool {
        self.lock().contains_key(room)
    }

    /// The rooms that have members here.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

impl Rooms for MemoryRooms {
    fn join(&self, room: &str, queue: MemberQueue) -> MemberId {
        self.join_then(room, queue, |_| {})
    }

    fn leave(&self, room: &str, member: MemberId) {
        self.leave_then(room, member, |_| {});
    }

    fn publish(&self, room: &str, from: MemberId, message: &Message) -> Result<(), Overloaded> {
        self.deliver(room, Some(from), message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fan_out_skips_sender_and_drops_slow_members() {
        let rooms = MemoryRooms::default();
        let (a_queue, mut a_inbox) = member_queue(4, 1 << 20);
        let (b_queue, mut b_inbox) = member_queue(1, 1 << 20);
        let (c_queue, mut c_inbox) = member_queue(4, 1 << 20);
        let a = rooms.join("r", a_queue);
        let _b = rooms.join("r", b_queue);
        let _c = rooms.join("other", c_queue);
        rooms.deliver("r", Some(a), &Message::text("one"));
        assert_eq!(b_inbox.recv().await, Some(Message::text("one")));
        rooms.deliver("r", Some(a), &Message::text("two"));
        rooms.deliver("r", Some(a), &Message::text("three"));
        // b's queue held one message; the second overflowed it and b was dropped.
        assert_eq!(b_inbox.recv().await, Some(Message::text("two")));
        assert_eq!(b_inbox.recv().await, None);
        rooms.leave("r", a);
        assert!(rooms.lock().get("r").is_none(), "empty rooms are removed");
        // The sender and other rooms got nothing.
        drop(rooms);
        assert_eq!(a_inbox.recv().await, None);
        assert_eq!(c_inbox.recv().await, None);
    }

    #[tokio::test]
    async fn byte_budget_bounds_a_member_queue() {
        let rooms = MemoryRooms::default();
        let (a_queue, _a_inbox) = member_queue(100, 1 << 20);
        let (b_queue, mut b_inbox) = member_queue(100, 10);
        let a = rooms.join("r", a_queue);
        rooms.join("r", b_queue);
        rooms.deliver("r", Some(a), &Message::binary(vec![0u8; 6]));
        // Taking a message gives its bytes back.
        assert_eq!(b_inbox.recv().await.map(|m| m.len()), Some(6));
        rooms.deliver("r", Some(a), &Message::binary(vec![0u8; 6]));
        rooms.deliver("r", Some(a), &Message::binary(vec![0u8; 6]));
        assert_eq!(b_inbox.recv().await.map(|m| m.len()), Some(6));
        assert_eq!(
            b_inbox.recv().await,
            None,
            "12 bytes exceed the 10-byte budget"
        );
    }
}
