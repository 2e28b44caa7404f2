//! History on Redis: one stream per room, written and published by one script so that Redis
//! numbers each message once and every node hands out the same id.
//!
//! The stream of the room whose channel is `CHANNEL` is `{CHANNEL}:history` (or
//! `CHANNEL:history` when the channel has a hash tag of its own), and the last sequence number
//! of each node there is kept in the hash `{CHANNEL}:seqs`: on a Redis Cluster, both live in the
//! channel's hash slot, on the shard that publishes it. The script ([`STORE`]):
//! - drops a message whose node's sequence number it has seen in this room already (published
//!   again after a lost link), publishing the last one again with the id it was given;
//! - else adds the body to the stream (`XADD … MAXLEN ~ N`, and `XTRIM … MINID ~` with a
//!   maximum age, which is also the stream's expiry), and publishes the header, the id and
//!   the body ([wire](super::wire) kind 4) on the room's channel.

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

use std::time::Duration;

use bytes::Bytes;
use redis::Value;

use super::link::{Publisher, timed};
use super::wire;
use crate::history::{HistoryId, Replay};

/// Stores and publishes a message. KEYS: stream, seqs. ARGV: the publish command, the channel,
/// the maximum length, the header, the body, the node, its sequence number, the maximum age
/// in ms (0: none). Returns how many subscribers the publish reached.
pub(super) const STORE: &str = r"
local seq = tonumber(ARGV[7])
local last = redis.call('HGET', KEYS[2], ARGV[6])
if last then
  local at = string.find(last, ' ', 1, true)
  local ahead = (seq - tonumber(string.sub(last, 1, at - 1))) % 4294967296
  if ahead == 0 then
    local id = string.sub(last, at + 1)
    return redis.call(ARGV[1], ARGV[2], ARGV[4] .. string.char(#id) .. id .. ARGV[5])
  end
  if ahead >= 2147483648 then
    return 0
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[5])
local age = tonumber(ARGV[8])
local keep = 86400000
if age > 0 then
  local ms = tonumber(string.match(id, '^%d+'))
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', ms - age))
  redis.call('PEXPIRE', KEYS[1], age)
  if age > keep then keep = age end
end
redis.call('HSET', KEYS[2], ARGV[6], ARGV[7] .. ' ' .. id)
redis.call('PEXPIRE', KEYS[2], keep)
return redis.call(ARGV[1], ARGV[2], ARGV[4] .. string.char(#id) .. id .. ARGV[5])
";

/// Reads a room's history. KEYS: stream. ARGV: the id after which, how many at most (the
/// newest), how many bytes at most. Returns `{state, first id, entries newest first, cut}`:
/// state 0 when there is no stream, 1 when it never dropped an entry, 2 when it did; cut 1
/// when the byte bound left some out.
const READ: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, '', {}, 0}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local length, added = 0, 0
for i = 1, #info, 2 do
  if info[i] == 'length' then length = info[i + 1] end
  if info[i] == 'entries-added' then added = info[i + 1] end
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first_id = ''
if #first > 0 then first_id = first[1][1] end
local entries = redis.call('XREVRANGE', KEYS[1], '+', '(' .. ARGV[1], 'COUNT', ARGV[2])
local state = 1
if added > length then state = 2 end
local kept, bytes, cut = {}, 0, 0
for i, entry in ipairs(entries) do
  bytes = bytes + #entry[2][2]
  if bytes > tonumber(ARGV[3]) then
    cut = 1
    break
  end
  kept[i] = entry
end
return {state, first_id, kept, cut}
";

/// How much one read may bring: the member's queue bound, and the largest message taken.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadLimits {
    pub(super) messages: usize,
    pub(super) bytes: usize,
    pub(super) max_message: usize,
}

/// The first hash tag of `key` (what Redis Cluster hashes), if it has one.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = key.get(open.checked_add(1)?..)?;
    let close = rest.find('}')?;
    rest.get(..close).filter(|tag| !tag.is_empty())
}

/// The stream and the hash of sequence numbers of the room whose channel is `channel`, in the
/// channel's hash slot; `None` on a cluster for a channel whose slot no other key can share
/// (a `}` in the room's name without a hash tag before it).
pub(super) fn keys(channel: &str, cluster: bool) -> Option<(String, String)> {
    if hash_tag(channel).is_some() || (!cluster && channel.contains('}')) {
        return Some((format!("{channel}:history"), format!("{channel}:seqs")));
    }
    if channel.contains('}') {
        return None;
    }
    Some((
        format!("{{{channel}}}:history"),
        format!("{{{channel}}}:seqs"),
    ))
}

/// Reads what the stream `stream` holds after `since`: at most the newest `max`.
pub(super) async fn read(
    mut publisher: Publisher,
    stream: &str,
    since: HistoryId,
    limits: ReadLimits,
    timeout: Duration,
) -> redis::RedisResult<Replay> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(READ)
        .arg(1)
        .arg(stream)
        .arg(since.to_string())
        .arg(limits.messages.saturating_add(1))
        .arg(limits.bytes);
    let reply: Value = match &mut publisher {
        Publisher::Single(connection) => timed(timeout, cmd.query_async(connection)).await?,
        Publisher::Cluster(connection) => timed(timeout, cmd.query_async(connection)).await?,
    };
    Ok(parse(reply, since, limits.messages, limits.max_message))
}

