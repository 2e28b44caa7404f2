//! History per room: a member that comes back with the id of the last message it saw gets
//! exactly what it missed, then the live messages, once each; in one process and across two
//! nodes on a real `redis-server`.

mod rooms;

use std::time::Duration;

use sockeye::Message;
use sockeye_relay::{HistoryLimits, RedisBackplane, Relay};
use sockeye_test_support as support;
use support::redis_server;

use rooms::{Ws, member, serve_history, text, until_members, with_id};

async fn close(mut ws: Ws) {
    ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

/// `sender` on `relay_s`'s node, `reader` on `relay_r`'s: the reader sees one message, drops,
/// misses `missed`, comes back with its last id and gets exactly those, then a live one.
async fn reader_comes_back(
    (addr_s, relay_s): (std::net::SocketAddr, &Relay),
    (addr_r, relay_r): (std::net::SocketAddr, &Relay),
    missed: usize,
) {
    let mut sender = member(addr_s, "r").await;
    let mut plain = member(addr_r, "r").await;
    let mut reader = member(addr_r, "r?since=").await;
    until_members(relay_s, "r", if addr_s == addr_r { 3 } else { 1 }).await;
    until_members(relay_r, "r", if addr_s == addr_r { 3 } else { 2 }).await;
    sender.send(Message::text("m0")).await.unwrap();
    let (first, last) = with_id(&mut reader).await;
    assert_eq!(first, "m0");
    // A member that did not ask for ids sees the messages only.
    assert_eq!(text(&mut plain).await, "m0");
    close(reader).await;
    until_members(relay_r, "r", if addr_s == addr_r { 2 } else { 1 }).await;
    for i in 1..=missed {
        sender.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    // Everything sent while it was away is in the room's history once `plain` saw it.
    for i in 1..=missed {
        assert_eq!(text(&mut plain).await, format!("m{i}"));
    }
    let mut reader = member(addr_r, &format!("r?since={last}")).await;
    let mut ids = vec![last];
    for i in 1..=missed {
        let (message, id) = with_id(&mut reader).await;
        assert_eq!(message, format!("m{i}"), "exactly what it missed, in order");
        assert!(
            id.parse::<sockeye_relay::HistoryId>().unwrap() > ids.last().unwrap().parse().unwrap()
        );
        ids.push(id);
    }
    until_members(relay_r, "r", if addr_s == addr_r { 3 } else { 2 }).await;
    sender.send(Message::text("live")).await.unwrap();
    let (message, _) = with_id(&mut reader).await;
    assert_eq!(message, "live", "then the live ones, none twice");
}

#[tokio::test]
async fn in_process_a_member_back_with_its_last_id_gets_exactly_what_it_missed() {
    support::bounded(Box::pin(async {
        let relay = Relay::builder().history(HistoryLimits::new(100)).build();
        let (addr, _server) = serve_history(relay.clone()).await;
        reader_comes_back((addr, &relay), (addr, &relay), 25).await;
    }))
    .await;
}

#[tokio::test]
async fn in_process_history_older_than_what_is_kept_is_told_truncated() {
    support::bounded(Box::pin(async {
        let relay = Relay::builder().history(HistoryLimits::new(3)).build();
        let (addr, _server) = serve_history(relay.clone()).await;
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
