//! Each limit, one by one, over the in-process transport: what is refused, what is counted in
//! `STATUS detail`, and that the node goes on serving; and over tcp, that a queue limit far below
//! the store still lets a reading peer have all of it. (Session, frame-size, handshake and tuple
//! rule limits over real sockets are in `tests/bad_input/`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use support::{spawn, wait_tuples};
use zgossip::{Config, Node};

/// A node named `name` with `config`.
fn node(name: &str, mut config: Config) -> Node {
    config.name = Some(name.into());
    spawn(config)
}

async fn detail(node: &Node) -> String {
    node.status().await.unwrap().detail()
}

#[tokio::test(start_paused = true)]
async fn a_full_store_refuses_new_keys_and_counts_them() {
    let server = node("store-full", {
        let mut config = Config::default();
        config.max_tuples = 3;
        config
    });
    server.bind("inproc://limits-store").await.unwrap();
    let client = node("client", Config::default());
    client.connect("inproc://limits-store").await.unwrap();
    for i in 0..5 {
        client.publish(&format!("k{i}"), "v").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = server.status().await.unwrap();
    assert_eq!(status.tuples, 3);
    assert_eq!(status.stats.store_full, 2);
    assert!(detail(&server).await.contains("store_full=2"));
    // The stores now differ for good; the client's digest resyncs offer the two keys again,
    // further and further apart (1 s, 2 s, 4 s...), not in a loop.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let resyncs = client.status().await.unwrap().stats.digest_resyncs;
    assert!((1..=7).contains(&resyncs), "{resyncs} resyncs in a minute");
    assert_eq!(
        server.status().await.unwrap().stats.store_full,
        2 + 2 * resyncs
    );
    let error = server.publish("mine", "v").await.unwrap_err();
    assert!(error.to_string().contains("store is full"), "{error}");
    // Existing keys still take new values.
    client.publish("k0", "w").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.get("k0").await.unwrap().as_deref(), Some("w"));
}

#[tokio::test(start_paused = true)]
async fn connects_past_max_remotes_are_refused() {
    let client = node("remotes", {
        let mut config = Config::default();
        config.max_remotes = 2;
        config
    });
    client.connect("inproc://limits-r1").await.unwrap();
    client.connect("inproc://limits-r2").await.unwrap();
    let error = client.connect("inproc://limits-r3").await.unwrap_err();
    assert!(
        error.to_string().contains("too many remotes (at most 2)"),
        "{error}"
    );
    assert!(detail(&client).await.contains("remotes_refused=1"));
    assert_eq!(client.status().await.unwrap().remotes, 2);
}

/// A server whose queue limit is far below its store: `max_queued_bytes` of 4 KiB and 300
/// tuples (about 14 KiB as a resync).
async fn small_queue_big_store(tag: &str) -> Node {
    let server = node(tag, {
        let mut config = Config::default();
        config.max_queued_bytes = 4096;
        config
    });
    for i in 0..300 {
        server
            .publish(&format!("tcp://10.0.0.1:{i}"), "svc")
            .await
            .unwrap();
    }
    server
}

/// Over tcp a resync goes out a slice at a time, each once the last is in libzmq, so a peer
/// that reads gets a store far bigger than the queue limit, and nothing overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_peer_gets_a_store_bigger_than_the_queue_limit_over_tcp() {
    let server = small_queue_big_store("queued-tcp").await;
    let endpoint = server.bind("tcp://127.0.0.1:*").await.unwrap();
    let roomy = node("roomy", Config::default());
    roomy.connect(&endpoint).await.unwrap();
    wait_tuples(&roomy, 300).await;
    assert_eq!(
        roomy.tuples().await.unwrap(),
        server.tuples().await.unwrap()
    );
    assert_eq!(server.status().await.unwrap().stats.overflows, 0);
}

/// The same over inproc: a slice whenever the link has room (a quarter of the limit), so the
/// peer gets all of it. Handing over the whole resync at once overflowed every peer of a store
/// bigger than the limit, for ever: the peer was dropped, redialled, and ended with the same
/// first 294 keys every time. (Peers that do not read are dropped: tests/reliability.rs.)
#[tokio::test(start_paused = true)]
async fn a_reading_peer_gets_a_store_bigger_than_the_queue_limit_over_inproc() {
    let server = small_queue_big_store("queued-inproc").await;
    server.bind("inproc://limits-roomy").await.unwrap();
    let roomy = node("roomy", Config::default());
    roomy.connect("inproc://limits-roomy").await.unwrap();
    wait_tuples(&roomy, 300).await;
    assert_eq!(
        roomy.tuples().await.unwrap(),
        server.tuples().await.unwrap()
    );
    assert_eq!(server.status().await.unwrap().stats.overflows, 0);
}

#[tokio::test(start_paused = true)]
async fn an_oversized_inproc_frame_is_refused_and_counted() {
    let server = node("frames", {
        let mut config = Config::default();
        config.max_message_bytes = 1024;
        config.max_value_bytes = 256;
        config
    });
    server.bind("inproc://limits-frames").await.unwrap();
    // The sender allows big values, so its frame exceeds the server's limit.
    let sender = node("big", Config::default());
    sender.connect("inproc://limits-frames").await.unwrap();
    sender.publish("big", &"x".repeat(2000)).await.unwrap();
    sender.publish("small", "v").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = server.status().await.unwrap();
    assert_eq!(
        status.stats.frames_too_large, 1,
        "dropped like a refused tuple, the session kept"
    );
    assert_eq!(server.get("big").await.unwrap(), None);
    assert_eq!(server.get("small").await.unwrap().as_deref(), Some("v"),);
    // The difference stays; digest resyncs retry it with a growing wait, not in a loop.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let resyncs = sender.status().await.unwrap().stats.digest_resyncs;
    assert!((1..=7).contains(&resyncs), "{resyncs} resyncs in a minute");
    assert_eq!(
        server.status().await.unwrap().stats.frames_too_large,
        1 + resyncs
    );
}
