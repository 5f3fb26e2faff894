//! Engine tests with explicit time: every input carries `now`, so these are exact.

use super::*;
use crate::wire::DecodeError;
use bytes::Bytes;

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn client(n: u8) -> ClientId {
    ClientId(u64::from(n))
}

fn engine(node_id: u64, timeout_ms: u64) -> Engine {
    Engine::new(EngineConfig {
        node_id,
        server_timeout: ms(timeout_ms),
        ..EngineConfig::default()
    })
}

fn engine_with_timeout(timeout_ms: u64) -> Engine {
    engine(1, timeout_ms)
}

/// Connects remote `r` to a server of ours: it answers the PING after our HELLO with a hailed
/// PONG, which starts our resync to it (stamped, since it hailed).
fn connect_ours(e: &mut Engine, now: Instant, r: RemoteId) {
    e.handle_remote_connected(now, r);
    e.handle_remote_message(now, r, Message::Pong(hail_of(2)));
}

/// Everything the engine asked for, resyncs sent whole (as the actor does for inproc peers).
fn drain(engine: &mut Engine) -> Vec<Output> {
    engine.finish_resyncs();
    std::iter::from_fn(|| engine.poll_output()).collect()
}

/// A message as a short string: `PUBLISH k=v`, `PUBLISH k=v ttl=100`, `PUBLISH k withdrawn`,
/// `HELLO`, `PING bye`...
fn summary(message: &Message) -> String {
    let control = |name: &str, hail: &Option<Hail>| match hail {
        Some(Hail { goodbye: true, .. }) => format!("{name} bye"),
        _ => name.to_owned(),
    };
    match message {
        Message::Hello(hail) => control("HELLO", hail),
        Message::Ping(hail) => control("PING", hail),
        Message::Pong(hail) => control("PONG", hail),
        Message::Invalid => "INVALID".into(),
        Message::Batch(entries) => format!("BATCH of {}", entries.len()),
        Message::Publish(p) => {
            let stamp = p.stamp().unwrap().unwrap_or_default();
            let mut text = if stamp.withdrawn {
                format!("PUBLISH {} withdrawn", p.key)
            } else {
                format!("PUBLISH {}={}", p.key, p.value)
            };
            if p.ttl_ms > 0 && !stamp.withdrawn {
                text.push_str(&format!(" ttl={}", p.ttl_ms));
            }
            text
        }
    }
}

fn to_client(outputs: &[Output], who: &ClientId) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToClient(c, m) if c == who => Some(summary(m)),
            _ => None,
        })
        .collect()
}

fn to_remote(outputs: &[Output], who: RemoteId) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToRemote(r, m) if *r == who => Some(summary(m)),
            _ => None,
        })
        .collect()
}

/// The application events, as pipe-like lines (peer events left out).
fn told(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Deliver { key, value }) => Some(format!("DELIVER {key} {value}")),
            Output::Event(Event::Change { key, value }) => Some(format!("CHANGE {key} {value}")),
            Output::Event(Event::Remove { key }) => Some(format!("REMOVE {key}")),
            Output::Event(Event::Expire { key }) => Some(format!("EXPIRE {key}")),
            _ => None,
        })
        .collect()
}

fn peer_events(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Peer { peer, state, .. }) => Some(format!("{peer} {state}")),
            _ => None,
        })
        .collect()
}

fn plain(key: &str, value: &str) -> Message {
    Message::Publish(Publish::new(key, value))
}

fn stamped(
    key: &str,
    value: &str,
    ttl_ms: u32,
    version: u64,
    origin: u64,
    lease_seq: u32,
) -> Message {
    let stamp = Stamp {
        version,
        origin,
        lease_seq,
        withdrawn: false,
    };
    Message::Publish(Publish::stamped(key, value, ttl_ms, &stamp))
}

fn hello() -> Message {
    Message::Hello(None)
}

// ---- ZGP v1 sessions, as CZMQ does them ----

#[test]
fn hello_gets_every_tuple_held() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "a", "1", None).unwrap();
    e.publish(now, "b", "2", None).unwrap();
    drain(&mut e);
    e.handle_client_message(now, client(1), hello());
    assert_eq!(
        to_client(&drain(&mut e), &client(1)),
        ["PUBLISH a=1", "PUBLISH b=2"]
    );
}

#[test]
fn a_drained_engine_does_not_keep_room_for_its_largest_resync() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    for n in 0..2000 {
        e.publish(now, &format!("k{n}"), "svc", None).unwrap();
    }
    drain(&mut e);
    e.handle_client_message(now, client(1), hello());
    e.finish_resyncs();
    assert!(e.outputs.len() >= 2000, "the resync is queued whole");
    assert!(drain(&mut e).len() >= 2000);
    assert!(e.outputs.capacity() <= 64, "{}", e.outputs.capacity());
}

#[test]
fn ping_gets_pong_before_and_after_hello() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), Message::Ping(None));
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["PONG"]);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), Message::Ping(None));
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["PONG"]);
}

#[test]
fn a_hailing_client_gets_a_hailing_pong_and_a_plain_one_a_plain_pong() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    let hail = Some(Hail {
        node: 77,
        goodbye: false,
        digest: None,
    });
    e.handle_client_message(now, client(1), Message::Ping(hail));
    e.handle_client_message(now, client(2), Message::Ping(None));
    let out = drain(&mut e);
    assert!(matches!(
        &out[..],
        [
            Output::ToClient(_, Message::Pong(Some(Hail { node: 1, .. }))),
            Output::ToClient(_, Message::Pong(None))
        ]
    ));
}

#[test]
fn publish_before_hello_is_invalid_and_stores_nothing() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), plain("k", "v"));
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["INVALID"]);
    assert_eq!(e.store().len(), 0);
}

#[test]
fn a_second_hello_on_a_connected_session_resyncs_it_quietly() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "a", "1", None).unwrap();
    e.handle_client_message(now, client(1), Message::Hello(hail_of(9)));
    drain(&mut e);
    let later = now + ms(1000);
    e.handle_client_message(later, client(1), Message::Hello(hail_of(9)));
    let out = drain(&mut e);
    assert_eq!(to_client(&out, &client(1)), ["PUBLISH a=1"]);
    assert!(peer_events(&out).is_empty(), "no new peer: {out:?}");
    assert_eq!(e.connected_sessions(), 1);
}

