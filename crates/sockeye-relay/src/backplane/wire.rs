//! The format of messages between nodes on Redis: one channel per room, and a small header
//! before each message so that a node can skip its own messages, the ones it has seen already,
//! and anything it does not understand.
//!
//! A room `NAME` is the channel `PREFIX:room:NAME` (the prefix is `sockeye` unless configured).
//! A message is, in order: the magic and version `sky2` (4 bytes), the sending node's id (8
//! bytes, big-endian), the sending node's sequence number (4 bytes, big-endian; it grows by one,
//! wrapping, with every message the node publishes, on any channel), the kind (1 byte: 1 text, 2 binary,
//! 3 presence, 4 stored), then the payload. A presence payload is JSON (see the backplane's presence).
//!
//! With [history](crate::history), a room's messages are *stored* (kind 4): Redis numbers each
//! one as it adds it to the room's stream, and the same script publishes it with its id, so
//! every node hands out the same id, and every node takes the message from the channel, its
//! sender's node included (which skips the sender). The payload of kind 4 is: the id's length
//! (1 byte; 0 for a message that could not be kept), the id (ASCII `MS-SEQ`), then the *body*
//! that the stream keeps (field `m`): the sending member's number on its node (8 bytes,
//! big-endian; all ones for a message the application published), the message's kind (1 text,
//! 2 binary) and its payload. Nodes that share rooms with history must all know kind 4: an
//! older node skips it.
//!
//! The sequence number lets a node publish again what it is not sure Redis took (a link lost
//! mid-pipeline) without the others seeing it twice: a node drops what comes from a node with a
//! sequence number not above the last it saw from it.

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

use std::hash::{BuildHasher, Hasher};

use bytes::{BufMut, Bytes, BytesMut};
use sockeye::{Message, Utf8Bytes};

use crate::history::HistoryId;

/// The default prefix of the channel names.
pub const DEFAULT_PREFIX: &str = "sockeye";
/// The prefix of the rooms' channel names with the default prefix.
pub const CHANNEL_PREFIX: &str = "sockeye:room:";
/// The magic and version at the start of every message.
pub const MAGIC: [u8; 4] = *b"sky2";
/// The bytes before the payload: magic and version, node id, sequence number, kind.
pub const HEADER_LEN: usize = 17;
const KIND_TEXT: u8 = 1;
const KIND_BINARY: u8 = 2;
const KIND_PRESENCE: u8 = 3;
const KIND_STORED: u8 = 4;
/// The member number of a stored message that no member sent (the application published it).
pub const NO_MEMBER: u64 = u64::MAX;
/// The longest prefix.
pub const MAX_PREFIX: usize = 64;

/// What a message on a room's channel carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A message for the room's members.
    Message(Message),
    /// A presence notice (JSON) for the backplane.
    Presence(Bytes),
    /// A message of the room's history, numbered by Redis.
    Stored {
        /// Its id (`None`: it could not be kept).
        id: Option<HistoryId>,
        /// The member that sent it, on its node ([`NO_MEMBER`]: none).
        member: u64,
        /// The message.
        message: Message,
    },
}

/// A message from another node, as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The node that published it.
    pub node: u64,
    /// Its sequence number there.
    pub seq: u32,
    /// What it carries.
    pub payload: Payload,
}

/// Whether `prefix` can name channels: 1 to 64 bytes of visible ASCII, no `{` or `}` (they
/// would pick a Redis Cluster hash slot).
pub fn valid_prefix(prefix: &str) -> bool {
    (1..=MAX_PREFIX).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
}

/// The channel of `room`, with the default prefix.
pub fn channel(room: &str) -> String {
    channel_in(DEFAULT_PREFIX, room)
}

/// The channel of `room` under `prefix`.
pub fn channel_in(prefix: &str, room: &str) -> String {
    format!("{prefix}:room:{room}")
}

/// The room of a channel with the default prefix; `None` for a channel that is not a room's.
pub fn room(channel: &str) -> Option<&str> {
    room_in(DEFAULT_PREFIX, channel)
}

/// The room of a channel under `prefix`; `None` for a channel that is not a room's.
pub fn room_in<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
    channel.strip_prefix(prefix)?.strip_prefix(":room:")
}

/// `message`, from `node` with sequence number `seq`, as published; `None` for anything but
/// text and binary.
pub fn encode(node: u64, seq: u32, message: &Message) -> Option<Bytes> {
    let (kind, data) = match message {
        Message::Text(text) => (KIND_TEXT, text.as_bytes()),
        Message::Binary(data) => (KIND_BINARY, &data[..]),
        _ => return None,
    };
    Some(frame(node, seq, kind, data))
}

/// A presence notice (`json`) from `node`, as published.
pub fn encode_presence(node: u64, seq: u32, json: &[u8]) -> Bytes {
    frame(node, seq, KIND_PRESENCE, json)
}

/// The header of a stored message from `node` with sequence number `seq` (the script that
/// stores it adds the id and the body).
pub fn stored_header(node: u64, seq: u32) -> Bytes {
    frame(node, seq, KIND_STORED, &[])
}

