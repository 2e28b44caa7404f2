//! History per room: a member that comes back with the id of the last message it saw gets
//! exactly what it missed, then the live messages, once each; in one process and across two
//! nodes on a real `redis-server`.

mod rooms;

use std::time::Duration;

use sockeye::Message;
use sockeye_relay::{HistoryLimits, RedisBackplane, Relay};
use sockeye_test_support as support;
use support::redis_server;

use rooms::{Ws, member, serve, text, until_members, with_id};

async fn close(mut ws: Ws) {
    ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

/// Sends until `to` receives (its node is subscribed to the room on Redis), then makes sure
/// nothing more is on its way to it.
async fn warm_up(sender: &mut Ws, to: &mut Ws) {
    loop {
        sender.send(Message::text("warm")).await.unwrap();
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(100), text(to)).await {
            assert_eq!(got, "warm");
            break;
        }
    }
    sender.send(Message::text("sync")).await.unwrap();
    while text(to).await != "sync" {}
}

async fn redis_relay(url: &str, limits: HistoryLimits) -> Relay {
    let backplane = RedisBackplane::builder(url).connect().await.unwrap();
    Relay::builder()
        .backplane(backplane)
        .history(limits)
        .build()
}

/// `sender` on `relay_s`'s node, `reader` on `relay_r`'s: the reader sees one message, drops,
/// misses `missed`, comes back with its last id and gets exactly those, then a live one.
async fn reader_comes_back(
    s: (std::net::SocketAddr, &Relay),
    r: (std::net::SocketAddr, &Relay),
    missed: usize,
) {
    reader_comes_back_in("r", s, r, missed).await;
}

