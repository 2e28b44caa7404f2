//! Fair backpressure over loopback: a burst from one sender to a room of hundreds of reading
//! members closes nobody and delivers everything in order; a member that stops reading is
//! still closed with 1008 once it has held its room back past its bound.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sockeye::{CloseCode, Message, WebSocket};
use sockeye_relay::{Backplane, Inbound, Overloaded, QueueLimits, Relay};
use tokio::net::TcpStream;

use sockeye_test_support::{self as support, number, numbered};

mod rooms;
use rooms::{member_x, serve_x, until_members};

/// Sends `count` numbered messages at once (queued, then one flush), as a burst.
fn burst(mut sender: WebSocket<TcpStream>, count: u32, size: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..count {
            sender.feed(numbered(i, size)).await.unwrap();
        }
        sender.flush().await.unwrap();
        // Kept open (and read) until the test ends.
        while let Some(Ok(_)) = sender.next().await {}
    })
}

/// Reads `count` messages; each must be the next number.
fn reader(
    mut ws: WebSocket<TcpStream>,
    count: u32,
) -> tokio::task::JoinHandle<WebSocket<TcpStream>> {
    tokio::spawn(async move {
        for i in 0..count {
            let message = ws.next().await.unwrap().unwrap();
            assert_eq!(number(&message), i, "everything, in order");
        }
        ws
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_2000_to_200_reading_members_closes_nobody() {
    support::bounded(async {
        let relay = Relay::new();
        let addr = serve_x(&relay, None).await;
        let mut readers = Vec::new();
        for _ in 0..200 {
            readers.push(reader(member_x(addr, None).await, 2000));
        }
        let sender = member_x(addr, None).await;
        until_members(&relay, "x", 201).await;
        let started = Instant::now();
        let _sender = burst(sender, 2000, 64);
        let mut done = Vec::new();
        for reader in readers {
            done.push(reader.await.unwrap());
        }
        let stats = relay.stats();
        assert_eq!(stats.closed_slow, 0, "nobody closed: {stats:?}");
        assert_eq!(stats.deliveries, 200 * 2000);
        assert_eq!(relay.members("x"), 201);
        eprintln!(
            "400,000 deliveries in {:?}, the sender paused {} times",
            started.elapsed(),
            stats.paused
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_is_closed_with_1008_within_its_bound() {
    support::bounded(async {
        let stall = Duration::from_millis(500);
        let relay = Relay::builder()
            .queue_limits(QueueLimits::new(64, 4 << 20).max_stall(stall))
            .build();
        let addr = serve_x(&relay, None).await;
        let count = 2000;
        let size = 4 << 10;
        let mut readers = Vec::new();
        for _ in 0..20 {
            readers.push(reader(member_x(addr, None).await, count));
        }
        // Reads nothing until it is closed: its socket buffers fill, then its queue.
        let mut stalled = member_x(addr, Some(4096)).await;
        let sender = member_x(addr, None).await;
        until_members(&relay, "x", 22).await;
        let started = Instant::now();
        let _sender = burst(sender, count, size);
        let mut done = Vec::new();
        while relay.stats().closed_slow == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let closed_after = started.elapsed();
        assert!(
            closed_after >= stall,
            "not closed before it held the room for {stall:?} ({closed_after:?})"
        );
        for reader in readers {
            done.push(reader.await.unwrap());
        }
        let stats = relay.stats();
        assert_eq!(stats.closed_slow, 1, "only the member that stopped reading");
        assert!(stats.paused > 0, "the sender waited for it first");
        assert_eq!(relay.members("x"), 21);
        // It gets what was queued for it, in order, then the 1008.
        let mut next = 0;
        let close = loop {
            match stalled.next().await.unwrap().unwrap() {
                Message::Close(frame) => break frame.unwrap(),
                message => {
                    assert_eq!(number(&message), next);
                    next += 1;
                }
            }
        };
        assert_eq!(close.code, CloseCode::POLICY_VIOLATION);
        assert!(close.reason.starts_with("too slow"), "{close:?}");
        assert!(next > 0 && next < count, "cut short: {next} messages");
    })
    .await;
}

/// A backplane that hands the test its way into the relay.
struct Capture(Arc<OnceLock<Inbound>>);

impl Backplane for Capture {
    fn attach(&self, inbound: Inbound) {
        let _ = self.0.set(inbound);
    }
    fn subscribe(&self, _room: &str) {}
    fn unsubscribe(&self, _room: &str) {}
    fn publish(&self, _room: &str, _message: &Message) -> Result<(), Overloaded> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backplane_can_wait_while_the_members_here_hold_the_room_back() {
    support::bounded(async {
        let inbound = Arc::new(OnceLock::new());
        let relay = Relay::builder()
            .queue_limits(QueueLimits::new(64, 64 << 20).max_stall(Duration::from_secs(10)))
            .backplane(Capture(Arc::clone(&inbound)))
            .build();
        let inbound = inbound.get().unwrap().clone();
        let addr = serve_x(&relay, None).await;
        let slow = member_x(addr, Some(4096)).await;
        until_members(&relay, "x", 1).await;
        // Messages from another node, as fast as `ready` lets them in, to a member not reading.
        let mut sent = 0;
        while tokio::time::timeout(Duration::from_millis(200), inbound.ready("x"))
            .await
            .is_ok()
        {
            inbound.deliver("x", numbered(sent, 16 << 10));
            sent += 1;
            assert!(sent < 10_000, "never held back");
        }
        assert!(
            sent >= 32,
            "held back at the pause threshold, not before ({sent})"
        );
        // The member reads: the room is free again, and nothing was lost.
        let reading = reader(slow, sent);
        tokio::time::timeout(Duration::from_secs(5), inbound.ready("x"))
            .await
            .expect("ready once the member has written its queue out");
        let _slow = reading.await.unwrap();
        assert_eq!(relay.stats().closed_slow, 0);
    })
    .await;
}
