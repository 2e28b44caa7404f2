//! Rooms over a real `redis-server` that is killed and restarted on the same port: what members
//! send meanwhile waits in the bounded queue and reaches the other node, in order, once, soon
//! after Redis is back.

mod rooms;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sockeye::Message;
use sockeye_test_support as support;
use support::{redis_server, until_redis_subscribers};

use rooms::{member, redis_relay, serve, until_members};

/// What one outage cost.
#[derive(Debug)]
struct Outage {
    sent: usize,
    /// Indexes the receiver never got, out of order, or twice.
    lost: usize,
    out_of_order: usize,
    /// From the restarted Redis accepting connections to the receiver getting the first
    /// message sent while Redis was down.
    recovery: Duration,
}

/// Two nodes on one Redis; a member of node one sends `m0`, `m1`, … every `every` while
/// Redis is killed after `before` and restarted `down` later; a member of node two reads.
async fn outage(
    before: Duration,
    down: Duration,
    after: Duration,
    every: Duration,
) -> Option<Outage> {
    outage_of(None, before, down, after, every).await
}

/// As [`outage`], with the nodes keeping `history` (Redis then orders the room).
async fn outage_of(
    history: Option<sockeye_relay::HistoryLimits>,
    before: Duration,
    down: Duration,
    after: Duration,
    every: Duration,
) -> Option<Outage> {
    let port = support::free_port();
    let redis = redis_server(port).await?;
    let url = format!("redis://127.0.0.1:{port}");
    let ttl = Duration::from_secs(6);
    let node = || async {
        match history {
            None => redis_relay(&url, "sockeye", ttl).await,
            Some(limits) => sockeye_relay::Relay::builder()
                .backplane(
                    sockeye_relay::RedisBackplane::builder(&url)
                        .connect()
                        .await
                        .unwrap(),
                )
                .history(limits)
                .build(),
        }
    };
    let (one, two) = (node().await, node().await);
    let ((addr_one, _s1), (addr_two, _s2)) = (serve(one.clone()).await, serve(two.clone()).await);
    let mut sender = member(addr_one, "r").await;
    let mut receiver = member(addr_two, "r").await;
    until_members(&one, "r", 1).await;
    until_members(&two, "r", 1).await;
    until_redis_subscribers(port, "sockeye:room:r", 2).await;

    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let total = ((before + down + after).as_micros() / every.as_micros()) as usize;
    let sending = tokio::spawn(async move {
        // A steady rate: the interval is the load, not a wait for anything.
        let mut tick = tokio::time::interval(every);
        for i in 0..total {
            tick.tick().await;
            sender.send(Message::text(format!("m{i}"))).await.unwrap();
            counter.store(i + 1, Ordering::SeqCst);
        }
        sender
    });

    let receiving = tokio::spawn(async move {
        let mut got = Vec::with_capacity(total);
        while got.len() < total {
            // Loss shows as the deadline passing with fewer messages.
            let next = tokio::time::timeout(down + Duration::from_secs(2), receiver.next()).await;
            match next {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let i: usize = text.strip_prefix('m').unwrap().parse().unwrap();
                    got.push((i, Instant::now()));
                    if i + 1 == total {
                        break;
                    }
                }
                Ok(other) => panic!("the receiver got {other:?}"),
                Err(_) => break,
            }
        }
        got
    });

    tokio::time::sleep(before).await;
    drop(redis);
    // Every message from here on was sent with Redis down.
    let first_while_down = sent.load(Ordering::SeqCst);
    // The outage itself: how long Redis is away is what the test varies.
    tokio::time::sleep(down).await;
    let redis = redis_server(port).await.unwrap();
    let restarted = Instant::now();

    let _sender = sending.await.unwrap();
    let got = receiving.await.unwrap();
    drop(redis);
    let indexes: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    let out_of_order = indexes.windows(2).filter(|w| w[1] != w[0] + 1).count();
    let mut unique = indexes;
    unique.sort_unstable();
    unique.dedup();
    let resumed = got
        .iter()
        .find(|(i, _)| *i >= first_while_down)
        .map_or(Duration::MAX, |(_, at)| {
            at.saturating_duration_since(restarted)
        });
    assert_eq!(one.stats().closed_overloaded, 0);
    Some(Outage {
        sent: total,
        lost: total - unique.len(),
        out_of_order,
        recovery: resumed,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_across_a_one_second_redis_restart() {
    support::bounded(async {
        let Some(outage) = outage(
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_millis(700),
            Duration::from_millis(5),
        )
        .await
        else {
            return;
        };
        eprintln!("{outage:?}");
        assert_eq!(outage.lost, 0, "{outage:?}");
        assert_eq!(outage.out_of_order, 0, "{outage:?}");
        // The old back-off (100 ms doubling to 5 s) came back about 0.5 s after a 1 s outage.
        assert!(outage.recovery < Duration::from_millis(350), "{outage:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_history_nothing_is_lost_across_a_one_second_redis_restart() {
    support::bounded(async {
        let Some(outage) = outage_of(
            Some(sockeye_relay::HistoryLimits::new(100)),
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_millis(700),
            Duration::from_millis(5),
        )
        .await
        else {
            return;
        };
        eprintln!("{outage:?}");
        assert_eq!(outage.lost, 0, "{outage:?}");
        assert_eq!(outage.out_of_order, 0, "{outage:?}");
    })
    .await;
}

/// The benchmark: loss and recovery across outages of 1, 2 and 3.5 s at 200 messages a second.
/// By hand: `cargo test -p sockeye-relay --test redis_outage -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark, run by hand"]
async fn bench_loss_and_recovery_across_redis_restarts() {
    for down in [1000, 2000, 3500] {
        let Some(outage) = outage(
            Duration::from_millis(500),
            Duration::from_millis(down),
            Duration::from_secs(1),
            Duration::from_millis(5),
        )
        .await
        else {
            return;
        };
        println!(
            "outage {down} ms at 200 msg/s: sent {}, lost {}, out of order {}, recovery {:.0} ms",
            outage.sent,
            outage.lost,
            outage.out_of_order,
            outage.recovery.as_secs_f64() * 1000.0
        );
    }
}