async fn reader_comes_back_in(
    room: &str,
    (addr_s, relay_s): (std::net::SocketAddr, &Relay),
    (addr_r, relay_r): (std::net::SocketAddr, &Relay),
    missed: usize,
) {
    let _ = relay_s;
    let mut sender = member(addr_s, room).await;
    let mut plain = member(addr_r, room).await;
    until_members(relay_r, room, if addr_s == addr_r { 2 } else { 1 }).await;
    warm_up(&mut sender, &mut plain).await;
    let mut reader = member(addr_r, &format!("{room}?since=")).await;
    until_members(relay_r, room, if addr_s == addr_r { 3 } else { 2 }).await;
    sender.send(Message::text("m0")).await.unwrap();
    let (first, last) = with_id(&mut reader).await;
    assert_eq!(first, "m0");
    // A member that did not ask for ids sees the messages only.
    assert_eq!(text(&mut plain).await, "m0");
    close(reader).await;
    until_members(relay_r, room, if addr_s == addr_r { 2 } else { 1 }).await;
    for i in 1..=missed {
        sender.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    // Everything sent while it was away is in the room's history once `plain` saw it.
    for i in 1..=missed {
        assert_eq!(text(&mut plain).await, format!("m{i}"));
    }
    let mut reader = member(addr_r, &format!("{room}?since={last}")).await;
    let mut ids = vec![last];
    for i in 1..=missed {
        let (message, id) = with_id(&mut reader).await;
        assert_eq!(message, format!("m{i}"), "exactly what it missed, in order");
        assert!(
            id.parse::<sockeye_relay::HistoryId>().unwrap() > ids.last().unwrap().parse().unwrap()
        );
        ids.push(id);
    }
    until_members(relay_r, room, if addr_s == addr_r { 3 } else { 2 }).await;
    sender.send(Message::text("live")).await.unwrap();
    let (message, _) = with_id(&mut reader).await;
    assert_eq!(message, "live", "then the live ones, none twice");
}

#[tokio::test]
async fn in_process_a_member_back_with_its_last_id_gets_exactly_what_it_missed() {
    support::bounded(Box::pin(async {
        let relay = Relay::builder().history(HistoryLimits::new(100)).build();
        let (addr, _server) = serve(relay.clone()).await;
        reader_comes_back((addr, &relay), (addr, &relay), 25).await;
    }))
    .await;
}

#[tokio::test]
async fn in_process_history_older_than_what_is_kept_is_told_truncated() {
    support::bounded(Box::pin(async {
        let relay = Relay::builder().history(HistoryLimits::new(3)).build();
        let (addr, _server) = serve(relay.clone()).await;
        let mut sender = member(addr, "r").await;
        let mut reader = member(addr, "r?since=").await;
        until_members(&relay, "r", 2).await;
        sender.send(Message::text("m0")).await.unwrap();
        let (_, last) = with_id(&mut reader).await;
        close(reader).await;
        until_members(&relay, "r", 1).await;
        for i in 1..=10 {
            sender.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        // Sent by the same member: taken in order, the last one after the others.
        let mut witness = member(addr, "r?since=").await;
        until_members(&relay, "r", 2).await;
        sender.send(Message::text("mark")).await.unwrap();
        assert_eq!(with_id(&mut witness).await.0, "mark");
        let mut reader = member(addr, &format!("r?since={last}")).await;
        let notice: serde_json::Value = serde_json::from_str(&text(&mut reader).await).unwrap();
        assert_eq!(notice["sockeye"], "history");
        assert_eq!(notice["event"], "truncated");
        // What is kept: the last three.
        for expected in ["m9", "m10", "mark"] {
            assert_eq!(with_id(&mut reader).await.0, expected);
        }
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_member_back_with_its_last_id_gets_exactly_what_it_missed() {
    support::bounded(Box::pin(async {
        let port = support::free_port();
        let Some(_redis) = redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let one = redis_relay(&url, HistoryLimits::new(100)).await;
        let two = redis_relay(&url, HistoryLimits::new(100)).await;
        let (addr_one, _t1) = serve(one.clone()).await;
        let (addr_two, _t2) = serve(two.clone()).await;
        // Across two nodes: the sender on one, the reader on two.
        reader_comes_back((addr_one, &one), (addr_two, &two), 25).await;
        // On one node, the sender's: Redis numbers its messages too.
        let three = redis_relay(&url, HistoryLimits::new(100)).await;
        let (addr_three, _t3) = serve(three.clone()).await;
        reader_comes_back_in("s", (addr_three, &three), (addr_three, &three), 10).await;
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_history_older_than_the_stream_keeps_is_told_truncated() {
    support::bounded(Box::pin(async {
        let port = support::free_port();
        let Some(_redis) = redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let relay = redis_relay(&url, HistoryLimits::new(5)).await;
        let (addr, _server) = serve(relay.clone()).await;
        let mut sender = member(addr, "r").await;
        let mut reader = member(addr, "r?since=").await;
        until_members(&relay, "r", 2).await;
        sender.send(Message::text("m0")).await.unwrap();
        let (_, first) = with_id(&mut reader).await;
        // `MAXLEN ~ 5` trims whole nodes of the stream (100 entries): send well over that.
        let sent = 300;
        for i in 1..=sent {
            sender.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        for i in 1..=sent {
            assert_eq!(with_id(&mut reader).await.0, format!("m{i}"));
        }
        close(reader).await;
        until_members(&relay, "r", 1).await;
        let mut reader = member(addr, &format!("r?since={first}")).await;
        let notice: serde_json::Value = serde_json::from_str(&text(&mut reader).await).unwrap();
        assert_eq!(notice["event"], "truncated", "{notice}");
        // What the stream kept: the last ones, in order, up to the last sent.
        let mut next: Option<usize> = None;
        loop {
            let (message, _) = with_id(&mut reader).await;
            let n: usize = message.trim_start_matches('m').parse().unwrap();
            if let Some(next) = next {
                assert_eq!(n, next);
            }
            assert!(n > 1, "the oldest are gone");
            if n == sent {
                break;
            }
            next = Some(n + 1);
        }
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_each_rooms_history_lives_on_its_shard() {
    support::bounded(Box::pin(async {
        let Some(cluster) = support::RedisCluster::start(3).await else {
            return;
        };
        // One room per shard.
        let mut rooms: Vec<Option<String>> = vec![None; 3];
        for i in 0.. {
            let room = format!("room{i}");
            let owner = cluster.owner(&format!("sockeye:room:{room}")).await;
            rooms[owner].get_or_insert(room);
            if rooms.iter().all(Option::is_some) {
                break;
            }
        }
        let relay = || async {
            let backplane = RedisBackplane::cluster_builder(cluster.urls())
                .connect()
                .await
                .unwrap();
            Relay::builder()
                .backplane(backplane)
                .history(HistoryLimits::new(100))
                .build()
        };
        let (one, two) = (relay().await, relay().await);
        let (addr_one, _t1) = serve(one.clone()).await;
        let (addr_two, _t2) = serve(two.clone()).await;
        for room in rooms.into_iter().flatten() {
            reader_comes_back_in(&room, (addr_one, &one), (addr_two, &two), 5).await;
        }
    }))
    .await;
}

/// A backplane that keeps history as a test says: its reads wait for the test's answer, and
/// the test hands messages in with their ids.
#[derive(Default)]
struct Scripted {
    inbound: std::sync::OnceLock<sockeye_relay::Inbound>,
    read: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<sockeye_relay::history::Replay>>>,
}

/// The relay's handle on a [`Scripted`].
struct Handle(std::sync::Arc<Scripted>);

impl sockeye_relay::Backplane for Handle {
    fn attach(&self, inbound: sockeye_relay::Inbound) {
        let _ = self.0.inbound.set(inbound);
    }

    fn subscribe(&self, _room: &str) {}

    fn unsubscribe(&self, _room: &str) {}

    fn publish(&self, _room: &str, _message: &Message) -> Result<(), sockeye_relay::Overloaded> {
        Ok(())
    }

    fn keep_history(&self, _limits: HistoryLimits) -> bool {
        true
    }

    fn history(
        &self,
        _room: &str,
        _since: sockeye_relay::HistoryId,
        _max: usize,
        _max_bytes: usize,
    ) -> sockeye_relay::history::HistoryRead {
        let read = self.0.read.lock().unwrap().take().unwrap();
        Box::pin(async move { read.await.unwrap() })
    }
}

#[tokio::test]
async fn live_messages_that_arrive_while_history_is_read_follow_it_once() {
    support::bounded(Box::pin(async {
        let scripted = std::sync::Arc::new(Scripted::default());
        let (answer, read) = tokio::sync::oneshot::channel();
        *scripted.read.lock().unwrap() = Some(read);
        let relay = Relay::builder()
            .backplane(Handle(scripted.clone()))
            .history(HistoryLimits::new(100))
            .build();
        let (addr, _server) = serve(relay.clone()).await;
        let inbound = scripted.inbound.get().unwrap();
        let id = |s: &str| s.parse::<sockeye_relay::HistoryId>().unwrap();
        let mut reader = member(addr, "r?since=1-0").await;
        until_members(&relay, "r", 1).await;
        // Live while its history is read: 2 (which the history has too) and 3.
        inbound.deliver_stored("r", Message::text("m2"), Some(id("2-0")), None);
        inbound.deliver_stored("r", Message::text("m3"), Some(id("3-0")), None);
        answer
            .send(sockeye_relay::history::Replay {
                entries: vec![(id("2-0"), Message::text("m2"))],
                truncated: false,
            })
            .unwrap();
        assert_eq!(with_id(&mut reader).await, ("m2".into(), "2-0".into()));
        assert_eq!(with_id(&mut reader).await, ("m3".into(), "3-0".into()));
        inbound.deliver_stored("r", Message::text("m4"), Some(id("4-0")), None);
        assert_eq!(
            with_id(&mut reader).await,
            ("m4".into(), "4-0".into()),
            "m2 once"
        );
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_with_history_a_burst_closes_nobody_and_loses_nothing() {
    support::bounded(Box::pin(async {
        let port = support::free_port();
        let Some(_redis) = redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let node = || async {
            let backplane = RedisBackplane::builder(&url).connect().await.unwrap();
            Relay::builder()
                .backplane(backplane)
                .queue_limits(sockeye_relay::QueueLimits::new(16, 1 << 20))
                .history(HistoryLimits::new(100))
                .build()
        };
        let (one, two) = (node().await, node().await);
        let (addr_one, _t1) = serve(one.clone()).await;
        let (addr_two, _t2) = serve(two.clone()).await;
        let mut sender = member(addr_one, "burst").await;
        let mut here = member(addr_one, "burst").await;
        let mut there = member(addr_two, "burst").await;
        let mut there_ids = member(addr_two, "burst?since=").await;
        until_members(&one, "burst", 2).await;
        until_members(&two, "burst", 2).await;
        warm_up(&mut sender, &mut there).await;
        while text(&mut here).await != "sync" {}
        while with_id(&mut there_ids).await.0 != "sync" {}
        // More than the queue from Redis holds (4,096).
        let total = 6000;
        let send = tokio::spawn(async move {
            for i in 0..total {
                sender.send(Message::text(i.to_string())).await.unwrap();
            }
            sender
        });
        for i in 0..total {
            assert_eq!(text(&mut here).await, i.to_string());
            assert_eq!(text(&mut there).await, i.to_string());
            assert_eq!(with_id(&mut there_ids).await.0, i.to_string());
        }
        let _sender = send.await.unwrap();
        assert_eq!(one.stats().closed_slow + two.stats().closed_slow, 0);
        assert_eq!(one.stats().closed_overloaded, 0);
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_replay_is_bounded_by_the_members_queue() {
    support::bounded(Box::pin(async {
        let port = support::free_port();
        let Some(_redis) = redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let backplane = RedisBackplane::builder(&url).connect().await.unwrap();
        // 1,000 bytes a member: a replay of ten 200-byte messages cannot be whole.
        let relay = Relay::builder()
            .backplane(backplane)
            .queue_limits(sockeye_relay::QueueLimits::new(256, 1000))
            .history(HistoryLimits::new(100))
            .build();
        let (addr, _server) = serve(relay.clone()).await;
        let mut sender = member(addr, "r").await;
        let mut reader = member(addr, "r?since=").await;
        until_members(&relay, "r", 2).await;
        let message = |i: usize| format!("{i:0>200}");
        sender.send(Message::text(message(0))).await.unwrap();
        let (_, first) = with_id(&mut reader).await;
        close(reader).await;
        until_members(&relay, "r", 1).await;
        let mut witness = member(addr, "r").await;
        until_members(&relay, "r", 2).await;
        for i in 1..=10 {
            sender.send(Message::text(message(i))).await.unwrap();
            assert_eq!(text(&mut witness).await, message(i));
        }
        let mut reader = member(addr, &format!("r?since={first}")).await;
        let notice: serde_json::Value = serde_json::from_str(&text(&mut reader).await).unwrap();
        assert_eq!(notice["event"], "truncated", "{notice}");
        // The newest that fit, in order, up to the last.
        let mut got = Vec::new();
        while got.last() != Some(&10) {
            let (text, _) = with_id(&mut reader).await;
            got.push(text.parse::<usize>().unwrap());
        }
        assert!(got.len() < 10 && !got.is_empty(), "{got:?}");
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
        sender.send(Message::text("live")).await.unwrap();
        assert_eq!(with_id(&mut reader).await.0, "live");
        assert_eq!(relay.stats().closed_slow, 0);
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_the_first_message_of_a_new_room_reaches_its_own_node() {
    support::bounded(Box::pin(async {
        let port = support::free_port();
        let Some(_redis) = redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let relay = redis_relay(&url, HistoryLimits::new(100)).await;
        let (addr, _server) = serve(relay.clone()).await;
        // Members of the same node get each other's messages through Redis: the first one
        // waits for the node to be subscribed to the room.
        for i in 0..20 {
            let room = format!("fresh{i}");
            let mut sender = member(addr, &room).await;
            let mut reader = member(addr, &room).await;
            until_members(&relay, &room, 2).await;
            sender.send(Message::text("first")).await.unwrap();
            assert_eq!(text(&mut reader).await, "first", "room {room}");
        }
    }))
    .await;
}

#[tokio::test]
async fn a_shutdown_while_history_is_read_closes_the_member_without_waiting_for_it() {
    support::bounded(Box::pin(async {
        let scripted = std::sync::Arc::new(Scripted::default());
        // A read that never answers (Redis away): the answer is kept, never sent.
        let (_answer, read) = tokio::sync::oneshot::channel();
        *scripted.read.lock().unwrap() = Some(read);
        let shutdown = sockeye::Shutdown::new().grace_period(Duration::from_secs(10));
        let relay = Relay::builder()
            .backplane(Handle(scripted.clone()))
            .history(HistoryLimits::new(100))
            .shutdown(&shutdown)
            .build();
        let (addr, _server) = serve(relay.clone()).await;
        let inbound = scripted.inbound.get().unwrap();
        let mut reader = member(addr, "r?since=1-0").await;
        until_members(&relay, "r", 1).await;
        // Live while its history is read: it waits aside.
        let id = "2-0".parse::<sockeye_relay::HistoryId>().unwrap();
        inbound.deliver_stored("r", Message::text("m2"), Some(id), None);
        shutdown.trigger();
        // Not known what it missed, then what arrived meanwhile, then the 1001.
        let notice: serde_json::Value = serde_json::from_str(&text(&mut reader).await).unwrap();
        assert_eq!(notice["event"], "truncated", "{notice}");
        assert_eq!(with_id(&mut reader).await, ("m2".into(), "2-0".into()));
        match reader.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, sockeye::CloseCode::GOING_AWAY);
            }
            other => panic!("expected 1001, got {other:?}"),
        }
        let report = shutdown.drained().await;
        assert_eq!(report.dropped_messages, 0, "{report}");
    }))
    .await;
}
