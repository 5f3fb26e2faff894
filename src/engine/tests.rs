//! Engine tests with explicit time: every input carries `now`, so these are exact.

use super::*;
use crate::wire::DecodeError;

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn client(n: u8) -> ClientId {
    ClientId::Zmq(Bytes::from(vec![0, 0, 0, 0, n]))
}

fn engine_with_timeout(timeout_ms: u64) -> Engine {
    Engine::new(EngineConfig {
        server_timeout: ms(timeout_ms),
        ..EngineConfig::default()
    })
}

fn drain(engine: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| engine.poll_output()).collect()
}

fn publish(key: &str, value: &str) -> Message {
    Message::Publish(Publish::new(key, value))
}

fn to_client(outputs: &[Output], who: &ClientId) -> Vec<Message> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToClient(c, m) if c == who => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn to_remote(outputs: &[Output], who: RemoteId) -> Vec<Message> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToRemote(r, m) if *r == who => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn delivered(outputs: &[Output]) -> Vec<(String, String)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Deliver { key, value }) => {
                Some((key.to_string(), value.to_string()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn hello_gets_every_tuple_held() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish("a", "1").unwrap();
    e.publish("b", "2").unwrap();
    drain(&mut e);
    e.handle_client_message(now, client(1), Message::Hello);
    let out = drain(&mut e);
    assert_eq!(
        to_client(&out, &client(1)),
        vec![publish("a", "1"), publish("b", "2")]
    );
}

#[test]
fn ping_gets_pong_before_and_after_hello() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), Message::Ping);
    assert_eq!(to_client(&drain(&mut e), &client(1)), vec![Message::Pong]);
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_client_message(now, client(1), Message::Ping);
    assert_eq!(to_client(&drain(&mut e), &client(1)), vec![Message::Pong]);
}

#[test]
fn publish_before_hello_is_invalid_and_stores_nothing() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), publish("k", "v"));
    assert_eq!(
        to_client(&drain(&mut e), &client(1)),
        vec![Message::Invalid]
    );
    assert_eq!(e.store().len(), 0);
}

#[test]
fn second_hello_is_invalid_and_ends_the_session() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_client_message(now, client(1), Message::Hello);
    assert_eq!(
        to_client(&drain(&mut e), &client(1)),
        vec![Message::Invalid]
    );
    assert_eq!(e.connected_sessions(), 0);
}

#[test]
fn new_tuple_is_delivered_and_forwarded_to_everyone_but_its_sender() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    let r = e.add_remote(now, "inproc://up");
    e.handle_remote_connected(now, r);
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_client_message(now, client(2), Message::Hello);
    drain(&mut e);

    e.handle_client_message(now, client(1), publish("k", "v"));
    let out = drain(&mut e);
    assert_eq!(delivered(&out), vec![("k".into(), "v".into())]);
    assert_eq!(to_remote(&out, r), vec![publish("k", "v")]);
    assert_eq!(to_client(&out, &client(2)), vec![publish("k", "v")]);
    assert!(to_client(&out, &client(1)).is_empty());
}

#[test]
fn duplicate_tuple_is_neither_delivered_nor_forwarded() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_client_message(now, client(2), Message::Hello);
    e.handle_client_message(now, client(1), publish("k", "v"));
    drain(&mut e);
    e.handle_client_message(now, client(1), publish("k", "v"));
    assert!(drain(&mut e).is_empty());
    e.handle_client_message(now, client(1), publish("k", "w"));
    assert_eq!(delivered(&drain(&mut e)), vec![("k".into(), "w".into())]);
}

#[test]
fn silent_client_session_expires_after_timeout() {
    let now = t0();
    let mut e = engine_with_timeout(100);
    e.handle_client_message(now, client(1), Message::Hello);
    assert_eq!(e.poll_timeout(), Some(now + ms(100)));
    e.handle_timeout(now + ms(99));
    assert_eq!(e.connected_sessions(), 1);
    e.handle_timeout(now + ms(100));
    assert_eq!(e.connected_sessions(), 0);
    assert_eq!(e.stats().sessions_expired, 1);

    // No longer forwarded to.
    e.publish("k", "v").unwrap();
    assert!(to_client(&drain(&mut e), &client(1)).is_empty());
}

#[test]
fn pinging_client_session_never_expires() {
    let now = t0();
    let mut e = engine_with_timeout(100);
    e.handle_client_message(now, client(1), Message::Hello);
    for step in 1..=50 {
        let at = now + ms(30 * step);
        e.handle_timeout(at);
        e.handle_client_message(at, client(1), Message::Ping);
    }
    assert_eq!(e.connected_sessions(), 1);
}

#[test]
fn expired_client_that_pings_is_told_invalid_and_resyncs_with_hello() {
    let now = t0();
    let mut e = engine_with_timeout(100);
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_timeout(now + ms(150));
    e.publish("missed", "v").unwrap();
    drain(&mut e);

    e.handle_client_message(now + ms(160), client(1), Message::Ping);
    assert_eq!(
        to_client(&drain(&mut e), &client(1)),
        vec![Message::Invalid]
    );
    e.handle_client_message(now + ms(170), client(1), Message::Hello);
    assert_eq!(
        to_client(&drain(&mut e), &client(1)),
        vec![publish("missed", "v")]
    );
}

