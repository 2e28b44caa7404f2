//! Rooms shared by several processes over Redis pub/sub.
//!
//! Each process subscribes to the channel of every room that has members there (see
//! [`wire`](super::wire)), under a prefix (`sockeye` unless [configured](RedisBuilder::prefix)):
//! relays share rooms only with the relays of the same prefix on the same Redis. A message a
//! member sends goes to the other members of its process at once, and to Redis for the other
//! processes; a process skips what it published itself. One connection publishes, in order, so
//! what one member sends reaches every other member in the order it was sent.
//!
//! # Outages
//! When the link to Redis fails, it is made again at once, then after waits doubling from 10 ms
//! to 100 ms (drawn at random between half and all of each; from the start again once a link
//! stayed up 2 s), and subscribes again to the rooms in use. Meanwhile what members send waits
//! in the queue to Redis, and goes out in order once the link is back: after a reconnection,
//! the link waits (at most 1 s) for each room's channel to have as many subscribers as the last
//! message there reached, so that it is not published before the other nodes are subscribed
//! again. What was being published when the link failed is published again, and so is what
//! Redis took in the last second before it (up to a bound): a Redis that dies after it answered
//! a PUBLISH may not have passed the message on to the subscribers yet. Each message
//! carries its node's sequence number, and a node drops what it has seen already. So across an
//! outage that the queue can hold, nothing is lost, duplicated or reordered, unless a node
//! leaves a room meanwhile or the outage outlasts what Redis's clients buffer. Members of one
//! process still talk to each other while Redis is away.
//!
//! Every queue is bounded: the queue to Redis in messages and bytes (the batch being sent
//! included), beyond which the sender is closed with 1013 (try again later), during an outage
//! too; and the queue from Redis, beyond which messages from other nodes are dropped (and
//! counted in the log) rather than held.
//!
//! The link notices a dead Redis by the connection closing, by the timeout on every command
//! and by a PING on the subscribed connection every few seconds.
//!
//! # Presence
//! The named members of a room are known on every node: each node publishes its own on the
//! room's channel as they join and leave, and all of them every third of the
//! [time to live](RedisBuilder::presence_ttl); a node not heard from within it drops out of
//! the lists of the others (see the relay's [presence](crate#presence)).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockeye::Message;
use tokio::sync::mpsc;

use super::link::{Link, Publisher, Stored, Target};
use super::presence::{self, Notice, Presence};
use super::wire::{self, HEADER_LEN, Payload};
use super::{Backplane, Inbound, Overloaded, RemoteMember, stream};
use crate::core::MemberId;
use crate::history::{HistoryId, HistoryLimits, HistoryRead, Replay};

/// The most a Redis command (connecting included) may take before the link is dropped and made
/// again.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between reconnection attempts after the first (which is at once): doubling from the
/// first to the last, each jittered.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// A link that stayed up this long starts the back-off again from its first step.
const HEALTHY: Duration = Duration::from_secs(2);
/// How long a new link waits at most for the other nodes to subscribe again before it
/// publishes what waited, and how often it looks.
const SETTLE: Duration = Duration::from_secs(1);
const SETTLE_POLL: Duration = Duration::from_millis(5);
/// What Redis took this recently is published again by the next link: a Redis that dies after
/// it answered a PUBLISH may not have written the message to its subscribers yet. The nodes
/// drop what they have seen already.
const REPLAY: Duration = Duration::from_secs(1);
/// At most this many messages are kept for that.
const REPLAY_MESSAGES: usize = 1024;
/// How often the subscribed connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);
/// PUBLISH commands sent in one pipeline at most, and their bytes.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Messages from other nodes waiting to be handed to the members here, at most (and at most
/// the bytes of the queue to Redis).
const INBOUND_QUEUE: usize = 4096;
/// Nodes whose last sequence number is remembered, and channels whose subscribers are, at most.
const MAX_NODES_SEEN: usize = 65_536;
const MAX_CHANNELS_TRACKED: usize = 65_536;
/// The presence time to live: default and bounds.
const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(6);
const MIN_PRESENCE_TTL: Duration = Duration::from_millis(300);
const MAX_PRESENCE_TTL: Duration = Duration::from_secs(3600);

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

    /// Bytes waiting to be published (each message plus its 17-byte header), at most; past it
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
    /// Another setting (the prefix, the presence time to live) is not usable.
    #[error("{0}")]
    Config(String),
}

/// What waits to be published: a member's message (and the member, [`wire::NO_MEMBER`] for
/// none) or a presence notice.
enum Body {
    Message(Message, u64),
    Presence(Vec<u8>),
}

/// A message on its way to Redis.
struct Outgoing {
    room: String,
    body: Body,
    /// Its bytes on the wire (header included), as counted against the queue's bound.
    len: usize,
}

/// Published once: its sequence number is fixed, and so is what it is sent again as.
#[derive(Clone)]
struct Sent {
    channel: String,
    payload: Bytes,
    /// With history: how the script stores it (the payload is then the stored body).
    stored: Option<Box<Stored>>,
    /// Its bytes as counted against the queue's bound.
    len: usize,
}

