//! Rooms shared by several processes over Redis pub/sub.
//!
//! Each process subscribes to the channel of every room that has members there (see
//! [`wire`](super::wire)). A message a member sends goes to the other members of its process at
//! once, and to Redis for the other processes; a process skips what it published itself. One
//! connection publishes, in order, so what one member sends reaches every other member in the
//! order it was sent. Delivery across processes is at most once: a message published while
//! Redis is unreachable is dropped, and the link reconnects (with back-off) and subscribes again
//! to the rooms in use.
//!
//! Every queue is bounded: the queue to Redis in messages and bytes (the batch being sent
//! included), beyond which the sender is closed with 1013 (try again later); and the queue from
//! Redis, beyond which messages from other nodes are dropped (and counted in the log) rather
//! than held. While the link is down, members of one process still talk to each other; what
//! they send is not queued for the other processes.
//!
//! The link notices a dead Redis by the timeout on every command and by a PING on the
//! subscribed connection every few seconds.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use sockeye::Message;
use tokio::sync::mpsc;

use super::wire::{self, HEADER_LEN};
use super::{Backplane, Inbound, Overloaded};

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
/// Messages from other nodes waiting to be handed to the members here, at most (and at most
/// the bytes of the queue to Redis).
const INBOUND_QUEUE: usize = 4096;

/// Limits of the Redis backplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisLimits {
    queue: usize,
    queue_bytes: usize,
    max_message: usize,
}

impl Default for RedisLimits {
    /// 16,384 messages and 64 MiB to Redis; messages from Redis up to 1 MiB.
    fn default() -> Self {
        Self {
            queue: 16_384,
            queue_bytes: 64 << 20,
            max_message: 1 << 20,
        }
    }
}

impl RedisLimits {
    /// The most [`queue`](Self::queue) may be.
    pub const MAX_QUEUE: usize = 1 << 20;

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages waiting to be published, at most (1 to [`MAX_QUEUE`](Self::MAX_QUEUE)); past
    /// it senders are closed with 1013. Default 16,384.
    #[must_use]
    pub fn queue(mut self, messages: usize) -> Self {
        self.queue = messages;
        self
    }

    /// Bytes waiting to be published (each message plus its 13-byte header), at most; past it
    /// senders are closed with 1013. Must hold the largest message. Default 64 MiB.
    #[must_use]
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// The largest message taken from Redis; larger ones (not from a sockeye relay with the
    /// same limit) are dropped. Use the members' own message size limit. Default 1 MiB.
    #[must_use]
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    fn validate(&self) -> Result<(), RedisError> {
        if !(1..=Self::MAX_QUEUE).contains(&self.queue) {
            return Err(RedisError::Limits(format!(
                "the queue must be 1 to {} messages",
                Self::MAX_QUEUE
            )));
        }
        if self.queue_bytes < self.max_message.saturating_add(HEADER_LEN) {
            return Err(RedisError::Limits(format!(
                "the queue must hold the largest message: at least {} bytes (max_message + {HEADER_LEN})",
                self.max_message.saturating_add(HEADER_LEN)
            )));
        }
        Ok(())
    }
}

/// Why [`RedisBackplane::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL (or the CA) is not usable.
    #[error("{0}")]
    Url(String),
    /// The limits do not fit together.
    #[error("{0}")]
    Limits(String),
    /// Redis could not be reached now (the URL in the message has no credentials).
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable {
        /// The URL, without its credentials.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

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
pub struct RedisBackplane {
    node: u64,
    outgoing: mpsc::Sender<Outgoing>,
    outgoing_bytes: Arc<AtomicUsize>,
    limits: RedisLimits,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    /// The link to Redis is up: what members send is queued for the other nodes.
    linked: Arc<AtomicBool>,
    inbound: Arc<OnceLock<Inbound>>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
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

impl RedisBackplane {
    /// Connects to Redis at `url` (`redis://[:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://` for
    /// TLS, verified against `ca` (PEM) or else the system's roots) and starts the link, on
    /// the current tokio runtime. Fails when Redis cannot be reached now; later outages are
    /// ridden out.
    ///
    /// # Errors
    /// [`RedisError::Url`] for a URL or CA that cannot be used, [`RedisError::Limits`] for
    /// limits that do not fit, [`RedisError::Unreachable`] when Redis does not answer.
    pub async fn connect(
        url: &str,
        ca: Option<Vec<u8>>,
        limits: RedisLimits,
    ) -> Result<Self, RedisError> {
        limits.validate()?;
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| RedisError::Url(e.to_string()))?;
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
        .map_err(|e| RedisError::Url(e.to_string()))?;
        let link = connect(&client)
            .await
            .map_err(|e| RedisError::Unreachable {
                url: redacted(url),
                reason: e.to_string(),
            })?;
        let (outgoing, outgoing_rx) = mpsc::channel(limits.queue);
        let (subscriptions, subscriptions_rx) = mpsc::unbounded_channel();
        let backplane = Self {
            node: wire::node_id(),
            outgoing,
            outgoing_bytes: Arc::new(AtomicUsize::new(0)),
            limits,
            subscriptions,
            linked: Arc::new(AtomicBool::new(false)),
            inbound: Arc::new(OnceLock::new()),
        };
        let runner = Runner {
            client,
            inbound: Arc::clone(&backplane.inbound),
            node: backplane.node,
            outgoing_bytes: Arc::clone(&backplane.outgoing_bytes),
            limits,
            outgoing: outgoing_rx,
            subscriptions: subscriptions_rx,
            linked: Arc::clone(&backplane.linked),
        };
        tokio::spawn(runner.run(link));
        Ok(backplane)
    }

    /// This node's id on the wire.
    pub fn node(&self) -> u64 {
        self.node
    }
}

impl Backplane for RedisBackplane {
    fn attach(&self, inbound: Inbound) {
        let _ = self.inbound.set(inbound);
    }

    fn subscribe(&self, room: &str) {
        // Called under the relay's lock, so the link sees joins and leaves in their order.
        let _ = self
            .subscriptions
            .send(Subscription::Subscribe(wire::channel(room)));
    }

    fn unsubscribe(&self, room: &str) {
        let _ = self
            .subscriptions
            .send(Subscription::Unsubscribe(wire::channel(room)));
    }

    fn publish(&self, room: &str, message: &Message) -> Result<(), Overloaded> {
        if !self.linked.load(Ordering::Relaxed) {
            // Redis is away: the members here still get it; the other nodes cannot.
            return Ok(());
        }
        let Some(payload) = wire::encode(self.node, message) else {
            return Ok(());
        };
        let len = payload.len();
        // Counted before it is queued, so that the publisher never takes away more than was
        // added.
        if self.outgoing_bytes.fetch_add(len, Ordering::Relaxed) + len > self.limits.queue_bytes {
            self.outgoing_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Overloaded);
        }
        let outgoing = Outgoing {
            channel: wire::channel(room),
            payload,
        };
        if self.outgoing.try_send(outgoing).is_err() {
            self.outgoing_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Overloaded);
        }
        Ok(())
    }
}

