//! The client role: HELLO on connect, PINGs, redials, INVALID back-off, digests, seeds.

use super::*;

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
fn a_server_whose_digest_after_hello_is_ours_gets_no_resync_from_us() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "a", "1", None).unwrap();
    let r = e.add_remote(now, "tcp://127.0.0.1:1").unwrap();
    drain(&mut e);
    e.handle_remote_connected(now, r);
    // Our HELLO carries our digest, for a server of ours to compare.
    let out = drain(&mut e);
    let digest = e.store().digest();
    assert!(
        out.iter().any(|o| matches!(o, Output::ToRemote(_, Message::Hello(Some(Hail { digest: Some(d), .. }))) if *d == digest)),
        "{out:?}"
    );
    // The server answers that it holds the same tuples: nothing to send.
    let same = Hail {
        digest: Some(digest),
        ..hail_of(2).unwrap()
    };
    e.handle_remote_message(now, r, Message::Pong(Some(same)));
    assert!(to_remote(&drain(&mut e), r).is_empty());
    assert_eq!(e.stats().resyncs_skipped, 1);
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