/// The body of a stored message (what the stream keeps): `member`, the message's kind, its
/// payload; `None` for anything but text and binary.
pub fn stored_body(member: u64, message: &Message) -> Option<Bytes> {
    let (kind, data) = match message {
        Message::Text(text) => (KIND_TEXT, text.as_bytes()),
        Message::Binary(data) => (KIND_BINARY, &data[..]),
        _ => return None,
    };
    let mut body = BytesMut::with_capacity(data.len().saturating_add(9));
    body.put_u64(member);
    body.put_u8(kind);
    body.put_slice(data);
    Some(body.freeze())
}

/// A stored message as published: what the script makes of [`stored_header`], the id Redis
/// gave it, and [`stored_body`].
pub fn encode_stored(node: u64, seq: u32, id: Option<&str>, body: &[u8]) -> Bytes {
    let id = id.unwrap_or("");
    let mut payload = BytesMut::with_capacity(
        HEADER_LEN
            .saturating_add(1)
            .saturating_add(id.len())
            .saturating_add(body.len()),
    );
    payload.put_slice(&stored_header(node, seq));
    payload.put_u8(u8::try_from(id.len()).unwrap_or(0));
    if u8::try_from(id.len()).is_ok() {
        payload.put_slice(id.as_bytes());
    }
    payload.put_slice(body);
    payload.freeze()
}

/// A body as the stream keeps it: the member and the message; `None` when malformed or over
/// `max_message` bytes.
pub fn decode_stored_body(body: &Bytes, max_message: usize) -> Option<(u64, Message)> {
    let (member, rest) = body.split_first_chunk::<8>()?;
    let (kind, data) = rest.split_first()?;
    if data.len() > max_message {
        return None;
    }
    let data = body.slice(9..);
    let message = match *kind {
        KIND_TEXT => Message::Text(Utf8Bytes::try_from(data).ok()?),
        KIND_BINARY => Message::Binary(data),
        _ => return None,
    };
    Some((u64::from_be_bytes(*member), message))
}

fn frame(node: u64, seq: u32, kind: u8, data: &[u8]) -> Bytes {
    let mut payload = BytesMut::with_capacity(HEADER_LEN.saturating_add(data.len()));
    payload.put_slice(&MAGIC);
    payload.put_u64(node);
    payload.put_u32(seq);
    payload.put_u8(kind);
    payload.put_slice(data);
    payload.freeze()
}

/// A message published by another node; `None` for our own (`node`) but stored ones (which
/// every node delivers, its sender's too), and for anything else (not from a sockeye relay,
/// another version, malformed, or over `max_message` bytes).
pub fn decode(payload: &[u8], node: u64, max_message: usize) -> Option<Decoded> {
    decode_bytes(&Bytes::copy_from_slice(payload), node, max_message)
}

/// As [`decode`], keeping the message's bytes where they are (no copy).
pub fn decode_bytes(payload: &Bytes, node: u64, max_message: usize) -> Option<Decoded> {
    let (header, data) = payload.split_first_chunk::<HEADER_LEN>()?;
    let (magic, rest) = header.split_first_chunk::<4>()?;
    let (from, rest) = rest.split_first_chunk::<8>()?;
    let (seq, kind) = rest.split_first_chunk::<4>()?;
    let from = u64::from_be_bytes(*from);
    let kind = kind.first().copied();
    if *magic != MAGIC || (from == node && kind != Some(KIND_STORED)) {
        return None;
    }
    let seq = u32::from_be_bytes(*seq);
    let payload = match kind {
        Some(KIND_STORED) => {
            let (id_len, rest) = data.split_first()?;
            let id = rest.get(..usize::from(*id_len))?;
            let id = if id.is_empty() {
                None
            } else {
                Some(std::str::from_utf8(id).ok()?.parse().ok()?)
            };
            let at = HEADER_LEN
                .checked_add(1)?
                .checked_add(usize::from(*id_len))?;
            let (member, message) = decode_stored_body(&payload.slice(at..), max_message)?;
            Payload::Stored {
                id,
                member,
                message,
            }
        }
        _ if data.len() > max_message => return None,
        Some(KIND_TEXT) => Payload::Message(Message::Text(
            Utf8Bytes::try_from(payload.slice(HEADER_LEN..)).ok()?,
        )),
        Some(KIND_BINARY) => Payload::Message(Message::Binary(payload.slice(HEADER_LEN..))),
        Some(KIND_PRESENCE) => Payload::Presence(payload.slice(HEADER_LEN..)),
        _ => return None,
    };
    Some(Decoded {
        node: from,
        seq,
        payload,
    })
}

