//! Rooms over a local three-node Redis Cluster (sharded pub/sub): rooms whose channels land on
//! different shards carry messages between two nodes, including across a shard's restart.

mod rooms;

use std::time::Duration;

use sockeye::Message;
use sockeye_relay::{RedisBackplane, Relay};
use sockeye_test_support as support;
use support::{RedisCluster, until_shard_subscribers};

use rooms::{Ws, member, serve, until_members};

async fn cluster_relay(cluster: &RedisCluster) -> Relay {
    let backplane = RedisBackplane::cluster_builder(cluster.urls())
        .connect()
        .await
        .unwrap();
    Relay::builder().backplane(backplane).build()
}

async fn expect(ws: &mut Ws, text: &str) {
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_the_shards_of_a_cluster_and_ride_out_a_shard_restart() {
    support::bounded(Box::pin(async {
        let Some(mut cluster) = RedisCluster::start(3).await else {
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
        let rooms: Vec<String> = rooms.into_iter().map(Option::unwrap).collect();

        // Node two is given one cluster node's URL as if it were one Redis: it finds out.
        let one = cluster_relay(&cluster).await;
        let two = Relay::builder()
            .backplane(
                RedisBackplane::builder(&cluster.urls()[1])
                    .connect()
                    .await
                    .unwrap(),
            )
            .build();
        let ((addr_one, _t1), (addr_two, _t2)) =
            (serve(one.clone()).await, serve(two.clone()).await);
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for (shard, room) in rooms.iter().enumerate() {
            senders.push(member(addr_one, room).await);
            receivers.push(member(addr_two, room).await);
            until_members(&one, room, 1).await;
            until_members(&two, room, 1).await;
            // Both nodes subscribed, on the shard that owns the room's channel.
            let channel = format!("sockeye:room:{room}");
            until_shard_subscribers(cluster.ports[shard], &channel, 2).await;
        }
        for (sender, room) in senders.iter_mut().zip(&rooms) {
            for i in 0..50 {
                sender
                    .send(Message::text(format!("{room} {i}")))
                    .await
                    .unwrap();
            }
        }
        for (receiver, room) in receivers.iter_mut().zip(&rooms) {
            for i in 0..50 {
                expect(receiver, &format!("{room} {i}")).await;
            }
            receiver.send(Message::text("back")).await.unwrap();
        }
        for sender in &mut senders {
            expect(sender, "back").await;
        }

        // The shard of the first room restarts while its sender goes on.
        let mut sender = senders.remove(0);
        let mut receiver = receivers.remove(0);
        let sending = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for i in 0..300 {
                tick.tick().await;
                sender.send(Message::text(format!("r{i}"))).await.unwrap();
            }
            sender
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill(0);
        // How long the shard is down is what is tested, not a wait for anything.
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.restart(0).await;
        for i in 0..300 {
            expect(&mut receiver, &format!("r{i}")).await;
        }
        let _sender = sending.await.unwrap();
        // The other shards' rooms still work.
        senders[0].send(Message::text("still")).await.unwrap();
        expect(&mut receivers[0], "still").await;
    }))
    .await;
}
