#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Bad input from peers, over real sockets: a node must never panic, abort or stall on anything
//! a peer sends, and a malformed message costs only the session that sent it.
//!
//! Every test starts a node in-process on `tcp://127.0.0.1:*` (some on a temporary `ipc://`
//! path too) holding two known tuples, greets a "veteran" client, attacks from another
//! connection, and then proves three things ([`Harness::assert_unharmed`]): the node holds
//! exactly the tuples it held before; a fresh client that says HELLO and PING gets them all and a
//! PONG; and the veteran still has its session (a tuple published afterwards reaches it). Where
//! the bad input reaches the engine, the tests also check that the counters in `STATUS` moved by
//! exactly what the attack should cost, so they show the input arrived and was judged.
//!
//! Attacks: ZGP frames that do not decode, messages out of turn, tuples that break this node's
//! rules, multipart messages, frames over `max_message_bytes`, ZMTP garbage on a raw socket,
//! connections that never handshake, and more new clients than `max_sessions`.
//!
//! Helpers: [`client`] (a DEALER that sends anything), [`zmtp`] (ZMTP 3.0 by hand over a raw
//! stream), [`harness`] (the node under attack and the verdict), and the root tests' `support`
//! (logging and waits). `ZGOSSIP_LOG=debug` puts the node's log in a failing test's output (every
//! test's with `--nocapture`).

mod client;
mod harness;
#[path = "../support/mod.rs"]
mod support;
mod zmtp;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use zgossip::wire::Message;

use crate::client::{Client, REPLY_TIMEOUT, SILENCE, blocking, frame, publish};
use crate::harness::{Harness, Transport, bad_vector, config};
use crate::zmtp::RawConn;

/// A tuple the attacks try to smuggle in; it must never be stored.
const GHOST: (&str, &str) = ("tcp://10.0.0.66:6666", "ghost");
/// A tuple a client publishes by the rules, which must be stored.
const GOOD: (&str, &str) = ("tcp://10.0.0.3:5555", "gamma");

/// The PUBLISH of [`GHOST`], cut to its first `len` bytes.
fn ghost_cut_to(len: usize) -> Vec<u8> {
    let mut frame = publish(GHOST.0, GHOST.1);
    frame.truncate(len);
    frame
}

/// Where the fields of the PUBLISH of [`GHOST`] start.
fn ghost_offsets() -> (usize, usize, usize) {
    let key = 4;
    let value = key + 1 + GHOST.0.len();
    let ttl = value + 4 + GHOST.1.len();
    (key, value, ttl)
}

/// For each attack (one message, of one frame or more): a greeted client sends it and gets
/// INVALID; `malformed` and `invalid_sent` go up by one; its session ends (the connected count
/// drops back to the veteran alone, and a PUBLISH it sends next does not fit the session). A
/// brand-new client sending it as its first message gets INVALID too. Then the verdict.
async fn malformed_costs_only_its_session(transport: Transport, attacks: Vec<Vec<Vec<u8>>>) {
    let h = Harness::start(transport).await;
    for attack in attacks {
        let attacker = h.greeted_client().await;
        assert_eq!(h.sessions().await, 2, "veteran and attacker");
        let before = h.stats().await;
        attacker.send_multipart(attack.clone()).await;
        attacker.expect(&Message::Invalid).await;
        assert_eq!(
            h.stats().await,
            {
                let mut stats = before.clone();
                stats.malformed = before.malformed + 1;
                stats.invalid_sent = before.invalid_sent + 1;
                stats
            },
            "after {attack:02x?}"
        );
        assert_eq!(h.sessions().await, 1, "only the attacker's session ended");
        attacker.send(publish(GHOST.0, GHOST.1)).await;
        attacker.expect(&Message::Invalid).await;

        let newcomer = Client::connect(&h.endpoint).await;
        let before = h.stats().await;
        newcomer.send_multipart(attack.clone()).await;
        newcomer.expect(&Message::Invalid).await;
        assert_eq!(
            h.stats().await,
            {
                let mut stats = before.clone();
                stats.malformed = before.malformed + 1;
                stats.invalid_sent = before.invalid_sent + 1;
                stats
            },
            "after {attack:02x?} as a first message"
        );
    }
    h.assert_unharmed().await;
}