#[test]
fn malformed_message_ends_only_its_own_session() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_client_message(now, client(2), Message::Hello);
    drain(&mut e);
    e.handle_client_malformed(client(1), &DecodeError::TooShort { len: 1 });
    assert_eq!(
        to_client(&drain(&mut e), &client(1)),
        vec![Message::Invalid]
    );
    assert_eq!(e.connected_sessions(), 1);
    e.handle_client_message(now, client(2), publish("k", "v"));
    assert_eq!(e.store().len(), 1);
}

#[test]
fn refused_tuple_from_a_peer_changes_nothing_and_keeps_the_session() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_client_message(now, client(1), publish("two words", "v"));
    e.handle_client_message(now, client(1), publish("k", "line\nbreak"));
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.store().len(), 0);
    assert_eq!(e.stats().tuples_refused, 2);
    assert_eq!(e.connected_sessions(), 1);
}

#[test]
fn remote_says_hello_and_republishes_on_every_connect() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish("a", "1").unwrap();
    let r = e.add_remote(now, "tcp://127.0.0.1:1");
    drain(&mut e);
    e.handle_remote_connected(now, r);
    assert_eq!(
        to_remote(&drain(&mut e), r),
        vec![Message::Hello, publish("a", "1")]
    );
    e.handle_remote_disconnected(r);
    e.publish("b", "2").unwrap();
    assert!(
        to_remote(&drain(&mut e), r).is_empty(),
        "nothing is sent to a disconnected remote"
    );
    e.handle_remote_connected(now + ms(500), r);
    assert_eq!(
        to_remote(&drain(&mut e), r),
        vec![Message::Hello, publish("a", "1"), publish("b", "2")]
    );
}

#[test]
fn remote_pings_at_a_third_of_the_timeout_and_redials_after_silence() {
    let now = t0();
    let mut e = engine_with_timeout(300);
    let r = e.add_remote(now, "inproc://up");
    e.handle_remote_connected(now, r);
    drain(&mut e);
    assert_eq!(e.poll_timeout(), Some(now + ms(100)));
    e.handle_timeout(now + ms(100));
    assert_eq!(to_remote(&drain(&mut e), r), vec![Message::Ping]);
    e.handle_remote_message(now + ms(110), r, Message::Pong);
    e.handle_timeout(now + ms(200));
    assert_eq!(to_remote(&drain(&mut e), r), vec![Message::Ping]);
    // No PONG this time: silence since 110 ms reaches the timeout at 410 ms.
    e.handle_timeout(now + ms(300));
    drain(&mut e);
    e.handle_timeout(now + ms(410));
    assert_eq!(drain(&mut e), vec![Output::Redial(r)]);
    assert_eq!(e.stats().redials, 1);
}

#[test]
fn invalid_from_a_server_makes_the_remote_say_hello_and_republish() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    e.publish("a", "1").unwrap();
    let r = e.add_remote(now, "inproc://up");
    e.handle_remote_connected(now, r);
    drain(&mut e);
    e.handle_remote_message(now, r, Message::Invalid);
    assert_eq!(
        to_remote(&drain(&mut e), r),
        vec![Message::Hello, publish("a", "1")]
    );
}

#[test]
fn tuple_from_a_server_is_forwarded_to_clients_and_other_remotes() {
    let now = t0();
    let mut e = engine_with_timeout(1000);
    let r1 = e.add_remote(now, "inproc://one");
    let r2 = e.add_remote(now, "inproc://two");
    e.handle_remote_connected(now, r1);
    e.handle_remote_connected(now, r2);
    e.handle_client_message(now, client(1), Message::Hello);
    drain(&mut e);
    e.handle_remote_message(now, r1, publish("k", "v"));
    let out = drain(&mut e);
    assert!(to_remote(&out, r1).is_empty());
    assert_eq!(to_remote(&out, r2), vec![publish("k", "v")]);
    assert_eq!(to_client(&out, &client(1)), vec![publish("k", "v")]);
}

#[test]
fn session_limit_refuses_new_clients_but_makes_room_from_expired_ones() {
    let now = t0();
    let mut e = Engine::new(EngineConfig {
        server_timeout: ms(100),
        max_sessions: 1,
        ..EngineConfig::default()
    });
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_client_message(now, client(2), Message::Ping);
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.stats().sessions_refused, 1);
    e.handle_timeout(now + ms(100));
    e.handle_client_message(now + ms(100), client(2), Message::Ping);
    assert_eq!(to_client(&drain(&mut e), &client(2)), vec![Message::Pong]);
}

#[test]
fn local_publish_is_delivered_to_the_application() {
    let mut e = engine_with_timeout(1000);
    e.publish("inproc://alpha-1", "service1").unwrap();
    assert_eq!(
        delivered(&drain(&mut e)),
        vec![("inproc://alpha-1".into(), "service1".into())]
    );
    assert!(e.publish("bad key", "v").is_err());
}

#[test]
fn publish_from_an_expired_session_is_kept_and_the_client_told_to_resync() {
    let now = t0();
    let mut e = engine_with_timeout(100);
    e.handle_client_message(now, client(1), Message::Hello);
    e.handle_timeout(now + ms(150));
    drain(&mut e);
    e.handle_client_message(now + ms(200), client(1), publish("late", "v"));
    let out = drain(&mut e);
    assert_eq!(delivered(&out), vec![("late".into(), "v".into())]);
    assert_eq!(to_client(&out, &client(1)), vec![Message::Invalid]);
    assert_eq!(e.store().get("late").map(|v| &**v), Some("v"));
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
