//! The rooms without I/O: who is in which room, who gets a message, who is closed with which
//! code.
//!
//! [`Rooms`] holds membership and how much each member has queued, never the messages
//! themselves: [`publish`](Rooms::publish) and [`deliver`](Rooms::deliver) return a [`Fanout`]
//! naming the members to hand the message to and the members to close. The caller (the async
//! [`Relay`](crate::Relay), or another runtime) moves the messages and reports with
//! [`sent`](Rooms::sent) what a member took off its queue.
//!
//! The rules:
//! - A message goes to every member of the room but its sender, once, in the order the calls
//!   were made; so what one member sends reaches every other member in the order it was sent.
//! - A member's queue is bounded in messages and in bytes ([`QueueLimits`]). A member the next
//!   message would put over either bound is too slow to keep up: it is taken out of the room
//!   and closed with 1008 (policy violation) after what it already had queued, rather than have
//!   the room wait for it or hold ever more for it.
//! - A message from a member goes first to the backplane (the other nodes); when that refuses
//!   it (its queue is full), the message is dropped and the sender closed with 1013 (try again
//!   later): back-pressure reaches the sender, not the other members.

use std::collections::HashMap;

use sockeye::CloseCode;

use crate::backplane::Overloaded;

/// A member's identity, unique within one [`Rooms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(u64);