/// [`malformed_costs_only_its_session`] over tcp for single frames.
async fn bad_frames_cost_only_their_session(frames: Vec<Vec<u8>>) {
    let attacks = frames.into_iter().map(|f| vec![f]).collect();
    malformed_costs_only_its_session(Transport::Tcp, attacks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_earns_invalid_and_costs_only_its_session() {
    let mut ping_signed_wrong = frame(&Message::Ping(None));
    ping_signed_wrong[0] = 0xAB;
    bad_frames_cost_only_their_session(vec![bad_vector("bad_signature.hex"), ping_signed_wrong])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_version_earns_invalid_and_costs_only_its_session() {
    let mut publish_v2 = publish(GHOST.0, GHOST.1);
    publish_v2[3] = 2;
    let mut ping_v0 = frame(&Message::Ping(None));
    ping_v0[3] = 0;
    bad_frames_cost_only_their_session(vec![bad_vector("bad_version.hex"), publish_v2, ping_v0])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_id_earns_invalid_and_costs_only_its_session() {
    let ids = [0u8, 6, 0x7F, 0xFF].map(|id| vec![0xAA, 0xA0, id, 1]);
    let mut frames = vec![bad_vector("unknown_id.hex")];
    frames.extend(ids);
    bad_frames_cost_only_their_session(frames).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_truncated_to_one_two_or_three_bytes_earns_invalid_and_costs_only_its_session() {
    bad_frames_cost_only_their_session(vec![
        vec![0xAA],
        vec![0xAA, 0xA0],
        bad_vector("truncated_header.hex"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_truncated_inside_the_key_earns_invalid_and_stores_nothing() {
    let (key, _, _) = ghost_offsets();
    // No key length at all; the length but no key; half the key.
    let cuts = [key, key + 1, key + 1 + GHOST.0.len() / 2];
    bad_frames_cost_only_their_session(cuts.map(ghost_cut_to).to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_truncated_inside_the_value_earns_invalid_and_stores_nothing() {
    let (_, value, _) = ghost_offsets();
    // No value length; half of it; the length but no value; half the value.
    let cuts = [value, value + 2, value + 4, value + 4 + GHOST.1.len() / 2];
    let mut frames = cuts.map(ghost_cut_to).to_vec();
    frames.push(bad_vector("truncated_value.hex"));
    bad_frames_cost_only_their_session(frames).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_truncated_inside_the_ttl_earns_invalid_and_stores_nothing() {
    let (_, _, ttl) = ghost_offsets();
    // Key and value complete, so a lax decoder would store the ghost.
    let cuts = [ttl, ttl + 1, ttl + 3];
    bad_frames_cost_only_their_session(cuts.map(ghost_cut_to).to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_value_length_0xffffffff_earns_invalid_and_stores_nothing() {
    let (_, value, _) = ghost_offsets();
    let mut ghost = publish(GHOST.0, GHOST.1);
    ghost[value..value + 4].copy_from_slice(&[0xFF; 4]);
    bad_frames_cost_only_their_session(vec![bad_vector("huge_value_length.hex"), ghost]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_non_utf8_key_earns_invalid_and_stores_nothing() {
    // A lone continuation byte, an overlong encoding, a UTF-16 surrogate, and 0xFF.
    let keys: [&[u8]; 4] = [b"tcp\x80", b"\xC0\xAF", b"\xED\xA0\x80", b"k\xFF"];
    let mut frames = vec![bad_vector("not_utf8_key.hex")];
    for key in keys {
        let mut f = vec![0xAA, 0xA0, 2, 1, u8::try_from(key.len()).unwrap()];
        f.extend_from_slice(key);
        f.extend_from_slice(&[0, 0, 0, 1, b'v', 0, 0, 0, 0]);
        frames.push(f);
    }
    bad_frames_cost_only_their_session(frames).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_with_trailing_bytes_earns_invalid_and_costs_only_its_session() {
    let mut hello_with_a_publish = frame(&Message::Hello(None));
    hello_with_a_publish.extend_from_slice(&publish(GHOST.0, GHOST.1));
    bad_frames_cost_only_their_session(vec![
        bad_vector("hello_trailing.hex"),
        hello_with_a_publish,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_frame_earns_invalid_and_costs_only_its_session() {
    let empty = bad_vector("empty.hex");
    assert!(empty.is_empty());
    bad_frames_cost_only_their_session(vec![empty]).await;
}

// --- Messages out of turn ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_before_hello_earns_invalid_and_stores_nothing() {
    let h = Harness::start(Transport::Tcp).await;
    let newcomer = Client::connect(&h.endpoint).await;
    let before = h.stats().await;
    newcomer.send(publish(GHOST.0, GHOST.1)).await;
    newcomer.expect(&Message::Invalid).await;
    assert_eq!(h.stats().await, {
        let mut stats = before.clone();
        stats.invalid_sent = before.invalid_sent + 1;
        stats
    });
    assert_eq!(h.node.get(GHOST.0).await.unwrap(), None);
    // Refused, not banned: it may start over properly.
    assert_eq!(newcomer.hello().await, harness::as_map(&h.tuples));
    h.assert_unharmed().await;
}

/// A greeted client sends `message`, which does not fit a connected session: INVALID, counted,
/// and its session (only its) ends.
async fn out_of_turn_message_ends_the_session(message: Message) {
    let h = Harness::start(Transport::Tcp).await;
    let attacker = h.greeted_client().await;
    assert_eq!(h.sessions().await, 2, "veteran and attacker");
    let before = h.stats().await;
    attacker.send_message(&message).await;
    attacker.expect(&Message::Invalid).await;
    assert_eq!(
        h.stats().await,
        {
            let mut stats = before.clone();
            stats.invalid_sent = before.invalid_sent + 1;
            stats
        },
        "after {message:?}"
    );
    assert_eq!(h.sessions().await, 1, "only the attacker's session ended");
    h.assert_unharmed().await;
}

/// A second HELLO on a connected session is how our clients ask for a resync when stores
/// differ (proto/zgp.md §5, §7), which they do at most once a server timeout: one sooner costs
/// a whole store, so it starts no resync; it is counted, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_hello_within_a_server_timeout_starts_no_resync_and_keeps_the_session() {
    let h = Harness::start(Transport::Tcp).await;
    let client = h.greeted_client().await;
    let before = h.stats().await;
    for _ in 0..20 {
        assert_eq!(client.hello().await, BTreeMap::new());
    }
    let after = h.stats().await;
    assert_eq!(after, {
        let mut stats = before.clone();
        stats.hellos_limited = before.hellos_limited + 20;
        stats
    });
    assert_eq!(h.sessions().await, 2, "veteran and client");
    h.assert_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pong_from_a_client_earns_invalid_and_ends_the_session() {
    out_of_turn_message_ends_the_session(Message::Pong(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_from_a_client_earns_invalid_and_ends_the_session() {
    out_of_turn_message_ends_the_session(Message::Invalid).await;
}

// --- Tuples that break the rules --------------------------------------------------------------

/// A greeted client publishes a tuple that breaks this node's rules, then a good one: the bad
/// one is counted in `tuples_refused`, neither stored nor forwarded; the session carries on, so
/// the good one is stored and forwarded to the veteran.
async fn bad_tuple_is_refused_and_the_session_survives(key: &str, value: &str) {
    let mut h = Harness::start(Transport::Tcp).await;
    let publisher = h.greeted_client().await;
    let before = h.stats().await;
    publisher.send(publish(key, value)).await;
    publisher.send(publish(GOOD.0, GOOD.1)).await;
    let forwarded_first = h.veteran.expect_publish(GOOD.0, GOOD.1).await;
    assert!(
        forwarded_first.is_empty(),
        "forwarded before the good tuple: {forwarded_first:?}"
    );
    assert_eq!(h.stats().await, {
        let mut stats = before.clone();
        stats.tuples_refused = before.tuples_refused + 1;
        stats
    });
    assert_eq!(h.node.get(GOOD.0).await.unwrap().as_deref(), Some(GOOD.1));
    assert_eq!(h.sessions().await, 2, "the publisher keeps its session");
    publisher.ping().await;
    h.tuples.push((GOOD.0.to_owned(), GOOD.1.to_owned()));
    h.tuples.sort();
    h.assert_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuple_whose_key_has_a_space_is_refused_and_the_session_survives() {
    bad_tuple_is_refused_and_the_session_survives("tcp://10.0.0.66 6666", "ghost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuple_whose_key_has_a_newline_is_refused_and_the_session_survives() {
    bad_tuple_is_refused_and_the_session_survives("tcp://10.0.0.66:6666\nDELIVER x", "ghost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuple_with_an_empty_key_is_refused_and_the_session_survives() {
    bad_tuple_is_refused_and_the_session_survives("", "ghost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuple_whose_value_has_a_control_character_is_refused_and_the_session_survives() {
    bad_tuple_is_refused_and_the_session_survives(GHOST.0, "gho\x07st").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuple_whose_value_exceeds_max_value_bytes_is_refused_and_the_session_survives() {
    let value = "v".repeat(config().max_value_bytes + 1);
    assert!(publish(GHOST.0, &value).len() < config().max_message_bytes);
    bad_tuple_is_refused_and_the_session_survives(GHOST.0, &value).await;
}

// --- Multipart messages -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_of_two_frames_is_malformed_and_costs_only_its_session() {
    let attack = vec![frame(&Message::Ping(None)), frame(&Message::Ping(None))];
    malformed_costs_only_its_session(Transport::Tcp, vec![attack]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_of_three_frames_is_malformed_and_stores_nothing() {
    let ghost = publish(GHOST.0, GHOST.1);
    let attack = vec![ghost.clone(), ghost.clone(), ghost];
    malformed_costs_only_its_session(Transport::Tcp, vec![attack]).await;
}

// --- Frames over max_message_bytes ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_max_message_bytes_drops_only_that_connection() {
    let h = Harness::start(Transport::Tcp).await;
    let (attacker, monitor) = Client::connect_monitored(&h.endpoint).await;
    attacker.hello().await;
    let monitor = monitor.expect(zmq::SocketEvent::HANDSHAKE_SUCCEEDED).await;
    let before = h.stats().await;
    // A well-formed PUBLISH of 1 MiB: only the frame limit keeps it out.
    let huge = publish(GHOST.0, &"x".repeat(1 << 20));
    assert!(huge.len() > config().max_message_bytes);
    attacker.send(huge).await;
    monitor.expect(zmq::SocketEvent::DISCONNECTED).await;
    assert_eq!(
        h.stats().await,
        before,
        "libzmq dropped it before the engine saw it"
    );
    h.assert_unharmed().await;
}

// --- ZMTP garbage on a raw socket -------------------------------------------------------------

/// A node whose handshake timeout is far longer than any test waits, so a connection that
/// closes was closed for what was sent on it.
async fn patient_harness(transport: Transport) -> Harness {
    let config = {
        let mut config = config();
        config.handshake_timeout = Duration::from_secs(60);
        config
    };
    Harness::start_with(transport, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_instead_of_zmtp_are_dropped_by_libzmq() {
    let h = patient_harness(Transport::Tcp).await;
    for seed in [1, 2, 3] {
        let endpoint = h.endpoint.clone();
        let closed = blocking(move || {
            let conn = RawConn::open(&endpoint);
            zmtp::spray_until_closed(conn, zmtp::random_bytes(seed).take(4 << 20), REPLY_TIMEOUT)
        })
        .await;
        assert!(closed, "seed {seed}: the node kept reading garbage");
    }
    h.assert_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_a_valid_zmtp_greeting_is_dropped_by_libzmq() {
    let h = patient_harness(Transport::Tcp).await;
    let before_ready: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            zmtp::random_bytes(42).take(64 * 1024).collect(),
        ),
        (
            "a ZGP PING before READY",
            zmtp::short_frame(0, &frame(&Message::Ping(None))),
        ),
        (
            "an unknown command",
            zmtp::short_frame(zmtp::COMMAND, b"\x05HELLO"),
        ),
        (
            "READY with a property running past its end",
            zmtp::short_frame(
                zmtp::COMMAND,
                b"\x05READY\x0bSocket-Type\x00\x00\xff\xffDEALER",
            ),
        ),
    ];
    for (what, garbage) in before_ready {
        let endpoint = h.endpoint.clone();
        let closed = blocking(move || {
            let mut conn = RawConn::open(&endpoint);
            zmtp::exchange_greetings(&mut conn);
            zmtp::spray_until_closed(conn, garbage.into_iter(), REPLY_TIMEOUT)
        })
        .await;
        assert!(
            closed,
            "{what} after the greeting: the connection stayed open"
        );
    }
    h.assert_unharmed().await;
}

/// On connections that finished the handshake (shown by a PING answered PONG), frame headers
/// announcing terabytes; and a READY announcing one. libzmq must close each connection (the
/// pure-Rust `zeromq` crate aborts the process here), and nothing may reach the engine.
async fn terabyte_frame_headers_are_dropped(transport: Transport) {
    let h = patient_harness(transport).await;
    let before = h.stats().await;
    let headers = [
        ("a 2^40-byte message", zmtp::long_header(0, 1 << 40), true),
        ("a 2^62-byte message", zmtp::long_header(0, 1 << 62), true),
        (
            "a 2^64-1-byte message",
            zmtp::long_header(0, u64::MAX),
            true,
        ),
        (
            "a 2^40-byte READY",
            zmtp::long_header(zmtp::COMMAND, 1 << 40),
            false,
        ),
    ];
    for (what, header, after_handshake) in headers {
        let endpoint = h.endpoint.clone();
        let closed = blocking(move || {
            let mut conn = RawConn::open(&endpoint);
            if after_handshake {
                zmtp::handshake(&mut conn);
                std::io::Write::write_all(
                    &mut conn,
                    &zmtp::short_frame(0, &frame(&Message::Ping(None))),
                )
                .unwrap();
                let (flags, body) = zmtp::read_frame(&mut conn).unwrap();
                assert_eq!(
                    (flags, body),
                    (0, frame(&Message::Pong(None))),
                    "PONG over raw ZMTP"
                );
            } else {
                zmtp::exchange_greetings(&mut conn);
            }
            std::io::Write::write_all(&mut conn, &header).unwrap();
            zmtp::closed_within(&mut conn, Instant::now(), REPLY_TIMEOUT)
        })
        .await;
        assert!(closed.is_some(), "{what}: the connection stayed open");
    }
    assert_eq!(h.stats().await, before, "nothing reached the engine");
    h.assert_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_header_announcing_2_pow_40_bytes_is_dropped_without_abort() {
    terabyte_frame_headers_are_dropped(Transport::Tcp).await;
}

// --- Connections that never handshake ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    const CONNECTIONS: usize = 50;
    let handshake_timeout = Duration::from_millis(300);
    let config = {
        let mut config = config();
        config.handshake_timeout = handshake_timeout;
        config
    };
    let h = Harness::start_with(Transport::Tcp, config).await;
    let endpoint = h.endpoint.clone();
    let lifetimes = blocking(move || {
        let conns: Vec<(Instant, RawConn)> = (0..CONNECTIONS)
            .map(|_| (Instant::now(), RawConn::open(&endpoint)))
            .collect();
        conns
            .into_iter()
            .map(|(opened, mut conn)| {
                // libzmq accepted it: it sends its signature and waits for ours.
                zmtp::read_signature(&mut conn, REPLY_TIMEOUT);
                zmtp::closed_within(&mut conn, opened, REPLY_TIMEOUT)
            })
            .collect::<Vec<_>>()
    })
    .await;
    for (n, lifetime) in lifetimes.iter().enumerate() {
        let lifetime =
            lifetime.unwrap_or_else(|| panic!("connection {n} still open after {REPLY_TIMEOUT:?}"));
        assert!(
            lifetime >= handshake_timeout - Duration::from_millis(50),
            "connection {n} closed after {lifetime:?}, before the handshake timeout"
        );
    }
    h.assert_unharmed().await;
}

// --- More clients than max_sessions -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_max_sessions_are_refused_while_admitted_ones_keep_working() {
    let config = {
        let mut config = config();
        config.max_sessions = 5;
        config
    };
    let mut h = Harness::start_with(Transport::Tcp, config).await;
    let mut admitted = Vec::new();
    for _ in 0..4 {
        admitted.push(h.greeted_client().await);
    }
    assert_eq!(
        h.sessions().await,
        5,
        "the veteran and four more fill the node"
    );

    let before = h.stats().await;
    let mut refused = Vec::new();
    for _ in 0..5 {
        let client = Client::connect(&h.endpoint).await;
        client.send_message(&Message::Hello(None)).await;
        client.send_message(&Message::Ping(None)).await;
        refused.push(client);
    }
    let after = h
        .wait_for_stats(
            |s| s.sessions_refused >= before.sessions_refused + 10,
            "five clients' HELLO and PING refused",
        )
        .await;
    assert_eq!(after, {
        let mut stats = before.clone();
        stats.sessions_refused = before.sessions_refused + 10;
        stats
    });
    assert_eq!(h.sessions().await, 5);

    // Those inside carry on: a new tuple reaches each of them, and they are answered.
    h.node.publish(GOOD.0, GOOD.1).await.unwrap();
    for client in std::iter::once(&h.veteran).chain(&admitted) {
        client.expect_publish(GOOD.0, GOOD.1).await;
        client.ping().await;
    }
    h.tuples.push((GOOD.0.to_owned(), GOOD.1.to_owned()));
    h.tuples.sort();
    // Those outside got neither a PONG nor the tuple.
    refused[0].assert_silent(SILENCE).await;
    for client in &refused[1..] {
        client.assert_silent(Duration::from_millis(10)).await;
    }

    // A session that ends makes room for a fresh client (the verdict's).
    admitted[0].send_message(&Message::Pong(None)).await;
    admitted[0].expect(&Message::Invalid).await;
    assert_eq!(h.sessions().await, 4);
    h.assert_unharmed().await;
}

// --- ipc --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zgp_garbage_over_ipc_earns_invalid_and_costs_only_its_session() {
    let frames = [
        "bad_signature.hex",
        "bad_version.hex",
        "unknown_id.hex",
        "truncated_header.hex",
        "truncated_value.hex",
        "huge_value_length.hex",
        "not_utf8_key.hex",
        "hello_trailing.hex",
        "empty.hex",
    ];
    let attacks = frames.map(|name| vec![bad_vector(name)]).to_vec();
    malformed_costs_only_its_session(Transport::Ipc, attacks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_over_ipc_is_malformed_and_costs_only_its_session() {
    let ghost = publish(GHOST.0, GHOST.1);
    let attacks = vec![
        vec![frame(&Message::Ping(None)), frame(&Message::Ping(None))],
        vec![ghost.clone(), ghost.clone(), ghost],
    ];
    malformed_costs_only_its_session(Transport::Ipc, attacks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_header_announcing_2_pow_40_bytes_over_ipc_is_dropped_without_abort() {
    terabyte_frame_headers_are_dropped(Transport::Ipc).await;
}