enum Subscription {
    Subscribe(String),
    Unsubscribe(String),
}

/// The state the backplane and its task share.
struct Core {
    prefix: String,
    limits: RedisLimits,
    ttl: Duration,
    /// Bytes waiting to be published (and in flight), against `limits.queue_bytes`.
    outgoing_bytes: AtomicUsize,
    presence: Mutex<Presence>,
    /// Whether the rooms' history is kept (in a stream per room), and within what.
    history: OnceLock<HistoryLimits>,
    /// On a Redis Cluster.
    cluster: bool,
    /// Where the links connect (a reader of history on a cluster too).
    target: Target,
    /// With history, a connection for reading it that subscribes to nothing: the current
    /// link's publishing one on one Redis, one of its own on a cluster.
    reader: Mutex<Option<Publisher>>,
    /// With history: the channels this node is subscribing to and not yet subscribed. Its
    /// members get their own messages back through Redis, so a room's messages wait for its
    /// subscription.
    subscribing: Mutex<HashSet<String>>,
}

/// The most a stored message takes besides the header and its data: the id's length and the
/// id (at most 41 bytes), the member and the kind.
const STORED_EXTRA: usize = 1 + 41 + 9;

impl Core {
    fn channel(&self, room: &str) -> String {
        wire::channel_in(&self.prefix, room)
    }

    fn presence(&self) -> MutexGuard<'_, Presence> {
        self.presence.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reader(&self) -> MutexGuard<'_, Option<Publisher>> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribing(&self) -> MutexGuard<'_, HashSet<String>> {
        self.subscribing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// With history, waits (at most [`SETTLE`]) until this node is subscribed to the channels
    /// of the stored messages of `batch`: it delivers them to its own members from there.
    async fn until_subscribed(&self, batch: &[Sent]) {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline
            && batch
                .iter()
                .any(|sent| sent.stored.is_some() && self.subscribing().contains(&sent.channel))
        {
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// Queues `body` for `room` within the bounds, without waiting.
    fn enqueue(
        &self,
        queue: &mpsc::Sender<Outgoing>,
        room: &str,
        body: Body,
    ) -> Result<(), Overloaded> {
        let data = match &body {
            Body::Message(Message::Text(text), _) => text.len(),
            Body::Message(Message::Binary(data), _) => data.len(),
            Body::Message(..) => return Ok(()),
            Body::Presence(json) => json.len(),
        };
        // A stored message has its id and sender besides.
        let stored = if matches!(body, Body::Message(..)) && self.history.get().is_some() {
            STORED_EXTRA
        } else {
            0
        };
        let len = data + HEADER_LEN + stored;
        // Counted before it is queued, so that the publisher never takes away more than was
        // added.
        if self.outgoing_bytes.fetch_add(len, Ordering::Relaxed) + len > self.limits.queue_bytes {
            self.outgoing_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Overloaded);
        }
        let outgoing = Outgoing {
            room: room.to_owned(),
            body,
            len,
        };
        if queue.try_send(outgoing).is_err() {
            self.outgoing_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Overloaded);
        }
        Ok(())
    }

    fn notice(&self, queue: &mpsc::Sender<Outgoing>, room: &str, notice: &Notice) {
        // A notice that does not fit now is made up for by the next heartbeat.
        let _ = self.enqueue(queue, room, Body::Presence(notice.to_json()));
    }
}

/// Rooms over Redis; see the module docs.
pub struct RedisBackplane {
    node: u64,
    core: Arc<Core>,
    outgoing: mpsc::Sender<Outgoing>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    inbound: Arc<OnceLock<Inbound>>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &format_args!("{:016x}", self.node))
            .field("prefix", &self.core.prefix)
            .finish_non_exhaustive()
    }
}

/// The settings of a [`RedisBackplane`]; [`RedisBackplane::builder`] makes one.
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBuilder {
    urls: Vec<String>,
    cluster: bool,
    ca: Option<Vec<u8>>,
    limits: RedisLimits,
    prefix: String,
    presence_ttl: Duration,
}

impl RedisBuilder {
    /// The CA (PEM) to verify a `rediss://` server against, instead of the system's roots.
    pub fn ca(mut self, pem: Option<Vec<u8>>) -> Self {
        self.ca = pem;
        self
    }

