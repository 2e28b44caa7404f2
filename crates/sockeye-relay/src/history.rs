//! History per room: what a member that comes back after a drop missed.
//!
//! With history on ([`RelayBuilder::history`](crate::RelayBuilder::history)), every message a
//! room carries gets an id ([`HistoryId`], `MS-SEQ`: the time in milliseconds it was taken and
//! a number within that millisecond, growing in the room's order) and is kept, within
//! [`HistoryLimits`]: in memory by the relay with the in-process backplane, in a Redis stream
//! per room (`XADD … MAXLEN ~`) with the Redis backplane, which then assigns the ids itself so
//! that every node hands out the same ones.
//!
//! A member that asks for ids ([`Since`]) is sent, after each room message, a small JSON text
//! (the [format](crate#history)) with its id; joining with [`Since::After`] the id of the last
//! message it saw, it first gets what came after that id, then the live messages, with no gap
//! and no message twice. Members that do not ask see exactly the room's messages.
//!
//! This module holds the rules without I/O: the ids, the in-memory store, and the merge of
//! what history gives with what arrived live meanwhile.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sockeye::Message;

/// The id of a message in its room's history: `MS-SEQ`, as Redis stream ids are. Ids grow in
/// the order the room's messages were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HistoryId {
    /// Milliseconds since the Unix epoch, when it was taken.
    pub ms: u64,
    /// Its number within that millisecond.
    pub seq: u64,
}