impl MemberId {
    /// The number behind the identity (for logs).
    pub fn get(self) -> u64 {
        self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(id: u64) -> Self {
        Self(id)
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How much may wait for one member before it is closed as too slow (1008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    messages: usize,
    bytes: usize,
}

impl Default for QueueLimits {
    /// 256 messages and 4 MiB: a few seconds of a busy chat room for a member whose network
    /// stalls, and at most 4 MiB held for each member (plus the messages' shared bytes).
    fn default() -> Self {
        Self {
            messages: 256,
            bytes: 4 << 20,
        }
    }
}

impl QueueLimits {
    /// At most `messages` messages (at least 1) and `bytes` payload bytes queued for a member.
    pub fn new(messages: usize, bytes: usize) -> Self {
        Self {
            messages: messages.max(1),
            bytes,
        }
    }

    /// Messages queued for one member, at most. Default 256.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Payload bytes queued for one member, at most. Default 4 MiB. Messages share their
    /// payload between members, so this bounds what a member keeps alive, not a copy.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A member to close, with the code and reason to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Who.
    pub member: MemberId,
    /// The close code: 1008 for a member too slow for its room, 1013 for a sender whose message
    /// the backplane could not take.
    pub code: CloseCode,
    /// The close reason.
    pub reason: &'static str,
}

/// The reason sent with 1008 to a member that could not keep up.
pub const TOO_SLOW: &str = "too slow: message queue overflowed";
/// The reason sent with 1013 to a sender the backplane could not take a message from.
pub const OVERLOADED: &str = "server overloaded: try again later";

/// What one message does to a room: who gets it and who is closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "the deliveries and closes must be carried out"]
pub struct Fanout {
    /// The members to hand the message to, each once; their queues now count it.
    pub deliver: Vec<MemberId>,
    /// The members to close (after what they already had queued), and with which code. They
    /// are out of the room already.
    pub close: Vec<Close>,
    /// Closing them left the room without members here: its backplane subscription may go.
    pub emptied: Option<String>,
}

/// The result of [`Rooms::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The new member.
    pub member: MemberId,
    /// The room had no members here before: subscribe to it on the backplane.
    pub first: bool,
}

#[derive(Debug)]
struct Member {
    room: String,
    queued: usize,
    queued_bytes: usize,
}

/// Rooms and their members; see the module docs.
#[derive(Debug, Default)]
pub struct Rooms {
    limits: QueueLimits,
    /// Each room's members, in the order they joined.
    by_room: HashMap<String, Vec<MemberId>>,
    members: HashMap<MemberId, Member>,
    next_id: u64,
}

impl Rooms {
    /// No rooms yet; each member's queue bounded by `limits`.
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The queue limits.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Adds a member to `room`.
    pub fn join(&mut self, room: &str) -> Joined {
        let member = MemberId(self.next_id);
        self.next_id += 1;
        let members = self.by_room.entry(room.to_owned()).or_default();
        let first = members.is_empty();
        members.push(member);
        self.members.insert(
            member,
            Member {
                room: room.to_owned(),
                queued: 0,
                queued_bytes: 0,
            },
        );
        Joined { member, first }
    }

    /// Removes a member (a no-op for one already out); returns its room's name when that left
    /// the room empty here (its backplane subscription may go).
    pub fn leave(&mut self, member: MemberId) -> Option<String> {
        let gone = self.members.remove(&member)?;
        let members = self.by_room.get_mut(&gone.room)?;
        members.retain(|m| *m != member);
        if members.is_empty() {
            self.by_room.remove(&gone.room);
            return Some(gone.room);
        }
        None
    }

    /// A message of `len` payload bytes sent by `from`: `backplane` is offered it first (with
    /// the room's name), then the other members here get it. When `backplane` refuses, the
    /// message goes nowhere and the sender is closed with 1013. From a member that is no
    /// longer in a room, nothing happens.
    pub fn publish(
        &mut self,
        from: MemberId,
        len: usize,
        backplane: impl FnOnce(&str) -> Result<(), Overloaded>,
    ) -> Fanout {
        let Some(sender) = self.members.get(&from) else {
            return Fanout::default();
        };
        let room = sender.room.clone();
        if backplane(&room).is_err() {
            let emptied = self.leave(from);
            return Fanout {
                deliver: Vec::new(),
                close: vec![Close {
                    member: from,
                    code: CloseCode::TRY_AGAIN_LATER,
                    reason: OVERLOADED,
                }],
                emptied,
            };
        }
        self.fan_out(&room, Some(from), len, |_| true)
    }

    /// A message of `len` payload bytes for every member of `room` here, from elsewhere (another
    /// node, through the backplane, or the application).
    pub fn deliver(&mut self, room: &str, len: usize) -> Fanout {
        self.fan_out(room, None, len, |_| true)
    }

    /// A message of `len` payload bytes for the members of `room` here that `to` picks (those
    /// that asked for presence notices, say), under the same queue limits as any message.
    pub fn deliver_to(&mut self, room: &str, len: usize, to: impl Fn(MemberId) -> bool) -> Fanout {
        self.fan_out(room, None, len, to)
    }

    /// `member` took `messages` messages of `bytes` payload bytes off its queue.
    pub fn sent(&mut self, member: MemberId, messages: usize, bytes: usize) {
        if let Some(member) = self.members.get_mut(&member) {
            member.queued = member.queued.saturating_sub(messages);
            member.queued_bytes = member.queued_bytes.saturating_sub(bytes);
        }
    }

    /// Whether `room` has members here.
    pub fn has(&self, room: &str) -> bool {
        self.by_room.contains_key(room)
    }

    /// The rooms with members here.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_room.keys().map(String::as_str)
    }

    /// The room `member` is in, if it is in one.
    pub fn room_of(&self, member: MemberId) -> Option<&str> {
        self.members.get(&member).map(|m| m.room.as_str())
    }

    /// The members of `room` here, in the order they joined.
    pub fn members(&self, room: &str) -> &[MemberId] {
        self.by_room.get(room).map_or(&[], Vec::as_slice)
    }

    fn fan_out(
        &mut self,
        room: &str,
        except: Option<MemberId>,
        len: usize,
        to: impl Fn(MemberId) -> bool,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        let Some(ids) = self.by_room.get_mut(room) else {
            return fanout;
        };
        let limits = self.limits;
        let members = &mut self.members;
        ids.retain(|id| {
            if Some(*id) == except || !to(*id) {
                return true;
            }
            let Some(member) = members.get_mut(id) else {
                return false;
            };
            if member.queued >= limits.messages
                || member.queued_bytes.saturating_add(len) > limits.bytes
            {
                members.remove(id);
                fanout.close.push(Close {
                    member: *id,
                    code: CloseCode::POLICY_VIOLATION,
                    reason: TOO_SLOW,
                });
                return false;
            }
            member.queued += 1;
            member.queued_bytes += len;
            fanout.deliver.push(*id);
            true
        });
        if ids.is_empty() {
            self.by_room.remove(room);
            fanout.emptied = Some(room.to_owned());
        }
        fanout
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};

    use super::*;

    /// Runs rooms the way a driver does: each member's queue holds message numbers.
    struct Harness {
        rooms: Rooms,
        queues: HashMap<MemberId, VecDeque<u32>>,
        closed: Vec<Close>,
    }

    impl Harness {
        fn new(limits: QueueLimits) -> Self {
            Self {
                rooms: Rooms::new(limits),
                queues: HashMap::new(),
                closed: Vec::new(),
            }
        }

        fn join(&mut self, room: &str) -> MemberId {
            let joined = self.rooms.join(room);
            self.queues.insert(joined.member, VecDeque::new());
            joined.member
        }

        fn carry_out(&mut self, fanout: Fanout, message: u32) {
            for id in fanout.deliver {
                self.queues.get_mut(&id).unwrap().push_back(message);
            }
            self.closed.extend(fanout.close);
        }

        fn publish(&mut self, from: MemberId, message: u32, len: usize) {
            let fanout = self.rooms.publish(from, len, |_| Ok(()));
            self.carry_out(fanout, message);
        }

        /// The member takes everything queued.
        fn drain(&mut self, member: MemberId, len: usize) -> Vec<u32> {
            let taken: Vec<u32> = self.queues.get_mut(&member).unwrap().drain(..).collect();
            self.rooms.sent(member, taken.len(), taken.len() * len);
            taken
        }
    }

    #[test]
    fn every_other_member_gets_each_message_once_in_the_senders_order() {
        let mut h = Harness::new(QueueLimits::default());
        let a = h.join("r");
        let b = h.join("r");
        let c = h.join("r");
        let elsewhere = h.join("other");
        // Two senders interleaved: each one's messages stay in its order.
        for i in 0..50 {
            h.publish(a, i, 10);
            h.publish(b, 1000 + i, 10);
        }
        let from_a: Vec<u32> = (0..50).collect();
        let from_b: Vec<u32> = (1000..1050).collect();
        let got_c = h.drain(c, 10);
        assert_eq!(got_c.len(), 100, "each message once");
        assert_eq!(
            got_c
                .iter()
                .copied()
                .filter(|m| *m < 1000)
                .collect::<Vec<_>>(),
            from_a
        );
        assert_eq!(
            got_c
                .iter()
                .copied()
                .filter(|m| *m >= 1000)
                .collect::<Vec<_>>(),
            from_b
        );
        assert_eq!(h.drain(a, 10), from_b, "a sender does not get its own");
        assert_eq!(h.drain(b, 10), from_a);
        assert!(h.drain(elsewhere, 10).is_empty(), "other rooms get nothing");
        assert!(h.closed.is_empty());
    }

    #[test]
    fn messages_from_elsewhere_reach_every_member() {
        let mut h = Harness::new(QueueLimits::default());
        let a = h.join("r");
        let b = h.join("r");
        let fanout = h.rooms.deliver("r", 3);
        assert_eq!(fanout.deliver, [a, b]);
        assert_eq!(h.rooms.deliver("nobody-here", 3), Fanout::default());
    }

    #[test]
    fn a_slow_member_is_closed_with_1008_after_its_queue_and_leaves_the_room() {
        let mut h = Harness::new(QueueLimits::new(2, 1 << 20));
        let a = h.join("r");
        let slow = h.join("r");
        let quick = h.join("r");
        h.publish(a, 1, 5);
        h.drain(quick, 5);
        h.publish(a, 2, 5);
        h.drain(quick, 5);
        // The third message would be one too many for `slow`.
        h.publish(a, 3, 5);
        assert_eq!(
            h.closed,
            [Close {
                member: slow,
                code: CloseCode::POLICY_VIOLATION,
                reason: TOO_SLOW
            }]
        );
        assert_eq!(h.drain(slow, 5), [1, 2], "what was queued still goes out");
        assert_eq!(h.drain(quick, 5), [3]);
        assert_eq!(h.rooms.members("r"), [a, quick]);
        h.publish(a, 4, 5);
        assert!(h.drain(slow, 5).is_empty(), "nothing more for it");
        // Leaving after being closed is harmless.
        assert_eq!(h.rooms.leave(slow), None);
    }

    #[test]
    fn the_byte_bound_counts_too_and_taking_gives_bytes_back() {
        let mut h = Harness::new(QueueLimits::new(100, 10));
        let a = h.join("r");
        let b = h.join("r");
        h.publish(a, 1, 6);
        assert_eq!(h.drain(b, 6), [1]);
        h.publish(a, 2, 6);
        assert!(h.closed.is_empty());
        h.publish(a, 3, 6);
        assert_eq!(h.closed.len(), 1, "12 bytes exceed the 10-byte bound");
        assert_eq!(h.closed[0].member, b);
    }

    #[test]
    fn a_sender_the_backplane_refuses_is_closed_with_1013_and_nobody_gets_it() {
        let mut h = Harness::new(QueueLimits::default());
        let a = h.join("r");
        let b = h.join("r");
        let mut offered = Vec::new();
        let fanout = h.rooms.publish(a, 4, |room| {
            offered.push(room.to_owned());
            Err(Overloaded)
        });
        assert_eq!(offered, ["r"]);
        assert!(fanout.deliver.is_empty());
        assert_eq!(
            fanout.close,
            [Close {
                member: a,
                code: CloseCode::TRY_AGAIN_LATER,
                reason: OVERLOADED
            }]
        );
        assert_eq!(h.rooms.members("r"), [b]);
        // Later messages of the closed sender go nowhere.
        assert_eq!(h.rooms.publish(a, 4, |_| Ok(())), Fanout::default());
    }

    #[test]
    fn first_join_and_last_leave_are_reported_for_the_backplane() {
        let mut rooms = Rooms::new(QueueLimits::default());
        let a = rooms.join("r");
        assert!(a.first);
        let b = rooms.join("r");
        assert!(!b.first);
        assert_eq!(rooms.leave(a.member), None);
        assert_eq!(rooms.leave(b.member), Some("r".to_owned()));
        assert!(!rooms.has("r"));
        // A room emptied by closing its last, slow member is reported too.
        let mut rooms = Rooms::new(QueueLimits::new(1, 1 << 20));
        let slow = rooms.join("s").member;
        assert_eq!(rooms.deliver("s", 1).deliver, [slow]);
        let fanout = rooms.deliver("s", 1);
        assert_eq!(fanout.close[0].member, slow);
        assert_eq!(fanout.emptied.as_deref(), Some("s"));
        assert_eq!(rooms.names().count(), 0);
    }

    #[test]
    fn deliver_to_reaches_only_the_members_picked_under_the_same_limits() {
        let mut rooms = Rooms::new(QueueLimits::new(1, 1 << 20));
        let a = rooms.join("r").member;
        let b = rooms.join("r").member;
        let c = rooms.join("r").member;
        let fanout = rooms.deliver_to("r", 3, |m| m != b);
        assert_eq!(fanout.deliver, [a, c]);
        // The notice counts in the queues: a second one overflows a's and c's, not b's.
        let fanout = rooms.deliver_to("r", 3, |m| m != b);
        assert!(fanout.deliver.is_empty());
        let closed: Vec<MemberId> = fanout.close.iter().map(|c| c.member).collect();
        assert_eq!(closed, [a, c]);
        assert_eq!(rooms.members("r"), [b]);
    }
}