    /// The bounds of the queues. Default [`RedisLimits::default`].
    pub fn limits(mut self, limits: RedisLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The namespace of the channels: rooms are shared only between relays with the same
    /// prefix on the same Redis (its room `NAME` is the channel `PREFIX:room:NAME`). 1 to 64
    /// bytes of visible ASCII without `{` or `}`. Default `sockeye`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long the named members of another node stay listed after its last word: it
    /// refreshes them every third of it, and a node that stops (dies, or loses Redis) drops
    /// out of the lists within it. 300 ms to 1 hour; default 6 s.
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// Connects and starts the link, on the current tokio runtime; see
    /// [`RedisBackplane::connect`].
    ///
    /// # Errors
    /// As [`RedisBackplane::connect`], and [`RedisError::Config`] for a prefix or time to live
    /// that cannot be used.
    pub async fn connect(self) -> Result<RedisBackplane, RedisError> {
        RedisBackplane::start(self).await
    }
}

impl RedisBackplane {
    /// Connects to Redis at `url` (`redis://[:PASSWORD@]HOST[:PORT]`, or `rediss://` for TLS,
    /// verified against `ca` (PEM) or else the system's roots) and starts the link, on the
    /// current tokio runtime, with the default prefix (`sockeye`). Fails when Redis cannot be
    /// reached now; later outages are ridden out (see the module docs).
    ///
    /// A database number in the URL other than 0 is refused: pub/sub ignores it, so it would
    /// separate nothing; use [`RedisBuilder::prefix`]. A Redis that is a node of a cluster is
    /// taken as the way into that cluster (see [`cluster_builder`](Self::cluster_builder)).
    ///
    /// # Errors
    /// [`RedisError::Url`] for a URL or CA that cannot be used, [`RedisError::Limits`] for
    /// limits that do not fit, [`RedisError::Unreachable`] when Redis does not answer.
    pub async fn connect(
        url: &str,
        ca: Option<Vec<u8>>,
        limits: RedisLimits,
    ) -> Result<Self, RedisError> {
        Self::builder(url).ca(ca).limits(limits).connect().await
    }

    /// The settings for a backplane on the Redis at `url`, to change before
    /// [`connect`](RedisBuilder::connect)ing.
    pub fn builder(url: &str) -> RedisBuilder {
        RedisBuilder {
            urls: vec![url.to_owned()],
            cluster: false,
            ca: None,
            limits: RedisLimits::default(),
            prefix: wire::DEFAULT_PREFIX.to_owned(),
            presence_ttl: DEFAULT_PRESENCE_TTL,
        }
    }

    /// The settings for a backplane on the Redis Cluster that `nodes` (URLs of some of its
    /// nodes) belong to: rooms are sharded channels (`SSUBSCRIBE`/`SPUBLISH`, Redis 7 or
    /// later), spread over the shards by the hash slot of their channel.
    pub fn cluster_builder<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> RedisBuilder {
        let mut builder = Self::builder("");
        builder.urls = nodes.into_iter().map(Into::into).collect();
        builder.cluster = true;
        builder
    }

    async fn start(settings: RedisBuilder) -> Result<Self, RedisError> {
        let RedisBuilder {
            urls,
            cluster,
            ca,
            limits,
            prefix,
            presence_ttl,
        } = settings;
        limits.validate()?;
        if !wire::valid_prefix(&prefix) {
            return Err(RedisError::Config(format!(
                "the prefix must be 1 to {} bytes of visible ASCII without {{ or }}",
                wire::MAX_PREFIX
            )));
        }
        if !(MIN_PRESENCE_TTL..=MAX_PRESENCE_TTL).contains(&presence_ttl) {
            return Err(RedisError::Config(
                "the presence time to live must be 300 ms to 1 hour".to_owned(),
            ));
        }
        let shown = urls
            .iter()
            .map(|u| redacted(u))
            .collect::<Vec<_>>()
            .join(",");
        let unreachable = |e: redis::RedisError| RedisError::Unreachable {
            url: shown.clone(),
            reason: e.to_string(),
        };
        let mut target = target(&urls, cluster, ca.clone())?;
        // A node of a cluster given as one Redis: the cluster it belongs to.
        if let Target::Single(client) = &target
            && in_cluster(client).await.map_err(unreachable)?
        {
            target = Target::Cluster(vec![client.get_connection_info().clone()], ca);
        }
        let link = target.connect(COMMAND_TIMEOUT).await.map_err(unreachable)?;
        let (outgoing, outgoing_rx) = mpsc::channel(limits.queue);
        let (subscriptions, subscriptions_rx) = mpsc::unbounded_channel();
        let node = wire::node_id();
        let core = Arc::new(Core {
            prefix,
            limits,
            ttl: presence_ttl,
            outgoing_bytes: AtomicUsize::new(0),
            presence: Mutex::new(Presence::default()),
            history: OnceLock::new(),
            cluster: matches!(target, Target::Cluster(..)),
            target,
            reader: Mutex::new(None),
            subscribing: Mutex::new(HashSet::new()),
        });
        let backplane = Self {
            node,
            core: Arc::clone(&core),
            subscriptions,
            inbound: Arc::new(OnceLock::new()),
            outgoing: outgoing.clone(),
        };
        let runner = Runner {
            inbound: Arc::clone(&backplane.inbound),
            node,
            core,
            outgoing: outgoing_rx,
            requeue: outgoing.downgrade(),
            subscriptions: subscriptions_rx,
            seq: 0,
            inflight: Vec::new(),
            recent: Recent::default(),
            receivers: HashMap::new(),
            seen: Seen::default(),
        };
        drop(outgoing);
        tokio::spawn(runner.run(link));
        Ok(backplane)
    }

