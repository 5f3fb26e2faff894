//! Transport behaviour through the typed API: real tcp sockets on 127.0.0.1, ipc in temporary
//! directories, and inproc. Restarted servers and clients resync, bind and connect come in
//! either order, one node serves several transports at once, and errors name the endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use support::{WAIT, node, spawn, wait_holds, wait_tuples};
use zgossip::Config;
use zgossip::Error;

/// Regression: closing a DEALER after its monitor reader once blocked libzmq's I/O thread, and
/// every later connection in the process stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_come_and_go_over_tcp_without_stalling() {
    for round in 0..15 {
        let base = node("base");
        let endpoint = base.bind("tcp://127.0.0.1:*").await.unwrap();
        let alpha = node("alpha");
        alpha.connect(&endpoint).await.unwrap();
        alpha.publish("round", &round.to_string()).await.unwrap();
        wait_holds(&base, "round", &round.to_string()).await;
        // The server goes first, so the client sees a disconnect while it closes.
        base.shutdown().await.unwrap();
        alpha.shutdown().await.unwrap();
    }
}

async fn restarted_server_gets_the_state_back(endpoint: &str) {
    let base = node("base");
    let bound = base.bind(endpoint).await.unwrap();
    let alpha = node("alpha");
    alpha.connect(&bound).await.unwrap();
    alpha.publish("alpha", "service").await.unwrap();
    wait_holds(&base, "alpha", "service").await;

    base.shutdown().await.unwrap();
    // How soon is a virtual-time question (tests/lifecycle.rs); over real sockets, only that it
    // comes back by itself.
    let base = node("base-again");
    base.bind(&bound).await.unwrap();
    wait_holds(&base, "alpha", "service").await;

    // And the link works both ways again.
    base.publish("base", "service").await.unwrap();
    wait_holds(&alpha, "base", "service").await;
    base.shutdown().await.unwrap();
    alpha.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_tcp_server_gets_the_state_back() {
    // Bind a free port first, then restart on that exact port.
    let probe = node("probe");
    let bound = probe.bind("tcp://127.0.0.1:*").await.unwrap();
    probe.shutdown().await.unwrap();
    restarted_server_gets_the_state_back(&bound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_ipc_server_gets_the_state_back() {
    let dir = tempfile::tempdir().unwrap();
    restarted_server_gets_the_state_back(&format!("ipc://{}/base", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_inproc_server_gets_the_state_back() {
    restarted_server_gets_the_state_back("inproc://transport-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_client_gets_the_state_back() {
    let base = node("base");
    let endpoint = base.bind("tcp://127.0.0.1:*").await.unwrap();
    base.publish("base", "service").await.unwrap();
    let alpha = node("alpha");
    alpha.connect(&endpoint).await.unwrap();
    wait_holds(&alpha, "base", "service").await;
    alpha.shutdown().await.unwrap();

    let alpha = node("alpha-again");
    alpha.connect(&endpoint).await.unwrap();
    wait_holds(&alpha, "base", "service").await;
    base.shutdown().await.unwrap();
    alpha.shutdown().await.unwrap();
}

#[tokio::test]
async fn inproc_connect_may_come_before_bind() {
    let alpha = node("alpha");
    alpha.connect("inproc://transport-late-bind").await.unwrap();
    alpha.publish("early", "bird").await.unwrap();
    let base = node("base");
    base.bind("inproc://transport-late-bind").await.unwrap();
    wait_holds(&base, "early", "bird").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_serves_tcp_ipc_and_inproc_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let base = node("base");
    let tcp = base.bind("tcp://127.0.0.1:*").await.unwrap();
    let ipc = base
        .bind(&format!("ipc://{}/base", dir.path().display()))
        .await
        .unwrap();
    let inproc = base.bind("inproc://transport-mixed").await.unwrap();
    let mut clients = Vec::new();
    for (name, endpoint) in [("tcp", &tcp), ("ipc", &ipc), ("inproc", &inproc)] {
        let client = node(name);
        client.connect(endpoint).await.unwrap();
        client
            .publish(&format!("{name}://client"), name)
            .await
            .unwrap();
        clients.push(client);
    }
    for client in &clients {
        for name in ["tcp", "ipc", "inproc"] {
            wait_holds(client, &format!("{name}://client"), name).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_port_zero_and_star_bind_a_free_port_and_port_reports_it() {
    let base = node("base");
    for spelling in ["tcp://127.0.0.1:0", "tcp://127.0.0.1:*", "tcp://*:*"] {
        let bound = base.bind(spelling).await.unwrap();
        let port: i32 = bound.rsplit(':').next().unwrap().parse().unwrap();
        assert!(port > 0, "{spelling} bound {bound}");
        assert_eq!(base.port().await.unwrap(), port);
    }
    base.bind("inproc://transport-port").await.unwrap();
    assert_eq!(base.port().await.unwrap(), 0, "inproc has no port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_taken_address_says_which_and_why() {
    let base = node("base");
    let bound = base.bind("tcp://127.0.0.1:*").await.unwrap();
    let other = node("other");
    let error = other.bind(&bound).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&bound) && text.contains("address already in use"),
        "{text}"
    );
    assert_eq!(
        other.port().await.unwrap(),
        -1,
        "PORT says the last bind failed"
    );

    base.bind("inproc://transport-taken").await.unwrap();
    let error = other.bind("inproc://transport-taken").await.unwrap_err();
    assert!(
        error.to_string().contains("inproc://transport-taken"),
        "{error}"
    );

    let error = other.connect("udp://1.2.3.4:5").await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error}");
}

/// A server that takes our connection but never answers: after `server_timeout` of silence
/// the remote dials afresh (a new connection, so the server sees a new routing id) and says
/// HELLO again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_is_redialled_with_a_fresh_hello() {
    let context = zmq::Context::new();
    let router = context.socket(zmq::ROUTER).unwrap();
    router.set_linger(0).unwrap();
    router.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = router.get_last_endpoint().unwrap().unwrap();

    let alpha = spawn({
        let mut config = Config::named("alpha");
        config.server_timeout = Duration::from_millis(300);
        config
    });
    alpha.connect(&endpoint).await.unwrap();

    let hellos = tokio::task::spawn_blocking(move || {
        // HELLO's header; ours carries a hail after it.
        let hello = [0xaa, 0xa0, 0x01, 0x01];
        let deadline = std::time::Instant::now() + WAIT;
        let mut senders = Vec::new();
        while senders.len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "two HELLOs within {WAIT:?}"
            );
            let frames = router.recv_multipart(0).expect("traffic within the wait");
            if frames[1].starts_with(&hello) {
                senders.push(frames[0].clone());
            }
        }
        senders
    })
    .await
    .unwrap();
    assert_ne!(
        hellos[0], hellos[1],
        "the second HELLO comes on a new connection"
    );
    assert!(alpha.status().await.unwrap().stats.redials >= 1);
}

/// Our nodes send each other many tuples as BATCH frames (proto/zgp.md §7), over every
/// transport: `middle` dials `sink`, then `source`; `source`'s resync of 3,000 tuples reaches
/// `middle` (server to client), which forwards them to `sink` (client to server), each way in a
/// few dozen frames instead of one per tuple.
async fn large_stores_travel_in_batches(source_at: &str, sink_at: &str) {
    const TUPLES: usize = 3000;
    let source = node("source");
    let source_at = source.bind(source_at).await.unwrap();
    for n in 0..TUPLES {
        let key = format!("tcp://10.1.0.{}:{n}", n % 250);
        source.publish(&key, "svc").await.unwrap();
    }
    let sink = node("sink");
    let sink_at = sink.bind(sink_at).await.unwrap();
    let middle = node("middle");
    middle.connect(&sink_at).await.unwrap();
    // Synced: the sink has answered a PING, so it has hailed and reads BATCH.
    assert!(middle.wait_synced(WAIT).await.unwrap());
    middle.connect(&source_at).await.unwrap();
    for (who, node) in [("middle", &middle), ("sink", &sink)] {
        // Batches need not arrive in publishing order: wait for the count, not the last key.
        let status = wait_tuples(node, TUPLES).await;
        let batches = status.stats.batches_received;
        assert!(
            (1..=TUPLES as u64 / 20).contains(&batches),
            "{who} got {TUPLES} tuples in {batches} batches"
        );
    }
    for node in [middle, sink, source] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stores_travel_in_batches_over_tcp() {
    large_stores_travel_in_batches("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stores_travel_in_batches_over_inproc() {
    large_stores_travel_in_batches("inproc://batch-source", "inproc://batch-sink").await;
}