impl std::fmt::Display for HistoryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not a [`HistoryId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHistoryId;

impl std::fmt::Display for BadHistoryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a message id (MS-SEQ, two decimal numbers)")
    }
}

impl std::error::Error for BadHistoryId {}

impl std::str::FromStr for HistoryId {
    type Err = BadHistoryId;

    /// `MS-SEQ`, two decimal numbers of at most 20 digits each.
    fn from_str(s: &str) -> Result<Self, BadHistoryId> {
        let (ms, seq) = s.split_once('-').ok_or(BadHistoryId)?;
        let number = |n: &str| {
            if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadHistoryId);
            }
            n.parse::<u64>().map_err(|_| BadHistoryId)
        };
        Ok(Self {
            ms: number(ms)?,
            seq: number(seq)?,
        })
    }
}

/// What a member asks of history when it joins: ids from now on, or also what it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Ids from now on (a first visit): no replay.
    Now,
    /// What came after this id (the last message the member saw), then ids from now on.
    After(HistoryId),
}

/// How much history is kept per room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    messages: usize,
    age: Option<Duration>,
    bytes: usize,
    rooms: usize,
}

impl Default for HistoryLimits {
    /// The last 100 messages of each room, for at most an hour; in memory, at most 256 KiB per
    /// room and 1,024 rooms.
    fn default() -> Self {
        Self::new(100)
    }
}

impl HistoryLimits {
    /// The most messages kept per room (at least 1): the `MAXLEN ~` of the Redis stream
    /// (trimmed in whole nodes, so Redis may keep somewhat more), exact in memory.
    pub fn new(max_len: usize) -> Self {
        Self {
            messages: max_len.max(1),
            age: Some(Duration::from_secs(3600)),
            bytes: 256 << 10,
            rooms: 1024,
        }
    }

    /// How long a message is kept at most (`None`: as long as the length allows). With Redis,
    /// a room's stream also expires this long after its last message. Default 1 hour.
    #[must_use]
    pub fn max_age(mut self, age: Option<Duration>) -> Self {
        self.age = age;
        self
    }

    /// In memory: the most payload bytes kept per room (the oldest go first). Default 256 KiB.
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    /// In memory: the most rooms with history (the room whose last message is the oldest is
    /// forgotten first). Default 1,024.
    #[must_use]
    pub fn max_rooms(mut self, rooms: usize) -> Self {
        self.rooms = rooms.max(1);
        self
    }

    /// Messages kept per room, at most.
    pub fn length(&self) -> usize {
        self.messages
    }

    /// How long a message is kept, at most.
    pub fn age(&self) -> Option<Duration> {
        self.age
    }

    /// Payload bytes kept per room in memory, at most.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rooms with history in memory, at most.
    pub fn rooms(&self) -> usize {
        self.rooms
    }
}

/// What a room's history holds after an id: the messages, oldest first, and whether some
/// that came after the id are not there any more (trimmed, expired, or more than a member may
/// be sent at once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// The messages after the id, oldest first, with their ids.
    pub entries: Vec<(HistoryId, Message)>,
    /// Some messages after the id are missing.
    pub truncated: bool,
}

/// A read of a room's history by a [`Backplane`](crate::Backplane) that keeps it.
pub type HistoryRead = Pin<Box<dyn Future<Output = Replay> + Send + 'static>>;

/// The notice that tells a member the id of the message before it.
pub(crate) fn id_notice(id: HistoryId) -> String {
    format!(r#"{{"sockeye":"id","id":"{id}"}}"#)
}

/// The notice that tells a member that history could not give everything it missed.
pub(crate) fn truncated_notice() -> String {
    r#"{"sockeye":"history","event":"truncated"}"#.to_owned()
}

/// What a resuming member is sent, from the history read and what arrived live meanwhile.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan<T> {
    /// Tell it that some messages are missing.
    pub(crate) truncated: bool,
    /// From history, oldest first.
    pub(crate) replay: Vec<(HistoryId, Message)>,
    /// Live ones, in their order, after the replay.
    pub(crate) live: Vec<(HistoryId, T)>,
    /// Live ones dropped as already replayed.
    pub(crate) skipped: Vec<(HistoryId, T)>,
}

/// The most an id notice takes: `{"sockeye":"id","id":""}` and an id of two 20-digit numbers.
pub(crate) const ID_NOTICE_MAX: usize = 24 + 41;

/// Merges `replay` with the messages that arrived live (queued) while history was read: the
/// replay is cut to the newest that fit in `room` messages and `room_bytes` payload bytes
/// with their id notices (each replayed message is two in the member's queue) and the
/// truncated notice (the member's queue bound: never more at once), and the live ones
/// already replayed (an id not above the last one replayed) are dropped. Told as truncated
/// when history said so or when the cut dropped some.
pub(crate) fn plan<T>(
    replay: Replay,
    live: Vec<(HistoryId, T)>,
    room: usize,
    room_bytes: usize,
) -> Plan<T> {
    // One place for the truncated notice, two for each message and its id.
    let room_bytes = room_bytes.saturating_sub(truncated_notice().len());
    let room = room.saturating_sub(1) / 2;
    let Replay {
        mut entries,
        mut truncated,
    } = replay;
    let mut keep = 0;
    let mut bytes = 0usize;
    for (_, message) in entries.iter().rev() {
        let len = message.len().saturating_add(ID_NOTICE_MAX);
        if keep >= room || bytes.saturating_add(len) > room_bytes {
            break;
        }
        keep = keep.saturating_add(1);
        bytes = bytes.saturating_add(len);
    }
    let cut = entries.len().saturating_sub(keep);
    if cut > 0 {
        truncated = true;
        entries.drain(..cut);
    }
    let last = entries.last().map(|(id, _)| *id);
    let (skipped, live) = live
        .into_iter()
        .partition(|(id, _)| last.is_some_and(|last| *id <= last));
    Plan {
        truncated,
        replay: entries,
        live,
        skipped,
    }
}

/// The current time in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One room's messages in memory, oldest first.
#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<(HistoryId, Message)>,
    bytes: usize,
    /// Complete after this id: everything the room carried after it is in `entries` (what
    /// was dropped is not above it).
    floor: HistoryId,
}

/// The rooms' history in memory (the relay's, with a backplane that does not keep history:
/// its ids are this process's own, and mean nothing to another). Ids are unique
/// across the rooms of the store and grow with time, so an id of an earlier process (or of a
/// forgotten room) is older than the store's floor, and its replay is told as truncated.
#[derive(Debug)]
pub(crate) struct MemoryHistory {
    limits: HistoryLimits,
    rooms: HashMap<Arc<str>, Ring>,
    last: HistoryId,
    /// Every room is complete after this id: the store's start, raised to the newest id of a
    /// room it forgot.
    floor: HistoryId,
}

impl MemoryHistory {
    pub(crate) fn new(limits: HistoryLimits, now_ms: u64) -> Self {
        let start = HistoryId { ms: now_ms, seq: 0 };
        Self {
            limits,
            rooms: HashMap::new(),
            last: start,
            floor: start,
        }
    }

    /// Keeps `message` as `room`'s newest, taken at `now_ms`; returns its id.
    pub(crate) fn append(&mut self, room: &str, message: &Message, now_ms: u64) -> HistoryId {
        let id = if now_ms > self.last.ms {
            HistoryId { ms: now_ms, seq: 0 }
        } else {
            HistoryId {
                ms: self.last.ms,
                seq: self.last.seq.saturating_add(1),
            }
        };
        self.last = id;
        if !self.rooms.contains_key(room) && self.rooms.len() >= self.limits.rooms {
            self.forget_oldest_room();
        }
        let floor = self.floor;
        let ring = self.rooms.entry(Arc::from(room)).or_insert_with(|| Ring {
            floor,
            ..Ring::default()
        });
        ring.bytes = ring.bytes.saturating_add(message.len());
        ring.entries.push_back((id, message.clone()));
        let limits = self.limits;
        while ring.entries.len() > limits.messages || ring.bytes > limits.bytes {
            Self::drop_oldest(ring);
        }
        self.expire_ring(room, now_ms);
        id
    }

    fn drop_oldest(ring: &mut Ring) {
        if let Some((id, message)) = ring.entries.pop_front() {
            ring.bytes = ring.bytes.saturating_sub(message.len());
            ring.floor = ring.floor.max(id);
        }
    }

    fn expire_ring(&mut self, room: &str, now_ms: u64) {
        let Some(age) = self.limits.age else {
            return;
        };
        let oldest = now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        if let Some(ring) = self.rooms.get_mut(room) {
            while ring.entries.front().is_some_and(|(id, _)| id.ms < oldest) {
                Self::drop_oldest(ring);
            }
        }
    }

    fn forget_oldest_room(&mut self) {
        let oldest = self
            .rooms
            .iter()
            .min_by_key(|(_, ring)| ring.entries.back().map_or(ring.floor, |(id, _)| *id))
            .map(|(name, ring)| {
                (
                    Arc::clone(name),
                    ring.entries.back().map_or(ring.floor, |(id, _)| *id),
                )
            });
        if let Some((name, newest)) = oldest {
            self.rooms.remove(&name);
            self.floor = self.floor.max(newest);
        }
    }

    /// What `room` holds after `since`, at most `max` messages (the newest; truncated when
    /// there were more), as of `now_ms`.
    pub(crate) fn read(&mut self, room: &str, since: HistoryId, max: usize, now_ms: u64) -> Replay {
        self.expire_ring(room, now_ms);
        let Some(ring) = self.rooms.get(room) else {
            return Replay {
                entries: Vec::new(),
                truncated: since < self.floor,
            };
        };
        let after: Vec<(HistoryId, Message)> = ring
            .entries
            .iter()
            .filter(|(id, _)| *id > since)
            .cloned()
            .collect();
        let mut truncated = since < ring.floor;
        let cut = after.len().saturating_sub(max);
        truncated |= cut > 0;
        Replay {
            entries: after.into_iter().skip(cut).collect(),
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> HistoryId {
        HistoryId { ms, seq }
    }

    #[test]
    fn ids_are_ms_seq_and_order_by_both() {
        assert_eq!("1733-7".parse(), Ok(id(1733, 7)));
        assert_eq!(id(1733, 7).to_string(), "1733-7");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "+1-2",
            " 1-2",
            "1-99999999999999999999",
        ] {
            assert_eq!(bad.parse::<HistoryId>(), Err(BadHistoryId), "{bad:?}");
        }
        assert!(id(2, 0) > id(1, 99));
        assert!(id(1, 10) > id(1, 9));
    }

    #[test]
    fn the_store_numbers_in_order_and_replays_what_came_after() {
        let mut h = MemoryHistory::new(HistoryLimits::new(10), 1000);
        let a = h.append("r", &Message::text("a"), 1000);
        let b = h.append("r", &Message::text("b"), 1000);
        let other = h.append("s", &Message::text("x"), 999);
        let c = h.append("r", &Message::text("c"), 1005);
        // After the store's start (1000-0), where every room's history is complete.
        assert_eq!(
            (a, b, other, c),
            (id(1000, 1), id(1000, 2), id(1000, 3), id(1005, 0))
        );
        let replay = h.read("r", a, 10, 1005);
        assert_eq!(
            replay,
            Replay {
                entries: vec![(b, Message::text("b")), (c, Message::text("c"))],
                truncated: false
            }
        );
        assert!(h.read("r", c, 10, 1005).entries.is_empty());
        // A room that never spoke since the start: complete, nothing to give.
        assert_eq!(h.read("quiet", id(1000, 0), 10, 1005), Replay::default());
        // An id from before the start (an earlier process): truncated.
        assert!(h.read("quiet", id(999, 0), 10, 1005).truncated);
        assert!(h.read("r", id(999, 0), 10, 1005).truncated);
        // More than a member may take: the newest, truncated.
        let replay = h.read("r", id(1000, 0), 1, 1005);
        assert_eq!(replay.entries, [(c, Message::text("c"))]);
        assert!(replay.truncated);
    }

    #[test]
    fn the_store_is_bounded_and_says_what_it_dropped() {
        let mut h = MemoryHistory::new(HistoryLimits::new(3).max_rooms(2), 0);
        let ids: Vec<HistoryId> = (0..5)
            .map(|i| h.append("r", &Message::text(i.to_string()), 10 + i))
            .collect();
        let replay = h.read("r", ids[0], 10, 20);
        assert_eq!(replay.entries.len(), 3, "the last three");
        assert!(replay.truncated, "ids[1] was dropped");
        assert!(!h.read("r", ids[1], 10, 20).truncated);
        // A third room makes the store forget the one whose last message is the oldest.
        h.append("s", &Message::text("s"), 30);
        h.append("t", &Message::text("t"), 31);
        assert!(h.read("r", ids[3], 10, 31).truncated, "r was forgotten");
        assert!(
            !h.read("r", ids[4], 10, 31).truncated,
            "its last: nothing missed"
        );
        assert_eq!(h.read("s", id(30, 0), 10, 31), Replay::default());
        // Bytes and age bound it too.
        let mut h = MemoryHistory::new(
            HistoryLimits::new(100)
                .max_bytes(4)
                .max_age(Some(Duration::from_millis(100))),
            0,
        );
        let first = h.append("r", &Message::text("ab"), 1);
        h.append("r", &Message::text("cd"), 2);
        h.append("r", &Message::text("ef"), 3);
        let replay = h.read("r", HistoryId::default(), 10, 3);
        assert_eq!(replay.entries.len(), 2);
        assert!(replay.truncated, "the first was dropped");
        assert!(!h.read("r", first, 10, 3).truncated, "seen: nothing missed");
        let expired = h.read("r", id(2, 0), 10, 500);
        assert!(expired.truncated && expired.entries.is_empty(), "expired");
    }

    #[test]
    fn the_plan_replays_then_skips_live_copies_of_what_it_replayed() {
        let replay = Replay {
            entries: vec![
                (id(1, 0), Message::text("a")),
                (id(2, 0), Message::text("b")),
                (id(3, 0), Message::text("c")),
            ],
            truncated: false,
        };
        // Live while history was read: 3 (also in the replay) and 4.
        let live = vec![(id(3, 0), "c"), (id(4, 0), "d")];
        let plan = plan(replay.clone(), live.clone(), 10, 1000);
        // Three messages and their ids, and the truncated notice: 7 places in the queue.
        assert!(!plan.truncated);
        assert_eq!(plan.replay, replay.entries);
        assert_eq!(plan.live, [(id(4, 0), "d")]);
        assert_eq!(plan.skipped, [(id(3, 0), "c")]);
        // Room for two (and their ids, and the notice): the newest two, truncated; live ones
        // after them still skipped.
        let plan2 = plan_of(replay.clone(), live.clone(), 6, 1000);
        assert!(plan2.truncated);
        assert_eq!(plan2.replay.len(), 2);
        assert_eq!(plan2.replay[0].0, id(2, 0));
        assert_eq!(plan2.live, [(id(4, 0), "d")]);
        // The byte bound counts too, the id notices included.
        let one = truncated_notice().len() + 1 + ID_NOTICE_MAX;
        let plan3 = plan_of(replay, live.clone(), 10, one);
        assert!(plan3.truncated);
        assert_eq!(plan3.replay.len(), 1);
        // Nothing replayed: every live message goes.
        let plan4 = plan_of(Replay::default(), live.clone(), 10, 1000);
        assert_eq!(plan4.live, live);
        assert!(plan4.skipped.is_empty() && !plan4.truncated);
    }

    fn plan_of<T>(replay: Replay, live: Vec<(HistoryId, T)>, room: usize, bytes: usize) -> Plan<T> {
        plan(replay, live, room, bytes)
    }

    #[test]
    fn notices_are_json() {
        let v: serde_json::Value = serde_json::from_str(&id_notice(id(5, 1))).unwrap();
        assert_eq!(v["sockeye"], "id");
        assert_eq!(v["id"], "5-1");
        let v: serde_json::Value = serde_json::from_str(&truncated_notice()).unwrap();
        assert_eq!(v["event"], "truncated");
    }
}
