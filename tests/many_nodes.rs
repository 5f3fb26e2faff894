//! Many nodes in one process over `inproc://`: each node is one tokio task, so a thousand of
//! them fit in a test. Every node announces one service and dials one earlier node (a random
//! tree from a fixed seed); every node must end with exactly the full set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::{Duration, Instant};

use zgossip::{Config, Node};

/// A small deterministic generator (xorshift), so the topology is the same every run.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

async fn converge(count: usize, seed: u64) -> Duration {
    let started = Instant::now();
    let mut rng = Seeded(seed);
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        // Tuples along a tree, as wired, with every node a member, as by default: the views
        // add their own links (each resyncs unless both stores agree) and every node learns
        // a thousand members, on the same two cores.
        let config = Config::default();
        let node = Node::spawn(config).unwrap();
        node.bind(&format!("inproc://many-{seed}-{i}"))
            .await
            .unwrap();
        if i > 0 {
            let parent = rng.below(i);
            node.connect(&format!("inproc://many-{seed}-{parent}"))
                .await
                .unwrap();
        }
        node.publish(&format!("inproc://service-{i}"), "svc")
            .await
            .unwrap();
        nodes.push(node);
    }
    // A thousand nodes on two busy cores: a longer ceiling than one node's wait.
    let what = format!("seed {seed}: every node holds all {count}");
    let mut done = 0;
    support::wait_until_within(Duration::from_secs(120), &what, async || {
        for (i, node) in nodes.iter().enumerate().skip(done) {
            let held = node.status().await.unwrap().tuples;
            if held != count {
                return Err(format!("node {i} holds {held}"));
            }
            done = i + 1;
        }
        Ok(())
    })
    .await;
    let took = started.elapsed();
    let (mut expired, mut redials, mut sent) = (0, 0, 0);
    for node in &nodes {
        let stats = node.status().await.unwrap().stats;
        expired += stats.sessions_expired;
        redials += stats.redials;
        sent += stats.publish_sent;
    }
    eprintln!("sessions expired {expired}, redials {redials}, PUBLISH sent {sent}");
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_inproc_nodes_in_a_random_tree_all_learn_every_service() {
    let count = std::env::var("MANY_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let took = converge(count, 0x5eed).await;
    eprintln!("1000 nodes converged in {took:?}");
}