#[test]
fn hellos_faster_than_one_a_timeout_start_no_resync_and_are_counted() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    for n in 0..100 {
        e.publish(now, &format!("k{n:03}"), "svc", None).unwrap();
    }
    e.handle_client_message(now, client(1), Message::Hello(hail_of(9)));
    // Half the resync is out when the client says HELLO again and PINGs: the resync goes on
    // where it was, not from the start, and the PONG waits for its end.
    e.resync_step(now, &Peer::Client(client(1)), 50 * 56);
    let first = to_client(&drain_outputs(&mut e), &client(1));
    assert!((40..100).contains(&first.len()), "{}", first.len());
    e.handle_client_message(now, client(1), Message::Hello(hail_of(9)));
    e.handle_client_message(now, client(1), Message::Ping(hail_of(9)));
    let rest = to_client(&drain(&mut e), &client(1));
    assert_eq!(first.len() + rest.len(), 101, "{rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("PONG"));
    // Twenty HELLOs a second, for a second: none of them costs a resync.
    for n in 1..20 {
        e.handle_client_message(now + ms(50) * n, client(1), Message::Hello(hail_of(9)));
    }
    assert!(to_client(&drain(&mut e), &client(1)).is_empty());
    assert_eq!(e.stats().hellos_limited, 20);
    // A timeout later, a HELLO is honoured again.
    e.handle_client_message(now + ms(1000), client(1), Message::Hello(hail_of(9)));
    assert_eq!(to_client(&drain(&mut e), &client(1)).len(), 100);
}

/// What the engine queued, without finishing resyncs.
fn drain_outputs(engine: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| engine.poll_output()).collect()
}

fn hail_of(node: u64) -> Option<Hail> {
    Some(Hail {
        node,
        ..Hail::default()
    })
}

/// How many HELLOs went to remote `r`.
fn hellos(outputs: &[Output], r: RemoteId) -> usize {
    to_remote(outputs, r)
        .iter()
        .filter(|m| *m == "HELLO")
        .count()
}

fn pong_with_digest(digest: u64) -> Message {
    Message::Pong(Some(Hail {
        digest: Some(digest),
        ..hail_of(2).unwrap()
    }))
}

#[test]
fn a_server_pongs_its_store_digest_to_a_client_that_hails() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "a", "1", None).unwrap();
    e.handle_client_message(now, client(1), Message::Ping(hail_of(9)));
    let digest = e.store().digest();
    assert_ne!(digest, 0);
    let out = drain(&mut e);
    assert!(
        matches!(&out[..], [.., Output::ToClient(_, Message::Pong(Some(Hail { digest: Some(d), .. })))] if *d == digest),
        "{out:?}"
    );
}

#[test]
fn stores_that_stay_different_resync_after_three_pongs_and_back_off() {
    let now = t0();
    let mut e = engine(5, 1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    e.publish(now, "mine", "v", None).unwrap();
    drain(&mut e);
    let ours = e.store().digest();
    // Equal digests: nothing to do.
    for i in 0..5 {
        e.handle_remote_message(now + ms(i), r, pong_with_digest(ours));
    }
    assert!(to_remote(&drain(&mut e), r).is_empty());
    // A difference that keeps changing is gossip in flight: nothing yet.
    for i in 0..5 {
        e.handle_remote_message(now + ms(10 + i), r, pong_with_digest(100 + i));
    }
    assert!(to_remote(&drain(&mut e), r).is_empty());
    // The same difference three PONGs in a row: HELLO and PING, and our store after the
    // server's answer.
    for i in 0..3 {
        e.handle_remote_message(now + ms(20 + i), r, pong_with_digest(7));
    }
    assert_eq!(to_remote(&drain(&mut e), r), ["HELLO", "PING"]);
    e.handle_remote_message(now + ms(23), r, pong_with_digest(7));
    assert_eq!(to_remote(&drain(&mut e), r), ["PUBLISH mine=v"]);
    assert_eq!(e.stats().digest_resyncs, 1);
    // Still different: not again within the server timeout...
    for i in 0..6 {
        e.handle_remote_message(now + ms(30 + i), r, pong_with_digest(7));
    }
    assert!(to_remote(&drain(&mut e), r).is_empty());
    // ...but after it; then the wait doubles.
    for i in 0..3 {
        e.handle_remote_message(now + ms(1030 + i), r, pong_with_digest(7));
    }
    assert_eq!(hellos(&drain(&mut e), r), 1);
    for i in 0..3 {
        e.handle_remote_message(now + ms(2100 + i), r, pong_with_digest(7));
    }
    let out = drain(&mut e);
    assert_eq!(hellos(&out, r), 0, "2 s wait now: {:?}", to_remote(&out, r));
    for i in 0..3 {
        e.handle_remote_message(now + ms(3100 + i), r, pong_with_digest(7));
    }
    assert_eq!(hellos(&drain(&mut e), r), 1);
    assert_eq!(e.stats().digest_resyncs, 3);
}

#[test]
fn new_tuple_is_delivered_and_forwarded_to_everyone_but_its_sender() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(2), hello());
    drain(&mut e);

    e.handle_client_message(now, client(1), plain("k", "v"));
    let out = drain(&mut e);
    assert_eq!(told(&out), ["DELIVER k v"]);
    assert_eq!(to_remote(&out, r), ["PUBLISH k=v"]);
    assert_eq!(to_client(&out, &client(2)), ["PUBLISH k=v"]);
    assert!(to_client(&out, &client(1)).is_empty());
}

#[test]
fn duplicate_tuple_is_neither_delivered_nor_forwarded() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(2), hello());
    e.handle_client_message(now, client(1), stamped("k", "v", 0, 1, 9, 0));
    drain(&mut e);
    e.handle_client_message(now, client(1), stamped("k", "v", 0, 1, 9, 0));
    assert!(drain(&mut e).is_empty());
    e.handle_client_message(now, client(1), stamped("k", "w", 0, 2, 9, 0));
    assert_eq!(told(&drain(&mut e)), ["CHANGE k w"]);
}

#[test]
fn silent_client_session_expires_after_timeout() {
    let now = t0();
    let mut e = engine_with_timeout(100);
    e.handle_client_message(now, client(1), hello());
    e.handle_timeout(now + ms(99));
    assert_eq!(e.connected_sessions(), 1);
    e.handle_timeout(now + ms(100));
    assert_eq!(e.connected_sessions(), 0);
    assert_eq!(e.stats().sessions_expired, 1);

    // No longer forwarded to.
    e.publish(now, "k", "v", None).unwrap();
    assert!(to_client(&drain(&mut e), &client(1)).is_empty());
}

#[test]
fn pinging_client_session_never_expires() {
    let now = t0();
    let mut e = engine_with_timeout(100);
    e.handle_client_message(now, client(1), hello());
    for step in 1..=50 {
        let at = now + ms(30 * step);
        e.handle_timeout(at);
        e.handle_client_message(at, client(1), Message::Ping(None));
    }
    assert_eq!(e.connected_sessions(), 1);
}

