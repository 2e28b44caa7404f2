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
//! and bytes (the batch being sent included), beyond which the sender is closed with 1013 (try
//! again later); and the queue from Redis, beyond which messages from other servers are dropped
//! (and counted in the log) rather than held. While the link is down, members here still talk
//! to each other; what they send is not queued for the other servers.
//!
//! The link notices a dead Redis by the timeout on every command and by a PING on the
//! subscribed connection every few seconds.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
/// A link that stayed up this long starts the back-off again from its first step.
const HEALTHY: Duration = Duration::from_secs(10);
/// How often the subscribed connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);
/// PUBLISH commands sent in one pipeline at most, and their bytes.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Messages from other servers waiting to be handed to the members here, at most (and at most
/// the bytes of the queue to Redis).
const INBOUND_QUEUE: usize = 4096;
/// A message on the backplane: magic and version, node id, kind, payload.
const MAGIC: [u8; 4] = *b"sky1";
pub(crate) const HEADER_LEN: usize = 13;
const KIND_TEXT: u8 = 1;
const KIND_BINARY: u8 = 2;
/// The most `--redis-queue` may ask for.
pub(crate) const MAX_QUEUE: usize = 1 << 20;

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
    /// The link to Redis is up: what members send is queued for the other servers.
    linked: Arc<AtomicBool>,
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
    // The crate's own response timeout (500 ms by default) would drop the link on any short
    // stall of Redis; ours is the one timeout for every command.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    let publisher = timed(client.get_multiplexed_async_connection_with_config(&config)).await?;
    let pubsub = timed(client.get_async_pubsub()).await?;
    let (sink, stream) = pubsub.split();
    Ok(Link {
        publisher,
        sink,
        stream,
    })
}

impl RedisRooms {
    /// Connects to Redis at `url` (`redis://[:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://` for
    /// TLS, verified against `ca` (PEM) or else the system's roots) and starts the link. Fails
    /// when Redis cannot be reached now; later outages are ridden out.
    pub(crate) async fn connect(
        url: &str,
        ca: Option<Vec<u8>>,
        limits: BackplaneLimits,
    ) -> anyhow::Result<Arc<Self>> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| super::Usage(format!("--redis: {e}")))?;
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let info = info.set_tcp_settings(tcp);
        let client = match ca {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| super::Usage(format!("--redis: {e}")))?;
        let link = connect(&client)
            .await
            .map_err(|e| Unreachable(format!("cannot reach Redis at {}: {e}", redacted(url))))?;
        let (outgoing, outgoing_rx) = mpsc::channel(limits.queue.clamp(1, MAX_QUEUE));
        let (subscriptions, subscriptions_rx) = mpsc::unbounded_channel();
        let rooms = Arc::new(Self {
            local: Arc::new(MemoryRooms::default()),
            node: node_id(),
            outgoing,
            outgoing_bytes: Arc::new(AtomicUsize::new(0)),
            limits,
            subscriptions,
            linked: Arc::new(AtomicBool::new(false)),
        });
        let runner = Runner {
            client,
            local: Arc::clone(&rooms.local),
            node: rooms.node,
            outgoing_bytes: Arc::clone(&rooms.outgoing_bytes),
            limits,
            outgoing: outgoing_rx,
            subscriptions: subscriptions_rx,
            linked: Arc::clone(&rooms.linked),
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
        if !self.linked.load(Ordering::Relaxed) {
            // Redis is away: the members here still get it; the other servers cannot.
            self.local.deliver(room, Some(from), message);
            return Ok(());
        }
        let len = HEADER_LEN + data.len();
        // Counted before it is queued, so that the publisher never takes away more than was
        // added.
        if self.outgoing_bytes.fetch_add(len, Ordering::Relaxed) + len > self.limits.queue_bytes {
            self.outgoing_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Overloaded);
        }
        let mut payload = BytesMut::with_capacity(len);
        payload.put_slice(&MAGIC);
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
    limits: BackplaneLimits,
    outgoing: mpsc::Receiver<Outgoing>,
    subscriptions: mpsc::UnboundedReceiver<Subscription>,
    linked: Arc<AtomicBool>,
}

