//! The rooms without I/O: who is in which room, who gets a message, who waits and who is
//! closed with which code.
//!
//! [`Rooms`] holds membership and how much each member has queued, never the messages
//! themselves: [`publish`](Rooms::publish) and [`deliver`](Rooms::deliver) return a [`Fanout`]
//! naming the members to hand the message to and the members to close, or, for a publish, that
//! the sender must wait. The caller (the async [`Relay`](crate::Relay), or another runtime)
//! moves the messages and reports with [`sent`](Rooms::sent) what a member has written out.
//!
//! The rules:
//! - A message goes to every member of the room but its sender, once, in the order the calls
//!   were made; so what one member sends reaches every other member in the order it was sent.
//! - Fair backpressure: when another member of the sender's room has as much queued as the
//!   pause threshold ([`QueueLimits::pause_at`]), the sender's message is not taken: the
//!   publish answers [`Fanout::wait`], and the sender waits (its reads pause) until that member
//!   has written its queue out ([`sent`](Rooms::sent) says so) or until its time is up. A burst
//!   from one sender therefore goes at the pace of the members, never faster than they write.
//! - A member is closed with 1008 (policy violation) only for being slow, never for being
//!   scheduled later than a sender: when it has held its room back (been at the pause
//!   threshold) for longer than [`QueueLimits::max_stall`], or when a message that cannot wait
//!   (from another node, from the application, a presence notice) would put its queue over
//!   the hard bound ([`QueueLimits::new`]). It is taken out of the room and closed after what
//!   it already had queued.
//! - A message from a member goes first to the backplane (the other nodes); when that refuses
//!   it (its queue is full), the message is dropped and the sender closed with 1013 (try again
//!   later): back-pressure reaches the sender, not the other members.
//! - Once [stopped](Rooms::stop) (the server is shutting down), the rooms take no more
//!   messages: members write out what they had queued and close.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// The member numbered `id` (as [`get`](Self::get) gave it), for a backplane that carried
    /// the number to another node and back.
    pub(crate) fn from_raw(id: u64) -> Self {
        Self(id)
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How much may wait for one member: the pause threshold at which its room's senders wait, how
/// long it may hold them back, and the hard bound past which it is closed (1008) at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    messages: usize,
    bytes: usize,
    pause_messages: Option<usize>,
    pause_bytes: Option<usize>,
    max_stall: Duration,
}

/// The default of [`QueueLimits::max_stall`].
pub const DEFAULT_MAX_STALL: Duration = Duration::from_secs(5);

impl Default for QueueLimits {
    /// 256 messages and 4 MiB at most, senders paused at half of that, and 5 s for a member
    /// to write out a full queue: a few seconds of a busy chat room for a member whose network
    /// stalls, and at most 4 MiB held for each member (plus the messages' shared bytes).
    fn default() -> Self {
        Self::new(256, 4 << 20)
    }
}

impl QueueLimits {
    /// At most `messages` messages (at least 1) and `bytes` payload bytes queued for a member:
    /// the hard bound. Senders pause at half of each ([`pause_at`](Self::pause_at)), and a
    /// member may hold them back for [`DEFAULT_MAX_STALL`].
    pub fn new(messages: usize, bytes: usize) -> Self {
        Self {
            messages: messages.max(1),
            bytes,
            pause_messages: None,
            pause_bytes: None,
            max_stall: DEFAULT_MAX_STALL,
        }
    }

    /// The pause threshold: when another member of a sender's room has `messages` messages or
    /// `bytes` payload bytes queued, the sender waits before its next message is taken. Kept at
    /// most the hard bound (and at least one message). Default: half the hard bound.
    #[must_use]
    pub fn pause_at(mut self, messages: usize, bytes: usize) -> Self {
        self.pause_messages = Some(messages);
        self.pause_bytes = Some(bytes);
        self
    }

    /// How long a member may stay at the pause threshold (holding its room's senders back)
    /// before it is closed with 1008 as too slow. Default [`DEFAULT_MAX_STALL`] (5 s).
    #[must_use]
    pub fn max_stall(mut self, stall: Duration) -> Self {
        self.max_stall = stall;
        self
    }