#[test]
fn expired_client_that_pings_is_told_invalid_and_resyncs_with_hello() {
    let now = t0();
    let mut e = engine_with_timeout(100);
    e.handle_client_message(now, client(1), hello());
    e.handle_timeout(now + ms(150));
    e.publish(now + ms(150), "missed", "v", None).unwrap();
    drain(&mut e);

    e.handle_client_message(now + ms(160), client(1), Message::Ping(None));
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["INVALID"]);
    e.handle_client_message(now + ms(170), client(1), hello());
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["PUBLISH missed=v"]);
}

#[test]
fn publish_from_an_expired_session_is_kept_and_the_client_told_to_resync() {
    let now = t0();
    let mut e = engine_with_timeout(100);
    e.handle_client_message(now, client(1), hello());
    e.handle_timeout(now + ms(150));
    drain(&mut e);
    e.handle_client_message(now + ms(200), client(1), plain("late", "v"));
    let out = drain(&mut e);
    assert_eq!(told(&out), ["DELIVER late v"]);
    assert_eq!(to_client(&out, &client(1)), ["INVALID"]);
}

#[test]
fn malformed_message_ends_only_its_own_session() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(2), hello());
    drain(&mut e);
    e.handle_client_malformed(t0(), client(1), &DecodeError::TooShort { len: 1 });
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["INVALID"]);
    assert_eq!(e.connected_sessions(), 1);
    e.handle_client_message(now, client(2), plain("k", "v"));
    assert_eq!(e.store().len(), 1);
}

#[test]
fn refused_tuple_from_a_peer_changes_nothing_and_keeps_the_session() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), hello());
    drain(&mut e);
    e.handle_client_message(now, client(1), plain("two words", "v"));
    e.handle_client_message(now, client(1), plain("k", "line\nbreak"));
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.store().len(), 0);
    assert_eq!(e.stats().tuples_refused, 2);
    assert_eq!(e.connected_sessions(), 1);
}

#[test]
fn a_bad_stamp_costs_the_session() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), hello());
    drain(&mut e);
    let mut publish = Publish::new("k", "v");
    publish.extension = Bytes::from_static(&[1, 0, 0]);
    e.handle_client_message(now, client(1), Message::Publish(publish));
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["INVALID"]);
    assert_eq!(e.store().len(), 0);
    assert_eq!(e.stats().malformed, 1);
}

// ---- BATCH (§7) ----

fn batch(entries: &[Message]) -> Message {
    let entries = entries
        .iter()
        .map(|m| match m {
            Message::Publish(p) => p.clone(),
            other => panic!("not a PUBLISH: {other:?}"),
        })
        .collect();
    Message::Batch(entries)
}

#[test]
fn a_batch_from_a_client_is_stored_and_forwarded_tuple_by_tuple() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), Message::Hello(hail_of(7)));
    e.handle_client_message(now, client(2), hello());
    drain(&mut e);
    e.handle_client_message(now, client(1), batch(&[plain("a", "1"), plain("b", "2")]));
    let out = drain(&mut e);
    assert_eq!(told(&out), ["DELIVER a 1", "DELIVER b 2"]);
    assert_eq!(to_client(&out, &client(2)), ["PUBLISH a=1", "PUBLISH b=2"]);
    assert!(to_client(&out, &client(1)).is_empty());
    assert_eq!(e.stats().batches_received, 1);
    assert_eq!(e.stats().publish_received, 2);
}

#[test]
fn a_batch_before_hello_is_invalid_and_stores_nothing() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), batch(&[plain("a", "1")]));
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["INVALID"]);
    assert_eq!(e.store().len(), 0);
}

#[test]
fn a_bad_entry_ends_the_session_and_the_rest_of_its_batch() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), hello());
    drain(&mut e);
    let Message::Publish(mut bad) = plain("b", "2") else {
        unreachable!()
    };
    bad.extension = Bytes::from_static(&[1, 0, 0]);
    let entries = vec![Publish::new("a", "1"), bad, Publish::new("c", "3")];
    e.handle_client_message(now, client(1), Message::Batch(entries));
    let out = drain(&mut e);
    assert_eq!(told(&out), ["DELIVER a 1"]);
    assert_eq!(to_client(&out, &client(1)), ["INVALID"]);
    assert_eq!(e.connected_sessions(), 0);
}

#[test]
fn a_batch_from_a_server_is_applied_in_order() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    drain(&mut e);
    let entries = [
        stamped("k", "old", 0, 1, 9, 0),
        stamped("k", "new", 0, 2, 9, 0),
    ];
    e.handle_remote_message(now, r, batch(&entries));
    assert_eq!(told(&drain(&mut e)), ["DELIVER k old", "CHANGE k new"]);
    assert_eq!(
        e.store().entry("k").map(|t| t.value.to_string()),
        Some("new".into())
    );
}

#[test]
fn batches_go_only_to_peers_that_hailed() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), Message::Hello(hail_of(7)));
    e.handle_client_message(now, client(2), hello());
    let r = e.add_remote(now, "inproc://up").unwrap();
    e.handle_remote_connected(now, r);
    assert!(e.client_reads_batches(&client(1)));
    assert!(
        !e.client_reads_batches(&client(2)),
        "CZMQ clients never hail"
    );
    assert!(
        !e.remote_reads_batches(r),
        "not before the server hails back"
    );
    e.handle_remote_message(now, r, Message::Pong(hail_of(8)));
    assert!(e.remote_reads_batches(r));
    e.handle_remote_disconnected(t0(), r);
    e.handle_remote_connected(now, r);
    assert!(
        !e.remote_reads_batches(r),
        "a new connection hails again first"
    );
}

#[test]
fn remote_says_hello_and_republishes_on_every_connect() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "a", "1", None).unwrap();
    let r = e.add_remote(now, "tcp://127.0.0.1:1").unwrap();
    drain(&mut e);
    e.handle_remote_connected(now, r);
    assert_eq!(to_remote(&drain(&mut e), r), ["HELLO", "PING"]);
    // Our copies follow the server's answer, which says it is one of ours.
    e.handle_remote_message(now, r, Message::Pong(hail_of(2)));
    assert_eq!(to_remote(&drain(&mut e), r), ["PUBLISH a=1"]);
    e.handle_remote_disconnected(t0(), r);
    e.publish(now, "b", "2", None).unwrap();
    assert!(
        to_remote(&drain(&mut e), r).is_empty(),
        "nothing is sent to a disconnected remote"
    );
    connect_ours(&mut e, now + ms(500), r);
    assert_eq!(
        to_remote(&drain(&mut e), r),
        ["HELLO", "PING", "PUBLISH a=1", "PUBLISH b=2"]
    );
}

