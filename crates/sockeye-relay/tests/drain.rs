//! Graceful shutdown of rooms over loopback: members that are slow but keep reading get every
//! message published before the signal, then the 1001; a member that does not read is cut at
//! the end of the grace period, and what it lost is counted.

use std::net::SocketAddr;
use std::time::Duration;

use sockeye::{CloseCode, Message, Shutdown, WebSocket};
use sockeye_relay::{QueueLimits, Relay};
use tokio::net::TcpStream;
use tokio::sync::watch;

use sockeye_test_support::{self as support, Texts, numbered, read_numbered};

mod rooms;
use rooms::{member_x, serve_x, until_members};

const SIZE: usize = 16 << 10;

/// A slow member: reads one message every millisecond or so, each the next number; returns
/// how many it got and the close code.
fn slow_reader(ws: WebSocket<TcpStream>) -> tokio::task::JoinHandle<(u32, Option<CloseCode>)> {
    read_numbered(ws, Duration::from_millis(1), Texts::Refuse)
}

/// 6 slow members with small receive buffers, 720 messages of 16 KiB (more than the kernel buffers hold) published by a seventh
/// before the signal; `signal` starts the drain. Every slow member must count all 720.
async fn slow_members_get_everything(
    relay: &Relay,
    addr: SocketAddr,
    signal: impl FnOnce(),
) -> Vec<(u32, Option<CloseCode>)> {
    let mut readers = Vec::new();
    for _ in 0..6 {
        readers.push(slow_reader(member_x(addr, Some(4096)).await));
    }
    let mut sender = member_x(addr, None).await;
    until_members(relay, "x", 7).await;
    let count = 720_u32;
    let sending = tokio::spawn(async move {
        for i in 0..count {
            sender.send(numbered(i, SIZE)).await.unwrap();
        }
        // Reads until the server closes.
        while let Some(Ok(_)) = sender.next().await {}
    });
    // Published: the relay has taken every message before the signal.
    while relay.stats().prepared < u64::from(count) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal();
    let mut results = Vec::new();
    for reader in readers {
        results.push(reader.await.unwrap());
    }
    sending.await.unwrap();
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_members_get_every_message_published_before_the_shutdown() {
    support::bounded(async {
        let shutdown = Shutdown::new().grace_period(Duration::from_secs(15));
        // Queues large enough for the whole burst: nobody is closed as too slow.
        let relay = Relay::builder()
            .queue_limits(QueueLimits::new(1024, 32 << 20))
            .shutdown(&shutdown)
            .build();
        let addr = serve_x(&relay, None).await;
        let results = slow_members_get_everything(&relay, addr, || shutdown.trigger()).await;
        for (received, code) in results {
            assert_eq!(received, 720, "every message published before the signal");
            assert_eq!(code, Some(CloseCode::GOING_AWAY));
        }
        let report = shutdown.drained().await;
        assert_eq!(report.connections, 7, "{report}");
        assert_eq!(report.drained, 7, "{report}");
        assert_eq!(report.dropped_messages, 0, "{report}");
        assert_eq!(relay.stats().closed_slow, 0);
        assert_eq!(relay.stats().dropped_at_shutdown, 0);
        // Newcomers after the signal get the 1001 at once.
        let mut late = member_x(addr, None).await;
        match late.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::GOING_AWAY);
            }
            other => panic!("expected 1001, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_until_drains_the_member_before_its_1001() {
    support::bounded(async {
        let relay = Relay::builder()
            .queue_limits(QueueLimits::new(1024, 32 << 20))
            .build();
        let (stop, stopped) = watch::channel(false);
        let addr = serve_x(&relay, Some(stopped)).await;
        let results = slow_members_get_everything(&relay, addr, || {
            stop.send(true).unwrap();
        })
        .await;
        for (received, code) in results {
            assert_eq!(received, 720);
            assert_eq!(code, Some(CloseCode::GOING_AWAY));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_does_not_read_is_cut_at_the_grace_period_and_counted() {
    support::bounded(async {
        let grace = Duration::from_millis(500);
        let shutdown = Shutdown::new().grace_period(grace);
        let relay = Relay::builder()
            .queue_limits(QueueLimits::new(1024, 64 << 20))
            .shutdown(&shutdown)
            .build();
        let addr = serve_x(&relay, None).await;
        let stalled = member_x(addr, Some(4096)).await;
        let reader = slow_reader(member_x(addr, None).await);
        until_members(&relay, "x", 2).await;
        let count = 200_u32;
        for i in 0..count {
            relay
                .publish(
                    "x",
                    sockeye::PreparedMessage::new(numbered(i, 16 << 10)).unwrap(),
                )
                .unwrap();
        }
        shutdown.trigger();
        let report = tokio::time::timeout(grace * 10, shutdown.drained())
            .await
            .expect("drained within the grace period");
        let (received, code) = reader.await.unwrap();
        assert_eq!(received, count, "the reading member got everything");
        assert_eq!(code, Some(CloseCode::GOING_AWAY));
        assert_eq!(report.connections, 2, "{report}");
        assert_eq!(report.cut, 1, "{report}");
        assert!(
            report.dropped_messages > 0 && report.dropped_messages <= u64::from(count),
            "{report}"
        );
        assert_eq!(relay.stats().dropped_at_shutdown, report.dropped_messages);
        drop(stalled);
    })
    .await;
}