    /// Messages queued for one member, at most (the hard bound). Default 256.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Payload bytes queued for one member, at most (the hard bound). Default 4 MiB. Messages
    /// share their payload between members, so this bounds what a member keeps alive, not a
    /// copy.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages queued for a member at which its room's senders wait. Default: half of
    /// [`messages`](Self::messages), at least 1.
    pub fn pause_messages(&self) -> usize {
        self.pause_messages
            .unwrap_or(self.messages / 2)
            .clamp(1, self.messages)
    }

    /// Payload bytes queued for a member at which its room's senders wait. Default: half of
    /// [`bytes`](Self::bytes).
    pub fn pause_bytes(&self) -> usize {
        self.pause_bytes.unwrap_or(self.bytes / 2).min(self.bytes)
    }

    /// How long a member may hold its room back. Default 5 s.
    pub fn stall(&self) -> Duration {
        self.max_stall
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

/// The reason sent with 1008 to a member whose queue a message that cannot wait overflowed.
pub const TOO_SLOW: &str = "too slow: message queue overflowed";
/// The reason sent with 1008 to a member that held its room back for too long.
pub const STALLED: &str = "too slow: did not write out its queue in time";
/// The reason sent with 1013 to a sender the backplane could not take a message from.
pub const OVERLOADED: &str = "server overloaded: try again later";

/// What one message does to a room: who gets it, who is closed, or whether the sender waits.
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
    /// For a [`publish`](Rooms::publish): the room cannot take the message now. Nobody got it
    /// and the backplane was not offered it; the sender keeps it and publishes it again when
    /// [`sent`](Rooms::sent) reports room in its room, or at this instant at the latest (when a
    /// member that holds the room back is due to be closed).
    pub wait: Option<Instant>,
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
    room: Arc<str>,
    queued: usize,
    queued_bytes: usize,
    /// Since when the member has been at the pause threshold (holding its room back).
    full_since: Option<Instant>,
    /// When the backplane delivers: when each of its messages not yet back was taken.
    in_flight: VecDeque<Instant>,
}

#[derive(Debug, Default)]
struct Room {
    /// The members, in the order they joined.
    members: Vec<MemberId>,
    /// How many of them are at the pause threshold.
    full: usize,
}

/// Rooms and their members; see the module docs.
#[derive(Debug, Default)]
pub struct Rooms {
    limits: QueueLimits,
    by_room: HashMap<Arc<str>, Room>,
    members: HashMap<MemberId, Member>,
    next_id: u64,
    stopped: bool,
    /// The backplane hands every message back, the sender's node included.
    backplane_delivers: bool,
}

/// How a message that is not a member's own is offered to a room.
#[derive(Clone, Copy)]
enum Offer<'a> {
    /// A member's message, taken only when no other member is at the pause threshold.
    From(MemberId),
    /// From elsewhere, to the members `to` picks: it cannot wait.
    Elsewhere(&'a dyn Fn(MemberId) -> bool),
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

    /// The server is shutting down: from now on no message goes anywhere (members write out
    /// what they had queued before this, and close).
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// A member's message is not handed to the members here when it is published: the
    /// backplane orders the rooms' messages (it keeps their history and numbers them) and hands
    /// each back to every node, this one included, where it is delivered with
    /// [`deliver_to`](Self::deliver_to) to all but its sender. [`publish`](Self::publish) still
    /// decides whether the sender waits and whether the backplane took it; a sender also waits
    /// while as many of its own messages as the pause threshold are on their way back
    /// ([`came_back`](Self::came_back) counts them in), so that a burst goes at the pace of the
    /// backplane and the members, not into the backplane's queues at once.
    pub fn set_backplane_delivers(&mut self, yes: bool) {
        self.backplane_delivers = yes;
    }

    /// When the backplane delivers: one of `member`'s messages came back. Returns whether that
    /// took it below the pause threshold of its own messages in flight (it may publish again).
    pub fn came_back(&mut self, member: MemberId) -> bool {
        let pause = self.limits.pause_messages();
        let Some(m) = self.members.get_mut(&member) else {
            return false;
        };
        let was = m.in_flight.len();
        m.in_flight.pop_front();
        was >= pause && m.in_flight.len() < pause
    }

    /// Whether [`set_backplane_delivers`](Self::set_backplane_delivers) is on.
    pub fn backplane_delivers(&self) -> bool {
        self.backplane_delivers
    }

    /// How many more messages and payload bytes `member`'s queue may take under its hard
    /// bound (none for a member that is not in a room).
    pub fn room_left(&self, member: MemberId) -> (usize, usize) {
        self.members.get(&member).map_or((0, 0), |m| {
            (
                self.limits.messages.saturating_sub(m.queued),
                self.limits.bytes.saturating_sub(m.queued_bytes),
            )
        })
    }

    /// Counts `messages` messages of `bytes` payload bytes more in `member`'s queue, handed to
    /// it outside a fan-out (a replay from history within [`room_left`](Self::room_left), or
    /// the small id notice that follows a message): [`sent`](Self::sent) takes them back. At
    /// the pause threshold by that, the member holds its room back from `now`, as after a
    /// fan-out.
    pub fn queued(&mut self, member: MemberId, messages: usize, bytes: usize, now: Instant) {
        let limits = self.limits;
        let Some(m) = self.members.get_mut(&member) else {
            return;
        };
        m.queued = m.queued.saturating_add(messages);
        m.queued_bytes = m.queued_bytes.saturating_add(bytes);
        if m.full_since.is_none()
            && (m.queued >= limits.pause_messages() || m.queued_bytes >= limits.pause_bytes())
        {
            m.full_since = Some(now);
            if let Some(room) = self.by_room.get_mut(&m.room) {
                room.full += 1;
            }
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Adds a member to `room`.
    pub fn join(&mut self, room: &str) -> Joined {
        let member = MemberId(self.next_id);
        self.next_id += 1;
        let first = !self.by_room.contains_key(room);
        if first {
            self.by_room.insert(Arc::from(room), Room::default());
        }
        let name = match self.by_room.get_key_value(room) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(room),
        };
        if let Some(room) = self.by_room.get_mut(room) {
            room.members.push(member);
        }
        self.members.insert(
            member,
            Member {
                room: name,
                queued: 0,
                queued_bytes: 0,
                full_since: None,
                in_flight: VecDeque::new(),
            },
        );
        Joined { member, first }
    }

    /// Removes a member (a no-op for one already out); returns its room's name when that left
    /// the room empty here (its backplane subscription may go).
    pub fn leave(&mut self, member: MemberId) -> Option<String> {
        let gone = self.members.remove(&member)?;
        let room = self.by_room.get_mut(&gone.room)?;
        room.members.retain(|m| *m != member);
        if gone.full_since.is_some() {
            room.full = room.full.saturating_sub(1);
        }
        if room.members.is_empty() {
            self.by_room.remove(&gone.room);
            return Some(gone.room.to_string());
        }
        None
    }

    /// A message of `len` payload bytes sent by `from` at `now`. When another member of the
    /// room is at the pause threshold, the message is not taken: the result's
    /// [`wait`](Fanout::wait) says until when the sender waits at most (members that held the
    /// room back for too long are closed first, and may be all there was to wait for).
    /// Otherwise `backplane` is offered it (with the room's name), then the other members here
    /// get it; when `backplane` refuses, the message goes nowhere and the sender is closed with
    /// 1013. From a member that is no longer in a room, or once stopped, nothing happens.
    pub fn publish(
        &mut self,
        from: MemberId,
        len: usize,
        now: Instant,
        backplane: impl FnOnce(&str) -> Result<(), Overloaded>,
    ) -> Fanout {
        if self.stopped {
            return Fanout::default();
        }
        let Some(sender) = self.members.get(&from) else {
            return Fanout::default();
        };
        let room = Arc::clone(&sender.room);
        let mut fanout = Fanout::default();
        let sender_full = usize::from(sender.full_since.is_some());
        if self
            .by_room
            .get(&room)
            .is_some_and(|r| r.full > sender_full)
        {
            // Someone else holds the room back: close it if its time is up, else wait for it.
            fanout.wait = self.expire(&room, from, now, &mut fanout);
            if fanout.wait.is_some() {
                return fanout;
            }
        }
        if self.backplane_delivers {
            // Its own messages not back yet count as queued for the room: at the pause
            // threshold it waits for them (those older than the stall limit are given up on).
            let (stall, pause) = (self.limits.max_stall, self.limits.pause_messages());
            if let Some(sender) = self.members.get_mut(&from) {
                while sender
                    .in_flight
                    .front()
                    .is_some_and(|at| now >= at.checked_add(stall).unwrap_or(*at))
                {
                    sender.in_flight.pop_front();
                }
                if sender.in_flight.len() >= pause {
                    fanout.wait = sender.in_flight.front().map(|at| *at + stall);
                    return fanout;
                }
            }
        }
        if backplane(&room).is_err() {
            let emptied = self.leave(from);
            fanout.close.push(Close {
                member: from,
                code: CloseCode::TRY_AGAIN_LATER,
                reason: OVERLOADED,
            });
            fanout.emptied = fanout.emptied.or(emptied);
            return fanout;
        }
        if self.backplane_delivers {
            if let Some(sender) = self.members.get_mut(&from) {
                sender.in_flight.push_back(now);
            }
            return fanout;
        }
        self.fan_out(&room, Offer::From(from), len, now, fanout)
    }

    /// A message of `len` payload bytes for every member of `room` here, from elsewhere (another
    /// node, through the backplane, or the application). It cannot wait: a member it would put
    /// over the hard bound is closed.
    pub fn deliver(&mut self, room: &str, len: usize, now: Instant) -> Fanout {
        self.fan_out(
            room,
            Offer::Elsewhere(&|_| true),
            len,
            now,
            Fanout::default(),
        )
    }

    /// A message of `len` payload bytes for the members of `room` here that `to` picks (those
    /// that asked for presence notices, say), under the same queue limits as any message from
    /// elsewhere.
    pub fn deliver_to(
        &mut self,
        room: &str,
        len: usize,
        now: Instant,
        to: impl Fn(MemberId) -> bool,
    ) -> Fanout {
        self.fan_out(room, Offer::Elsewhere(&to), len, now, Fanout::default())
    }

    /// `member` has written out `messages` messages of `bytes` payload bytes from its queue.
    /// Returns whether it stopped holding its room back by that, leaving at most one member of
    /// the room that does (perhaps the waiting sender itself): senders waiting for the room may
    /// publish again. Told once per wait, not once per member, so a room of hundreds does not
    /// wake its senders hundreds of times.
    pub fn sent(&mut self, member: MemberId, messages: usize, bytes: usize) -> bool {
        let limits = self.limits;
        let Some(m) = self.members.get_mut(&member) else {
            return false;
        };
        m.queued = m.queued.saturating_sub(messages);
        m.queued_bytes = m.queued_bytes.saturating_sub(bytes);
        if m.full_since.is_some()
            && m.queued < limits.pause_messages()
            && m.queued_bytes < limits.pause_bytes()
        {
            m.full_since = None;
            if let Some(room) = self.by_room.get_mut(&m.room) {
                room.full = room.full.saturating_sub(1);
                return room.full <= 1;
            }
        }
        false
    }

    /// Whether a message from elsewhere for `room` should wait, for a caller that can (a
    /// backplane that may pause its reads): `Some(until)` while a member of the room here is at
    /// the pause threshold, `until` being when the first of them is due to be closed. `None`:
    /// deliver now (nobody holds the room back, or someone's time is up and the delivery will
    /// close it).
    pub fn held_back(&self, room: &str, now: Instant) -> Option<Instant> {
        if self.stopped || self.by_room.get(room).is_none_or(|r| r.full == 0) {
            return None;
        }
        let stall = self.limits.max_stall;
        let mut until: Option<Instant> = None;
        for id in self.members(room) {
            let Some(since) = self.members.get(id).and_then(|m| m.full_since) else {
                continue;
            };
            let due = since.checked_add(stall).unwrap_or(since);
            if now >= due {
                return None;
            }
            until = Some(until.map_or(due, |u| u.min(due)));
        }
        until
    }

    /// Whether `room` has members here.
    pub fn has(&self, room: &str) -> bool {
        self.by_room.contains_key(room)
    }

    /// The rooms with members here.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_room.keys().map(|name| &**name)
    }

    /// The room `member` is in, if it is in one.
    pub fn room_of(&self, member: MemberId) -> Option<&str> {
        self.members.get(&member).map(|m| &*m.room)
    }

    /// The room `member` is in, shared.
    pub(crate) fn room_name(&self, member: MemberId) -> Option<Arc<str>> {
        self.members.get(&member).map(|m| Arc::clone(&m.room))
    }

    /// The members of `room` here, in the order they joined.
    pub fn members(&self, room: &str) -> &[MemberId] {
        self.by_room.get(room).map_or(&[], |r| r.members.as_slice())
    }

    /// Closes the members of `room` (but `except`) that have held it back for longer than the
    /// limit; returns until when the others that hold it back may, if any do.
    fn expire(
        &mut self,
        room: &str,
        except: MemberId,
        now: Instant,
        fanout: &mut Fanout,
    ) -> Option<Instant> {
        let stall = self.limits.max_stall;
        let mut until: Option<Instant> = None;
        let mut expired = Vec::new();
        for id in self.members(room) {
            let Some(since) = self.members.get(id).and_then(|m| m.full_since) else {
                continue;
            };
            if *id == except {
                continue;
            }
            let due = since.checked_add(stall).unwrap_or(since);
            if now >= due {
                expired.push(*id);
            } else {
                until = Some(until.map_or(due, |u| u.min(due)));
            }
        }
        for id in expired {
            if let Some(emptied) = self.leave(id) {
                fanout.emptied = Some(emptied);
            }
            fanout.close.push(Close {
                member: id,
                code: CloseCode::POLICY_VIOLATION,
                reason: STALLED,
            });
        }
        until
    }

    fn fan_out(
        &mut self,
        room: &str,
        offer: Offer<'_>,
        len: usize,
        now: Instant,
        mut fanout: Fanout,
    ) -> Fanout {
        if self.stopped {
            return fanout;
        }
        let Some(entry) = self.by_room.get_mut(room) else {
            return fanout;
        };
        let limits = self.limits;
        let (pause_messages, pause_bytes) = (limits.pause_messages(), limits.pause_bytes());
        let members = &mut self.members;
        let full = &mut entry.full;
        fanout.deliver.reserve(entry.members.len());
        entry.members.retain(|id| {
            match offer {
                Offer::From(from) if from == *id => return true,
                Offer::Elsewhere(to) if !to(*id) => return true,
                _ => {}
            }
            let Some(member) = members.get_mut(id) else {
                return false;
            };
            let stalled = member
                .full_since
                .is_some_and(|since| now >= since.checked_add(limits.max_stall).unwrap_or(since));
            let over = member.queued >= limits.messages
                || member.queued_bytes.saturating_add(len) > limits.bytes;
            if stalled || over {
                if member.full_since.is_some() {
                    *full = full.saturating_sub(1);
                }
                members.remove(id);
                fanout.close.push(Close {
                    member: *id,
                    code: CloseCode::POLICY_VIOLATION,
                    reason: if stalled { STALLED } else { TOO_SLOW },
                });
                return false;
            }
            member.queued += 1;
            member.queued_bytes += len;
            if member.full_since.is_none()
                && (member.queued >= pause_messages || member.queued_bytes >= pause_bytes)
            {
                member.full_since = Some(now);
                *full += 1;
            }
            fanout.deliver.push(*id);
            true
        });
        if entry.members.is_empty() {
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
        now: Instant,
    }

    impl Harness {
        fn new(limits: QueueLimits) -> Self {
            Self {
                rooms: Rooms::new(limits),
                queues: HashMap::new(),
                closed: Vec::new(),
                now: Instant::now(),
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

        /// A member's message; returns whether it was taken (`false`: the sender waits).
        fn publish(&mut self, from: MemberId, message: u32, len: usize) -> bool {
            let fanout = self.rooms.publish(from, len, self.now, |_| Ok(()));
            let taken = fanout.wait.is_none();
            self.carry_out(fanout, message);
            taken
        }

        /// A message from elsewhere, which cannot wait.
        fn deliver(&mut self, room: &str, message: u32, len: usize) {
            let fanout = self.rooms.deliver(room, len, self.now);
            self.carry_out(fanout, message);
        }

        /// The member takes everything queued.
        fn drain(&mut self, member: MemberId, len: usize) -> Vec<u32> {
            let taken: Vec<u32> = self.queues.get_mut(&member).unwrap().drain(..).collect();
            let _ = self.rooms.sent(member, taken.len(), taken.len() * len);
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
        let fanout = h.rooms.deliver("r", 3, h.now);
        assert_eq!(fanout.deliver, [a, b]);
        assert_eq!(h.rooms.deliver("nobody-here", 3, h.now), Fanout::default());
    }

    #[test]
    fn a_slow_member_is_closed_with_1008_after_its_queue_and_leaves_the_room() {
        // Messages from elsewhere cannot wait: the one that would overflow a member's queue
        // (over the hard bound) closes it.
        let mut h = Harness::new(QueueLimits::new(2, 1 << 20));
        let slow = h.join("r");
        let quick = h.join("r");
        h.deliver("r", 1, 5);
        h.drain(quick, 5);
        h.deliver("r", 2, 5);
        h.drain(quick, 5);
        // The third message would be one too many for `slow`.
        h.deliver("r", 3, 5);
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
        assert_eq!(h.rooms.members("r"), [quick]);
        h.deliver("r", 4, 5);
        assert!(h.drain(slow, 5).is_empty(), "nothing more for it");
        // Leaving after being closed is harmless.
        assert_eq!(h.rooms.leave(slow), None);
    }

    #[test]
    fn the_byte_bound_counts_too_and_taking_gives_bytes_back() {
        let mut h = Harness::new(QueueLimits::new(100, 10));
        let b = h.join("r");
        h.deliver("r", 1, 6);
        assert_eq!(h.drain(b, 6), [1]);
        h.deliver("r", 2, 6);
        assert!(h.closed.is_empty());
        h.deliver("r", 3, 6);
        assert_eq!(h.closed.len(), 1, "12 bytes exceed the 10-byte bound");
        assert_eq!(h.closed[0].member, b);
    }

    #[test]
    fn a_sender_waits_while_another_member_is_at_the_pause_threshold() {
        // Hard bound 4, senders pause at 2.
        let mut h = Harness::new(QueueLimits::new(4, 1 << 20));
        let a = h.join("r");
        let b = h.join("r");
        let c = h.join("r");
        assert!(h.publish(a, 1, 5));
        assert!(h.publish(a, 2, 5));
        // b and c hold 2 each: the third message is not taken, nor offered to the backplane.
        let mut offered = false;
        let fanout = h.rooms.publish(a, 5, h.now, |_| {
            offered = true;
            Ok(())
        });
        assert!(!offered);
        assert!(fanout.deliver.is_empty() && fanout.close.is_empty());
        assert_eq!(
            fanout.wait,
            Some(h.now + QueueLimits::default().stall()),
            "at most until the first of them is due"
        );
        // b writes its queue out: that is news for the sender, but c still holds the room.
        assert_eq!(h.drain(b, 5), [1, 2]);
        assert!(!h.publish(a, 3, 5));
        assert_eq!(h.drain(c, 5), [1, 2]);
        assert!(h.publish(a, 3, 5));
        assert_eq!(h.drain(b, 5), [3]);
        assert_eq!(h.drain(c, 5), [3]);
        assert!(
            h.closed.is_empty(),
            "nobody closed for being scheduled late"
        );
    }

    #[test]
    fn sent_reports_when_a_member_stops_holding_its_room_back() {
        let mut h = Harness::new(QueueLimits::new(4, 1 << 20));
        let a = h.join("r");
        let b = h.join("r");
        assert!(h.publish(a, 1, 5));
        assert!(h.publish(a, 2, 5));
        assert!(!h.rooms.sent(b, 0, 0), "still at the threshold");
        assert!(h.rooms.sent(b, 1, 5), "below it now");
        assert!(!h.rooms.sent(b, 1, 5), "told once");
        // With several members holding the room back, only the last but one tells.
        let more: Vec<MemberId> = (0..3).map(|_| h.join("r")).collect();
        for i in 0..2 {
            assert!(h.publish(a, i, 5));
        }
        assert!(!h.rooms.sent(b, 3, 15), "three still hold the room");
        assert!(!h.rooms.sent(more[0], 2, 10), "two still hold the room");
        assert!(
            h.rooms.sent(more[1], 2, 10),
            "the last may be the sender itself"
        );
        assert!(h.rooms.sent(more[2], 2, 10), "nobody holds the room");
    }

    #[test]
    fn a_burst_from_one_sender_goes_at_the_members_pace_and_closes_nobody() {
        let mut h = Harness::new(QueueLimits::new(8, 1 << 20));
        let sender = h.join("r");
        let members: Vec<MemberId> = (0..20).map(|_| h.join("r")).collect();
        let mut got: HashMap<MemberId, Vec<u32>> = HashMap::new();
        let mut next = 0;
        let mut waits = 0;
        while next < 2000 {
            if h.publish(sender, next, 10) {
                next += 1;
                continue;
            }
            // The sender waits; the members, scheduled late, write out what they have.
            waits += 1;
            for m in &members {
                let taken = h.drain(*m, 10);
                got.entry(*m).or_default().extend(taken);
            }
        }
        for m in &members {
            let taken = h.drain(*m, 10);
            got.entry(*m).or_default().extend(taken);
        }
        assert!(h.closed.is_empty());
        assert!(waits > 0);
        let all: Vec<u32> = (0..2000).collect();
        for m in &members {
            assert_eq!(got[m], all, "everything, in order, at {m}");
        }
    }

    #[test]
    fn a_member_that_holds_the_room_back_past_its_stall_limit_is_closed_with_1008() {
        let stall = Duration::from_secs(1);
        let mut h = Harness::new(QueueLimits::new(4, 1 << 20).max_stall(stall));
        let a = h.join("r");
        let stuck = h.join("r");
        let quick = h.join("r");
        assert!(h.publish(a, 1, 5));
        assert!(h.publish(a, 2, 5));
        assert_eq!(h.drain(quick, 5), [1, 2]);
        let start = h.now;
        assert!(!h.publish(a, 3, 5), "stuck holds the room");
        h.now = start + stall / 2;
        assert!(!h.publish(a, 3, 5), "not yet due");
        assert!(h.closed.is_empty());
        h.now = start + stall;
        assert!(h.publish(a, 3, 5), "due: closed, and the message goes on");
        assert_eq!(
            h.closed,
            [Close {
                member: stuck,
                code: CloseCode::POLICY_VIOLATION,
                reason: STALLED
            }]
        );
        assert_eq!(h.drain(stuck, 5), [1, 2], "what it had still goes out");
        assert_eq!(h.drain(quick, 5), [3]);
        assert_eq!(h.rooms.members("r"), [a, quick]);
    }

    #[test]
    fn a_stalled_member_is_closed_by_a_message_from_elsewhere_too() {
        let stall = Duration::from_secs(1);
        let mut h = Harness::new(QueueLimits::new(4, 1 << 20).max_stall(stall));
        let stuck = h.join("r");
        h.deliver("r", 1, 5);
        h.deliver("r", 2, 5);
        h.deliver("r", 3, 5);
        assert!(
            h.closed.is_empty(),
            "past the pause threshold, within the hard bound"
        );
        h.now += stall;
        h.deliver("r", 4, 5);
        assert_eq!(h.closed.len(), 1);
        assert_eq!(h.closed[0].member, stuck);
        assert_eq!(h.closed[0].reason, STALLED);
    }

    #[test]
    fn a_sender_is_not_held_back_by_its_own_queue() {
        let mut h = Harness::new(QueueLimits::new(4, 1 << 20));
        let a = h.join("r");
        let b = h.join("r");
        assert!(h.publish(b, 1, 5));
        assert!(h.publish(b, 2, 5));
        // a holds the room back for b, not for itself.
        assert!(!h.publish(b, 3, 5));
        assert!(h.publish(a, 10, 5));
        assert_eq!(h.drain(b, 5), [10]);
        assert_eq!(h.drain(a, 5), [1, 2]);
    }

    #[test]
    fn messages_from_elsewhere_may_wait_while_a_member_holds_the_room_back() {
        let stall = Duration::from_secs(1);
        let mut h = Harness::new(QueueLimits::new(4, 1 << 20).max_stall(stall));
        let a = h.join("r");
        assert_eq!(h.rooms.held_back("r", h.now), None);
        h.deliver("r", 1, 5);
        h.deliver("r", 2, 5);
        assert_eq!(h.rooms.held_back("r", h.now), Some(h.now + stall));
        assert_eq!(h.drain(a, 5), [1, 2]);
        assert_eq!(h.rooms.held_back("r", h.now), None, "written out");
        h.deliver("r", 3, 5);
        h.deliver("r", 4, 5);
        h.now += stall;
        assert_eq!(
            h.rooms.held_back("r", h.now),
            None,
            "due: the next delivery closes it"
        );
        assert_eq!(h.rooms.held_back("elsewhere", h.now), None);
    }

    #[test]
    fn once_stopped_nothing_goes_anywhere() {
        let mut h = Harness::new(QueueLimits::default());
        let a = h.join("r");
        let b = h.join("r");
        assert!(h.publish(a, 1, 5));
        h.rooms.stop();
        assert!(h.rooms.is_stopped());
        assert_eq!(h.rooms.publish(a, 5, h.now, |_| Ok(())), Fanout::default());
        assert_eq!(h.rooms.deliver("r", 5, h.now), Fanout::default());
        assert_eq!(h.drain(b, 5), [1], "what was queued before stays");
    }

    #[test]
    fn a_sender_the_backplane_refuses_is_closed_with_1013_and_nobody_gets_it() {
        let mut h = Harness::new(QueueLimits::default());
        let a = h.join("r");
        let b = h.join("r");
        let mut offered = Vec::new();
        let fanout = h.rooms.publish(a, 4, h.now, |room| {
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
        assert_eq!(h.rooms.publish(a, 4, h.now, |_| Ok(())), Fanout::default());
    }

    #[test]
    fn first_join_and_last_leave_are_reported_for_the_backplane() {
        let now = Instant::now();
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
        assert_eq!(rooms.deliver("s", 1, now).deliver, [slow]);
        let fanout = rooms.deliver("s", 1, now);
        assert_eq!(fanout.close[0].member, slow);
        assert_eq!(fanout.emptied.as_deref(), Some("s"));
        assert_eq!(rooms.names().count(), 0);
    }

    #[test]
    fn when_the_backplane_delivers_a_publish_decides_only_waiting_and_taking() {
        let mut h = Harness::new(QueueLimits::new(4, 1 << 20));
        h.rooms.set_backplane_delivers(true);
        let a = h.join("r");
        let b = h.join("r");
        let mut offered = 0;
        let fanout = h.rooms.publish(a, 5, h.now, |_| {
            offered += 1;
            Ok(())
        });
        assert_eq!(offered, 1);
        assert!(
            fanout.deliver.is_empty(),
            "it comes back through the backplane"
        );
        // It comes back: everyone here but its sender.
        let fanout = h.rooms.deliver_to("r", 5, h.now, |m| m != a);
        assert_eq!(fanout.deliver, [b]);
        h.carry_out(fanout, 1);
        // Extra messages (a replay, id notices) count in the queue and the room left.
        assert_eq!(h.rooms.room_left(b), (3, (1 << 20) - 5));
        h.rooms.queued(b, 1, 10, h.now);
        assert_eq!(h.rooms.room_left(b), (2, (1 << 20) - 15));
        assert!(
            h.rooms.sent(b, 2, 15),
            "at the pause threshold until written out"
        );
        assert_eq!(h.rooms.room_left(b), (4, 1 << 20));
        assert_eq!(h.rooms.room_left(MemberId(99)), (0, 0));
        // A sender waits while the pause threshold's worth of its messages is on the way.
        assert!(h.publish(a, 2, 5));
        let fanout = h.rooms.publish(a, 5, h.now, |_| Ok(()));
        assert_eq!(fanout.wait, Some(h.now + QueueLimits::default().stall()));
        assert!(h.rooms.came_back(a), "one back: below the threshold");
        assert!(!h.rooms.came_back(a));
        assert!(h.publish(a, 3, 5));
        assert!(h.publish(a, 4, 5));
        // Those that never come back are given up on after the stall limit.
        assert!(!h.publish(a, 5, 5));
        h.now += QueueLimits::default().stall();
        assert!(h.publish(a, 5, 5));
    }

    #[test]
    fn deliver_to_reaches_only_the_members_picked_under_the_same_limits() {
        let now = Instant::now();
        let mut rooms = Rooms::new(QueueLimits::new(1, 1 << 20));
        let a = rooms.join("r").member;
        let b = rooms.join("r").member;
        let c = rooms.join("r").member;
        let fanout = rooms.deliver_to("r", 3, now, |m| m != b);
        assert_eq!(fanout.deliver, [a, c]);
        // The notice counts in the queues: a second one overflows a's and c's, not b's.
        let fanout = rooms.deliver_to("r", 3, now, |m| m != b);
        assert!(fanout.deliver.is_empty());
        let closed: Vec<MemberId> = fanout.close.iter().map(|c| c.member).collect();
        assert_eq!(closed, [a, c]);
        assert_eq!(rooms.members("r"), [b]);
    }
}