#[test]
fn remote_pings_at_a_third_of_the_timeout_and_redials_after_silence() {
    let now = t0();
    let mut e = engine_with_timeout(300);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    drain(&mut e);
    assert_eq!(e.poll_timeout(), Some(now + ms(100)));
    e.handle_timeout(now + ms(100));
    assert_eq!(to_remote(&drain(&mut e), r), ["PING"]);
    e.handle_remote_message(now + ms(110), r, Message::Pong(None));
    e.handle_timeout(now + ms(200));
    assert_eq!(to_remote(&drain(&mut e), r), ["PING"]);
    // No PONG this time: one missed answer is not yet suspicious (issue: flapping under loss)...
    e.handle_timeout(now + ms(300));
    let out = drain(&mut e);
    assert_eq!(to_remote(&out, r), ["PING"]);
    assert!(peer_events(&out).is_empty());
    // ...two and a half PING intervals of silence are; the timeout at 410 ms is dead.
    e.handle_timeout(now + ms(360));
    assert_eq!(peer_events(&drain(&mut e)), ["inproc://up suspect"]);
    e.handle_timeout(now + ms(410));
    let out = drain(&mut e);
    assert!(out.contains(&Output::Redial(r)));
    assert_eq!(peer_events(&out), ["inproc://up dead"]);
    assert_eq!(e.stats().redials, 1);
}

#[test]
fn invalid_from_a_server_makes_the_remote_say_hello_and_republish() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "a", "1", None).unwrap();
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    drain(&mut e);
    e.handle_remote_message(now, r, Message::Invalid);
    assert_eq!(to_remote(&drain(&mut e), r), ["HELLO", "PING"]);
    e.handle_remote_message(now, r, Message::Pong(hail_of(2)));
    assert_eq!(to_remote(&drain(&mut e), r), ["PUBLISH a=1"]);
}

#[test]
fn tuple_from_a_server_is_forwarded_to_clients_and_other_remotes() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    let r1 = e.add_remote(now, "inproc://one").unwrap();
    let r2 = e.add_remote(now, "inproc://two").unwrap();
    e.handle_remote_connected(now, r1);
    e.handle_remote_connected(now, r2);
    e.handle_client_message(now, client(1), hello());
    drain(&mut e);
    e.handle_remote_message(now, r1, plain("k", "v"));
    let out = drain(&mut e);
    assert!(to_remote(&out, r1).is_empty());
    assert_eq!(to_remote(&out, r2), ["PUBLISH k=v"]);
    assert_eq!(to_client(&out, &client(1)), ["PUBLISH k=v"]);
}

#[test]
fn session_limit_refuses_new_clients_but_makes_room_from_expired_ones() {
    let now = t0();
    let mut e = Engine::new(EngineConfig {
        server_timeout: ms(100),
        max_sessions: 1,
        ..EngineConfig::default()
    });
    e.handle_client_message(now, client(1), hello());
    drain(&mut e);
    e.handle_client_message(now, client(2), Message::Ping(None));
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.stats().sessions_refused, 1);
    e.handle_timeout(now + ms(100));
    e.handle_client_message(now + ms(100), client(2), Message::Ping(None));
    assert_eq!(to_client(&drain(&mut e), &client(2)), ["PONG"]);
}

#[test]
fn local_publish_is_delivered_to_the_application() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "inproc://alpha-1", "service1", None)
        .unwrap();
    assert_eq!(told(&drain(&mut e)), ["DELIVER inproc://alpha-1 service1"]);
    assert!(e.publish(now, "bad key", "v", None).is_err());
}

#[test]
fn default_ping_interval_stays_within_czmq_timeout_whatever_our_own() {
    let long = EngineConfig {
        server_timeout: Duration::from_secs(10),
        ..EngineConfig::default()
    };
    assert_eq!(long.ping_interval(), MAX_DEFAULT_PING);
    let short = EngineConfig {
        server_timeout: ms(90),
        ..EngineConfig::default()
    };
    assert_eq!(short.ping_interval(), ms(30));
}

// ---- Versions and conflicts ----

#[test]
fn a_greater_copy_wins_and_a_smaller_one_is_dropped_unforwarded() {
    let now = t0();
    let mut e = engine(5, 1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    e.handle_client_message(now, client(1), hello());
    drain(&mut e);
    e.handle_client_message(now, client(1), stamped("k", "a", 0, 3, 7, 0));
    drain(&mut e);
    // Older version, or same version from a smaller origin: dropped, nothing forwarded.
    e.handle_remote_message(now, r, stamped("k", "b", 0, 2, 9, 0));
    e.handle_remote_message(now, r, stamped("k", "b", 0, 3, 6, 0));
    assert!(drain(&mut e).is_empty());
    // Same version, greater origin: wins.
    e.handle_remote_message(now, r, stamped("k", "b", 0, 3, 8, 0));
    let out = drain(&mut e);
    assert_eq!(told(&out), ["CHANGE k b"]);
    assert_eq!(to_client(&out, &client(1)), ["PUBLISH k=b"]);
}

#[test]
fn a_copy_without_a_stamp_loses_to_any_stamped_copy() {
    let now = t0();
    let mut e = engine(5, 1000);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), stamped("k", "new", 0, 1, 7, 0));
    drain(&mut e);
    // A CZMQ node republishing an old value.
    e.handle_client_message(now, client(1), plain("k", "old"));
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.store().get("k").map(|v| &**v), Some("new"));
}

#[test]
fn unstamped_copies_of_one_key_settle_on_the_greater_value() {
    let now = t0();
    let mut e = engine(5, 1000);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), plain("k", "b"));
    e.handle_client_message(now, client(1), plain("k", "a"));
    e.handle_client_message(now, client(1), plain("k", "c"));
    assert_eq!(told(&drain(&mut e)), ["DELIVER k b", "CHANGE k c"]);
}

#[test]
fn publishing_a_held_key_takes_the_next_version_with_our_id() {
    let now = t0();
    let mut e = engine(5, 1000);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), stamped("k", "theirs", 0, 4, 9, 0));
    drain(&mut e);
    e.publish(now, "k", "ours", None).unwrap();
    let entry = e.store().entry("k").unwrap();
    assert_eq!(
        (entry.stamp.version, entry.stamp.origin, entry.owned()),
        (5, 5, true)
    );
}

