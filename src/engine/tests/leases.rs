//! Leases: refreshes by the owner, expiry when they stop, and what a resync carries of them.

use super::*;

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
