//! A peer that never hails (CZMQ's zgossip, and Zyre on top of it) is sent exactly ZGP v1:
//! PUBLISH frames end at their ttl, withdrawals (which v1 would take for an empty value, and
//! which made Zyre abort) are never sent, and neither are goodbyes. Checked byte by byte with a
//! raw DEALER over tcp through a resync, publishes, a withdrawal, lease refreshes, an expiry and
//! a graceful stop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::WAIT;
use zgossip::Config;
use zgossip::wire::{HEADER_LEN, Message};

/// The length of a v1 PUBLISH of `key` and `value`: header, key with its one-byte length,
/// value with its four-byte length, ttl; nothing after.
fn v1_publish_len(key: &str, value: &str) -> usize {
    HEADER_LEN + 1 + key.len() + 4 + value.len() + 4
}

/// The PUBLISH frames a raw DEALER got, per key.
type Seen = BTreeMap<String, usize>;

/// Reads every frame the DEALER gets within `wait`, checking each as it comes: only v1
/// PUBLISHes (and PONGs without a hail), counted per key in `seen`.
fn read_v1(socket: &zmq::Socket, wait: Duration, seen: &mut Seen) {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut items = [socket.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, left.as_millis() as i64).unwrap();
        if !items[0].is_readable() {
            return;
        }
        let frame = Bytes::from(socket.recv_bytes(0).unwrap());
        match Message::decode_frame(&frame) {
            Ok(Message::Publish(publish)) => {
                assert!(
                    publish.extension.is_empty(),
                    "PUBLISH with extension bytes: {publish:?}"
                );
                assert!(!publish.value.is_empty(), "a withdrawal as v1: {publish:?}");
                assert_eq!(frame.len(), v1_publish_len(&publish.key, &publish.value));
                *seen.entry(publish.key.to_string()).or_default() += 1;
            }
            Ok(Message::Pong(None)) => {}
            other => panic!("not plain v1: {other:?} ({frame:02x?})"),
        }
    }
}

/// Reads (as [`read_v1`]) until `done` holds for what was seen, or fails after [`WAIT`].
fn read_v1_until(socket: &zmq::Socket, seen: &mut Seen, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}; saw {seen:?}"
        );
        read_v1(socket, Duration::from_millis(50), seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_hails_sees_only_plain_v1_frames() {
    let config = || {
        let mut config = Config::default();
        // CZMQ's client never PINGs: keep its session for the whole test.
        config.server_timeout = WAIT * 2;
        config
    };
    let node = support::spawn(config());
    let endpoint = node.bind("tcp://127.0.0.1:*").await.unwrap();
    node.publish("tcp://10.0.0.1:1", "before").await.unwrap();
    node.publish("tcp://10.0.0.9:9", "withdrawn-before")
        .await
        .unwrap();
    node.unpublish("tcp://10.0.0.9:9").await.unwrap();
    let app = support::spawn(config());
    app.connect(&endpoint).await.unwrap();

    let context = zmq::Context::new();
    let czmq = context.socket(zmq::DEALER).unwrap();
    czmq.set_linger(0).unwrap();
    // Tells when the node has closed the connection: whatever it sent before is in by then.
    czmq.monitor(
        "inproc://czmq-v1-monitor",
        zmq::SocketEvent::DISCONNECTED as i32,
    )
    .unwrap();
    let monitor = context.socket(zmq::PAIR).unwrap();
    monitor.connect("inproc://czmq-v1-monitor").unwrap();
    czmq.connect(&endpoint).unwrap();
    czmq.send(&Message::Hello(None).to_bytes().unwrap()[..], 0)
        .unwrap();
    let mut seen = Seen::new();
    read_v1_until(&czmq, &mut seen, "the resync", |seen| {
        seen.contains_key("tcp://10.0.0.1:1")
    });

    node.publish("tcp://10.0.0.2:2", "after").await.unwrap();
    node.unpublish("tcp://10.0.0.1:1").await.unwrap();
    // A lease: refreshed every 100 ms, each refresh a PUBLISH.
    node.publish_for(
        "tcp://10.0.0.3:3",
        "leased",
        Some(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    // Another node's lease, which ends here when that node dies.
    app.publish_for(
        "tcp://10.0.0.4:4",
        "theirs",
        Some(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    read_v1_until(&czmq, &mut seen, "new tuples and two refreshes", |seen| {
        seen.contains_key("tcp://10.0.0.2:2")
            && seen.contains_key("tcp://10.0.0.4:4")
            && seen.get("tcp://10.0.0.3:3").is_some_and(|n| *n >= 3)
    });
    app.kill().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while node.get("tcp://10.0.0.4:4").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "theirs never expired");
        read_v1(&czmq, Duration::from_millis(50), &mut seen);
    }
    node.shutdown().await.unwrap();
    monitor.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    monitor
        .recv_multipart(0)
        .expect("the node closes the connection when it stops");
    read_v1(&czmq, Duration::ZERO, &mut seen);
    let keys: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "tcp://10.0.0.1:1",
            "tcp://10.0.0.2:2",
            "tcp://10.0.0.3:3",
            "tcp://10.0.0.4:4"
        ],
        "withdrawn-before never crosses"
    );
}