    /// This node's id on the wire.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The prefix of this backplane's channels.
    pub fn prefix(&self) -> &str {
        &self.core.prefix
    }
}

impl Backplane for RedisBackplane {
    fn attach(&self, inbound: Inbound) {
        let _ = self.inbound.set(inbound);
    }

    fn subscribe(&self, room: &str) {
        // Called under the relay's lock, so the link sees joins and leaves in their order.
        let channel = self.core.channel(room);
        if self.core.history.get().is_some() {
            self.core.subscribing().insert(channel.clone());
        }
        let _ = self.subscriptions.send(Subscription::Subscribe(channel));
    }

    fn unsubscribe(&self, room: &str) {
        self.core.presence().forget(room);
        self.core.subscribing().remove(&self.core.channel(room));
        let _ = self
            .subscriptions
            .send(Subscription::Unsubscribe(self.core.channel(room)));
    }

    fn publish(&self, room: &str, message: &Message) -> Result<(), Overloaded> {
        // Queued whether the link is up or not: while Redis is away, the queue holds what
        // members send (up to its bounds) and the link publishes it when it is back.
        self.core.enqueue(
            &self.outgoing,
            room,
            Body::Message(message.clone(), wire::NO_MEMBER),
        )
    }

    fn publish_from(
        &self,
        room: &str,
        member: MemberId,
        message: &Message,
    ) -> Result<(), Overloaded> {
        self.core.enqueue(
            &self.outgoing,
            room,
            Body::Message(message.clone(), member.get()),
        )
    }

    fn keep_history(&self, limits: HistoryLimits) -> bool {
        let _ = self.core.history.set(limits);
        true
    }

    fn history(&self, room: &str, since: HistoryId, max: usize, max_bytes: usize) -> HistoryRead {
        let reader = self.core.reader().clone();
        let keys = stream::keys(&self.core.channel(room), self.core.cluster);
        let max_message = self.core.limits.max_message;
        let core = Arc::clone(&self.core);
        Box::pin(async move {
            let unknown = Replay {
                entries: Vec::new(),
                truncated: true,
            };
            let reader = match reader {
                Some(reader) => Some(reader),
                // On a cluster, the first read makes the reader.
                None => match core.target.cluster_reader(COMMAND_TIMEOUT).await {
                    Some(Ok(reader)) => Some(core.reader().get_or_insert(reader).clone()),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "cannot reach the Redis Cluster to read history");
                        None
                    }
                    None => None,
                },
            };
            let (Some(reader), Some((key, _))) = (reader, keys) else {
                return unknown;
            };
            let limits = stream::ReadLimits {
                messages: max,
                bytes: max_bytes,
                max_message,
            };
            match stream::read(reader, &key, since, limits, COMMAND_TIMEOUT).await {
                Ok(replay) => replay,
                Err(e) => {
                    if core.cluster {
                        // Made again by the next read.
                        core.reader().take();
                    }
                    tracing::warn!(error = %e, "cannot read a room's history from Redis");
                    unknown
                }
            }
        })
    }

    fn member_joined(&self, room: &str, member: MemberId, name: &str) {
        self.core.presence().joined(room, member.get(), name);
        let notice = Notice::Join(member.get(), name.to_owned());
        self.core.notice(&self.outgoing, room, &notice);
    }

    fn member_left(&self, room: &str, member: MemberId, _name: &str) {
        self.core.presence().left(room, member.get());
        self.core
            .notice(&self.outgoing, room, &Notice::Leave(member.get()));
    }

    fn remote_members(&self, room: &str) -> Vec<RemoteMember> {
        self.core.presence().remote_members(room)
    }
}

/// What the subscribed connection brought, for the members here.
enum Received {
    Message(String, Message),
    /// A stored message: its id, and its sender when it is a member here.
    Stored(String, Option<HistoryId>, Option<MemberId>, Message),
    Presence(String, u64, Notice, usize),
}

/// The task that owns the connections to Redis.
struct Runner {
    inbound: Arc<OnceLock<Inbound>>,
    node: u64,
    core: Arc<Core>,
    outgoing: mpsc::Receiver<Outgoing>,
    /// The way into the queue for the task's own notices (heartbeats, answers to a sync);
    /// weak, so that the queue closes when the backplane is dropped.
    requeue: mpsc::WeakSender<Outgoing>,
    subscriptions: mpsc::UnboundedReceiver<Subscription>,
    /// The sequence number of the last message taken off the queue.
    seq: u32,
    /// Taken off the queue and not yet known to be published: sent first by the next link.
    inflight: Vec<Sent>,
    /// Published lately: sent again first by the next link ([`REPLAY`]).
    recent: Recent,
    /// Per channel, how many subscribers the last PUBLISH reached: after a reconnection, the
    /// link waits (a little) for that many to be back before it publishes there again.
    receivers: HashMap<String, i64>,
    /// Per node and room, the last sequence number taken from it (per room: on a cluster, the
    /// rooms of one node come by different shards, each in order).
    seen: Seen,
}

