//! The connections of the Redis backplane, to one Redis or to a Redis Cluster: the same few
//! operations (publish a batch, subscribe, take what arrives) over either.
//!
//! On one Redis, one connection publishes (`PUBLISH`, pipelined) and one is subscribed
//! (`SUBSCRIBE`). On a cluster, rooms are sharded channels (`SPUBLISH`/`SSUBSCRIBE`, Redis 7):
//! each room's channel lives on the shard that owns its hash slot, so the rooms spread over the
//! shards; the cluster client of the `redis` crate finds the shard of each channel, follows the
//! cluster's redirections (MOVED, ASK) and subscribes again after a shard's connection is made
//! again.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{PushKind, RedisResult, Value};
use tokio::sync::mpsc;

/// Where the backplane connects.
pub(super) enum Target {
    Single(redis::Client),
    /// Some nodes of the cluster, and the CA to verify them against.
    Cluster(Vec<redis::ConnectionInfo>, Option<Vec<u8>>),
}

/// A link to Redis, made by [`Target::connect`].
pub(super) struct Link {
    pub(super) publisher: Publisher,
    pub(super) subscriber: Subscriber,
    pub(super) incoming: Incoming,
}

#[derive(Clone)]
pub(super) enum Publisher {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

pub(super) enum Subscriber {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

pub(super) enum Incoming {
    Single(PubSubStream),
    Cluster(mpsc::UnboundedReceiver<redis::PushInfo>),
}

impl Target {
    pub(super) async fn connect(&self, timeout: Duration) -> RedisResult<Link> {
        match self {
            Self::Single(client) => {
                // The crate's own response timeout (500 ms by default) would drop the link on
                // any short stall of Redis; ours is the one timeout for every command.
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                let publisher = timed(
                    timeout,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await?;
                let pubsub = timed(timeout, client.get_async_pubsub()).await?;
                let (sink, stream) = pubsub.split();
                Ok(Link {
                    publisher: Publisher::Single(publisher),
                    subscriber: Subscriber::Single(sink),
                    incoming: Incoming::Single(stream),
                })
            }
            Self::Cluster(nodes, ca) => {
                // A client per link: its pushes (the messages of the sharded channels) come
                // into this link's channel only.
                let (tx, rx) = mpsc::unbounded_channel();
                let client = cluster_client(nodes, ca.as_deref(), timeout, Some(tx))?;
                let connection = timed(timeout, client.get_async_connection()).await?;
                Ok(Link {
                    publisher: Publisher::Cluster(connection.clone()),
                    subscriber: Subscriber::Cluster(connection),
                    incoming: Incoming::Cluster(rx),
                })
            }
        }
    }
}

impl Target {
    /// On a cluster, a connection for reading (history) with no subscription on it, made
    /// apart from the links: a link's connection is also its subscriber, and a copy of it kept
    /// for a read would stay subscribed (the cluster client subscribes again by itself) after
    /// the link is dropped, so that a publish could reach it in place of the node's next
    /// link. It follows the cluster's redirections and reconnects by itself. `None` for one
    /// Redis (reads use the link's publishing connection, which subscribes to nothing).
    pub(super) async fn cluster_reader(&self, timeout: Duration) -> Option<RedisResult<Publisher>> {
        let Self::Cluster(nodes, ca) = self else {
            return None;
        };
        let connection = match cluster_client(nodes, ca.as_deref(), timeout, None) {
            Ok(client) => timed(timeout, client.get_async_connection()).await,
            Err(e) => Err(e),
        };
        Some(connection.map(Publisher::Cluster))
    }
}

/// A client of the cluster of `nodes`, its pushes into `pushes`.
fn cluster_client(
    nodes: &[redis::ConnectionInfo],
    ca: Option<&[u8]>,
    timeout: Duration,
    pushes: Option<mpsc::UnboundedSender<redis::PushInfo>>,
) -> RedisResult<redis::cluster::ClusterClient> {
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    if let Some(root_cert) = ca {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert.to_vec()),
        });
    }
    builder = builder
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(timeout)
        .response_timeout(timeout);
    if let Some(pushes) = pushes {
        builder = builder.push_sender(pushes);
    }
    builder.build()
}

impl Publisher {
    /// Publishes `batch` (channel, payload, and how to store it in the room's history), in
    /// order per channel; returns how many subscribers each reached.
    pub(super) async fn publish(
        &mut self,
        batch: &[(&str, &Bytes, Option<&Stored>)],
        timeout: Duration,
    ) -> RedisResult<Vec<i64>> {
        match self {
            Self::Single(connection) => {
                let mut pipe = redis::pipe();
                for (channel, payload, stored) in batch {
                    command(&mut pipe, "PUBLISH", channel, payload, *stored);
                }
                timed(timeout, pipe.query_async(connection)).await
            }
            Self::Cluster(connection) => {
                // One pipeline per channel (one hash slot, so one shard), side by side: each
                // room's messages in order, the shards in parallel.
                let mut channels: Vec<&str> = Vec::new();
                for (channel, ..) in batch {
                    if !channels.contains(channel) {
                        channels.push(channel);
                    }
                }
                let pipelines = channels.iter().map(|channel| {
                    let mut pipe = redis::pipe();
                    for (c, payload, stored) in batch {
                        if c == channel {
                            command(&mut pipe, "SPUBLISH", c, payload, *stored);
                        }
                    }
                    let mut connection = connection.clone();
                    async move { pipe.query_async::<Vec<i64>>(&mut connection).await }
                });
                let replies = timed(timeout, futures_util::future::try_join_all(pipelines)).await?;
                let mut replies: Vec<std::vec::IntoIter<i64>> =
                    replies.into_iter().map(Vec::into_iter).collect();
                let mut reached = Vec::with_capacity(batch.len());
                for (channel, ..) in batch {
                    let at = channels.iter().position(|c| c == channel);
                    let n = at
                        .and_then(|at| replies.get_mut(at))
                        .and_then(Iterator::next)
                        .unwrap_or(0);
                    reached.push(n);
                }
                Ok(reached)
            }
        }
    }

