//! The server role: HELLO and resyncs, PING/PONG, expiry, limits on sessions.

use super::*;

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
fn a_hello_whose_digest_matches_the_store_gets_no_resync() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "a", "1", None).unwrap();
    drain(&mut e);
    let with_digest = |digest| {
        Message::Hello(Some(Hail {
            digest: Some(digest),
            ..hail_of(9).unwrap()
        }))
    };
    // The same tuples on both sides: the HELLO costs nothing, and a PING is answered at once.
    e.handle_client_message(now, client(1), with_digest(e.store().digest()));
    e.handle_client_message(now, client(1), Message::Ping(hail_of(9)));
    let sent = to_client(&drain(&mut e), &client(1));
    assert!(sent.iter().all(|m| !m.starts_with("PUBLISH")), "{sent:?}");
    assert!(sent.iter().any(|m| m.starts_with("PONG")), "{sent:?}");
    assert_eq!(e.stats().resyncs_skipped, 1);
    // Another digest (the client holds something else): the whole store, as always.
    e.handle_client_message(now, client(2), with_digest(12345));
    assert_eq!(to_client(&drain(&mut e), &client(2)), ["PUBLISH a=1"]);
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
