//! Rooms shared by several `sockeye serve` processes over Redis pub/sub.
//!
//! Each process keeps its own members in a [`MemoryRooms`] and subscribes to the Redis channel
//! of every room that has members here (`sockeye:room:NAME`). A message a member sends goes to
//! the other members here at once, and to Redis for the other processes; a process skips what
//! it published itself. One connection publishes, in order, so what one member sends reaches
//! every other member in the order it was sent. Delivery across processes is at most once: a
//! message published while Redis is unreachable is dropped, and the link reconnects (with
//! back-off) and subscribes again to the rooms in use.
//!
//! Every queue is bounded: members' queues as in one process; the queue to Redis in messages
//! and bytes, beyond which the sender is closed with 1013 (try again later).

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use sockeye::Message;
use tokio::sync::mpsc;

use super::rooms::{MemberId, MemberQueue, MemoryRooms, Overloaded, Rooms};

/// The prefix of the rooms' channel names.
const CHANNEL_PREFIX: &str = "sockeye:room:";
/// The most a Redis command (connecting included) may take before the link is dropped and made
/// again.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between reconnection attempts: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// PUBLISH commands sent in one pipeline at most.
const MAX_BATCH: usize = 256;
/// A message from this node: node id, kind, payload.
const HEADER_LEN: usize = 9;
const KIND_TEXT: u8 = 1;
const KIND_BINARY: u8 = 2;

/// Limits of the backplane.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BackplaneLimits {
    /// Messages waiting to be published, at most.
    pub(crate) queue: usize,
    /// Bytes waiting to be published, at most.
    pub(crate) queue_bytes: usize,
    /// The largest message taken from Redis; larger ones (not from a `sockeye serve`) are
    /// dropped.
    pub(crate) max_message: usize,
}

/// Redis could not be reached at startup (exit code 3, as for any connection that cannot be
/// made).
#[derive(Debug)]
pub(crate) struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// A message on its way to Redis.
struct Outgoing {
    channel: String,
    payload: Bytes,
}

enum Subscription {
    Subscribe(String),
    Unsubscribe(String),
}

/// Rooms over Redis; see the module docs.
pub(crate) struct RedisRooms {
    local: Arc<MemoryRooms>,
    node: u64,
    outgoing: mpsc::Sender<Outgoing>,
    outgoing_bytes: Arc<AtomicUsize>,
    limits: BackplaneLimits,
    subscriptions: mpsc::UnboundedSender<Subscription>,
}

impl std::fmt::Debug for RedisRooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRooms")
            .field("node", &format_args!("{:016x}", self.node))
            .finish_non_exhaustive()
    }
}

/// The two connections to Redis: one publishes, one is subscribed.
struct Link {
    publisher: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

async fn connect(client: &redis::Client) -> redis::RedisResult<Link> {
    let timed_out = || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let publisher =
        tokio::time::timeout(COMMAND_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| timed_out())??;
    let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    let (sink, stream) = pubsub.split();
    Ok(Link {
        publisher,
        sink,
        stream,
    })
}

impl RedisRooms {
    /// Connects to Redis at `url` (`redis://[:PASSWORD@]HOST[:PORT][/DB]`) and starts the link.
    /// Fails when Redis cannot be reached now; later outages are ridden out.
    pub(crate) async fn connect(url: &str, limits: BackplaneLimits) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url).map_err(|e| super::Usage(format!("--redis: {e}")))?;
        let link = connect(&client)
            .await
            .map_err(|e| Unreachable(format!("cannot reach Redis at {}: {e}", redacted(url))))?;
        let (outgoing, outgoing_rx) = mpsc::channel(limits.queue.max(1));
        let (subscriptions, subscriptions_rx) = mpsc::unbounded_channel();
        let rooms = Arc::new(Self {
            local: Arc::new(MemoryRooms::default()),
            node: node_id(),
            outgoing,
            outgoing_bytes: Arc::new(AtomicUsize::new(0)),
            limits,
            subscriptions,
        });
        let runner = Runner {
            client,
            local: Arc::clone(&rooms.local),
            node: rooms.node,
            outgoing_bytes: Arc::clone(&rooms.outgoing_bytes),
            max_message: limits.max_message,
            outgoing: outgoing_rx,
            subscriptions: subscriptions_rx,
        };
        tokio::spawn(runner.run(link));
        Ok(rooms)
    }
}

impl Rooms for RedisRooms {
    fn join(&self, room: &str, queue: MemberQueue) -> MemberId {
        self.local.join_then(room, queue, |room| {
            // Sent under the rooms' lock, so the link sees joins and leaves in their order.
            let _ = self
                .subscriptions
                .send(Subscription::Subscribe(channel(room)));
        })
    }

    fn leave(&self, room: &str, member: MemberId) {
        self.local.leave_then(room, member, |room| {
            let _ = self
                .subscriptions
                .send(Subscription::Unsubscribe(channel(room)));
        });
    }

