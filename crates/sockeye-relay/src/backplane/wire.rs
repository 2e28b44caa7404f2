//! The format of messages between nodes on Redis: one channel per room, and a small header
//! before each message so that a node can skip its own messages and anything it does not
//! understand.
//!
//! A room `NAME` is the channel `sockeye:room:NAME`. A message is, in order: the magic and
//! version `sky1` (4 bytes), the sending node's id (8 bytes, big-endian), the kind (1 byte: 1
//! text, 2 binary), then the payload.

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
use sockeye::Message;

/// The prefix of the rooms' channel names.
pub const CHANNEL_PREFIX: &str = "sockeye:room:";
/// The magic and version at the start of every message.
pub const MAGIC: [u8; 4] = *b"sky1";
/// The bytes before the payload: magic and version, node id, kind.
pub const HEADER_LEN: usize = 13;
const KIND_TEXT: u8 = 1;
const KIND_BINARY: u8 = 2;

/// The channel of `room`.
pub fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

/// The room of a channel; `None` for a channel that is not a room's.
pub fn room(channel: &str) -> Option<&str> {
    channel.strip_prefix(CHANNEL_PREFIX)
}

/// `message`, from `node`, as published; `None` for anything but text and binary.
pub fn encode(node: u64, message: &Message) -> Option<Bytes> {
    let (kind, data) = match message {
        Message::Text(text) => (KIND_TEXT, text.as_bytes()),
        Message::Binary(data) => (KIND_BINARY, &data[..]),
        _ => return None,
    };
    let mut payload = BytesMut::with_capacity(HEADER_LEN.saturating_add(data.len()));
    payload.put_slice(&MAGIC);
    payload.put_u64(node);
    payload.put_u8(kind);
    payload.put_slice(data);
    Some(payload.freeze())
}

/// A message published by another node; `None` for our own (`node`), and for anything else
/// (not from a sockeye relay, another version, malformed, or over `max_message` bytes).
pub fn decode(payload: &[u8], node: u64, max_message: usize) -> Option<Message> {
    let (header, data) = payload.split_first_chunk::<HEADER_LEN>()?;
    let (magic, rest) = header.split_first_chunk::<4>()?;
    let (from, kind) = rest.split_first_chunk::<8>()?;
    if *magic != MAGIC || u64::from_be_bytes(*from) == node || data.len() > max_message {
        return None;
    }
    match kind {
        [KIND_TEXT] => std::str::from_utf8(data).ok().map(Message::text),
        [KIND_BINARY] => Some(Message::binary(Bytes::copy_from_slice(data))),
        _ => None,
    }
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

    fn encoded(node: u64, kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&node.to_be_bytes());
        out.push(kind);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn messages_of_other_nodes_are_decoded_and_ours_skipped() {
        assert_eq!(
            decode(&encoded(7, KIND_TEXT, b"hi"), 1, 100),
            Some(Message::text("hi"))
        );
        assert_eq!(
            decode(&encoded(7, KIND_BINARY, &[0, 255]), 1, 100),
            Some(Message::binary(vec![0u8, 255]))
        );
        assert_eq!(decode(&encoded(1, KIND_TEXT, b"hi"), 1, 100), None);
    }

    #[test]
    fn encode_is_the_format_decode_reads() {
        assert_eq!(
            &encode(7, &Message::text("hi")).unwrap()[..],
            encoded(7, KIND_TEXT, b"hi")
        );
        assert_eq!(
            &encode(7, &Message::binary(vec![0u8, 255])).unwrap()[..],
            encoded(7, KIND_BINARY, &[0, 255])
        );
        assert_eq!(encode(7, &Message::ping("x")), None);
        assert_eq!(channel("lobby"), "sockeye:room:lobby");
        assert_eq!(room("sockeye:room:lobby"), Some("lobby"));
        assert_eq!(room("other"), None);
    }

    #[test]
    fn malformed_or_oversized_payloads_are_skipped() {
        assert_eq!(decode(b"short", 1, 100), None);
        let mut other_version = encoded(7, KIND_TEXT, b"hi");
        other_version[3] = b'2';
        assert_eq!(decode(&other_version, 1, 100), None);
        assert_eq!(decode(&encoded(7, 9, b"x"), 1, 100), None);
        assert_eq!(decode(&encoded(7, KIND_TEXT, b"\xff"), 1, 100), None);
        assert_eq!(decode(&encoded(7, KIND_BINARY, &[0; 101]), 1, 100), None);
        assert!(decode(&encoded(7, KIND_BINARY, &[0; 100]), 1, 100).is_some());
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(node_id(), node_id());
    }
}