#[test]
fn an_owner_whose_copy_lost_stops_refreshing_it() {
    let now = t0();
    let mut e = engine(5, 1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    e.publish(now, "k", "ours", Some(ms(300))).unwrap();
    drain(&mut e);
    e.handle_remote_message(now, r, stamped("k", "theirs", 300, 1, 9, 0));
    drain(&mut e);
    assert!(!e.store().entry("k").unwrap().owned());
    e.handle_timeout(now + ms(100));
    e.handle_remote_message(now + ms(100), r, Message::Pong(None));
    let refreshes: Vec<_> = to_remote(&drain(&mut e), r)
        .into_iter()
        .filter(|m| m.starts_with("PUBLISH"))
        .collect();
    assert!(refreshes.is_empty(), "{refreshes:?}");
}

// ---- Leases ----

#[test]
fn the_owner_refreshes_every_third_of_the_lease_without_telling_the_application() {
    let now = t0();
    let mut e = engine(5, 1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    assert_eq!(to_remote(&drain(&mut e), r), ["HELLO", "PING"]);
    e.publish(now, "k", "v", Some(ms(300))).unwrap();
    assert_eq!(to_remote(&drain(&mut e), r), ["PUBLISH k=v ttl=300"]);
    for step in 1..=6u32 {
        let at = now + ms(100) * step;
        e.handle_remote_message(at, r, Message::Pong(None));
        e.handle_timeout(at);
        let out = drain(&mut e);
        let refresh: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::ToRemote(_, Message::Publish(p)) => {
                    Some(p.stamp().unwrap().unwrap().lease_seq)
                }
                _ => None,
            })
            .collect();
        assert_eq!(refresh, [step], "refresh {step}");
        assert!(told(&out).is_empty());
    }
    assert_eq!(e.stats().refreshes, 6);
    assert_eq!(e.store().len(), 1, "an owner never expires its own tuple");
}

#[test]
fn a_leased_tuple_expires_when_refreshes_stop_and_comes_back_with_the_next() {
    let now = t0();
    let mut e = engine(5, 1000);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), stamped("k", "v", 300, 1, 9, 0));
    e.handle_client_message(now + ms(100), client(1), stamped("k", "v", 300, 1, 9, 1));
    drain(&mut e);
    e.handle_timeout(now + ms(399));
    assert_eq!(
        e.store().len(),
        1,
        "the refresh at 100 ms holds it to 400 ms"
    );
    e.handle_timeout(now + ms(400));
    assert_eq!(told(&drain(&mut e)), ["EXPIRE k"]);
    assert_eq!(e.store().len(), 0);
    assert_eq!(e.stats().expired, 1);

    // A stale copy cannot bring it back; the owner's next refresh can.
    e.handle_client_message(now + ms(450), client(1), stamped("k", "v", 300, 1, 9, 1));
    e.handle_client_message(now + ms(450), client(1), plain("k", "v"));
    assert!(told(&drain(&mut e)).is_empty());
    e.handle_client_message(now + ms(500), client(1), stamped("k", "v", 300, 1, 9, 2));
    assert_eq!(told(&drain(&mut e)), ["DELIVER k v"]);
}

#[test]
fn resync_sends_what_is_left_of_a_lease_not_the_whole_lease() {
    let now = t0();
    let mut e = engine(5, 1000);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), stamped("k", "v", 1000, 1, 9, 0));
    drain(&mut e);
    e.handle_client_message(now + ms(400), client(2), hello());
    assert_eq!(
        to_client(&drain(&mut e), &client(2)),
        ["PUBLISH k=v ttl=600"]
    );
}

// ---- Withdrawals ----

#[test]
fn unpublish_makes_a_tombstone_that_travels_and_removes_the_key() {
    let now = t0();
    let mut e = engine(5, 1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    e.publish(now, "k", "v", None).unwrap();
    drain(&mut e);
    e.unpublish(now, "k").unwrap();
    let out = drain(&mut e);
    assert_eq!(told(&out), ["REMOVE k"]);
    assert_eq!(to_remote(&out, r), ["PUBLISH k withdrawn"]);
    assert_eq!(e.store().len(), 0);
    assert!(matches!(
        e.unpublish(now, "k"),
        Err(TupleError::NotHeld { .. })
    ));
}

#[test]
fn a_tombstone_stops_an_old_copy_coming_back_until_it_is_forgotten() {
    let now = t0();
    let mut e = Engine::new(EngineConfig {
        node_id: 5,
        tombstone_ttl: ms(1000),
        ..EngineConfig::default()
    });
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), stamped("k", "v", 0, 1, 9, 0));
    let tombstone = Stamp {
        version: 2,
        origin: 9,
        lease_seq: 0,
        withdrawn: true,
    };
    e.handle_client_message(
        now,
        client(1),
        Message::Publish(Publish::stamped("k", "", 1000, &tombstone)),
    );
    assert_eq!(told(&drain(&mut e)), ["DELIVER k v", "REMOVE k"]);
    // A node that was away resyncs with the old copy: dropped.
    e.handle_client_message(now + ms(500), client(2), Message::Hello(hail_of(4)));
    e.handle_client_message(now + ms(500), client(2), stamped("k", "v", 0, 1, 9, 0));
    let out = drain(&mut e);
    assert!(told(&out).is_empty());
    assert_eq!(
        to_client(&out, &client(2)),
        ["PUBLISH k withdrawn"],
        "the resync carries the tombstone"
    );
    // After the tombstone lifetime it is gone, and the old copy is news again.
    e.handle_timeout(now + ms(1000));
    assert_eq!(e.store().held(), 0);
    e.handle_client_message(now + ms(1000), client(2), stamped("k", "v", 0, 1, 9, 0));
    assert_eq!(told(&drain(&mut e)), ["DELIVER k v"]);
}

