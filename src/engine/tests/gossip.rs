//! Gossip: copies judged by version, forwarded to every other peer, withdrawn, and bounded.

use super::*;

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
fn local_publish_is_delivered_to_the_application() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish(now, "inproc://alpha-1", "service1", None)
        .unwrap();
    assert_eq!(told(&drain(&mut e)), ["DELIVER inproc://alpha-1 service1"]);
    assert!(e.publish(now, "bad key", "v", None).is_err());
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
