//! Services that come and go, on the in-process transport with tokio's paused clock: time only
//! moves when every node is idle, jumping to the next timer, so leases, expiries and timeouts
//! are measured exactly and the tests never race the machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use tokio::time::Instant;
use zgossip::{Event, Events, Node};

const TTL: Duration = Duration::from_secs(3);

struct Peer {
    node: Node,
    events: Events,
}

/// A node bound to `inproc://{name}` that dials each of `dial`.
async fn peer(name: &str, dial: &[&str]) -> Peer {
    // These tests are about tuples along the links as written (a node whose only link dies is
    // cut off): no cluster, whose views would add links of their own.
    let mut config = zgossip::Config::named(name);
    config.cluster = zgossip::Membership::Off;
    let node = support::spawn(config);
    let events = node.events().await.unwrap();
    node.bind(&format!("inproc://{name}")).await.unwrap();
    for other in dial {
        node.connect(&format!("inproc://{other}")).await.unwrap();
    }
    Peer { node, events }
}

impl Peer {
    /// Waits (in virtual time, at most `within`) for an event `matches` accepts.
    async fn expect(
        &mut self,
        within: Duration,
        what: &str,
        matches: impl Fn(&Event) -> bool,
    ) -> Instant {
        support::expect_event(&mut self.events, within, what, matches).await;
        Instant::now()
    }

    /// Every event up to now (the node is idle when this is called in paused time).
    fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.events.try_recv())
            .filter_map(Result::ok)
            .collect()
    }

    async fn get(&self, key: &str) -> Option<String> {
        self.node.get(key).await.unwrap()
    }

    async fn wait_holds(&mut self, key: &str, value: &str) {
        support::wait_holds(&self.node, key, value).await;
    }

    async fn publish_sent(&self) -> u64 {
        self.node.status().await.unwrap().stats.publish_sent
    }
}

fn is_expire(key: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Expire { key: k, .. } if &**k == key)
}

fn is_remove(key: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Remove { key: k, .. } if &**k == key)
}

/// a ← b ← c ← d: each dials the one before it.
async fn chain(prefix: &str) -> Vec<Peer> {
    let a = peer(&format!("{prefix}-a"), &[]).await;
    let b = peer(&format!("{prefix}-b"), &[&format!("{prefix}-a")]).await;
    let c = peer(&format!("{prefix}-c"), &[&format!("{prefix}-b")]).await;
    let d = peer(&format!("{prefix}-d"), &[&format!("{prefix}-c")]).await;
    vec![a, b, c, d]
}

#[tokio::test(start_paused = true)]
async fn leased_tuples_of_a_killed_owner_expire_everywhere_within_ttl_and_a_heartbeat() {
    let mut nodes = chain("kill").await;
    nodes[0]
        .node
        .publish_for("tcp://10.0.0.1:1", "orders", Some(TTL))
        .await
        .unwrap();
    for peer in &mut nodes[1..] {
        peer.wait_holds("tcp://10.0.0.1:1", "orders").await;
    }
    // Let a few refreshes go by, then kill the owner without a word.
    tokio::time::sleep(TTL * 2).await;
    nodes[0].node.kill().await.unwrap();
    let killed = Instant::now();
    let heartbeat = TTL / 3;
    for peer in &mut nodes[1..] {
        let expired = peer
            .expect(TTL + heartbeat, "EXPIRE", is_expire("tcp://10.0.0.1:1"))
            .await;
        let after = expired - killed;
        assert!(
            after >= TTL - heartbeat,
            "expired only {after:?} after the kill"
        );
        assert_eq!(peer.get("tcp://10.0.0.1:1").await, None);
    }
}

#[tokio::test(start_paused = true)]
async fn leased_tuples_of_a_live_owner_never_expire() {
    let mut nodes = chain("alive").await;
    nodes[0]
        .node
        .publish_for("tcp://10.0.0.1:1", "orders", Some(TTL))
        .await
        .unwrap();
    nodes[3].wait_holds("tcp://10.0.0.1:1", "orders").await;
    tokio::time::sleep(TTL * 5).await;
    for peer in &mut nodes {
        let expiries = peer
            .drain()
            .into_iter()
            .filter(|e| matches!(e, Event::Expire { .. }))
            .count();
        assert_eq!(expiries, 0);
        assert_eq!(
            peer.get("tcp://10.0.0.1:1").await.as_deref(),
            Some("orders")
        );
    }
    let refreshes = nodes[0].node.status().await.unwrap().stats.refreshes;
    assert!(
        refreshes >= 14,
        "refreshed {refreshes} times in five leases"
    );
}

