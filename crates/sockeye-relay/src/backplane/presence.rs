//! Presence across nodes, without I/O: who is in a room on the other nodes, from the notices
//! they publish on the room's channel.
//!
//! Every node publishes, on a room's channel (kind 3 of the [wire](super::wire) format), JSON
//! notices about its own named members there:
//! - `{"op":"join","id":7,"name":"ann"}` and `{"op":"leave","id":7}` as they happen;
//! - `{"op":"state","members":[[7,"ann"],[9,"bob"]]}`, its whole list, every heartbeat (a third
//!   of the time to live) and in answer to a `sync`;
//! - `{"op":"sync"}` when it subscribes to the room: the others answer with their state.
//!
//! A node's entries in a room live for the time to live after its last notice: the members of
//! a node that died (or lost Redis) leave the lists of the others within it. What changes a
//! list becomes join and leave events for the members here; a remote member's id is
//! `NODE.ID` (the node's id in hex), so that it is unique among the lists of every node.

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

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::RemoteMember;

/// Other nodes tracked in one room at most; notices from more are ignored.
const MAX_NODES: usize = 1024;
/// Members of one other node in one room at most.
const MAX_MEMBERS: usize = 65_536;
/// The longest name kept, in characters (the relay's own limit).
const MAX_NAME: usize = 32;

/// A notice between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    Join(u64, String),
    Leave(u64),
    State(BTreeMap<u64, String>),
    Sync,
}

impl Notice {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let value = match self {
            Self::Join(id, name) => json!({ "op": "join", "id": id, "name": name }),
            Self::Leave(id) => json!({ "op": "leave", "id": id }),
            Self::State(members) => json!({
                "op": "state",
                "members": members.iter().map(|(id, name)| json!([id, name])).collect::<Vec<_>>(),
            }),
            Self::Sync => json!({ "op": "sync" }),
        };
        value.to_string().into_bytes()
    }

    /// `None` for anything that is not a notice.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        match value.get("op")?.as_str()? {
            "join" => Some(Self::Join(
                value.get("id")?.as_u64()?,
                clean(value.get("name")?.as_str()?),
            )),
            "leave" => Some(Self::Leave(value.get("id")?.as_u64()?)),
            "state" => {
                let mut members = BTreeMap::new();
                for entry in value.get("members")?.as_array()?.iter().take(MAX_MEMBERS) {
                    let id = entry.get(0)?.as_u64()?;
                    let name = entry.get(1)?.as_str()?;
                    members.insert(id, clean(name));
                }
                Some(Self::State(members))
            }
            "sync" => Some(Self::Sync),
            _ => None,
        }
    }
}

/// A name from another node, held to the relay's rules again.
fn clean(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect()
}

/// A change of a room's list, for the members here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) room: String,
    pub(crate) joined: bool,
    pub(crate) id: String,
    pub(crate) name: String,
}

struct Remote {
    members: BTreeMap<u64, String>,
    expires: Instant,
}

/// The named members here and on the other nodes, per room.
#[derive(Default)]
pub(crate) struct Presence {
    local: HashMap<String, BTreeMap<u64, String>>,
    remote: HashMap<String, HashMap<u64, Remote>>,
}

fn remote_id(node: u64, id: u64) -> String {
    format!("{node:016x}.{id}")
}

impl Presence {
    pub(crate) fn joined(&mut self, room: &str, id: u64, name: &str) {
        self.local
            .entry(room.to_owned())
            .or_default()
            .insert(id, name.to_owned());
    }

