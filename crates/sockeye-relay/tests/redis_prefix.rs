//! The namespace of the Redis backplane: relays share rooms only under the same prefix, and a
//! database number in the URL (which pub/sub ignores) is refused.

mod rooms;

use std::time::Duration;

use sockeye::Message;
use sockeye_relay::{RedisBackplane, RedisError, RedisLimits};
use sockeye_test_support as support;
use support::{redis_command, redis_server, until_redis_subscribers};

use rooms::{member, redis_relay, serve, until_members};

#[tokio::test]
async fn relays_share_rooms_under_one_prefix_only() {
    support::bounded(async {
        let port = support::free_port();
        let Some(redis) = redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let ttl = Duration::from_secs(6);
        let a1 = redis_relay(&url, "app-a", ttl).await;
        let a2 = redis_relay(&url, "app-a", ttl).await;
        let b = redis_relay(&url, "app-b", ttl).await;
        let ((addr_a1, _t1), (addr_a2, _t2), (addr_b, _t3)) = (
            serve(a1.clone()).await,
            serve(a2.clone()).await,
            serve(b.clone()).await,
        );
        let mut on_a1 = member(addr_a1, "r").await;
        let mut on_a2 = member(addr_a2, "r").await;
        let mut on_b = member(addr_b, "r").await;
        for relay in [&a1, &a2, &b] {
            until_members(relay, "r", 1).await;
        }
        until_redis_subscribers(port, "app-a:room:r", 2).await;
        until_redis_subscribers(port, "app-b:room:r", 1).await;

        on_a1.send(Message::text("to a")).await.unwrap();
        assert_eq!(on_a2.next().await.unwrap().unwrap(), Message::text("to a"));
        on_b.send(Message::text("to b")).await.unwrap();
        // A marker published on b's channel after both: had b's member been reached by "to a"
        // (or a's by "to b"), it would have come first, as Redis keeps one connection's order.
        let mut marker = b"sky2".to_vec();
        marker.extend_from_slice(&1u64.to_be_bytes());
        marker.extend_from_slice(&1u32.to_be_bytes());
        marker.push(1);
        marker.extend_from_slice(b"marker");
        let marker = String::from_utf8(marker).unwrap();
        for channel in ["app-b:room:r", "app-a:room:r"] {
            redis_command(port, &["PUBLISH", channel, &marker]).await;
        }
        assert_eq!(on_b.next().await.unwrap().unwrap(), Message::text("marker"));
        assert_eq!(
            on_a2.next().await.unwrap().unwrap(),
            Message::text("marker")
        );
        assert_eq!(
            on_a1.next().await.unwrap().unwrap(),
            Message::text("marker")
        );
        // Nothing of the default prefix either.
        let numsub = redis_command(port, &["PUBSUB", "NUMSUB", "sockeye:room:r"]).await;
        assert!(numsub.ends_with(":0\r\n"), "{numsub}");
        drop(redis);
    })
    .await;
}

#[tokio::test]
async fn a_database_number_or_a_bad_prefix_is_refused() {
    support::bounded(async {
        let port = support::free_port();
        let Some(redis) = redis_server(port).await else {
            return;
        };
        let error = RedisBackplane::connect(
            &format!("redis://:s3cret@127.0.0.1:{port}/1"),
            None,
            RedisLimits::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, RedisError::Url(_)), "{error}");
        assert!(error.to_string().contains("database number"), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        // /0, the default, selects nothing to refuse.
        RedisBackplane::connect(
            &format!("redis://127.0.0.1:{port}/0"),
            None,
            RedisLimits::new(),
        )
        .await
        .unwrap();
        for prefix in ["", "a b", "{x}"] {
            let error = RedisBackplane::builder(&format!("redis://127.0.0.1:{port}"))
                .prefix(prefix)
                .connect()
                .await
                .unwrap_err();
            assert!(matches!(error, RedisError::Config(_)), "{error}");
        }
        drop(redis);
    })
    .await;
}