#[tokio::test(start_paused = true)]
async fn unpublish_reaches_the_end_of_a_three_hop_chain() {
    let mut nodes = chain("unpub").await;
    nodes[0]
        .node
        .publish("tcp://10.0.0.1:1", "orders")
        .await
        .unwrap();
    nodes[3].wait_holds("tcp://10.0.0.1:1", "orders").await;
    nodes[0].node.unpublish("tcp://10.0.0.1:1").await.unwrap();
    for peer in &mut nodes {
        peer.expect(
            Duration::from_secs(1),
            "REMOVE",
            is_remove("tcp://10.0.0.1:1"),
        )
        .await;
        assert_eq!(peer.get("tcp://10.0.0.1:1").await, None);
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_cut_off_during_unpublish_does_not_bring_the_tuple_back() {
    // a ← b ← m ← d: m is d's only link; killing m cuts d off with its copy intact.
    let mut a = peer("heal-a", &[]).await;
    let mut b = peer("heal-b", &["heal-a"]).await;
    let m = peer("heal-m", &["heal-b"]).await;
    let mut d = peer("heal-d", &["heal-m"]).await;
    a.node.publish("tcp://10.0.0.1:1", "orders").await.unwrap();
    d.wait_holds("tcp://10.0.0.1:1", "orders").await;

    m.node.kill().await.unwrap();
    a.node.unpublish("tcp://10.0.0.1:1").await.unwrap();
    b.expect(
        Duration::from_secs(1),
        "REMOVE at b",
        is_remove("tcp://10.0.0.1:1"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        d.get("tcp://10.0.0.1:1").await.as_deref(),
        Some("orders"),
        "d did not hear of it"
    );
    a.drain();
    b.drain();

    // Heal: a new m at the same place; d reconnects by itself and resyncs its old copy.
    let m = peer("heal-m", &["heal-b"]).await;
    d.expect(
        Duration::from_secs(2),
        "REMOVE at d",
        is_remove("tcp://10.0.0.1:1"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, peer) in [("a", &mut a), ("b", &mut b), ("d", &mut d)] {
        assert_eq!(
            peer.get("tcp://10.0.0.1:1").await,
            None,
            "{name} holds it again"
        );
        let back = peer
            .drain()
            .into_iter()
            .any(|e| matches!(e, Event::Deliver { .. }));
        assert!(!back, "{name} saw the tuple come back");
    }
    assert_eq!(m.node.get("tcp://10.0.0.1:1").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_withdraws_and_kill_leaves_leases_to_expire() {
    let mut base = peer("stop-base", &[]).await;
    let polite = peer("stop-polite", &["stop-base"]).await;
    let rude = peer("stop-rude", &["stop-base"]).await;
    polite
        .node
        .publish_for("tcp://10.0.0.1:1", "polite", Some(TTL))
        .await
        .unwrap();
    rude.node
        .publish_for("tcp://10.0.0.2:1", "rude", Some(TTL))
        .await
        .unwrap();
    rude.node
        .publish("tcp://10.0.0.2:2", "config")
        .await
        .unwrap();
    base.wait_holds("tcp://10.0.0.2:2", "config").await;
    base.wait_holds("tcp://10.0.0.1:1", "polite").await;

    polite.node.shutdown().await.unwrap();
    let stopped = Instant::now();
    let removed = base
        .expect(
            Duration::from_secs(1),
            "REMOVE",
            is_remove("tcp://10.0.0.1:1"),
        )
        .await;
    assert!(
        removed - stopped < Duration::from_millis(100),
        "withdrawn at once, not by lease"
    );

    rude.node.kill().await.unwrap();
    base.expect(TTL + TTL / 3, "EXPIRE", is_expire("tcp://10.0.0.2:1"))
        .await;
    assert_eq!(
        base.get("tcp://10.0.0.2:2").await.as_deref(),
        Some("config"),
        "a tuple without a lease stays"
    );
}

#[tokio::test(start_paused = true)]
async fn peers_that_say_goodbye_are_left_and_peers_that_die_are_dead() {
    let mut base = peer("peers-base", &[]).await;
    let polite = peer("peers-polite", &["peers-base"]).await;
    let rude = peer("peers-rude", &["peers-base"]).await;
    let polite_id = format!("node:{:016x}", polite.node.status().await.unwrap().node_id);
    let rude_id = format!("node:{:016x}", rude.node.status().await.unwrap().node_id);
    tokio::time::sleep(Duration::from_secs(1)).await;

    polite.node.shutdown().await.unwrap();
    base.expect(Duration::from_secs(1), "polite left", |e| {
        matches!(e, Event::Peer { peer, state, .. } if *peer == polite_id && state.name() == "left")
    })
    .await;
    rude.node.kill().await.unwrap();
    base.expect(Duration::from_secs(2), "rude dead", |e| {
        matches!(e, Event::Peer { peer, state, .. } if *peer == rude_id && state.name() == "dead")
    })
    .await;

    // The other way round: the server goes, and our remote says so.
    let mut client = peer("peers-client", &["peers-server"]).await;
    let server = peer("peers-server", &[]).await;
    client.expect(Duration::from_secs(1), "server alive", |e| {
        matches!(e, Event::Peer { peer, state, .. } if peer == "inproc://peers-server" && state.name() == "alive")
    })
    .await;
    server.node.shutdown().await.unwrap();
    client.expect(Duration::from_secs(1), "server left", |e| {
        matches!(e, Event::Peer { peer, state, .. } if peer == "inproc://peers-server" && state.name() == "left")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn two_publishers_of_one_key_in_a_ring_of_five_converge_and_traffic_stops() {
    let names: Vec<String> = (0..5).map(|i| format!("ring-{i}")).collect();
    let mut ring = Vec::new();
    for name in &names {
        ring.push(peer(name, &[]).await);
    }
    for i in 0..5 {
        ring[i]
            .node
            .connect(&format!("inproc://{}", names[(i + 1) % 5]))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before: u64 = publishes_sent(&ring).await;

    // Two nodes publish different values for one key at the same moment.
    let (left, right) = (&ring[0].node, &ring[2].node);
    let (x, y) = tokio::join!(
        left.publish("svc", "from-zero"),
        right.publish("svc", "from-two")
    );
    x.unwrap();
    y.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut values = Vec::new();
    for peer in &ring {
        values.push(peer.get("svc").await.unwrap());
    }
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "all agree: {values:?}"
    );
    let during = publishes_sent(&ring).await - before;
    // Each copy crosses each of the 5 links at most once each way.
    assert!(during <= 2 * 2 * 5, "{during} PUBLISH messages to settle");

    let settled = publishes_sent(&ring).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        publishes_sent(&ring).await,
        settled,
        "no PUBLISH after settling"
    );
}

async fn publishes_sent(peers: &[Peer]) -> u64 {
    let mut total = 0;
    for peer in peers {
        total += peer.publish_sent().await;
    }
    total
}

/// The message cost of refreshing one leased tuple: one PUBLISH per link of a tree.
#[tokio::test(start_paused = true)]
async fn a_lease_refresh_costs_one_message_per_link() {
    const N: usize = 20;
    let mut nodes = Vec::new();
    for i in 0..N {
        // A tree: node i dials node (i - 1) / 2.
        let parent = format!("tree-{}", i.saturating_sub(1) / 2);
        let dial: Vec<&str> = if i == 0 { vec![] } else { vec![&parent] };
        nodes.push(peer(&format!("tree-{i}"), &dial).await);
    }
    nodes[0]
        .node
        .publish_for("svc", "orders", Some(TTL))
        .await
        .unwrap();
    nodes[N - 1].wait_holds("svc", "orders").await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    let refreshes_before = nodes[0].node.status().await.unwrap().stats.refreshes;
    let sent_before = publishes_sent(&nodes).await;
    tokio::time::sleep(TTL * 4).await;
    let refreshes = nodes[0].node.status().await.unwrap().stats.refreshes - refreshes_before;
    let sent = publishes_sent(&nodes).await - sent_before;
    assert_eq!(refreshes, 12, "a refresh every third of the lease");
    assert_eq!(
        sent,
        refreshes * (N as u64 - 1),
        "N - 1 = {} messages per refresh",
        N - 1
    );
}

#[tokio::test(start_paused = true)]
async fn restarted_server_and_client_get_the_full_state_back_within_a_second() {
    let server = peer("restart-server", &[]).await;
    let client = peer("restart-client", &["restart-server"]).await;
    server.node.publish("from-server", "s").await.unwrap();
    client
        .node
        .publish_for("from-client", "c", Some(TTL))
        .await
        .unwrap();
    let mut server = server;
    server.wait_holds("from-client", "c").await;

    server.node.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    let mut server = peer("restart-server", &[]).await;
    server.wait_holds("from-client", "c").await;
    assert!(
        restarted.elapsed() < Duration::from_secs(1),
        "server resynced in {:?}",
        restarted.elapsed()
    );
    server.node.publish("from-server", "s").await.unwrap();

    client.node.kill().await.unwrap();
    let restarted = Instant::now();
    let mut client = peer("restart-client", &["restart-server"]).await;
    client.wait_holds("from-server", "s").await;
    assert!(
        restarted.elapsed() < Duration::from_secs(1),
        "client resynced in {:?}",
        restarted.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn lookup_lists_the_endpoints_of_a_service_and_wait_for_service_waits() {
    let base = peer("lookup-base", &[]).await;
    let app = peer("lookup-app", &["lookup-base"]).await;
    let waiter = tokio::spawn({
        let node = base.node.clone();
        async move {
            node.wait_for_service("orders", Duration::from_secs(5))
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.node
        .publish("tcp://10.0.0.2:1", "orders")
        .await
        .unwrap();
    app.node
        .publish("tcp://10.0.0.1:1", "orders")
        .await
        .unwrap();
    app.node
        .publish("tcp://10.0.0.3:1", "billing")
        .await
        .unwrap();
    let found = waiter.await.unwrap().unwrap();
    assert!(!found.is_empty());
    let mut base = base;
    base.wait_holds("tcp://10.0.0.3:1", "billing").await;
    assert_eq!(
        base.node.lookup("orders").await.unwrap(),
        ["tcp://10.0.0.1:1", "tcp://10.0.0.2:1"]
    );
    assert!(base.node.lookup("nothing").await.unwrap().is_empty());
    let missing = base
        .node
        .wait_for_service("nothing", Duration::from_secs(2))
        .await;
    assert!(
        matches!(missing, Err(zgossip::Error::Timeout { .. })),
        "{missing:?}"
    );
}

/// The daemon setup (`Restart=on-failure`, `--ttl`): a node killed and restarted with a new id
/// must win back its own leased service at once, whether it comes back before its old lease
/// ran out (the old copy is still held everywhere) or after (expiry records are held).
#[tokio::test(start_paused = true)]
async fn a_node_killed_and_restarted_twenty_times_keeps_its_leased_service_everywhere() {
    const LEASE: Duration = Duration::from_secs(2);
    async fn start_owner() -> Peer {
        let owner = peer("restart-owner", &[]).await;
        owner
            .node
            .publish_for("tcp://10.0.0.9:80", "web", Some(LEASE))
            .await
            .unwrap();
        owner
    }
    let mut others = [
        peer("restart-a", &["restart-owner"]).await,
        peer("restart-b", &["restart-owner"]).await,
    ];
    let mut owner = start_owner().await;
    for round in 0..20 {
        owner.node.kill().await.unwrap();
        if round % 2 == 1 {
            // Long enough for the old lease to run out everywhere.
            tokio::time::sleep(LEASE * 2).await;
        }
        owner = start_owner().await;
        let restarted = Instant::now();
        for other in &mut others {
            while other.get("tcp://10.0.0.9:80").await.as_deref() != Some("web") {
                assert!(
                    restarted.elapsed() < Duration::from_secs(1),
                    "round {round}: the service is not back within 1 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // And it stays, well past the old life's lease.
        tokio::time::sleep(LEASE * 2).await;
        for other in &mut others {
            assert_eq!(
                other.get("tcp://10.0.0.9:80").await.as_deref(),
                Some("web"),
                "round {round}: the service was lost after the restart"
            );
        }
    }
    drop(owner);
}
