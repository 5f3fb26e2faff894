//! A node under the cheapest attacks on its resyncs, over real tcp on 127.0.0.1, in this
//! process: raw DEALERs that say HELLO and never read, and one that says HELLO over and over,
//! beside an innocent client whose every PING must be answered. The long versions, with RSS
//! sampled over time and latency percentiles, are `scripts/attack` (figures in RELIABILITY.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use zgossip::wire::{Hail, Message};
use zgossip::{Config, Node};

/// The store the attacks ask for: about 5 MB as a resync.
const TUPLES: usize = 100_000;

/// How long the innocent client waits for a PONG before the test fails: generous, since a
/// loaded 2-core machine is slow; the measured latencies are printed.
const PONG_LIMIT: Duration = Duration::from_secs(5);

fn hello() -> Vec<u8> {
    let hail = Hail {
        node: 0x5eed,
        ..Hail::default()
    };
    Message::Hello(Some(hail)).to_bytes().unwrap().to_vec()
}

/// This process's resident memory, from /proc.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A node holding [`TUPLES`] tuples, listening on loopback tcp.
async fn loaded_node() -> (Node, String) {
    let node = Node::spawn(Config::default()).unwrap();
    let endpoint = node.bind("tcp://127.0.0.1:*").await.unwrap();
    for n in 0..TUPLES {
        let key = format!("tcp://10.{}.{}.{}:5000", n >> 16, (n >> 8) & 255, n & 255);
        node.publish(&key, "svc").await.unwrap();
    }
    (node, endpoint)
}

/// A raw DEALER that reads as little as libzmq lets it: its pipe holds one frame and its
/// socket buffer is small, so what the node sends it stays on the node's side.
fn non_reader(context: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let socket = context.socket(zmq::DEALER).unwrap();
    socket.set_rcvhwm(1).unwrap();
    socket.set_rcvbuf(4096).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(endpoint).unwrap();
    socket
}

/// PINGs every 100 ms, `count` times, from a plain v1 client; returns the worst PONG latency.
fn innocent_pings(endpoint: &str, count: usize, mut attack: impl FnMut(usize)) -> Duration {
    let context = zmq::Context::new();
    let innocent = context.socket(zmq::DEALER).unwrap();
    innocent.set_linger(0).unwrap();
    innocent.connect(endpoint).unwrap();
    let ping = Message::Ping(None).to_bytes().unwrap();
    let mut worst = Duration::ZERO;
    for round in 0..count {
        attack(round);
        let sent = Instant::now();
        innocent.send(&ping[..], 0).unwrap();
        loop {
            let left = PONG_LIMIT.saturating_sub(sent.elapsed());
            assert!(
                !left.is_zero(),
                "PING {round} unanswered for {PONG_LIMIT:?}"
            );
            let mut items = [innocent.as_poll_item(zmq::POLLIN)];
            zmq::poll(&mut items, left.as_millis() as i64).unwrap();
            if !items[0].is_readable() {
                continue;
            }
            let frame = bytes::Bytes::from(innocent.recv_bytes(0).unwrap());
            if matches!(Message::decode_frame(&frame), Ok(Message::Pong(_))) {
                break;
            }
        }
        worst = worst.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_say_hello_and_never_read_cost_a_slice_each_not_a_store() {
    let (node, endpoint) = loaded_node().await;
    let before = rss_bytes();
    let worst = tokio::task::spawn_blocking(move || {
        let context = zmq::Context::new();
        let mut attackers = Vec::new();
        let worst = innocent_pings(&endpoint, 30, |round| {
            // Ten new attackers a round for the first six rounds: sixty stores' worth asked.
            if round < 6 {
                for _ in 0..10 {
                    let attacker = non_reader(&context, &endpoint);
                    attacker.send(hello(), 0).unwrap();
                    attackers.push(attacker);
                }
            }
        });
        drop(attackers);
        worst
    })
    .await
    .unwrap();
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "innocent's worst PONG {worst:?}; RSS grew {} MB",
        grown >> 20
    );
    // Sixty whole resyncs would be 300 MB; a slice each is under 10 MB.
    assert!(grown < 96 << 20, "RSS grew {} MB", grown >> 20);
    let status = node.status().await.unwrap();
    assert_eq!(status.tuples, TUPLES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_saying_hello_as_fast_as_it_can_gets_one_resync_a_timeout() {
    let (node, endpoint) = loaded_node().await;
    let before = node.status().await.unwrap().stats;
    let (worst, received) = tokio::task::spawn_blocking(move || {
        let context = zmq::Context::new();
        let attacker = context.socket(zmq::DEALER).unwrap();
        attacker.set_linger(0).unwrap();
        attacker.connect(&endpoint).unwrap();
        let mut received = 0usize;
        let worst = innocent_pings(&endpoint, 20, |_| {
            // Reads what it is sent, and says HELLO fifty times between PINGs.
            for _ in 0..50 {
                attacker.send(hello(), 0).unwrap();
            }
            while let Ok(frame) = attacker.recv_bytes(zmq::DONTWAIT) {
                received += frame.len();
            }
        });
        (worst, received)
    })
    .await
    .unwrap();
    let after = node.status().await.unwrap().stats;
    let limited = after.hellos_limited - before.hellos_limited;
    println!(
        "innocent's worst PONG {worst:?}; attacker read {} MB; {limited} HELLOs limited",
        received >> 20
    );
    // 1,000 HELLOs in about three seconds of a 1 s timeout: at most a handful of resyncs.
    assert!(limited >= 990, "{limited} of 1000 HELLOs limited");
}