#[test]
fn goodbye_withdraws_our_own_tuples_and_tells_peers_we_are_leaving() {
    let now = t0();
    let mut e = engine(5, 1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    e.handle_client_message(
        now,
        client(1),
        Message::Hello(Some(Hail {
            node: 8,
            goodbye: false,
            digest: None,
        })),
    );
    e.handle_client_message(now, client(2), hello());
    e.handle_client_message(now, client(2), plain("theirs", "v"));
    e.publish(now, "mine", "v", None).unwrap();
    drain(&mut e);
    e.goodbye(now);
    let out = drain(&mut e);
    assert_eq!(to_remote(&out, r), ["PUBLISH mine withdrawn", "PING bye"]);
    assert_eq!(
        to_client(&out, &client(1)),
        ["PUBLISH mine withdrawn", "PONG bye"]
    );
    assert!(
        to_client(&out, &client(2)).is_empty(),
        "a client that never hailed gets neither: v1 cannot say them"
    );
    assert_eq!(e.store().len(), 1, "only our own tuples are withdrawn");
}

#[test]
fn goodbye_can_leave_our_tuples_in_place() {
    let now = t0();
    let mut e = Engine::new(EngineConfig {
        withdraw_on_stop: false,
        ..EngineConfig::default()
    });
    e.publish(now, "mine", "v", None).unwrap();
    drain(&mut e);
    e.goodbye(now);
    assert!(told(&drain(&mut e)).is_empty());
}

// ---- Peer states ----

#[test]
fn sessions_go_alive_suspect_dead_and_left_with_events() {
    let now = t0();
    let mut e = engine(5, 100);
    let hail = |goodbye| {
        Some(Hail {
            node: 0xabc,
            goodbye,
            digest: None,
        })
    };
    e.handle_client_message(now, client(1), Message::Hello(hail(false)));
    e.handle_client_message(now, client(2), Message::Hello(hail(false)));
    assert_eq!(
        peer_events(&drain(&mut e)),
        ["node:0000000000000abc alive", "node:0000000000000abc alive"]
    );
    e.handle_client_message(now + ms(40), client(2), Message::Ping(hail(false)));
    e.handle_timeout(now + ms(85));
    assert_eq!(
        peer_events(&drain(&mut e)),
        ["node:0000000000000abc suspect"]
    );
    // Client 1 still claims the node: the goodbye ends client 2's session, named by its
    // connection, and says nothing of the node.
    e.handle_client_message(now + ms(86), client(2), Message::Ping(hail(true)));
    assert_eq!(peer_events(&drain(&mut e)), ["client:2 left"]);
    e.handle_timeout(now + ms(100));
    assert_eq!(peer_events(&drain(&mut e)), ["node:0000000000000abc dead"]);
}

#[test]
fn a_remote_that_says_goodbye_is_left_not_dead_when_its_connection_drops() {
    let now = t0();
    let mut e = engine(5, 1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    assert_eq!(peer_events(&drain(&mut e)), ["inproc://up alive"]);
    e.handle_remote_message(
        now,
        r,
        Message::Pong(Some(Hail {
            node: 3,
            goodbye: true,
            digest: None,
        })),
    );
    e.handle_remote_disconnected(t0(), r);
    assert_eq!(peer_events(&drain(&mut e)), ["inproc://up left"]);
    connect_ours(&mut e, now, r);
    assert_eq!(peer_events(&drain(&mut e)), ["inproc://up alive"]);
    e.handle_remote_disconnected(t0(), r);
    assert_eq!(peer_events(&drain(&mut e)), ["inproc://up dead"]);
}

#[test]
fn an_unstamped_copy_never_expires_whatever_its_ttl() {
    // CZMQ forwards our leased PUBLISH with its ttl but without the stamp, and drops the
    // refreshes: honouring that ttl would expire a tuple whose owner is alive.
    let now = t0();
    let mut e = engine(5, 1000);
    e.handle_client_message(now, client(1), hello());
    let mut publish = Publish::new("k", "v");
    publish.ttl_ms = 300;
    e.handle_client_message(now, client(1), Message::Publish(publish));
    e.handle_timeout(now + ms(10_000));
    assert_eq!(e.store().get("k").map(|v| &**v), Some("v"));
}

#[test]
fn a_remote_is_synced_once_a_pong_follows_its_hello() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    e.handle_remote_connected(now, r);
    drain(&mut e);
    assert_eq!(e.remotes_synced(), 0);
    e.handle_remote_message(now, r, plain("k", "v"));
    assert_eq!(e.remotes_synced(), 0, "the resync may still be coming");
    e.handle_remote_message(now, r, Message::Pong(None));
    assert_eq!(e.remotes_synced(), 1);
    e.handle_remote_message(now, r, Message::Invalid);
    assert_eq!(e.remotes_synced(), 0, "a new HELLO means a new resync");
}

#[test]
fn outbound_timers_send_pings_and_refreshes_but_judge_no_one() {
    let now = t0();
    let mut e = engine(5, 300);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), stamped("theirs", "v", 300, 1, 9, 0));
    e.publish(now, "mine", "v", Some(ms(300))).unwrap();
    drain(&mut e);
    // Far past every deadline, as if the actor had been busy reading a backlog.
    let late = now + ms(1000);
    assert!(e.poll_outbound_timeout().is_some_and(|at| at <= late));
    e.handle_outbound_timeout(late);
    let out = drain(&mut e);
    assert_eq!(to_remote(&out, r), ["PING", "PUBLISH mine=v ttl=300"]);
    assert!(
        told(&out).is_empty() && peer_events(&out).is_empty(),
        "nobody expired: {out:?}"
    );
    assert_eq!(e.connected_sessions(), 1);
    assert!(!out.contains(&Output::Redial(r)));
    assert!(
        e.poll_outbound_timeout().is_some_and(|at| at > late),
        "nothing left to send"
    );
    // Once the input is read, the full timeout judges.
    e.handle_timeout(late);
    assert_eq!(told(&drain(&mut e)), ["EXPIRE theirs"]);
    assert_eq!(e.connected_sessions(), 0);
}

#[test]
fn connects_past_max_remotes_are_refused_and_counted() {
    let now = t0();
    let mut e = Engine::new(EngineConfig {
        max_remotes: 2,
        ..EngineConfig::default()
    });
    assert!(e.add_remote(now, "inproc://a").is_ok());
    assert!(e.add_remote(now, "inproc://b").is_ok());
    assert_eq!(
        e.add_remote(now, "inproc://c"),
        Err(TooManyRemotes { max: 2 })
    );
    assert_eq!(e.stats().remotes_refused, 1);
}

#[test]
fn a_full_store_refuses_new_keys_counts_them_and_still_takes_new_values() {
    let now = t0();
    let mut e = Engine::new(EngineConfig {
        max_tuples: 1,
        ..EngineConfig::default()
    });
    e.handle_client_message(now, client(1), hello());
    e.handle_client_message(now, client(1), plain("a", "1"));
    e.handle_client_message(now, client(1), plain("b", "1"));
    e.handle_client_message(now, client(1), stamped("a", "2", 0, 1, 9, 0));
    assert_eq!(told(&drain(&mut e)), ["DELIVER a 1", "CHANGE a 2"]);
    assert_eq!(e.stats().store_full, 1);
    assert!(matches!(
        e.publish(now, "c", "v", None),
        Err(TupleError::StoreFull { max: 1 })
    ));
}

