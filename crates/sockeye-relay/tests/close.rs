//! A member closed as too slow gets its 1008 Close after what was queued for it, however full
//! its queue was when the relay closed it, and however slowly it reads that queue.

mod rooms;

use std::sync::Arc;
use std::time::Duration;

use sockeye::{CloseCode, Message, PreparedMessage};
use sockeye_relay::{QueueLimits, Relay};

use sockeye_test_support as support;

/// Message `i`: its number first, `size` bytes in all.
fn numbered(i: u32, size: usize) -> Arc<PreparedMessage> {
    let mut payload = vec![0_u8; size];
    payload[..4].copy_from_slice(&i.to_be_bytes());
    Arc::new(PreparedMessage::binary(payload))
}

fn number(message: &Message) -> u32 {
    let Message::Binary(payload) = message else {
        panic!("expected a binary message, got {message:?}");
    };
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_full_queue_overflows_gets_its_1008_after_the_queue() {
    support::bounded(async {
        // A small queue: the member that does not read fills its socket, then its queue, and
        // the next message that cannot wait closes it.
        let relay = Relay::builder()
            .queue_limits(QueueLimits::new(4, 8 << 20))
            .build();
        let (addr, _server) = rooms::serve(relay.clone()).await;
        let mut stalled = rooms::member(addr, "r").await;
        let mut reader = rooms::member(addr, "r").await;
        rooms::until_members(&relay, "r", 2).await;
        let size = 256 << 10;
        let mut sent = 0;
        while relay.stats().closed_slow == 0 {
            relay.publish("r", numbered(sent, size)).unwrap();
            let got = reader.next().await.unwrap().unwrap();
            assert_eq!(number(&got), sent, "the reading member keeps up");
            sent += 1;
            assert!(sent < 10_000, "the stalled member was never closed");
        }
        rooms::until_members(&relay, "r", 1).await;
        // It reads now: everything queued for it, in order, then the 1008.
        let mut next = 0;
        let close = loop {
            match stalled.next().await.unwrap().unwrap() {
                Message::Close(frame) => break frame.expect("a close code"),
                message => {
                    assert_eq!(number(&message), next, "in order, nothing skipped");
                    next += 1;
                }
            }
        };
        assert_eq!(close.code, CloseCode::POLICY_VIOLATION);
        assert!(close.reason.starts_with("too slow"), "{close:?}");
        assert!(next > 0 && next < sent, "cut short: {next} of {sent}");
        assert!(stalled.next().await.is_none(), "a clean close");
    })
    .await;
}

/// A member that reads, slowly: one message every `pace`.
fn slow_reader(
    mut ws: rooms::Ws,
    pace: Duration,
) -> tokio::task::JoinHandle<(u32, Option<CloseCode>)> {
    tokio::spawn(async move {
        let mut next = 0;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return (next, frame.map(|f| f.code)),
                Some(Ok(message)) => {
                    assert_eq!(number(&message), next, "in order, nothing skipped");
                    next += 1;
                    tokio::time::sleep(pace).await;
                }
                // The connection ended without a Close.
                Some(Err(_)) | None => return (next, None),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_member_closed_while_its_queue_is_written_still_gets_its_1008() {
    support::bounded(async {
        // Writing its queue out takes the slow member longer than the send timeout, though it
        // reads all along: the timeout is for a member that reads nothing, not one that reads
        // slowly.
        let relay = Relay::builder()
            .queue_limits(QueueLimits::new(8, 8 << 20))
            .send_timeout(Duration::from_millis(300))
            .build();
        // A small send buffer on the server's side (accepted sockets inherit the listener's):
        // what the member reads shows as room to write soon, as on a real network.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(16 << 10).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (addr, _server) = rooms::serve_on(relay.clone(), socket.listen(64).unwrap());
        let slow = slow_reader(
            rooms::member_with_rcvbuf(addr, "r", 4096).await,
            Duration::from_millis(60),
        );
        let mut reader = rooms::member(addr, "r").await;
        rooms::until_members(&relay, "r", 2).await;
        let mut sent = 0;
        while relay.stats().closed_slow == 0 {
            relay.publish("r", numbered(sent, 64 << 10)).unwrap();
            let got = reader.next().await.unwrap().unwrap();
            assert_eq!(number(&got), sent);
            sent += 1;
            assert!(sent < 10_000, "the slow member was never closed");
        }
        let (got, code) = slow.await.unwrap();
        assert_eq!(
            code,
            Some(CloseCode::POLICY_VIOLATION),
            "the 1008 after {got} of {sent} messages"
        );
        assert!(got > 0 && got < sent, "cut short: {got} of {sent}");
    })
    .await;
}