/// The task that owns the connections to Redis.
struct Runner {
    client: redis::Client,
    inbound: Arc<OnceLock<Inbound>>,
    node: u64,
    outgoing_bytes: Arc<AtomicUsize>,
    limits: RedisLimits,
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
                    // The backplane was dropped: the relay is gone.
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
            if self.forget_queued() {
                return;
            }
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
        let rooms = self.inbound.get().map(Inbound::rooms).unwrap_or_default();
        for room in rooms {
            timed(sink.subscribe(wire::channel(&room))).await?;
        }
        self.linked.store(true, Ordering::Relaxed);
        let Self {
            inbound,
            node,
            outgoing_bytes,
            limits,
            outgoing,
            subscriptions,
            ..
        } = self;
        let (queue, mut queue_rx) = mpsc::channel::<(String, Message)>(INBOUND_QUEUE);
        let queued_bytes = AtomicUsize::new(0);
        let publishing = publish_all(outgoing, outgoing_bytes, &mut publisher);
        let subscribing = async {
            let mut ping = tokio::time::interval(PING_EVERY);
            loop {
                tokio::select! {
                    change = subscriptions.recv() => match change {
                        Some(Subscription::Subscribe(channel)) => timed(sink.subscribe(channel)).await?,
                        // A room that has members here again (they joined since) stays.
                        Some(Subscription::Unsubscribe(channel)) => {
                            let room = wire::room(&channel).unwrap_or_default();
                            if !inbound.get().is_some_and(|i| i.has(room)) {
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
        // messages and bytes; what overflows it is dropped, so a burst from the other nodes
        // cannot hold unbounded memory while the members here are served.
        let receiving = async {
            let mut dropped = 0u64;
            while let Some(message) = stream.next().await {
                let Some(room) = wire::room(message.get_channel_name()) else {
                    continue;
                };
                let Some(message) =
                    wire::decode(message.get_payload_bytes(), *node, limits.max_message)
                else {
                    tracing::trace!(room, "skipped a message on the backplane");
                    continue;
                };
                let len = message.len();
                if queued_bytes.fetch_add(len, Ordering::Relaxed) + len > limits.queue_bytes
                    || queue.try_send((room.to_owned(), message)).is_err()
                {
                    queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped,
                            "messages from other nodes dropped: this node cannot keep up"
                        );
                    }
                }
            }
            Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )))
        };
        let delivering = async {
            while let Some((room, message)) = queue_rx.recv().await {
                queued_bytes.fetch_sub(message.len(), Ordering::Relaxed);
                if let Some(inbound) = inbound.get() {
                    inbound.deliver(&room, message);
                }
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
    /// changes (the next link subscribes to the rooms in use then). Returns whether the
    /// backplane is gone.
    fn forget_queued(&mut self) -> bool {
        let mut dropped = 0;
        loop {
            match self.outgoing.try_recv() {
                Ok(message) => {
                    self.outgoing_bytes
                        .fetch_sub(message.payload.len(), Ordering::Relaxed);
                    dropped += 1;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
            }
        }
        while self.subscriptions.try_recv().is_ok() {}
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "messages for other nodes dropped while Redis is away"
            );
        }
        false
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

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redacted("redis://:s3cret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redacted("redis://h:6379/0?password=s3cret"),
            "redis://h:6379/0"
        );
    }

    #[test]
    fn limits_must_fit_together() {
        assert!(RedisLimits::new().validate().is_ok());
        assert!(RedisLimits::new().queue(0).validate().is_err());
        assert!(
            RedisLimits::new()
                .queue(RedisLimits::MAX_QUEUE + 1)
                .validate()
                .is_err()
        );
        let tight = RedisLimits::new().max_message(1000);
        assert!(tight.queue_bytes(1012).validate().is_err());
        assert!(tight.queue_bytes(1013).validate().is_ok());
    }
}
