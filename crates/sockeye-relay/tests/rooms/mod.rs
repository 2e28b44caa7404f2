//! What the room tests share: relays on loopback whose members join `/ROOM?NAME`, or all join
//! room `x` over sockets whose receive buffer the test sets.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use sockeye::{ClientBuilder, Message, ServerBuilder, WebSocket};
use sockeye_relay::{RedisBackplane, Relay};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub type Ws = WebSocket<sockeye::MaybeTlsStream>;

/// A relay over the Redis at `url` with `prefix`, and the presence time to live `ttl`.
pub async fn redis_relay(url: &str, prefix: &str, ttl: Duration) -> Relay {
    let backplane = RedisBackplane::builder(url)
        .prefix(prefix)
        .presence_ttl(ttl)
        .connect()
        .await
        .unwrap();
    Relay::builder().backplane(backplane).build()
}

/// Serves `relay` on a loopback port: a connection to `/ROOM?NAME` joins `ROOM`, named `NAME`
/// when there is a query; with history, `/ROOM?since=ID` (or `?since=` for ids from now on)
/// asks for ids and what it missed after `ID`. Returns the address and the task (abort it to kill the server: its
/// members' tasks are aborted with it, as in a process that dies).
pub async fn serve(relay: Relay) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    serve_on(relay, TcpListener::bind("127.0.0.1:0").await.unwrap())
}

/// As [`serve`], the connections accepted by `listener` (whose socket options they inherit).
pub fn serve_on(relay: Relay, listener: TcpListener) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut members = tokio::task::JoinSet::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let relay = relay.clone();
            members.spawn(async move {
                let Ok((ws, request)) = ServerBuilder::new().accept_with_request(tcp).await else {
                    return;
                };
                let room = request.uri().path().trim_start_matches('/').to_owned();
                let mut options = sockeye_relay::JoinOptions::new();
                let query = request.uri().query();
                match query.map(|q| (q, q.strip_prefix("since="))) {
                    Some((_, Some(since))) => {
                        options = options.since(if since.is_empty() {
                            sockeye_relay::Since::Now
                        } else {
                            sockeye_relay::Since::After(since.parse().unwrap())
                        });
                    }
                    Some((name, None)) => options = options.name(name),
                    None => {}
                }
                let _ = relay
                    .serve_with(ws, &room, &options, std::future::pending())
                    .await;
            });
        }
    });
    (addr, task)
}

/// Accepts every connection into `relay`'s room `x`, with a builder that does not watch the
/// shutdown (the relay drains its members). With `stop`, members are served with
/// `serve_until` and drain when it turns true.
pub async fn serve_x(relay: &Relay, stop: Option<watch::Receiver<bool>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = relay.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (relay, stop) = (relay.clone(), stop.clone());
            tokio::spawn(async move {
                let ws = ServerBuilder::new().accept(tcp).await.unwrap();
                match stop {
                    Some(mut stop) => {
                        let stop = async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        };
                        let _ = relay.serve_until(ws, "x", stop).await;
                    }
                    None => {
                        let _ = relay.serve(ws, "x").await;
                    }
                }
            });
        }
    });
    addr
}

/// A member of [`serve_x`]'s room, its socket's receive buffer `rcvbuf` bytes when given
/// (small: the server's writes to it wait).
pub async fn member_x(addr: SocketAddr, rcvbuf: Option<u32>) -> WebSocket<TcpStream> {
    sockeye_test_support::client_with_rcvbuf(addr, "/", rcvbuf).await
}

pub async fn member(addr: SocketAddr, path: &str) -> Ws {
    ClientBuilder::new(format!("ws://{addr}/{path}"))
        .connect()
        .await
        .unwrap()
        .0
}

/// Waits until `room` has `members` members in `relay`'s process.
pub async fn until_members(relay: &Relay, room: &str, members: usize) {
    while relay.members(room) != members {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next text message of `ws`, as JSON.
pub async fn json(ws: &mut Ws) -> serde_json::Value {
    match ws.next().await.unwrap().unwrap() {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The next message of `ws`, which must be text.
pub async fn text(ws: &mut Ws) -> String {
    match ws.next().await.unwrap().unwrap() {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The next room message of `ws` and the id that follows it.
pub async fn with_id(ws: &mut Ws) -> (String, String) {
    let message = text(ws).await;
    let notice: serde_json::Value = serde_json::from_str(&text(ws).await).unwrap();
    assert_eq!(notice["sockeye"], "id", "{notice} after {message}");
    (message, notice["id"].as_str().unwrap().to_owned())
}

/// A member whose socket's receive buffer is `rcvbuf` bytes (small: the server's writes to it
/// wait for it to read).
pub async fn member_with_rcvbuf(addr: SocketAddr, path: &str, rcvbuf: u32) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(rcvbuf).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    ClientBuilder::new(format!("ws://{addr}/{path}"))
        .connect_on(sockeye::MaybeTlsStream::Plain(tcp))
        .await
        .unwrap()
        .0
}
