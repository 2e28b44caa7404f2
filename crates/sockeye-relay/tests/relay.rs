//! The relay over real loopback sockets: the axum example with two members, fan-out that
//! encodes once, and rooms shared over a real `redis-server`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sockeye::{ClientBuilder, DeflateConfig, Message, PreparedMessage, ServerBuilder};
use sockeye_relay::{RedisBackplane, RedisError, RedisLimits, Relay};
use tokio::net::TcpListener;

use sockeye_test_support as support;
use support::redis_server;

mod rooms;
use rooms::{json, until_members};

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/axum_rooms.rs"]
mod example;

/// Serves the example's app for `relay` on a loopback port.
async fn serve_example(relay: Relay) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, example::app(relay)).await });
    addr
}

async fn member(url: &str, deflate: bool) -> sockeye::WebSocket<sockeye::MaybeTlsStream> {
    let mut client = ClientBuilder::new(url);
    if deflate {
        client = client.deflate(DeflateConfig::new());
    }
    client.connect().await.unwrap().0
}

#[tokio::test]
async fn two_clients_in_one_room_of_the_axum_example() {
    support::bounded(async {
        let relay = Relay::new();
        let addr = serve_example(relay.clone()).await;
        let url = format!("ws://{addr}/rooms/x");
        let mut a = member(&url, true).await;
        let mut b = member(&url, false).await;
        let mut elsewhere = member(&format!("ws://{addr}/rooms/y"), false).await;
        until_members(&relay, "x", 2).await;
        until_members(&relay, "y", 1).await;
        assert_eq!(a.extension(), Some("permessage-deflate"));
        assert_eq!(b.extension(), None);
        for i in 0..100 {
            a.send(Message::text(format!("a{i}"))).await.unwrap();
        }
        b.send(Message::binary(vec![0u8, 1, 255])).await.unwrap();
        for i in 0..100 {
            assert_eq!(
                b.next().await.unwrap().unwrap(),
                Message::text(format!("a{i}"))
            );
        }
        assert_eq!(
            a.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 1, 255])
        );
        // The other room got nothing: its next message is the one sent there now.
        let (mut y2, _) = ClientBuilder::new(format!("ws://{addr}/rooms/y"))
            .connect()
            .await
            .unwrap();
        until_members(&relay, "y", 2).await;
        y2.send(Message::text("y only")).await.unwrap();
        assert_eq!(
            elsewhere.next().await.unwrap().unwrap(),
            Message::text("y only")
        );
        a.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        until_members(&relay, "x", 1).await;
    })
    .await;
}

/// Members per kind of server in the fan-out test.
const EACH: usize = 4;

/// Accepts every connection on `listener` with `server` into `relay`'s room `x`.
fn accept_into(listener: TcpListener, server: ServerBuilder, relay: Relay) {
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (server, relay) = (server.clone(), relay.clone());
            tokio::spawn(async move {
                let ws = server.accept(tcp).await.unwrap();
                let _ = relay.serve(ws, "x").await;
            });
        }
    });
}

#[tokio::test]
async fn one_room_message_to_many_members_is_framed_once_and_compressed_once() {
    support::bounded(async {
        let relay = Relay::new();
        let mut urls = Vec::new();
        // Without deflate, with deflate and no server context takeover, with context takeover.
        for server in [
            ServerBuilder::new(),
            ServerBuilder::new().deflate(DeflateConfig::new().server_no_context_takeover(true)),
            ServerBuilder::new().deflate(DeflateConfig::new()),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            urls.push(format!("ws://{}/", listener.local_addr().unwrap()));
            accept_into(listener, server, relay.clone());
        }
        let mut members = Vec::new();
        for url in &urls {
            for _ in 0..EACH {
                members.push(member(url, true).await);
            }
        }
        let n = members.len();
        until_members(&relay, "x", n).await;

        let text = "the same words for everyone, the same words for everyone. ".repeat(20);
        let message = Arc::new(PreparedMessage::text(text.as_str()));
        relay.publish("x", Arc::clone(&message)).unwrap();
        // A second message, so that members with context takeover refer back to the first.
        relay
            .publish("x", PreparedMessage::text(text.as_str()))
            .unwrap();
        for ws in &mut members {
            for _ in 0..2 {
                assert_eq!(
                    ws.next().await.unwrap().unwrap(),
                    Message::text(text.as_str())
                );
            }
        }
        let stats = relay.stats();
        assert_eq!(stats.prepared, 2, "each message framed once");
        assert_eq!(stats.deliveries, 2 * n as u64);
        assert_eq!(
            message.compressions(),
            1,
            "compressed once for the {EACH} members without server context takeover"
        );

        // A member's message: framed once for the n - 1 others.
        members[0]
            .send(Message::binary(vec![9u8; 3000]))
            .await
            .unwrap();
        for ws in &mut members[1..] {
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::binary(vec![9u8; 3000])
            );
        }
        let stats = relay.stats();
        assert_eq!(stats.prepared, 3);
        assert_eq!(stats.deliveries, 2 * n as u64 + n as u64 - 1);
    })
    .await;
}