/// A node id, different for every process (std's random hasher keys, the pid and the time).
pub fn node_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(node: u64, seq: u32, kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&node.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.push(kind);
        out.extend_from_slice(data);
        out
    }

    fn message(decoded: Option<Decoded>) -> Option<Message> {
        match decoded?.payload {
            Payload::Message(m) => Some(m),
            Payload::Presence(_) | Payload::Stored { .. } => None,
        }
    }

    #[test]
    fn stored_messages_carry_their_id_and_sender_and_reach_their_own_node() {
        let body = stored_body(5, &Message::text("hi")).unwrap();
        let mut expected = 5u64.to_be_bytes().to_vec();
        expected.extend_from_slice(&[KIND_TEXT, b'h', b'i']);
        assert_eq!(&body[..], expected);
        let payload = encode_stored(7, 3, Some("1733-2"), &body);
        let mut wire = encoded(7, 3, KIND_STORED, &[6]);
        wire.extend_from_slice(b"1733-2");
        wire.extend_from_slice(&expected);
        assert_eq!(&payload[..], wire);
        // Its own node takes it too.
        let decoded = decode(&payload, 7, 100).unwrap();
        assert_eq!(
            decoded.payload,
            Payload::Stored {
                id: Some(HistoryId { ms: 1733, seq: 2 }),
                member: 5,
                message: Message::text("hi"),
            }
        );
        let unkept = encode_stored(
            7,
            4,
            None,
            &stored_body(NO_MEMBER, &Message::binary(vec![1u8])).unwrap(),
        );
        let Payload::Stored {
            id,
            member,
            message,
        } = decode(&unkept, 1, 100).unwrap().payload
        else {
            panic!("stored");
        };
        assert_eq!(
            (id, member, message),
            (None, NO_MEMBER, Message::binary(vec![1u8]))
        );
        // Malformed: a bad id, a short body, an oversized message.
        let mut bad = encoded(7, 3, KIND_STORED, &[3]);
        bad.extend_from_slice(b"x-1");
        bad.extend_from_slice(&expected);
        assert_eq!(decode(&bad, 1, 100), None);
        assert_eq!(
            decode(&encoded(7, 3, KIND_STORED, &[0, 1, 2]), 1, 100),
            None
        );
        assert_eq!(decode(&payload, 1, 1), None);
        assert_eq!(decode(&encoded(7, 3, KIND_STORED, &[40]), 1, 100), None);
    }

    #[test]
    fn messages_of_other_nodes_are_decoded_and_ours_skipped() {
        assert_eq!(
            message(decode(&encoded(7, 1, KIND_TEXT, b"hi"), 1, 100)),
            Some(Message::text("hi"))
        );
        assert_eq!(
            message(decode(&encoded(7, 2, KIND_BINARY, &[0, 255]), 1, 100)),
            Some(Message::binary(vec![0u8, 255]))
        );
        assert_eq!(decode(&encoded(1, 3, KIND_TEXT, b"hi"), 1, 100), None);
        let decoded = decode(&encoded(7, 9, KIND_PRESENCE, b"{}"), 1, 100).unwrap();
        assert_eq!((decoded.node, decoded.seq), (7, 9));
        assert_eq!(
            decoded.payload,
            Payload::Presence(Bytes::from_static(b"{}"))
        );
    }

    #[test]
    fn encode_is_the_format_decode_reads() {
        assert_eq!(
            &encode(7, 5, &Message::text("hi")).unwrap()[..],
            encoded(7, 5, KIND_TEXT, b"hi")
        );
        assert_eq!(
            &encode(7, 6, &Message::binary(vec![0u8, 255])).unwrap()[..],
            encoded(7, 6, KIND_BINARY, &[0, 255])
        );
        assert_eq!(
            &encode_presence(7, 8, b"{}")[..],
            encoded(7, 8, KIND_PRESENCE, b"{}")
        );
        assert_eq!(encode(7, 1, &Message::ping("x")), None);
        assert_eq!(channel("lobby"), "sockeye:room:lobby");
        assert_eq!(room("sockeye:room:lobby"), Some("lobby"));
        assert_eq!(room("other"), None);
        assert_eq!(channel_in("app1", "lobby"), "app1:room:lobby");
        assert_eq!(room_in("app1", "app1:room:lobby"), Some("lobby"));
        assert_eq!(room_in("app1", "sockeye:room:lobby"), None);
        assert_eq!(room_in("app", "app1:room:lobby"), None);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("sockeye"));
        assert!(valid_prefix("app-1.staging"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("a b"));
        assert!(!valid_prefix("{tag}"));
        assert!(!valid_prefix(&"x".repeat(MAX_PREFIX + 1)));
    }

    #[test]
    fn malformed_or_oversized_payloads_are_skipped() {
        assert_eq!(decode(b"short", 1, 100), None);
        let mut other_version = encoded(7, 1, KIND_TEXT, b"hi");
        other_version[3] = b'1';
        assert_eq!(decode(&other_version, 1, 100), None);
        assert_eq!(decode(&encoded(7, 1, 9, b"x"), 1, 100), None);
        assert_eq!(decode(&encoded(7, 1, KIND_TEXT, b"\xff"), 1, 100), None);
        assert_eq!(decode(&encoded(7, 1, KIND_BINARY, &[0; 101]), 1, 100), None);
        assert!(decode(&encoded(7, 1, KIND_BINARY, &[0; 100]), 1, 100).is_some());
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(node_id(), node_id());
    }
}
