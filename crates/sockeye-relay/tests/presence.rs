//! Presence across nodes over a real `redis-server`: every node's members see the same list,
//! told by join and leave messages, and the members of a node that dies leave the lists within
//! the time to live.

mod rooms;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sockeye::Message;
use sockeye_test_support as support;
use support::redis_server;

use rooms::{Ws, json, member, redis_relay, serve, until_members};

/// What a page makes of the presence messages it gets, as the demo page does.
#[derive(Default)]
struct View {
    members: HashMap<String, String>,
}

impl View {
    fn apply(&mut self, message: &serde_json::Value) {
        assert_eq!(message["sockeye"], "presence", "{message}");
        let id = |m: &serde_json::Value| m["id"].to_string();
        match message["event"].as_str().unwrap() {
            "members" => {
                for m in message["members"].as_array().unwrap() {
                    self.members
                        .insert(id(m), m["name"].as_str().unwrap().into());
                }
            }
            "join" => {
                let m = &message["member"];
                self.members
                    .insert(id(m), m["name"].as_str().unwrap().into());
            }
            "leave" => {
                self.members.remove(&id(&message["member"]));
            }
            other => panic!("unknown event {other}"),
        }
    }

    fn names(&self) -> BTreeSet<String> {
        self.members.values().cloned().collect()
    }
}

/// Reads `ws`'s presence messages into `view` until it lists exactly `names`.
async fn until_listed(ws: &mut Ws, view: &mut View, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
    while view.names() != want {
        let message = json(ws).await;
        view.apply(&message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_agree_on_every_node_and_forget_a_dead_node() {
    support::bounded(Box::pin(async {
        let port = support::free_port();
        let Some(redis) = redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let ttl = Duration::from_millis(900);
        let one = redis_relay(&url, "sockeye", ttl).await;
        let two = redis_relay(&url, "sockeye", ttl).await;
        let ((addr_one, _t1), (addr_two, _t2)) =
            (serve(one.clone()).await, serve(two.clone()).await);

        // Node three runs on a runtime of its own, so that it can die all at once: its tasks
        // are dropped without running again, and it says goodbye to no one.
        let three_rt = tokio::runtime::Runtime::new().unwrap();
        let url3 = url.clone();
        let (addr_three, three) = three_rt
            .spawn(async move {
                let relay = redis_relay(&url3, "sockeye", ttl).await;
                let (addr, _task) = serve(relay.clone()).await;
                (addr, relay)
            })
            .await
            .unwrap();

        let (mut ann, mut ann_view) = (member(addr_one, "p?ann").await, View::default());
        until_listed(&mut ann, &mut ann_view, &["ann"]).await;
        let (mut bob, mut bob_view) = (member(addr_two, "p?bob").await, View::default());
        // An anonymous member on node two is listed nowhere.
        let mut anonymous = member(addr_two, "p").await;
        until_members(&two, "p", 2).await;
        let (mut cy, mut cy_view) = (member(addr_three, "p?cy").await, View::default());
        until_members(&three, "p", 1).await;
        let all = ["ann", "bob", "cy"];
        until_listed(&mut ann, &mut ann_view, &all).await;
        until_listed(&mut bob, &mut bob_view, &all).await;
        until_listed(&mut cy, &mut cy_view, &all).await;
        // The ids agree too: one list, whoever looks.
        let ids = |v: &View| v.members.len();
        assert_eq!((ids(&ann_view), ids(&bob_view), ids(&cy_view)), (3, 3, 3));

        // A leave is news everywhere.
        bob.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        until_listed(&mut ann, &mut ann_view, &["ann", "cy"]).await;
        until_listed(&mut cy, &mut cy_view, &["ann", "cy"]).await;

        // Room messages go on, and the anonymous member saw no presence message at all.
        ann.send(Message::text("hello")).await.unwrap();
        assert_eq!(
            anonymous.next().await.unwrap().unwrap(),
            Message::text("hello")
        );

        // Node three dies: cy leaves the lists within the time to live (and a heartbeat).
        let died = Instant::now();
        three_rt.shutdown_background();
        until_listed(&mut ann, &mut ann_view, &["ann"]).await;
        let gone = died.elapsed();
        eprintln!("cy left the lists {gone:?} after its node died");
        // Not a goodbye (that would be at once), an expiry: within the time to live of the
        // last refresh (at most a third of it before the death), and a tenth for the sweep.
        assert!(gone >= ttl / 2 && gone < ttl + ttl / 4, "{gone:?}");
        drop((cy, redis));
    }))
    .await;
}