/// A backplane whose queue is always full.
struct Full;

impl sockeye_relay::Backplane for Full {
    fn attach(&self, _inbound: sockeye_relay::Inbound) {}
    fn subscribe(&self, _room: &str) {}
    fn unsubscribe(&self, _room: &str) {}
    fn publish(&self, _room: &str, _message: &Message) -> Result<(), sockeye_relay::Overloaded> {
        Err(sockeye_relay::Overloaded)
    }
}

#[tokio::test]
async fn a_sender_the_backplane_cannot_take_is_closed_with_1013() {
    support::bounded(async {
        let relay = Relay::builder().backplane(Full).build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        accept_into(listener, ServerBuilder::new(), relay.clone());
        let mut a = member(&url, false).await;
        let mut b = member(&url, false).await;
        until_members(&relay, "x", 2).await;
        a.send(Message::text("refused")).await.unwrap();
        match a.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, sockeye::CloseCode::TRY_AGAIN_LATER);
            }
            other => panic!("expected 1013, got {other:?}"),
        }
        assert!(a.next().await.is_none());
        until_members(&relay, "x", 1).await;
        assert_eq!(relay.stats().closed_overloaded, 1);
        assert_eq!(
            relay.stats().deliveries,
            0,
            "nobody got the refused message"
        );
        b.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_member_that_does_not_read_is_shed_and_the_others_keep_going() {
    support::bounded(async {
        let relay = Relay::builder()
            .queue_limits(sockeye_relay::QueueLimits::new(2, 1 << 20))
            .send_timeout(Duration::from_millis(200))
            .build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        accept_into(listener, ServerBuilder::new(), relay.clone());
        // A member that never reads: once the socket buffers are full its writer waits, its
        // queue fills, and the room sheds it.
        let (stalled, _) = ClientBuilder::new(url.as_str()).connect().await.unwrap();
        let mut reader = member(&url, false).await;
        until_members(&relay, "x", 2).await;
        let big = PreparedMessage::binary(vec![1u8; 256 << 10]);
        let big = Arc::new(big);
        let mut sent = 0;
        while relay.stats().closed_slow == 0 {
            relay.publish("x", Arc::clone(&big)).unwrap();
            sent += 1;
            assert_eq!(
                reader.next().await.unwrap().unwrap().len(),
                256 << 10,
                "the reading member keeps up"
            );
            assert!(sent < 10_000, "the stalled member was never shed");
        }
        until_members(&relay, "x", 1).await;
        relay.publish("x", PreparedMessage::text("after")).unwrap();
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Message::text("after")
        );
        drop(stalled);
    })
    .await;
}

async fn redis_relay(url: &str) -> Relay {
    let backplane = RedisBackplane::connect(url, None, RedisLimits::new())
        .await
        .unwrap();
    Relay::builder().backplane(backplane).build()
}