    pub(crate) fn left(&mut self, room: &str, id: u64) {
        if let Some(members) = self.local.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                self.local.remove(room);
            }
        }
    }

    /// This node's named members in `room`, as a state notice; `None` when it has none.
    pub(crate) fn state(&self, room: &str) -> Option<Notice> {
        self.local
            .get(room)
            .filter(|m| !m.is_empty())
            .map(|m| Notice::State(m.clone()))
    }

    /// The rooms with named members here.
    pub(crate) fn local_rooms(&self) -> Vec<String> {
        self.local.keys().cloned().collect()
    }

    /// The named members of `room` on the other nodes.
    pub(crate) fn remote_members(&self, room: &str) -> Vec<RemoteMember> {
        let Some(nodes) = self.remote.get(room) else {
            return Vec::new();
        };
        let mut out: Vec<RemoteMember> = nodes
            .iter()
            .flat_map(|(node, remote)| {
                remote.members.iter().map(|(id, name)| RemoteMember {
                    id: remote_id(*node, *id),
                    name: name.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// `room` has no members here any more: its lists are of no use.
    pub(crate) fn forget(&mut self, room: &str) {
        self.remote.remove(room);
    }

    /// Takes in a notice from `node` about `room`; returns the changes, and whether the node
    /// asks for this node's state.
    pub(crate) fn apply(
        &mut self,
        room: &str,
        node: u64,
        notice: Notice,
        expires: Instant,
    ) -> (Vec<Event>, bool) {
        if notice == Notice::Sync {
            return (Vec::new(), true);
        }
        let nodes = self.remote.entry(room.to_owned()).or_default();
        if !nodes.contains_key(&node) && nodes.len() >= MAX_NODES {
            return (Vec::new(), false);
        }
        let remote = nodes.entry(node).or_insert_with(|| Remote {
            members: BTreeMap::new(),
            expires,
        });
        remote.expires = expires;
        let event = |joined: bool, id: u64, name: String| Event {
            room: room.to_owned(),
            joined,
            id: remote_id(node, id),
            name,
        };
        let mut events = Vec::new();
        match notice {
            Notice::Join(id, name) => {
                if remote.members.len() < MAX_MEMBERS && remote.members.get(&id) != Some(&name) {
                    remote.members.insert(id, name.clone());
                    events.push(event(true, id, name));
                }
            }
            Notice::Leave(id) => {
                if let Some(name) = remote.members.remove(&id) {
                    events.push(event(false, id, name));
                }
            }
            Notice::State(members) => {
                for (id, name) in &remote.members {
                    if members.get(id) != Some(name) {
                        events.push(event(false, *id, name.clone()));
                    }
                }
                for (id, name) in &members {
                    if remote.members.get(id) != Some(name) {
                        events.push(event(true, *id, name.clone()));
                    }
                }
                remote.members = members;
            }
            Notice::Sync => {}
        }
        (events, false)
    }

    /// Forgets the nodes not heard from in time; their members leave.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for (room, nodes) in &mut self.remote {
            nodes.retain(|node, remote| {
                if remote.expires > now {
                    return true;
                }
                for (id, name) in &remote.members {
                    events.push(Event {
                        room: room.clone(),
                        joined: false,
                        id: remote_id(*node, *id),
                        name: name.clone(),
                    });
                }
                false
            });
        }
        self.remote.retain(|_, nodes| !nodes.is_empty());
        events
    }
}

/// How long a node's entries live without a notice: `ttl`, refreshed every `ttl / 3`.
pub(crate) fn heartbeat(ttl: Duration) -> Duration {
    ttl.checked_div(3).unwrap_or(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_junk_is_refused() {
        let mut members = BTreeMap::new();
        members.insert(3, "ann".to_owned());
        for notice in [
            Notice::Join(7, "bob".into()),
            Notice::Leave(7),
            Notice::State(members),
            Notice::Sync,
        ] {
            assert_eq!(Notice::parse(&notice.to_json()), Some(notice));
        }
        assert_eq!(Notice::parse(b"{\"op\":\"nope\"}"), None);
        assert_eq!(Notice::parse(b"not json"), None);
        assert_eq!(
            Notice::parse(b"{\"op\":\"join\",\"id\":1,\"name\":\"a\\u0007b\"}"),
            Some(Notice::Join(1, "ab".into()))
        );
    }

    #[test]
    fn lists_follow_notices_and_expire() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        let mut p = Presence::default();
        let (events, _) = p.apply("r", 1, Notice::Join(7, "ann".into()), later);
        assert_eq!(events.len(), 1);
        assert!(events[0].joined);
        assert_eq!(events[0].id, "0000000000000001.7");
        // The same join again (a state repeating it) is no news.
        let mut state = BTreeMap::new();
        state.insert(7, "ann".to_owned());
        state.insert(8, "bob".to_owned());
        let (events, _) = p.apply("r", 1, Notice::State(state), later);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "bob");
        assert_eq!(p.remote_members("r").len(), 2);
        let (_, sync) = p.apply("r", 2, Notice::Sync, later);
        assert!(sync);
        let (events, _) = p.apply("r", 1, Notice::Leave(7), later);
        assert_eq!((events[0].joined, events[0].name.as_str()), (false, "ann"));
        assert!(p.expire(now).is_empty());
        let events = p.expire(later);
        assert_eq!(events.len(), 1);
        assert!(!events[0].joined);
        assert!(p.remote_members("r").is_empty());
    }

    #[test]
    fn the_local_state_is_what_joined_and_did_not_leave() {
        let mut p = Presence::default();
        assert_eq!(p.state("r"), None);
        p.joined("r", 1, "ann");
        p.joined("r", 2, "bob");
        p.left("r", 1);
        let mut want = BTreeMap::new();
        want.insert(2, "bob".to_owned());
        assert_eq!(p.state("r"), Some(Notice::State(want)));
        p.left("r", 2);
        assert!(p.local_rooms().is_empty());
    }
}
