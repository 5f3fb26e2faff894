//! A peer that never hails (CZMQ's zgossip, and Zyre on top of it) is sent exactly ZGP v1:
//! PUBLISH frames end at their ttl, withdrawals (which v1 would take for an empty value, and
//! which made Zyre abort) are never sent, and neither are goodbyes. Checked byte by byte with a
//! raw DEALER over tcp through a resync, publishes, a withdrawal, lease refreshes, an expiry and
//! a graceful stop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zgossip::wire::{HEADER_LEN, Message};
use zgossip::{Config, Node};

/// The length of a v1 PUBLISH of `key` and `value`: header, key with its one-byte length,
/// value with its four-byte length, ttl; nothing after.
fn v1_publish_len(key: &str, value: &str) -> usize {
    HEADER_LEN + 1 + key.len() + 4 + value.len() + 4
}

/// Every frame the DEALER gets within `wait`, checked as it comes: only v1 PUBLISHes (and
/// PONGs without a hail); returns the keys published to it.
fn read_v1(socket: &zmq::Socket, wait: Duration, seen: &mut BTreeSet<String>) -> usize {
    let until = Instant::now() + wait;
    let mut frames = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return frames;
        }
        let mut items = [socket.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, left.as_millis() as i64).unwrap();
        if !items[0].is_readable() {
            continue;
        }
        let frame = Bytes::from(socket.recv_bytes(0).unwrap());
        frames += 1;
        match Message::decode_frame(&frame) {
            Ok(Message::Publish(publish)) => {
                assert!(
                    publish.extension.is_empty(),
                    "PUBLISH with extension bytes: {publish:?}"
                );
                assert!(!publish.value.is_empty(), "a withdrawal as v1: {publish:?}");
                assert_eq!(frame.len(), v1_publish_len(&publish.key, &publish.value));
                seen.insert(publish.key.to_string());
            }
            Ok(Message::Pong(None)) => {}
            other => panic!("not plain v1: {other:?} ({frame:02x?})"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_hails_sees_only_plain_v1_frames() {
    let config = || {
        let mut config = Config::default();
        // CZMQ's client never PINGs: keep its session for the whole test.
        config.server_timeout = Duration::from_secs(30);
        config
    };
    let node = Node::spawn(config()).unwrap();
    let endpoint = node.bind("tcp://127.0.0.1:*").await.unwrap();
    node.publish("tcp://10.0.0.1:1", "before").await.unwrap();
    node.publish("tcp://10.0.0.9:9", "withdrawn-before")
        .await
        .unwrap();
    node.unpublish("tcp://10.0.0.9:9").await.unwrap();
    let app = Node::spawn(config()).unwrap();
    app.connect(&endpoint).await.unwrap();

    let context = zmq::Context::new();
    let czmq = context.socket(zmq::DEALER).unwrap();
    czmq.set_linger(0).unwrap();
    czmq.connect(&endpoint).unwrap();
    czmq.send(&Message::Hello(None).to_bytes().unwrap()[..], 0)
        .unwrap();
    let mut seen = BTreeSet::new();
    let read = |wait: Duration, seen: &mut BTreeSet<String>| read_v1(&czmq, wait, seen);
    read(Duration::from_millis(500), &mut seen);
    assert!(seen.contains("tcp://10.0.0.1:1"), "the resync: {seen:?}");

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
    let frames = read(Duration::from_millis(700), &mut seen);
    assert!(frames >= 4, "refreshes came: {frames} frames");
    app.kill().await.unwrap();
    read(Duration::from_millis(800), &mut seen);
    assert!(
        node.get("tcp://10.0.0.4:4").await.unwrap().is_none(),
        "expired"
    );
    node.shutdown().await.unwrap();
    read(Duration::from_millis(500), &mut seen);
    let expected: BTreeSet<String> = ["tcp://10.0.0.1:1", "tcp://10.0.0.2:2"]
        .into_iter()
        .chain(["tcp://10.0.0.3:3", "tcp://10.0.0.4:4"])
        .map(String::from)
        .collect();
    assert_eq!(seen, expected, "withdrawn-before never crosses");
}