/// The reply of [`READ`] as a replay: oldest first, at most `max` (the newest), truncated when
/// there is no stream, when entries after `since` were dropped, or when there were more.
fn parse(reply: Value, since: HistoryId, max: usize, max_message: usize) -> Replay {
    let Value::Array(items) = reply else {
        return Replay {
            entries: Vec::new(),
            truncated: true,
        };
    };
    let mut items = items.into_iter();
    let (Some(Value::Int(state)), Some(first), Some(Value::Array(entries)), cut) =
        (items.next(), items.next(), items.next(), items.next())
    else {
        return Replay {
            entries: Vec::new(),
            truncated: true,
        };
    };
    let first = text(first).and_then(|id| id.parse::<HistoryId>().ok());
    let mut truncated = state == 0
        || (state == 2 && first.is_none_or(|first| first > since))
        || cut == Some(Value::Int(1));
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(entry) = entry else { continue };
        let mut entry = entry.into_iter();
        let (Some(id), Some(Value::Array(fields))) = (entry.next(), entry.next()) else {
            continue;
        };
        let Some(id) = text(id).and_then(|id| id.parse::<HistoryId>().ok()) else {
            continue;
        };
        // Field `m`: the body.
        let Some(body) = fields.into_iter().nth(1).and_then(bytes) else {
            continue;
        };
        if let Some((_, message)) = wire::decode_stored_body(&body, max_message) {
            out.push((id, message));
        }
    }
    if out.len() > max {
        out.truncate(max);
        truncated = true;
    }
    out.reverse();
    Replay {
        entries: out,
        truncated,
    }
}

fn bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(data) => Some(Bytes::from(data)),
        Value::SimpleString(s) => Some(Bytes::from(s)),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    String::from_utf8(bytes(value)?.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockeye::Message;

    #[test]
    fn the_keys_share_the_channels_slot() {
        assert_eq!(
            keys("sockeye:room:lobby", true),
            Some((
                "{sockeye:room:lobby}:history".to_owned(),
                "{sockeye:room:lobby}:seqs".to_owned()
            ))
        );
        assert_eq!(
            keys("sockeye:room:{a}b", true).unwrap().0,
            "sockeye:room:{a}b:history"
        );
        assert_eq!(
            keys("sockeye:room:a{", true).unwrap().0,
            "{sockeye:room:a{}:history"
        );
        assert_eq!(keys("sockeye:room:a}b", true), None);
        assert_eq!(keys("sockeye:room:{}b", true), None);
        assert!(keys("sockeye:room:a}b", false).is_some());
        assert_eq!(hash_tag("{x}:history"), Some("x"));
    }

    fn entry(id: &str, text: &str) -> Value {
        let body = wire::stored_body(1, &Message::text(text)).unwrap();
        Value::Array(vec![
            Value::BulkString(id.as_bytes().to_vec()),
            Value::Array(vec![
                Value::BulkString(b"m".to_vec()),
                Value::BulkString(body.to_vec()),
            ]),
        ])
    }

    fn reply(state: i64, first: &str, entries: Vec<Value>) -> Value {
        Value::Array(vec![
            Value::Int(state),
            Value::BulkString(first.as_bytes().to_vec()),
            Value::Array(entries),
            Value::Int(0),
        ])
    }

    #[test]
    fn replies_become_replays_oldest_first_and_say_what_is_missing() {
        let since: HistoryId = "10-0".parse().unwrap();
        let newest_first = || vec![entry("12-0", "b"), entry("11-0", "a")];
        let replay = parse(reply(1, "5-0", newest_first()), since, 10, 100);
        assert!(!replay.truncated);
        assert_eq!(
            replay.entries,
            [
                ("11-0".parse().unwrap(), Message::text("a")),
                ("12-0".parse().unwrap(), Message::text("b"))
            ]
        );
        // Trimmed, but what it kept starts at or before `since`: complete.
        assert!(!parse(reply(2, "10-0", newest_first()), since, 10, 100).truncated);
        // Trimmed past `since`.
        assert!(parse(reply(2, "11-0", newest_first()), since, 10, 100).truncated);
        // No stream any more.
        assert!(parse(reply(0, "", vec![]), since, 10, 100).truncated);
        // More than a member may take: the newest.
        let replay = parse(reply(1, "5-0", newest_first()), since, 1, 100);
        assert!(replay.truncated);
        assert_eq!(
            replay.entries,
            [("12-0".parse().unwrap(), Message::text("b"))]
        );
        assert!(parse(Value::Nil, since, 1, 100).truncated);
        // The byte bound left some out.
        let Value::Array(mut items) = reply(1, "5-0", newest_first()) else {
            unreachable!()
        };
        items[3] = Value::Int(1);
        assert!(parse(Value::Array(items), since, 10, 100).truncated);
    }
}