impl Runner {
    async fn run(mut self, first: Link) {
        let mut link = Some(first);
        let mut attempt = 0u32;
        loop {
            if let Some(current) = link.take() {
                let since = Instant::now();
                let served = self.serve(current).await;
                // Until the next link, a history read answers that what was missed is not known
                // (on a cluster, the reader is apart from the links).
                if !self.core.cluster {
                    self.core.reader().take();
                }
                match served {
                    // The backplane was dropped: the relay is gone.
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "lost the link to Redis; reconnecting"),
                }
                if since.elapsed() >= HEALTHY {
                    attempt = 0;
                }
            }
            if self.outgoing.is_closed() && self.outgoing.is_empty() {
                return;
            }
            // While Redis is away, the members of a node that stopped leave the lists too.
            self.expire_presence();
            let wait = backoff(attempt, self.node);
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(wait).await;
            match self.core.target.connect(COMMAND_TIMEOUT).await {
                Ok(new) => {
                    tracing::info!("reconnected to Redis");
                    link = Some(new);
                }
                Err(e) => tracing::debug!(error = %e, "cannot reach Redis yet"),
            }
        }
    }

    fn expire_presence(&self) {
        let events = self.core.presence().expire(Instant::now());
        if let Some(inbound) = self.inbound.get() {
            for event in events {
                inbound.presence(&event.room, event.joined, &event.id, &event.name);
            }
        }
    }

    /// Runs one link until it fails; `Ok` when there is nothing left to do.
    #[allow(clippy::too_many_lines)] // the link's four loops, side by side
    async fn serve(&mut self, link: Link) -> redis::RedisResult<()> {
        let Link {
            mut publisher,
            subscriber: mut sink,
            incoming: mut stream,
        } = link;
        // The rooms in use now, then every change after. The changes queued so far are in the
        // snapshot already.
        while self.subscriptions.try_recv().is_ok() {}
        let rooms = self.inbound.get().map(Inbound::rooms).unwrap_or_default();
        for room in &rooms {
            let channel = self.core.channel(room);
            sink.subscribe(&channel, COMMAND_TIMEOUT).await?;
            self.core.subscribing().remove(&channel);
        }
        // Subscribed: the other nodes' answers will arrive.
        if let Some(queue) = self.requeue.upgrade() {
            for room in &rooms {
                self.core.notice(&queue, room, &Notice::Sync);
            }
        }
        // What the last link published lately goes out again first, then what it was publishing.
        let replay = self.recent.take(Instant::now());
        if !replay.is_empty() {
            let bytes: usize = replay.iter().map(|sent| sent.len).sum();
            // Counted again until Redis answers, as the batch in flight is.
            self.core.outgoing_bytes.fetch_add(bytes, Ordering::Relaxed);
            let rest = std::mem::replace(&mut self.inflight, replay);
            self.inflight.extend(rest);
        }
        if let Publisher::Single(_) = publisher {
            *self.core.reader() = Some(publisher.clone());
        }
        let settle_until = Instant::now() + SETTLE;
        let Self {
            inbound,
            node,
            core,
            outgoing,
            requeue,
            subscriptions,
            seq,
            inflight,
            recent,
            receivers,
            seen,
            ..
        } = self;
        let core = &**core;
        let (queue, mut queue_rx) = mpsc::channel::<Received>(INBOUND_QUEUE);
        let queued_bytes = AtomicUsize::new(0);
        let publishing = async {
            let mut checked = HashSet::new();
            loop {
                if inflight.is_empty() && !take_batch(outgoing, core, *node, seq, inflight).await {
                    return Ok(());
                }
                if Instant::now() < settle_until {
                    wait_for_receivers(
                        &mut publisher,
                        inflight,
                        receivers,
                        &mut checked,
                        settle_until,
                    )
                    .await?;
                }
                core.until_subscribed(inflight).await;
                publish_batch(&mut publisher, inflight, recent, receivers, core).await?;
            }
        };
        let subscribing = async {
            let mut ping = tokio::time::interval(PING_EVERY);
            let mut heartbeat = tokio::time::interval(presence::heartbeat(core.ttl));
            // Entries are looked at ten times per time to live: a dead node's members leave
            // within a tenth of it after it expired.
            let mut sweep = tokio::time::interval(core.ttl.checked_div(10).unwrap_or(core.ttl));
            loop {
                tokio::select! {
                    change = subscriptions.recv() => match change {
                        Some(Subscription::Subscribe(channel)) => {
                            sink.subscribe(&channel, COMMAND_TIMEOUT).await?;
                            core.subscribing().remove(&channel);
                            if let (Some(queue), Some(room)) =
                                (requeue.upgrade(), wire::room_in(&core.prefix, &channel))
                            {
                                core.notice(&queue, room, &Notice::Sync);
                            }
                        }
                        // A room that has members here again (they joined since) stays.
                        Some(Subscription::Unsubscribe(channel)) => {
                            let room = wire::room_in(&core.prefix, &channel).unwrap_or_default();
                            if !inbound.get().is_some_and(|i| i.has(room)) {
                                sink.unsubscribe(&channel, COMMAND_TIMEOUT).await?;
                            }
                        }
                        None => return Ok(()),
                    },
                    _ = ping.tick() => sink.ping(COMMAND_TIMEOUT).await?,
                    _ = heartbeat.tick() => {
                        let Some(queue) = requeue.upgrade() else { return Ok(()) };
                        let states: Vec<(String, Notice)> = {
                            let presence = core.presence();
                            presence
                                .local_rooms()
                                .into_iter()
                                .filter_map(|room| presence.state(&room).map(|s| (room, s)))
                                .collect()
                        };
                        for (room, state) in states {
                            core.notice(&queue, &room, &state);
                        }
                    }
                    _ = sweep.tick() => {
                        let events = core.presence().expire(Instant::now());
                        if let Some(inbound) = inbound.get() {
                            for event in events {
                                inbound.presence(&event.room, event.joined, &event.id, &event.name);
                            }
                        }
                    }
                }
            }
        };
        // Redis's messages are taken off the connection as they come, into a queue bounded in
        // messages and bytes; what overflows it is dropped, so a burst from the other nodes
        // cannot hold unbounded memory while the members here are served.
        let receiving = async {
            let mut dropped = 0u64;
            while let Some((channel, payload)) = stream.next().await {
                let Some(room) = wire::room_in(&core.prefix, &channel) else {
                    continue;
                };
                let Some(decoded) = wire::decode_bytes(&payload, *node, core.limits.max_message)
                else {
                    tracing::trace!(room, "skipped a message on the backplane");
                    continue;
                };
                // Published again after a lost link, and seen already.
                if !fresh(seen, decoded.node, room, decoded.seq) {
                    continue;
                }
                let (received, len) = match decoded.payload {
                    Payload::Message(m) => {
                        let len = m.len();
                        (Received::Message(room.to_owned(), m), len)
                    }
                    Payload::Stored {
                        id,
                        member,
                        message,
                    } => {
                        let len = message.len();
                        let sender = (decoded.node == *node && member != wire::NO_MEMBER)
                            .then(|| MemberId::from_raw(member));
                        (Received::Stored(room.to_owned(), id, sender, message), len)
                    }
                    Payload::Presence(json) => {
                        let Some(notice) = Notice::parse(&json) else {
                            continue;
                        };
                        (
                            Received::Presence(room.to_owned(), decoded.node, notice, json.len()),
                            json.len(),
                        )
                    }
                };
                if queued_bytes.fetch_add(len, Ordering::Relaxed) + len > core.limits.queue_bytes
                    || queue.try_send(received).is_err()
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
        let deliver = |received: Received| {
            let len = match &received {
                Received::Message(_, message) | Received::Stored(.., message) => message.len(),
                Received::Presence(.., len) => *len,
            };
            queued_bytes.fetch_sub(len, Ordering::Relaxed);
            let Some(inbound) = inbound.get() else {
                return;
            };
            match received {
                Received::Message(room, message) => inbound.deliver(&room, message),
                Received::Stored(room, id, sender, message) => {
                    inbound.deliver_stored(&room, message, id, sender);
                }
                Received::Presence(room, from, notice, _) => {
                    let (events, sync) = {
                        let mut presence = core.presence();
                        let (events, sync) =
                            presence.apply(&room, from, notice, Instant::now() + core.ttl);
                        (events, sync.then(|| presence.state(&room)).flatten())
                    };
                    for event in events {
                        inbound.presence(&event.room, event.joined, &event.id, &event.name);
                    }
                    if let (Some(state), Some(queue)) = (sync, requeue.upgrade()) {
                        core.notice(&queue, &room, &state);
                    }
                }
            }
        };
        let delivering = async {
            while let Some(received) = queue_rx.recv().await {
                // Paced by the members here as a local sender is: while one of them holds its
                // room back, what other nodes sent waits in the bounded queue from Redis.
                if let (Received::Message(room, _) | Received::Stored(room, ..), Some(inbound)) =
                    (&received, inbound.get())
                {
                    inbound.ready(room).await;
                }
                deliver(received);
            }
            Ok(())
        };
        let result = tokio::select! {
            result = publishing => result,
            result = subscribing => result,
            result = receiving => result,
            result = delivering => result,
        };
        // What arrived before the link failed is still for the members here.
        while let Ok(received) = queue_rx.try_recv() {
            deliver(received);
        }
        result
    }
}

/// Whether `seq` from `node` in `room` is new (after the last one seen, in serial number
/// arithmetic: sequence numbers wrap); remembers it.
fn fresh(seen: &mut Seen, node: u64, room: &str, seq: u32) -> bool {
    let known = seen
        .nodes
        .get(&node)
        .is_some_and(|rooms| rooms.contains_key(room));
    if !known {
        // Nodes come and go (each process is a new one): forget them all rather than grow.
        seen.entries += 1;
        if seen.entries > MAX_NODES_SEEN {
            seen.nodes.clear();
            seen.entries = 1;
        }
        seen.nodes
            .entry(node)
            .or_default()
            .insert(room.to_owned(), seq);
        return true;
    }
    let Some(last) = seen
        .nodes
        .get_mut(&node)
        .and_then(|rooms| rooms.get_mut(room))
    else {
        return true;
    };
    let ahead = seq.wrapping_sub(*last);
    if ahead == 0 || ahead > u32::MAX / 2 {
        return false;
    }
    *last = seq;
    true
}

/// Per node and room, the last sequence number seen, and how many there are.
#[derive(Default)]
struct Seen {
    nodes: HashMap<u64, HashMap<String, u32>>,
    entries: usize,
}

/// Takes up to `MAX_BATCH` messages (and `MAX_BATCH_BYTES`) off the queue, numbered; `false`
/// when the queue is closed and empty.
async fn take_batch(
    outgoing: &mut mpsc::Receiver<Outgoing>,
    core: &Core,
    node: u64,
    seq: &mut u32,
    batch: &mut Vec<Sent>,
) -> bool {
    let Some(first) = outgoing.recv().await else {
        return false;
    };
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some(message) = next.take() {
        bytes += message.len;
        *seq = seq.wrapping_add(1);
        let channel = core.channel(&message.room);
        let mut stored = None;
        let payload = match (&message.body, core.history.get()) {
            (Body::Message(m, member), Some(limits)) => {
                wire::stored_body(*member, m).map(|body| {
                    match stream::keys(&channel, core.cluster) {
                        Some((stream, seqs)) => {
                            stored = Some(Box::new(Stored {
                                stream,
                                seqs,
                                header: wire::stored_header(node, *seq),
                                node: format!("{node:016x}"),
                                seq: *seq,
                                max_len: limits.length(),
                                max_age_ms: limits.age().map_or(0, |age| {
                                    u64::try_from(age.as_millis()).unwrap_or(u64::MAX).max(1)
                                }),
                            }));
                            body
                        }
                        // No key can share this channel's slot: published without an id.
                        None => wire::encode_stored(node, *seq, None, &body),
                    }
                })
            }
            (Body::Message(m, _), None) => wire::encode(node, *seq, m),
            (Body::Presence(json), _) => Some(wire::encode_presence(node, *seq, json)),
        };
        match payload {
            Some(payload) => batch.push(Sent {
                channel,
                payload,
                stored,
                len: message.len,
            }),
            None => {
                core.outgoing_bytes
                    .fetch_sub(message.len, Ordering::Relaxed);
            }
        }
        if batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            next = outgoing.try_recv().ok();
        }
    }
    true
}

