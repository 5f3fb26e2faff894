//! CURVE between our own nodes, through the typed API and the pipe, on 127.0.0.1 tcp and temp ipc
//! paths: CURVE links carry tuples both ways; a client with the wrong server key, a plain client
//! of a CURVE server and a CURVE client of a plain server exchange nothing; an allow list admits
//! the keys it names and refuses (and counts) the rest; keys apply to later binds only, as in
//! CZMQ; bad keys and CURVE on inproc get a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use support::{WAIT, expect_event, spawn, wait_holds, wait_until};
use zgossip::{Config, CurveKey, CurveKeys, Event, Events, Node, PeerState, Pipe, Status};

fn keys() -> CurveKeys {
    CurveKeys::generate().unwrap()
}

fn node(name: &str, keys: Option<CurveKeys>, allow: &[CurveKey]) -> Node {
    spawn({
        let mut config = Config::named(name);
        config.curve_public_key = keys.map(|k| k.public);
        config.curve_secret_key = keys.map(|k| k.secret);
        config.curve_allow = allow.to_vec();
        config
    })
}

/// A server listening on 127.0.0.1 tcp and a client dialling it (over CURVE when `server_key`
/// is given, else plain), with the client's events from before it dialled.
async fn server_and_client(
    server_keys: Option<CurveKeys>,
    allow: &[CurveKey],
    client_keys: Option<CurveKeys>,
    server_key: Option<CurveKey>,
) -> (Node, Node, Events) {
    let server = node("server", server_keys, allow);
    let endpoint = server.bind("tcp://127.0.0.1:*").await.unwrap();
    let client = node("client", client_keys, &[]);
    let events = client.events().await.unwrap();
    match server_key {
        Some(key) => client.connect_secure(&endpoint, &key).await.unwrap(),
        None => client.connect(&endpoint).await.unwrap(),
    }
    (server, client, events)
}

/// Each side publishes; each must get the other's tuple.
async fn assert_exchange(server: &Node, client: &Node, tag: &str) {
    let (from_server, from_client) = (format!("{tag}-server"), format!("{tag}-client"));
    server.publish(&from_server, "svc").await.unwrap();
    client.publish(&from_client, "svc").await.unwrap();
    wait_holds(client, &from_server, "svc").await;
    wait_holds(server, &from_client, "svc").await;
}

/// Waits until the client has been told its handshake failed and the listener has counted
/// one: the link was tried and refused before a single message, and every redial fails alike.
async fn handshake_failed_on_both_sides(server: &Node, client_events: &mut Events) -> Status {
    expect_event(client_events, WAIT, "PEER dead (handshake failed)", |e| {
        matches!(e, Event::Peer { state: PeerState::Dead, reason, .. } if reason.contains("handshake failed"))
    })
    .await;
    failed_handshake_counted(server).await
}

/// Waits until `server` has counted a failed handshake; returns its status then.
async fn failed_handshake_counted(server: &Node) -> Status {
    wait_until("a failed handshake counted", async || {
        let status = server.status().await.unwrap();
        if status.handshakes_failed >= 1 {
            Ok(status)
        } else {
            Err(status.detail())
        }
    })
    .await
}

