//! Rooms: every message a member sends reaches every other member. Behind a small trait so a
//! backplane (Redis) can replace the in-process one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sockeye::Message;
use tokio::sync::mpsc;

/// A member's identity within the rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MemberId(u64);

/// Where room membership and fan-out live.
pub(crate) trait Rooms: Send + Sync + 'static {
    /// Adds a member whose queue is `queue`. Dropping the queue's sender (when the member is
    /// too slow to keep up) is how a member is told to leave.
    fn join(&self, room: &str, queue: mpsc::Sender<Message>) -> MemberId;
    /// Removes a member.
    fn leave(&self, room: &str, member: MemberId);
    /// Sends `message` to every member of `room` but `from`, never waiting: a member whose
    /// queue is full is dropped from the room.
    fn publish(&self, room: &str, from: MemberId, message: &Message);
}

/// Rooms held in this process.
#[derive(Debug, Default)]
pub(crate) struct MemoryRooms {
    rooms: Mutex<HashMap<String, HashMap<MemberId, mpsc::Sender<Message>>>>,
    next_id: AtomicU64,
}

impl MemoryRooms {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<MemberId, mpsc::Sender<Message>>>> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Rooms for MemoryRooms {
    fn join(&self, room: &str, queue: mpsc::Sender<Message>) -> MemberId {
        let id = MemberId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.lock()
            .entry(room.to_owned())
            .or_default()
            .insert(id, queue);
        id
    }

    fn leave(&self, room: &str, member: MemberId) {
        let mut rooms = self.lock();
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&member);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    fn publish(&self, room: &str, from: MemberId, message: &Message) {
        let mut rooms = self.lock();
        let Some(members) = rooms.get_mut(room) else {
            return;
        };
        // Messages carry `Bytes`: each member's copy shares the one payload.
        members.retain(|id, queue| {
            *id == from
                || match queue.try_send(message.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::info!(room, member = id.0, "member too slow, dropping it");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_skips_sender_and_drops_slow_members() {
        let rooms = MemoryRooms::default();
        let (a_tx, mut a_rx) = mpsc::channel(4);
        let (b_tx, mut b_rx) = mpsc::channel(1);
        let (c_tx, mut c_rx) = mpsc::channel(4);
        let a = rooms.join("r", a_tx);
        let _b = rooms.join("r", b_tx);
        let _c = rooms.join("other", c_tx);
        rooms.publish("r", a, &Message::text("one"));
        assert!(
            a_rx.try_recv().is_err(),
            "the sender does not get its own message"
        );
        assert_eq!(b_rx.try_recv().unwrap(), Message::text("one"));
        assert!(c_rx.try_recv().is_err(), "other rooms do not");
        rooms.publish("r", a, &Message::text("two"));
        rooms.publish("r", a, &Message::text("three"));
        // b's queue held one message; the second overflowed it and b was dropped.
        assert_eq!(b_rx.try_recv().unwrap(), Message::text("two"));
        assert!(matches!(
            b_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        rooms.leave("r", a);
        assert!(rooms.lock().get("r").is_none(), "empty rooms are removed");
    }
}