/// After a reconnection, waits until the channels of `batch` have as many subscribers as they
/// had before it (the other nodes subscribed again), or until `deadline`: what is published
/// before a node subscribes again does not reach it.
async fn wait_for_receivers(
    publisher: &mut Publisher,
    batch: &[Sent],
    receivers: &HashMap<String, i64>,
    checked: &mut HashSet<String>,
    deadline: Instant,
) -> redis::RedisResult<()> {
    let mut waiting: Vec<&str> = batch
        .iter()
        .map(|sent| sent.channel.as_str())
        .filter(|channel| !checked.contains(*channel))
        .collect();
    waiting.sort_unstable();
    waiting.dedup();
    for channel in &waiting {
        checked.insert((*channel).to_owned());
    }
    waiting.retain(|channel| receivers.get(*channel).is_some_and(|n| *n > 0));
    while !waiting.is_empty() && Instant::now() < deadline {
        let counts = publisher.subscribers(&waiting, COMMAND_TIMEOUT).await?;
        let back: HashSet<String> = counts
            .into_iter()
            .filter(|(channel, n)| receivers.get(channel).is_some_and(|want| n >= want))
            .map(|(channel, _)| channel)
            .collect();
        waiting.retain(|channel| !back.contains(*channel));
        if !waiting.is_empty() {
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
    Ok(())
}

/// Publishes `batch`; empties it once Redis took it all. On failure it stays, to be published
/// again (with the same sequence numbers) by the next link.
async fn publish_batch(
    publisher: &mut Publisher,
    batch: &mut Vec<Sent>,
    recent: &mut Recent,
    receivers: &mut HashMap<String, i64>,
    core: &Core,
) -> redis::RedisResult<()> {
    let pairs: Vec<(&str, &Bytes, Option<&Stored>)> = batch
        .iter()
        .map(|sent| (sent.channel.as_str(), &sent.payload, sent.stored.as_deref()))
        .collect();
    let reached = publisher.publish(&pairs, COMMAND_TIMEOUT).await?;
    if receivers.len() > MAX_CHANNELS_TRACKED {
        receivers.clear();
    }
    let mut bytes = 0;
    let now = Instant::now();
    for (sent, reached) in batch.drain(..).zip(reached) {
        bytes += sent.len;
        receivers.insert(sent.channel.clone(), reached);
        recent.push(now, sent, core.limits.queue_bytes);
    }
    // Counted until Redis answered: the batch in flight is within the bound too.
    core.outgoing_bytes.fetch_sub(bytes, Ordering::Relaxed);
    Ok(())
}

/// What Redis took in the last [`REPLAY`], oldest first, bounded by [`REPLAY_MESSAGES`] and a
/// byte bound (the queue's own).
#[derive(Default)]
struct Recent {
    sent: VecDeque<(Instant, Sent)>,
    bytes: usize,
}

impl Recent {
    fn push(&mut self, now: Instant, sent: Sent, max_bytes: usize) {
        self.bytes += sent.len;
        self.sent.push_back((now, sent));
        while self.sent.len() > REPLAY_MESSAGES || self.bytes > max_bytes {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, sent)) = self.sent.pop_front() {
            self.bytes -= sent.len;
        }
    }

    /// Empties it, returning what is no older than [`REPLAY`].
    fn take(&mut self, now: Instant) -> Vec<Sent> {
        while self
            .sent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > REPLAY)
        {
            self.pop();
        }
        self.bytes = 0;
        self.sent.drain(..).map(|(_, sent)| sent).collect()
    }
}