/// Each side publishes, and once the handshake has failed on both sides neither has the
/// other's tuple, the client never connected and the server never saw a session.
async fn assert_no_exchange(server: &Node, client: &Node, mut client_events: Events) {
    server.publish("from-server", "svc").await.unwrap();
    client.publish("from-client", "svc").await.unwrap();
    handshake_failed_on_both_sides(server, &mut client_events).await;
    assert_eq!(client.get("from-server").await.unwrap(), None);
    assert_eq!(server.get("from-client").await.unwrap(), None);
    let (server, client) = (
        server.status().await.unwrap(),
        client.status().await.unwrap(),
    );
    assert_eq!(client.remotes_connected, 0, "{}", client.detail());
    assert_eq!(server.sessions, 0, "{}", server.detail());
    assert_eq!(server.stats.publish_received, 0, "{}", server.detail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curve_nodes_exchange_tuples_both_ways_over_tcp() {
    let (server_keys, client_keys) = (keys(), keys());
    let server = node("server", Some(server_keys), &[]);
    let endpoint = server.bind("tcp://127.0.0.1:*").await.unwrap();
    server.publish("before", "svc").await.unwrap();
    let client = node("client", Some(client_keys), &[]);
    client
        .connect_secure(&endpoint, &server_keys.public)
        .await
        .unwrap();
    wait_holds(&client, "before", "svc").await;
    assert_exchange(&server, &client, "live").await;
    assert_eq!(server.status().await.unwrap().sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_keys_uses_a_throwaway_pair_over_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/curve.ipc", dir.path().display());
    let server_keys = keys();
    let server = node("server", Some(server_keys), &[]);
    server.bind(&endpoint).await.unwrap();
    let client = node("client", None, &[]);
    client
        .connect_secure(&endpoint, &server_keys.public)
        .await
        .unwrap();
    assert_exchange(&server, &client, "ipc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_server_key_gets_nothing_and_gives_nothing() {
    let wrong = Some(keys().public);
    let (server, client, events) = server_and_client(Some(keys()), &[], Some(keys()), wrong).await;
    assert_no_exchange(&server, &client, events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_of_a_curve_server_gets_nothing_and_gives_nothing() {
    let (server, client, events) = server_and_client(Some(keys()), &[], None, None).await;
    assert_no_exchange(&server, &client, events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curve_client_of_a_plain_server_gets_nothing_and_gives_nothing() {
    let (server, client, events) =
        server_and_client(None, &[], Some(keys()), Some(keys().public)).await;
    assert_no_exchange(&server, &client, events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_admits_listed_keys_and_refuses_and_counts_the_rest() {
    let (server_keys, listed, unlisted) = (keys(), keys(), keys());
    let server = node("server", Some(server_keys), &[listed.public]);
    let endpoint = server.bind("tcp://127.0.0.1:*").await.unwrap();

    let admitted = node("listed", Some(listed), &[]);
    admitted
        .connect_secure(&endpoint, &server_keys.public)
        .await
        .unwrap();
    assert_exchange(&server, &admitted, "listed").await;
    assert_eq!(server.status().await.unwrap().curve_refused, 0);

    let refused = node("unlisted", Some(unlisted), &[]);
    let mut refused_events = refused.events().await.unwrap();
    refused
        .connect_secure(&endpoint, &server_keys.public)
        .await
        .unwrap();
    refused.publish("from-unlisted", "svc").await.unwrap();
    handshake_failed_on_both_sides(&server, &mut refused_events).await;
    let status = wait_until("the refusal counted", async || {
        let status = server.status().await.unwrap();
        if status.curve_refused >= 1 {
            Ok(status)
        } else {
            Err(status.detail())
        }
    })
    .await;
    assert_eq!(server.get("from-unlisted").await.unwrap(), None);
    assert_eq!(refused.get("listed-server").await.unwrap(), None);
    assert!(status.detail().contains(" curve_refused="));
    assert_eq!(
        status.sessions,
        1,
        "only the listed client: {}",
        status.detail()
    );
    assert_eq!(refused.status().await.unwrap().remotes_connected, 0);
}

/// The next pipe line, or a panic naming what was awaited.
async fn line(pipe: &mut Pipe, awaited: &str) -> String {
    tokio::time::timeout(WAIT, pipe.recv())
        .await
        .unwrap_or_else(|_| panic!("no line while waiting for {awaited}"))
        .expect("the node is running")
}

/// The first line from now that starts with `prefix`.
async fn expect(pipe: &mut Pipe, prefix: &str) -> String {
    loop {
        let got = line(pipe, prefix).await;
        if got.starts_with(prefix) {
            return got;
        }
    }
}

/// Sends `command` and returns the first line that starts with `reply`.
async fn ask(pipe: &mut Pipe, command: &str, reply: &str) -> String {
    pipe.send(command).await.unwrap();
    expect(pipe, reply).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipe_sets_keys_for_later_binds_and_dials_with_a_server_key() {
    let server_keys = keys();
    let server = node("server", None, &[]);
    let mut pipe = server.pipe().await.unwrap();
    // Bound before the keys: stays plain, as in CZMQ.
    let plain = server.bind("tcp://127.0.0.1:*").await.unwrap();
    pipe.send(&format!("SET PUBLICKEY {}", server_keys.public))
        .await
        .unwrap();
    pipe.send(&format!("SET SECRETKEY {}", server_keys.secret))
        .await
        .unwrap();
    pipe.send("ZAP DOMAIN global").await.unwrap();
    pipe.send("BIND tcp://127.0.0.1:*").await.unwrap();
    let port = ask(&mut pipe, "PORT", "PORT").await;
    let secure = format!("tcp://127.0.0.1:{}", port.trim_start_matches("PORT "));

    let plain_client = node("plain", None, &[]);
    plain_client.connect(&plain).await.unwrap();
    assert_exchange(&server, &plain_client, "plain").await;

    let curve_client = node("curve", None, &[]);
    let client_pipe = curve_client.pipe().await.unwrap();
    client_pipe
        .send(&format!("CONNECT {secure} {}", server_keys.public))
        .await
        .unwrap();
    client_pipe.send("PUBLISH via-pipe svc").await.unwrap();
    expect(&mut pipe, "DELIVER via-pipe svc").await;
    wait_holds(&curve_client, "plain-server", "svc").await;
    assert_eq!(ask(&mut pipe, "STATUS", "STATUS").await, "STATUS 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_curve_on_inproc_get_clear_errors() {
    let node = node("node", None, &[]);
    let mut pipe = node.pipe().await.unwrap();
    let key = keys().public;
    for (command, says) in [
        ("SET PUBLICKEY tooshort".to_owned(), "bad CURVE key"),
        (format!("SET SECRETKEY ~{}", &key.to_z85()[1..]), "not Z85"),
        (
            "CONNECT tcp://127.0.0.1:1 tooshort".to_owned(),
            "bad CURVE key",
        ),
        (
            format!("CONNECT inproc://base {key}"),
            "CURVE does not apply to inproc",
        ),
        ("ZAP DOMAIN".to_owned(), "usage: ZAP DOMAIN domain"),
    ] {
        let reply = ask(&mut pipe, &command, "ERROR").await;
        assert!(reply.contains(says), "{command}: {reply}");
    }
    let error = node
        .connect_secure("inproc://base", &key)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("inproc"), "{error}");
    // A refused CONNECT leaves no remote behind; a typed config with half a keypair is refused.
    assert_eq!(node.status().await.unwrap().remotes, 0);
    let half = Node::spawn({
        let mut config = Config::default();
        config.curve_public_key = Some(key);
        config
    });
    assert!(half.is_err());
    // Halves set one SET at a time: other SETs in between still work.
    let secret = keys().secret;
    for command in [
        format!("SET SECRETKEY {secret}"),
        "SET server/timeout 2s".to_owned(),
    ] {
        pipe.send(&command).await.unwrap();
    }
    let status = ask(&mut pipe, "STATUS", "").await;
    assert_eq!(status, "STATUS 0", "no ERROR before the STATUS reply");
}

/// Waits for a PEER event about `peer` going dead for a reason holding `why`; returns it.
async fn expect_dead(events: &mut Events, peer: &str, why: &str) -> String {
    let what = format!("PEER {peer} dead ({why})");
    let event = expect_event(events, WAIT, &what, |e| {
        matches!(e, Event::Peer { peer: p, state: PeerState::Dead, reason, .. }
            if p == peer && reason.contains(why))
    })
    .await;
    match event {
        Event::Peer { reason, .. } => reason.to_string(),
        _ => unreachable!("matched a PEER event"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handshake_is_told_on_both_sides_and_counted_on_the_listener() {
    let server = node("server", Some(keys()), &[]);
    let endpoint = server.bind("tcp://127.0.0.1:*").await.unwrap();
    let plain = node("plain", None, &[]);
    let mut events = plain.events().await.unwrap();
    plain.connect(&endpoint).await.unwrap();
    let reason = expect_dead(&mut events, &endpoint, "handshake failed").await;
    println!("client told: {reason}");
    let status = failed_handshake_counted(&server).await;
    assert!(status.detail().contains(" handshakes_failed="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_that_refuses_connections_is_a_dead_peer_with_the_reason() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let client = node("lonely", None, &[]);
    let mut events = client.events().await.unwrap();
    client.connect(&endpoint).await.unwrap();
    expect_dead(&mut events, &endpoint, "refused").await;
}

/// Members whose listeners require CURVE advertise their key (the tag `curve-key`), and the
/// views and probes dial them with it: three such nodes, the last two told only the first's
/// endpoint and key, stay one cluster when the first is killed, and no listener ever saw a
/// plain dial fail its handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_behind_curve_listeners_are_dialled_with_the_key_they_advertise() {
    let [a_keys, b_keys, c_keys] = [keys(), keys(), keys()];
    let a = node("a", Some(a_keys), &[]);
    let seed = a.bind("tcp://127.0.0.1:*").await.unwrap();
    let b = node("b", Some(b_keys), &[]);
    let c = node("c", Some(c_keys), &[]);
    for joiner in [&b, &c] {
        joiner.bind("tcp://127.0.0.1:*").await.unwrap();
        joiner.connect_secure(&seed, &a_keys.public).await.unwrap();
    }
    let b_tag = format!("curve-key={}", b_keys.public);
    wait_until("c knows b's key", async || {
        let members = c.members().await.unwrap();
        let b_record = members.iter().find(|m| m.name == "b");
        match b_record {
            Some(m) if m.tags.contains(&b_tag) => Ok(()),
            _ => Err(format!("{members:?}")),
        }
    })
    .await;
    // b and c reach each other only over links their views opened.
    a.kill().await.unwrap();
    b.publish("after-a", "svc").await.unwrap();
    wait_holds(&c, "after-a", "svc").await;
    for node in [&b, &c] {
        let status = node.status().await.unwrap();
        assert_eq!(status.handshakes_failed, 0, "{}", status.detail());
    }
}