    fn publish(&self, room: &str, from: MemberId, message: &Message) -> Result<(), Overloaded> {
        let (kind, data) = match message {
            Message::Text(text) => (KIND_TEXT, text.as_bytes()),
            Message::Binary(data) => (KIND_BINARY, &data[..]),
            _ => return Ok(()),
        };
        let len = HEADER_LEN + data.len();
        // Counted before it is queued, so that the publisher never takes away more than was
        // added.
        if self.outgoing_bytes.fetch_add(len, Ordering::Relaxed) + len > self.limits.queue_bytes {
            self.outgoing_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Overloaded);
        }
        let mut payload = BytesMut::with_capacity(len);
        payload.put_u64(self.node);
        payload.put_u8(kind);
        payload.put_slice(data);
        let outgoing = Outgoing {
            channel: channel(room),
            payload: payload.freeze(),
        };
        if self.outgoing.try_send(outgoing).is_err() {
            self.outgoing_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Overloaded);
        }
        // Queued for the others first, then handed to the members here: both keep its order.
        self.local.deliver(room, Some(from), message);
        Ok(())
    }
}

/// The task that owns the connections to Redis.
struct Runner {
    client: redis::Client,
    local: Arc<MemoryRooms>,
    node: u64,
    outgoing_bytes: Arc<AtomicUsize>,
    max_message: usize,
    outgoing: mpsc::Receiver<Outgoing>,
    subscriptions: mpsc::UnboundedReceiver<Subscription>,
}

impl Runner {
    async fn run(mut self, first: Link) {
        let mut link = Some(first);
        let mut backoff = BACKOFF.0;
        loop {
            let Some(current) = link.take() else {
                match connect(&self.client).await {
                    Ok(new) => {
                        tracing::info!("reconnected to Redis");
                        backoff = BACKOFF.0;
                        link = Some(new);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach Redis");
                        self.drop_outgoing();
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF.1);
                    }
                }
                continue;
            };
            match self.serve(current).await {
                // Every sender is gone: the server is shutting down.
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "lost the link to Redis; reconnecting"),
            }
        }
    }

    /// Runs one link until it fails; `Ok` when there is nothing left to do.
    async fn serve(&mut self, link: Link) -> redis::RedisResult<()> {
        let Link {
            mut publisher,
            mut sink,
            mut stream,
        } = link;
        // The rooms in use now, then every change after (a repeat is harmless).
        for room in self.local.names() {
            timed(sink.subscribe(channel(&room))).await?;
        }
        let Self {
            local,
            node,
            outgoing_bytes,
            max_message,
            outgoing,
            subscriptions,
            ..
        } = self;
        let publishing = async {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while outgoing.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let mut pipe = redis::pipe();
                let mut bytes = 0;
                for message in batch.drain(..) {
                    bytes += message.payload.len();
                    pipe.cmd("PUBLISH")
                        .arg(message.channel)
                        .arg(&message.payload[..])
                        .ignore();
                }
                outgoing_bytes.fetch_sub(bytes, Ordering::Relaxed);
                timed(pipe.query_async::<()>(&mut publisher)).await?;
            }
            Ok(())
        };
        let subscribing = async {
            while let Some(change) = subscriptions.recv().await {
                match change {
                    Subscription::Subscribe(channel) => timed(sink.subscribe(channel)).await?,
                    Subscription::Unsubscribe(channel) => timed(sink.unsubscribe(channel)).await?,
                }
            }
            Ok(())
        };
        let receiving = async {
            while let Some(message) = stream.next().await {
                let Some(room) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
                    continue;
                };
                if let Some(message) = decode(message.get_payload_bytes(), *node, *max_message) {
                    local.deliver(room, None, &message);
                } else {
                    tracing::trace!(room, "skipped a message on the backplane");
                }
            }
            Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )))
        };
        tokio::select! {
            result = publishing => result,
            result = subscribing => result,
            result = receiving => result,
        }
    }

    /// While Redis is away, what waits to be published is dropped, so that senders are told
    /// (1013) only when the queue stays full.
    fn drop_outgoing(&mut self) {
        let mut dropped = 0;
        while let Ok(message) = self.outgoing.try_recv() {
            self.outgoing_bytes
                .fetch_sub(message.payload.len(), Ordering::Relaxed);
            dropped += 1;
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "messages for other nodes dropped while Redis is away"
            );
        }
    }
}

async fn timed<T>(future: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))
        })
}

fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

/// A message published by another node; `None` for our own, and for anything malformed.
fn decode(payload: &[u8], node: u64, max_message: usize) -> Option<Message> {
    let (header, data) = payload.split_first_chunk::<HEADER_LEN>()?;
    let (from, kind) = header.split_first_chunk::<8>()?;
    if u64::from_be_bytes(*from) == node || data.len() > max_message {
        return None;
    }
    match kind {
        [KIND_TEXT] => std::str::from_utf8(data).ok().map(Message::text),
        [KIND_BINARY] => Some(Message::binary(Bytes::copy_from_slice(data))),
        _ => None,
    }
}

/// A node id, different for every process (std's random hasher keys, the pid and the time).
fn node_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(node: u64, kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = node.to_be_bytes().to_vec();
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
    fn malformed_or_oversized_payloads_are_skipped() {
        assert_eq!(decode(b"short", 1, 100), None);
        assert_eq!(decode(&encoded(7, 9, b"x"), 1, 100), None);
        assert_eq!(decode(&encoded(7, KIND_TEXT, b"\xff"), 1, 100), None);
        assert_eq!(decode(&encoded(7, KIND_BINARY, &[0; 101]), 1, 100), None);
        assert!(decode(&encoded(7, KIND_BINARY, &[0; 100]), 1, 100).is_some());
    }

    #[test]
    fn node_ids_differ_and_urls_lose_their_password() {
        assert_ne!(node_id(), node_id());
        assert_eq!(redacted("redis://:s3cret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}