/// Whether the Redis of `client` is a node of a cluster.
async fn in_cluster(client: &redis::Client) -> redis::RedisResult<bool> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    // A user whose ACL refuses INFO is not on a cluster as far as we can tell.
    let info: Option<String> = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut connection)
        .await
        .ok();
    Ok(info.is_some_and(|info| info.contains("cluster_enabled:1")))
}

/// Where to connect: one Redis (one URL, no database number) or a cluster.
fn target(urls: &[String], cluster: bool, ca: Option<Vec<u8>>) -> Result<Target, RedisError> {
    let tcp = || redis::io::tcp::TcpSettings::default().set_nodelay(true);
    let mut infos = Vec::with_capacity(urls.len());
    for url in urls {
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| RedisError::Url(e.to_string()))?;
        let db = info.redis_settings().db();
        if db != 0 {
            return Err(RedisError::Url(format!(
                "{}: Redis pub/sub ignores the database number, so /{db} would separate \
                 nothing; use a prefix (--redis-prefix) instead",
                redacted(url)
            )));
        }
        infos.push(info.set_tcp_settings(tcp()));
    }
    let certificates = |root_cert| redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    if cluster {
        if infos.is_empty() {
            return Err(RedisError::Url("no cluster node given".to_owned()));
        }
        return Ok(Target::Cluster(infos, ca));
    }
    let [info] = <[_; 1]>::try_from(infos)
        .map_err(|_| RedisError::Url("one Redis URL, or a cluster".to_owned()))?;
    match ca {
        Some(root_cert) => redis::Client::build_with_tls(info, certificates(root_cert)),
        None => redis::Client::open(info),
    }
    .map(Target::Single)
    .map_err(|e| RedisError::Url(e.to_string()))
}