    /// How many subscribers each of `channels` has (on a cluster, on the shard that owns it).
    pub(super) async fn subscribers(
        &mut self,
        channels: &[&str],
        timeout: Duration,
    ) -> RedisResult<Vec<(String, i64)>> {
        match self {
            Self::Single(connection) => {
                let mut cmd = redis::cmd("PUBSUB");
                cmd.arg("NUMSUB").arg(channels);
                timed(timeout, cmd.query_async(connection)).await
            }
            Self::Cluster(connection) => {
                let mut out = Vec::with_capacity(channels.len());
                for channel in channels {
                    let mut cmd = redis::cmd("PUBSUB");
                    cmd.arg("SHARDNUMSUB").arg(*channel);
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        Route::with_key(channel, SlotAddr::Master),
                    ));
                    let reply = timed(timeout, connection.route_command(cmd, route)).await?;
                    let n = match reply {
                        Value::Array(items) => items.get(1).cloned(),
                        Value::Map(pairs) => pairs.into_iter().next().map(|(_, n)| n),
                        _ => None,
                    };
                    if let Some(Value::Int(n)) = n {
                        out.push(((*channel).to_owned(), n));
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Adds to `pipe` the publishing of `payload` on `channel` with `publish` (`PUBLISH` or
/// `SPUBLISH`): as is, or through the script that stores it in the room's history first.
fn command(
    pipe: &mut redis::Pipeline,
    publish: &str,
    channel: &str,
    payload: &Bytes,
    stored: Option<&Stored>,
) {
    match stored {
        None => {
            pipe.cmd(publish).arg(channel).arg(&payload[..]);
        }
        Some(stored) => {
            pipe.cmd("EVAL")
                .arg(super::stream::STORE)
                .arg(2)
                .arg(&stored.stream)
                .arg(&stored.seqs)
                .arg(publish)
                .arg(channel)
                .arg(stored.max_len)
                .arg(&stored.header[..])
                .arg(&payload[..])
                .arg(&stored.node)
                .arg(stored.seq)
                .arg(stored.max_age_ms);
        }
    }
}

/// How a message is stored in its room's history (the payload is then its body).
#[derive(Debug, Clone)]
pub(super) struct Stored {
    /// The room's stream, and the hash of the last sequence number of each node there.
    pub(super) stream: String,
    pub(super) seqs: String,
    /// The header of the payload, before the id.
    pub(super) header: Bytes,
    /// The node (hex) and its sequence number for this message.
    pub(super) node: String,
    pub(super) seq: u32,
    pub(super) max_len: usize,
    /// 0: no age limit.
    pub(super) max_age_ms: u64,
}

impl Subscriber {
    pub(super) async fn subscribe(&mut self, channel: &str, timeout: Duration) -> RedisResult<()> {
        match self {
            Self::Single(sink) => timed(timeout, sink.subscribe(channel)).await,
            Self::Cluster(connection) => timed(timeout, connection.ssubscribe(channel)).await,
        }
    }

    pub(super) async fn unsubscribe(
        &mut self,
        channel: &str,
        timeout: Duration,
    ) -> RedisResult<()> {
        match self {
            Self::Single(sink) => timed(timeout, sink.unsubscribe(channel)).await,
            Self::Cluster(connection) => timed(timeout, connection.sunsubscribe(channel)).await,
        }
    }

    pub(super) async fn ping(&mut self, timeout: Duration) -> RedisResult<()> {
        match self {
            Self::Single(sink) => timed(timeout, sink.ping::<()>()).await,
            Self::Cluster(connection) => {
                timed(timeout, redis::cmd("PING").query_async::<()>(connection)).await
            }
        }
    }
}

impl Incoming {
    /// The next message (channel, payload); `None` when the link is gone.
    pub(super) async fn next(&mut self) -> Option<(String, Bytes)> {
        match self {
            Self::Single(stream) => {
                let message = stream.next().await?;
                Some((
                    message.get_channel_name().to_owned(),
                    Bytes::copy_from_slice(message.get_payload_bytes()),
                ))
            }
            Self::Cluster(pushes) => loop {
                let push = pushes.recv().await?;
                if push.kind == PushKind::Disconnection {
                    // A shard's connection was lost: the link is made again whole, and
                    // subscribes again to every room, rather than trust each shard to.
                    return None;
                }
                if push.kind != PushKind::SMessage {
                    continue;
                }
                let mut data = push.data.into_iter();
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                    && let Ok(channel) = String::from_utf8(channel)
                {
                    return Some((channel, Bytes::from(payload)));
                }
            },
        }
    }
}

pub(super) async fn timed<T>(
    timeout: Duration,
    future: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))
        })
}
