//! Backplanes: how the rooms of several processes become one.
//!
//! A [`Relay`](crate::Relay) delivers what its members send to its other members itself; a
//! [`Backplane`] carries the same messages to the other processes (nodes) sharing the rooms, and
//! brings theirs back through the [`Inbound`] handle it is given. [`Local`] is the in-process
//! backplane (no other nodes); `RedisBackplane` (feature `redis`, on by default) shares rooms
//! over Redis pub/sub.

#[cfg(feature = "redis")]
mod link;
#[cfg(feature = "redis")]
mod presence;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod stream;
pub mod wire;

use sockeye::Message;

use crate::core::MemberId;
use crate::history::{HistoryId, HistoryLimits, HistoryRead, Replay};

#[cfg(feature = "redis")]
pub use self::redis::{RedisBackplane, RedisBuilder, RedisError, RedisLimits};
pub use crate::relay::Inbound;

/// The backplane could not take a message (its queue is full, or it is gone): the sender is
/// closed with 1013 (try again later) rather than have the room wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

impl std::fmt::Display for Overloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the backplane's queue is full")
    }
}

impl std::error::Error for Overloaded {}

/// The way to the other nodes sharing the rooms.
///
/// The relay calls these methods while it holds its rooms' lock, so that the backplane sees
/// joins, leaves and messages in the order they happened: they must not wait (queue what takes
/// time for a task of the backplane's own) and must not call back into the relay.
pub trait Backplane: Send + Sync + 'static {
    /// Called once, by the relay this backplane is given to, with the way into it for messages
    /// from other nodes.
    fn attach(&self, inbound: Inbound);

    /// `room` has members here now (it had none): receive its messages from other nodes.
    fn subscribe(&self, room: &str);

    /// `room` has no members here any more.
    fn unsubscribe(&self, room: &str);

    /// Passes a message a member here sent to `room` on to the other nodes, without waiting.
    ///
    /// # Errors
    /// [`Overloaded`] when it cannot be taken now; the sender is then closed with 1013 and the
    /// message is not delivered here either.
    fn publish(&self, room: &str, message: &Message) -> Result<(), Overloaded>;

    /// A member with a display `name` joined `room` here: tell the other nodes (presence).
    /// Called under the relay's lock, like the rest. Default: nothing.
    fn member_joined(&self, room: &str, member: MemberId, name: &str) {
        let _ = (room, member, name);
    }

    /// A named member of `room` here left. Default: nothing.
    fn member_left(&self, room: &str, member: MemberId, name: &str) {
        let _ = (room, member, name);
    }

    /// The named members of `room` on the other nodes, as known now. Default: none.
    fn remote_members(&self, room: &str) -> Vec<RemoteMember> {
        let _ = room;
        Vec::new()
    }

    /// The relay keeps history ([`RelayBuilder::history`](crate::RelayBuilder::history)):
    /// returns `true` when this backplane keeps it itself, within `limits`. It then numbers
    /// the rooms' messages and hands every one back, with its id, to every node (this one
    /// included) through [`Inbound::deliver_stored`], and reads history with
    /// [`history`](Self::history); the relay does not hand a member's message to the members
    /// here when it is published. Called once, before [`attach`](Self::attach). Default
    /// `false`: the relay keeps history in memory.
    fn keep_history(&self, limits: HistoryLimits) -> bool {
        let _ = limits;
        false
    }

    /// As [`publish`](Self::publish), knowing the sender (`member`, here): a backplane that
    /// hands messages back to their own node tells it whom to skip. Default: `publish`.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    fn publish_from(
        &self,
        room: &str,
        member: MemberId,
        message: &Message,
    ) -> Result<(), Overloaded> {
        let _ = member;
        self.publish(room, message)
    }

    /// For a backplane that [keeps history](Self::keep_history): what `room` holds after
    /// `since`, at most the newest `max` messages and `max_bytes` payload bytes (truncated
    /// when there were more, or when some after `since` are gone). Not called under the
    /// relay's lock. Default: nothing.
    fn history(&self, room: &str, since: HistoryId, max: usize, max_bytes: usize) -> HistoryRead {
        let _ = (room, since, max, max_bytes);
        Box::pin(std::future::ready(Replay::default()))
    }
}

/// A named member of a room on another node, as presence lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMember {
    /// Its id in presence messages: `NODE.ID`, unique across the nodes (the ids of the members
    /// here are numbers).
    pub id: String,
    /// Its display name.
    pub name: String,
}

/// The in-process backplane: this process holds every member, there are no other nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Backplane for Local {
    fn attach(&self, _inbound: Inbound) {}

    fn subscribe(&self, _room: &str) {}

    fn unsubscribe(&self, _room: &str) {}

    fn publish(&self, _room: &str, _message: &Message) -> Result<(), Overloaded> {
        Ok(())
    }
}