#[tokio::test]
async fn two_axum_apps_share_rooms_over_redis() {
    support::bounded(async {
        let port = support::free_port();
        let Some(redis) = redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let (one, two) = (redis_relay(&url).await, redis_relay(&url).await);
        let (addr_one, addr_two) = (
            serve_example(one.clone()).await,
            serve_example(two.clone()).await,
        );
        let mut a = member(&format!("ws://{addr_one}/rooms/r"), true).await;
        let mut a2 = member(&format!("ws://{addr_one}/rooms/r"), false).await;
        let mut b = member(&format!("ws://{addr_two}/rooms/r"), true).await;
        until_members(&one, "r", 2).await;
        until_members(&two, "r", 1).await;
        // Until server two's subscription is in place, what one publishes does not reach it:
        // probe until it does.
        loop {
            a.send(Message::text("probe")).await.unwrap();
            assert_eq!(a2.next().await.unwrap().unwrap(), Message::text("probe"));
            if tokio::time::timeout(Duration::from_millis(50), b.next())
                .await
                .is_ok()
            {
                break;
            }
        }
        a.send(Message::text("start")).await.unwrap();
        assert_eq!(a2.next().await.unwrap().unwrap(), Message::text("start"));
        loop {
            match b.next().await.unwrap().unwrap() {
                Message::Text(t) if t == "probe" => {}
                other => break assert_eq!(other, Message::text("start")),
            }
        }
        // In order and each once, on both servers; a server skips its own when Redis hands
        // them back.
        for i in 0..200 {
            a.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        b.send(Message::text("from two")).await.unwrap();
        for ws in [&mut a2, &mut b] {
            for i in 0..200 {
                assert_eq!(
                    ws.next().await.unwrap().unwrap(),
                    Message::text(format!("m{i}"))
                );
            }
        }
        assert_eq!(a.next().await.unwrap().unwrap(), Message::text("from two"));
        assert_eq!(a2.next().await.unwrap().unwrap(), Message::text("from two"));
        drop(redis);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_without_the_password() {
    let port = support::free_port();
    let error = RedisBackplane::connect(
        &format!("redis://:s3cret@127.0.0.1:{port}"),
        None,
        RedisLimits::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RedisError::Unreachable { .. }), "{error}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    let error = RedisBackplane::connect("nonsense://", None, RedisLimits::new())
        .await
        .unwrap_err();
    assert!(matches!(error, RedisError::Url(_)), "{error}");
}

/// The next text message of `ws`, as JSON.
#[tokio::test]
async fn named_members_are_listed_and_told_of_joins_and_leaves() {
    support::bounded(async {
        let relay = Relay::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = relay.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let relay = served.clone();
                tokio::spawn(async move {
                    let (ws, request) =
                        ServerBuilder::new().accept_with_request(tcp).await.unwrap();
                    // The test's own convention: the name is the whole query.
                    let name = request.uri().query().map(str::to_owned);
                    let _ = relay
                        .serve_named_until(ws, "p", name.as_deref(), std::future::pending())
                        .await;
                });
            }
        });
        let url = |name: &str| format!("ws://{addr}/{name}");
        let mut ann = member(&url("?ann"), false).await;
        let list = json(&mut ann).await;
        assert_eq!(list["sockeye"], "presence");
        assert_eq!(list["event"], "members");
        assert_eq!(list["you"]["name"], "ann");
        assert_eq!(list["members"].as_array().unwrap().len(), 1);

        // An anonymous member is neither listed nor told anything.
        let mut anonymous = member(&url(""), false).await;
        until_members(&relay, "p", 2).await;
        let mut bob = member(&url("?bob"), false).await;
        let list = json(&mut bob).await;
        let names: Vec<&str> = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ann", "bob"]);
        let joined = json(&mut ann).await;
        assert_eq!(joined["event"], "join");
        assert_eq!(joined["member"]["name"], "bob");
        assert_eq!(joined["member"]["id"], list["you"]["id"]);

        // Room messages go on as before, to everyone.
        anonymous.send(Message::text("plain")).await.unwrap();
        assert_eq!(ann.next().await.unwrap().unwrap(), Message::text("plain"));
        assert_eq!(bob.next().await.unwrap().unwrap(), Message::text("plain"));

        bob.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        let left = json(&mut ann).await;
        assert_eq!(left["event"], "leave");
        assert_eq!(left["member"]["name"], "bob");
        // The anonymous member saw no presence message: its next message is a room message.
        ann.send(Message::text("after")).await.unwrap();
        assert_eq!(
            anonymous.next().await.unwrap().unwrap(),
            Message::text("after")
        );
    })
    .await;
}