#[test]
fn repeated_invalids_hold_back_the_next_hello_instead_of_looping() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "a", "1", None).unwrap();
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    drain(&mut e);
    // The first INVALID is answered at once, as CZMQ does.
    e.handle_remote_message(now, r, Message::Invalid);
    assert_eq!(to_remote(&drain(&mut e), r), ["HELLO", "PING"]);
    // More before the server has answered a PING sent after that HELLO: echoes of what we
    // sent before it (one refusal, not many), so nothing is sent and nothing backs off.
    e.handle_remote_message(now + ms(10), r, Message::Invalid);
    e.handle_remote_message(now + ms(20), r, Message::Invalid);
    assert!(to_remote(&drain(&mut e), r).is_empty());
    // After its PONG, another INVALID: the server refuses us still; held back (2 × 333 ms).
    e.handle_remote_message(now + ms(30), r, Message::Pong(None));
    assert_eq!(to_remote(&drain(&mut e), r), ["PUBLISH a=1"], "our resync");
    e.handle_remote_message(now + ms(40), r, Message::Invalid);
    assert!(to_remote(&drain(&mut e), r).is_empty());
    e.handle_remote_message(now + ms(50), r, Message::Invalid);
    assert!(
        to_remote(&drain(&mut e), r).is_empty(),
        "one HELLO is pending, not more"
    );
    e.handle_outbound_timeout(now + ms(600));
    assert!(!to_remote(&drain(&mut e), r).contains(&"HELLO".to_owned()));
    e.handle_outbound_timeout(now + ms(706));
    assert_eq!(to_remote(&drain(&mut e), r)[0], "HELLO");
    // After a quiet timeout, an INVALID is answered at once again.
    e.handle_remote_message(now + ms(1000), r, Message::Pong(None));
    e.handle_remote_message(now + ms(3000), r, Message::Invalid);
    assert_eq!(to_remote(&drain(&mut e), r)[0], "HELLO");
}

#[test]
fn an_expired_session_is_told_once_per_publish_burst_and_keeps_its_tuples() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), hello());
    e.handle_timeout(now + ms(1000));
    drain(&mut e);
    // A busy client that missed its PINGs goes on publishing: every tuple is kept, and only
    // the first earns INVALID.
    for i in 0..5 {
        e.handle_client_message(now + ms(1100), client(1), plain(&format!("k{i}"), "v"));
    }
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["INVALID"]);
    assert_eq!(e.store().len(), 5);
    // Its PINGs are reminded each time; its HELLO brings it back.
    e.handle_client_message(now + ms(1200), client(1), Message::Ping(None));
    assert_eq!(to_client(&drain(&mut e), &client(1)), ["INVALID"]);
    e.handle_client_message(now + ms(1300), client(1), hello());
    assert_eq!(e.connected_sessions(), 1);
}

#[test]
fn absurd_versions_from_peers_are_refused_so_publishing_cannot_overflow() {
    let now = t0();
    let mut e = engine(5, 1000);
    e.handle_client_message(now, client(1), hello());
    drain(&mut e);
    e.handle_client_message(now, client(1), stamped("k", "v", 0, u64::MAX, 9, 0));
    assert!(to_client(&drain(&mut e), &client(1)).is_empty());
    assert_eq!(e.store().len(), 0);
    assert_eq!(e.stats().versions_refused, 1);
    e.publish(now, "k", "mine", None).unwrap();
    assert_eq!(e.store().entry("k").unwrap().stamp.version, 1);
}

#[test]
fn a_poisoned_version_cannot_cut_the_owner_off_or_keep_its_key() {
    let now = t0();
    // The owner and a relay between it and the rest, with real version clocks.
    let clock = Some((now, 1_800_000_000_000));
    let mut owner = Engine::new(EngineConfig {
        node_id: 7,
        version_clock: clock,
        ..EngineConfig::default()
    });
    let mut relay = Engine::new(EngineConfig {
        node_id: 5,
        version_clock: clock,
        ..EngineConfig::default()
    });
    let up = owner.add_remote(now, "inproc://relay").unwrap();
    connect_ours(&mut owner, now, up);
    relay.handle_client_message(now, client(2), hello());
    owner.publish(now, "svc", "tcp://a:1", None).unwrap();
    pass(&mut owner, &mut relay, now);
    assert_eq!(relay.store().get("svc").map(|v| &**v), Some("tcp://a:1"));
    // A stranger pushes the key to the top of the version space: refused, nobody cut off.
    relay.handle_client_message(now, client(2), stamped("svc", "evil", 0, MAX_VERSION, 9, 0));
    assert_eq!(relay.store().get("svc").map(|v| &**v), Some("tcp://a:1"));
    assert_eq!(relay.stats().versions_refused, 1);
    // One within reach is taken, as an overwrite by a peer is; the owner takes its key back
    // with its next publish, and its new keys still travel on the same session.
    let reach = 1_800_000_000_000 + MAX_VERSION_LEAD;
    relay.handle_client_message(now, client(2), stamped("svc", "evil", 0, reach, 9, 0));
    assert_eq!(relay.store().get("svc").map(|v| &**v), Some("evil"));
    drain(&mut relay);
    owner.handle_remote_message(now, RemoteId(0), stamped("svc", "evil", 0, reach, 9, 0));
    owner.publish(now, "svc", "tcp://a:1", None).unwrap();
    owner.publish(now, "other", "tcp://a:2", None).unwrap();
    pass(&mut owner, &mut relay, now);
    assert_eq!(relay.store().get("svc").map(|v| &**v), Some("tcp://a:1"));
    assert_eq!(relay.store().get("other").map(|v| &**v), Some("tcp://a:2"));
    assert_eq!(relay.stats().invalid_sent, 0);
}

/// Hands what `from` says to its remote 0 to `to` as client 1's messages.
fn pass(from: &mut Engine, to: &mut Engine, now: Instant) {
    for output in drain(from) {
        if let Output::ToRemote(RemoteId(0), message) = output {
            to.handle_client_message(now, client(1), message);
        }
    }
}

#[test]
fn leases_longer_than_the_wire_can_carry_are_refused() {
    let mut e = engine(5, 1000);
    let too_long = Duration::from_millis(u64::from(u32::MAX) + 1);
    assert!(matches!(
        e.publish(t0(), "k", "v", Some(too_long)),
        Err(TupleError::LeaseTooLong { .. })
    ));
}