/// The wait before reconnection attempt `attempt` (0 for the first after a failure): none,
/// then doubling from 10 ms to at most 100 ms, each drawn at random between half and all of
/// it, so that the nodes of a cluster do not all come at once.
fn backoff(attempt: u32, node: u64) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let step = BACKOFF_FIRST
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(node);
    hasher.write_u32(attempt);
    let half = step / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(hasher.finish() % nanos)
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
    fn the_back_off_starts_at_once_and_stays_small() {
        assert_eq!(backoff(0, 1), Duration::ZERO);
        let first = backoff(1, 1);
        assert!(
            first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST,
            "{first:?}"
        );
        for attempt in 2..40 {
            let wait = backoff(attempt, 7);
            assert!(wait <= BACKOFF_MAX, "{wait:?}");
        }
        assert!(backoff(39, 7) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn sequence_numbers_drop_what_was_seen_and_wrap() {
        let mut seen = Seen::default();
        assert!(fresh(&mut seen, 1, "r", 5));
        assert!(!fresh(&mut seen, 1, "r", 5));
        assert!(!fresh(&mut seen, 1, "r", 4));
        assert!(fresh(&mut seen, 1, "r", 6));
        // Another room of the same node has its own order.
        assert!(fresh(&mut seen, 1, "s", 2));
        assert!(fresh(&mut seen, 2, "r", 1));
        assert!(fresh(&mut seen, 3, "r", u32::MAX));
        assert!(fresh(&mut seen, 3, "r", 0));
        assert!(!fresh(&mut seen, 3, "r", u32::MAX));
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
        assert!(tight.queue_bytes(1000 + HEADER_LEN - 1).validate().is_err());
        assert!(tight.queue_bytes(1000 + HEADER_LEN).validate().is_ok());
    }
}