impl Runner {
    async fn run(mut self, first: Link) {
        let mut link = Some(first);
        let mut backoff = BACKOFF.0;
        loop {
            if let Some(current) = link.take() {
                let since = Instant::now();
                match self.serve(current).await {
                    // Every sender is gone: the server is shutting down.
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "lost the link to Redis; reconnecting"),
                }
                self.linked.store(false, Ordering::Relaxed);
                if since.elapsed() >= HEALTHY {
                    backoff = BACKOFF.0;
                }
            }
            // After any failure, whether connecting or later: a Redis that accepts and then
            // refuses (or keeps dropping us) is not hammered either.
            self.forget_queued();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
            match connect(&self.client).await {
                Ok(new) => {
                    tracing::info!("reconnected to Redis");
                    link = Some(new);
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach Redis"),
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
        // The rooms in use now, then every change after. The changes queued so far are in the
        // snapshot already.
        while self.subscriptions.try_recv().is_ok() {}
        for room in self.local.names() {
            timed(sink.subscribe(channel(&room))).await?;
        }
        self.linked.store(true, Ordering::Relaxed);
        let Self {
            local,
            node,
            outgoing_bytes,
            limits,
            outgoing,
            subscriptions,
            ..
        } = self;
        let (inbound, mut inbound_rx) = mpsc::channel::<(String, Message)>(INBOUND_QUEUE);
        let inbound_bytes = AtomicUsize::new(0);
        let publishing = publish_all(outgoing, outgoing_bytes, &mut publisher);
        let subscribing = async {
            let mut ping = tokio::time::interval(PING_EVERY);
            loop {
                tokio::select! {
                    change = subscriptions.recv() => match change {
                        Some(Subscription::Subscribe(channel)) => timed(sink.subscribe(channel)).await?,
                        // A room that has members here again (they joined since) stays.
                        Some(Subscription::Unsubscribe(channel)) => {
                            let room = channel.strip_prefix(CHANNEL_PREFIX).unwrap_or_default();
                            if !local.has(room) {
                                timed(sink.unsubscribe(channel)).await?;
                            }
                        }
                        None => return Ok(()),
                    },
                    _ = ping.tick() => timed(sink.ping::<()>()).await?,
                }
            }
        };
        // Redis's messages are taken off the connection as they come, into a queue bounded in
        // messages and bytes; what overflows it is dropped, so a burst from the other servers
        // cannot hold unbounded memory while the members here are served.
        let receiving = async {
            let mut dropped = 0u64;
            while let Some(message) = stream.next().await {
                let Some(room) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
                    continue;
                };
                let Some(message) = decode(message.get_payload_bytes(), *node, limits.max_message)
                else {
                    tracing::trace!(room, "skipped a message on the backplane");
                    continue;
                };
                let len = message.len();
                if inbound_bytes.fetch_add(len, Ordering::Relaxed) + len > limits.queue_bytes
                    || inbound.try_send((room.to_owned(), message)).is_err()
                {
                    inbound_bytes.fetch_sub(len, Ordering::Relaxed);
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped,
                            "messages from other servers dropped: this server cannot keep up"
                        );
                    }
                }
            }
            Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )))
        };
        let delivering = async {
            while let Some((room, message)) = inbound_rx.recv().await {
                inbound_bytes.fetch_sub(message.len(), Ordering::Relaxed);
                local.deliver(&room, None, &message);
            }
            Ok(())
        };
        tokio::select! {
            result = publishing => result,
            result = subscribing => result,
            result = receiving => result,
            result = delivering => result,
        }
    }

    /// While Redis is away, what waits to be published is dropped, and so are subscription
    /// changes (the next link subscribes to the rooms in use then).
    fn forget_queued(&mut self) {
        let mut dropped = 0;
        while let Ok(message) = self.outgoing.try_recv() {
            self.outgoing_bytes
                .fetch_sub(message.payload.len(), Ordering::Relaxed);
            dropped += 1;
        }
        while self.subscriptions.try_recv().is_ok() {}
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "messages for other servers dropped while Redis is away"
            );
        }
    }
}

/// Publishes what members here send, in order, in pipelines of up to `MAX_BATCH` messages.
async fn publish_all(
    outgoing: &mut mpsc::Receiver<Outgoing>,
    outgoing_bytes: &AtomicUsize,
    publisher: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = outgoing.recv().await {
        let mut bytes = first.payload.len();
        batch.push(first);
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let Ok(next) = outgoing.try_recv() else { break };
            bytes += next.payload.len();
            batch.push(next);
        }
        let mut pipe = redis::pipe();
        for message in batch.drain(..) {
            pipe.cmd("PUBLISH")
                .arg(message.channel)
                .arg(&message.payload[..])
                .ignore();
        }
        let sent = timed(pipe.query_async::<()>(publisher)).await;
        // Counted until Redis answered (or the link failed): the batch in flight is within the
        // bound too.
        outgoing_bytes.fetch_sub(bytes, Ordering::Relaxed);
        sent?;
    }
    Ok(())
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

/// A message published by another node; `None` for our own, and for anything else (not from a
/// `sockeye serve`, another version, malformed or too large).
fn decode(payload: &[u8], node: u64, max_message: usize) -> Option<Message> {
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
fn node_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}

/// The URL without its credentials (user information, and the query, which may hold a
/// password), for messages.
fn redacted(url: &str) -> String {
    let url = url.split_once('?').map_or(url, |(base, _)| base);
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
    fn node_ids_differ_and_urls_lose_their_password() {
        assert_ne!(node_id(), node_id());
        assert_eq!(redacted("redis://:s3cret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redacted("redis://h:6379/0?password=s3cret"),
            "redis://h:6379/0"
        );
    }
}