#[test]
fn a_refresh_past_the_last_lease_sequence_moves_to_the_next_version() {
    let now = t0();
    let mut e = engine(5, 1000);
    e.publish(now, "k", "v", Some(ms(300))).unwrap();
    drain(&mut e);
    let mut entry = e.store().entry("k").unwrap().clone();
    entry.stamp.lease_seq = u32::MAX;
    e.store.put(Arc::from("k"), entry);
    e.handle_outbound_timeout(now + ms(100));
    let stamp = e.store().entry("k").unwrap().stamp;
    assert_eq!((stamp.version, stamp.lease_seq), (2, 0));
    assert!(told(&drain(&mut e)).is_empty());
}

#[test]
fn a_server_that_stays_silent_is_redialled_with_ever_later_hellos_and_stays_dead() {
    let now = t0();
    let mut e = engine(5, 1000);
    let r = e.add_remote(now, "inproc://up").unwrap();
    connect_ours(&mut e, now, r);
    e.publish(now, "mine", "v", None).unwrap();
    drain(&mut e);
    // Silent for the timeout: redialled, dead.
    e.handle_timeout(now + ms(1000));
    let out = drain(&mut e);
    assert!(out.contains(&Output::Redial(r)), "{out:?}");
    assert_eq!(peer_events(&out), ["inproc://up dead"]);
    // The first redial says HELLO at once, but connecting is no answer: still dead.
    e.handle_remote_connected(now + ms(1001), r);
    let out = drain(&mut e);
    assert_eq!(to_remote(&out, r), ["HELLO", "PING"]);
    assert!(peer_events(&out).is_empty(), "{out:?}");
    // Silent again: the next connection holds its HELLO back a ping interval...
    e.handle_timeout(now + ms(2001));
    assert!(drain(&mut e).contains(&Output::Redial(r)));
    e.handle_remote_connected(now + ms(2002), r);
    assert!(to_remote(&drain(&mut e), r).is_empty());
    // (A PING probes meanwhile: a PONG would bring the HELLO forward.)
    e.handle_outbound_timeout(now + ms(2002 + 333));
    assert_eq!(to_remote(&drain(&mut e), r), ["PING", "HELLO", "PING"]);
    // ...and an answer brings it back to life.
    e.handle_remote_message(now + ms(2400), r, Message::Pong(None));
    assert_eq!(peer_events(&drain(&mut e)), ["inproc://up alive"]);
}

#[test]
fn a_peer_cannot_make_a_tombstone_outlive_our_tombstone_ttl() {
    let now = t0();
    let mut e = engine(5, 1000);
    e.set_tombstone_ttl(ms(2000));
    e.handle_client_message(now, client(1), hello());
    let stamp = Stamp {
        version: 3,
        origin: 9,
        lease_seq: 0,
        withdrawn: true,
    };
    // The sender asks for the wire's longest lifetime, 49.7 days.
    let forever = Publish::stamped("k", "", u32::MAX, &stamp);
    e.handle_client_message(now, client(1), Message::Publish(forever));
    assert_eq!(e.store().entry("k").map(|k| k.kind), Some(Kind::Withdrawn));
    e.handle_timeout(now + ms(2001));
    assert!(
        e.store().entry("k").is_none(),
        "kept past our tombstone-ttl"
    );
}

#[test]
fn peers_cannot_fill_the_store_past_their_share_or_into_our_own_room() {
    let now = t0();
    // Copies of "kNN" with "svc" weigh 3 + 3 + 160 = 166 bytes: room for 60 in all.
    let mut e = Engine::new(EngineConfig {
        node_id: 5,
        max_store_bytes: 60 * 166,
        max_origin_bytes: 20 * 166,
        ..EngineConfig::default()
    });
    e.handle_client_message(now, client(1), hello());
    let from = |origin: u64, n: u64| stamped(&format!("{origin}{n:02}"), "svc", 0, 1, origin, 0);
    // One origin gets its share (20 copies), no more.
    for n in 0..25 {
        e.handle_client_message(now, client(1), from(1, n));
    }
    assert_eq!(e.store().len(), 20);
    assert_eq!(e.stats().origin_full, 5);
    // Other origins fill the rest but the eighth kept for us: 52 copies in all.
    for origin in 2..=4 {
        for n in 0..20 {
            e.handle_client_message(now, client(1), from(origin, n));
        }
    }
    assert_eq!(e.store().len(), 52);
    assert!(e.stats().store_full > 0);
    assert_eq!(e.connected_sessions(), 1, "refusals cost no session");
    // Our own services still fit.
    for n in 0..8 {
        e.publish(now, &format!("m{n:02}"), "svc", None).unwrap();
    }
    assert!(matches!(
        e.publish(now, "m99", "svc", None),
        Err(TupleError::StoreBytesFull { .. })
    ));
}

#[test]
fn a_full_house_of_mute_connections_makes_room_for_a_client_that_talks() {
    let now = t0();
    let mut e = Engine::new(EngineConfig {
        max_sessions: 3,
        ..EngineConfig::default()
    });
    e.handle_client_message(now, client(1), Message::Hello(hail_of(1)));
    // Two connections that never say HELLO (their first frame is out of turn but opens them).
    e.handle_client_message(now + ms(1), client(2), Message::Ping(None));
    e.handle_client_message(now + ms(2), client(3), Message::Ping(None));
    drain(&mut e);
    e.handle_client_message(now + ms(3), client(4), Message::Hello(hail_of(4)));
    assert_eq!(e.stats().sessions_evicted, 1);
    assert_eq!(e.stats().sessions_refused, 0);
    assert_eq!(
        e.connected_sessions(),
        2,
        "the talking client and the newcomer"
    );
    e.handle_client_message(now + ms(4), client(1), Message::Ping(hail_of(1)));
    assert_eq!(
        to_client(&drain(&mut e), &client(1)),
        ["PONG"],
        "never evicted"
    );
}

#[test]
fn a_seed_that_never_answers_is_told_dead_once_with_the_reason() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    let r = e.add_remote(now, "tcp://10.255.255.1:5670").unwrap();
    assert_eq!(e.poll_timeout(), Some(now + NO_ANSWER));
    e.handle_timeout(now + NO_ANSWER);
    let told: Vec<_> = drain(&mut e)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(Event::Peer { state, reason, .. }) => Some((state, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(told, [(PeerState::Dead, "no answer within 5 s".to_owned())]);
    e.handle_timeout(now + NO_ANSWER * 3);
    assert!(peer_events(&drain(&mut e)).is_empty(), "told once");
    // Once it answers, a later silence is told again.
    connect_ours(&mut e, now + NO_ANSWER * 3, r);
    e.handle_remote_disconnected(t0(), r);
    drain(&mut e);
    e.handle_timeout(now + NO_ANSWER * 5);
    assert!(!peer_events(&drain(&mut e)).is_empty());
}
