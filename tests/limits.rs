//! Each limit, one by one, over the in-process transport: what is refused, what is counted in
//! `STATUS detail`, and that the node goes on serving. (Session, frame-size, handshake and tuple
//! rule limits over real sockets are in `tests/bad_input/`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use zgossip::{Config, Node};

fn node(name: &str, config: Config) -> Node {
    Node::spawn({
        let mut config = config;
        config.name = Some(name.into());
        config
    })
    .unwrap()
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

#[tokio::test(start_paused = true)]
async fn a_peer_that_lets_too_much_pile_up_is_dropped_and_counted() {
    // The server queues its whole resync at once; 300 tuples are far more than 4 KiB.
    let server = node("queued", {
        let mut config = Config::default();
        config.max_queued_bytes = 4096;
        config
    });
    server.bind("inproc://limits-queued").await.unwrap();
    for i in 0..300 {
        server
            .publish(&format!("tcp://10.0.0.1:{i}"), "svc")
            .await
            .unwrap();
    }
    let client = node("slow", Config::default());
    client.connect("inproc://limits-queued").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = server.status().await.unwrap().stats;
    assert!(stats.overflows >= 1, "{stats:?}");
    assert!(
        client.status().await.unwrap().tuples < 300,
        "the resync was cut short"
    );

    // The server is fine: a node with room to spare still gets everything.
    let roomy = node("roomy", Config::default());
    roomy.bind("inproc://limits-roomy").await.unwrap();
    roomy.connect("inproc://limits-queued").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.status().await.unwrap().tuples, 300);
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
