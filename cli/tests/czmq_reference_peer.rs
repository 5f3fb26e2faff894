#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Checks the CZMQ reference peer and the line harness on their own, CZMQ talking to CZMQ, before
//! either is trusted in interop tests against our node.
//!
//! What CZMQ 4.2.1's zgossip actor sends back on its pipe, as printed by the peer (seen on
//! Debian 12, libczmq4 4.2.1 over libzmq 4.3.4; the tests below pin each point down):
//! - `BIND ep` gets no reply, whether or not the bind works (a failure is only a warning in
//!   CZMQ's log on stderr).
//! - `PORT` gets two frames, `PORT` and a number, so the line is `PORT n`, never a bare number.
//!   n comes from the latest `BIND`: the tcp port, `0` before any `BIND` and after binding
//!   `ipc://`, `-1` after a failed `BIND`.
//! - `STATUS` gets `STATUS n`, n the number of tuples held (one per key).
//! - `PUBLISH k v` is delivered back to the publishing application as `DELIVER k v` when the
//!   tuple is new to the node (new key, or new value for a known key), and not when it repeats.
//!   Tuples from other nodes are delivered under the same rule.
//! - An unknown verb gets no reply: CZMQ logs `unknown zgossip method` and carries on
//!   (`UNPUBLISH` is unknown too; Debian builds CZMQ without its draft API).
//! - Too few arguments crash CZMQ (`CONNECT`, `PUBLISH k`, `SET`, `LOAD`, `SAVE` abort or
//!   segfault), so the peer answers those itself with `ERROR <verb> needs N argument(s)`.
//! - The peer stops on `$TERM` and on EOF, in both cases after printing the replies to every
//!   earlier command.

mod support;

use support::{LINE_TIMEOUT, LinePeer, TCP_ANY, tcp_endpoint, temp_ipc_endpoint};

/// Peer `client` connects to `server`'s endpoint and publishes two tuples; both nodes end up
/// with them, and the client sees its own tuples delivered back.
fn publish_two_through(server: &mut LinePeer, client: &mut LinePeer, endpoint: &str) {
    let tuples = [
        ("tcp://10.0.0.1:5555", "echo"),
        ("tcp://10.0.0.2:5556", "time"),
    ];
    client.send(&format!("CONNECT {endpoint}"));
    for (key, value) in tuples {
        client.send(&format!("PUBLISH {key} {value}"));
    }
    server.wait_for_delivers(&tuples, LINE_TIMEOUT);
    server.wait_status(2, LINE_TIMEOUT);
    client.wait_for_delivers(&tuples, LINE_TIMEOUT);
    assert_eq!(client.status(LINE_TIMEOUT), 2);
    assert_eq!(server.delivered().len(), 2, "{:?}", server.history());
}

#[test]
fn czmq_peers_share_tuples_over_tcp() {
    if support::skip_without_czmq() {
        return;
    }
    let mut server = LinePeer::czmq("tcp-server");
    let mut client = LinePeer::czmq("tcp-client");
    server.send(&format!("BIND {TCP_ANY}"));
    let port = server.port();
    publish_two_through(&mut server, &mut client, &tcp_endpoint(port));
}

#[test]
fn czmq_peers_share_tuples_over_ipc() {
    if support::skip_without_czmq() {
        return;
    }
    let (_dir, endpoint) = temp_ipc_endpoint("server");
    let mut server = LinePeer::czmq("ipc-server");
    let mut client = LinePeer::czmq("ipc-client");
    server.send(&format!("BIND {endpoint}"));
    publish_two_through(&mut server, &mut client, &endpoint);
}

#[test]
fn three_czmq_peers_learn_every_tuple_through_one_server() {
    if support::skip_without_czmq() {
        return;
    }
    let mut base = LinePeer::czmq_with_args("base", &["--bind", TCP_ANY]);
    let endpoint = tcp_endpoint(base.port());
    let mut alpha = LinePeer::czmq_with_args("alpha", &["--connect", &endpoint]);
    let mut beta = LinePeer::czmq_with_args("beta", &["--connect", &endpoint]);
    alpha.send("PUBLISH inproc://alpha-1 service1");
    alpha.send("PUBLISH inproc://alpha-2 service2");
    beta.send("PUBLISH inproc://beta-1 service1");
    beta.send("PUBLISH inproc://beta-2 service2");

    let all = [
        ("inproc://alpha-1", "service1"),
        ("inproc://alpha-2", "service2"),
        ("inproc://beta-1", "service1"),
        ("inproc://beta-2", "service2"),
    ];
    for peer in [&mut base, &mut alpha, &mut beta] {
        peer.wait_for_delivers(&all, LINE_TIMEOUT);
        peer.wait_status(4, LINE_TIMEOUT);
    }
}

#[test]
fn czmq_port_replies_follow_the_latest_bind() {
    if support::skip_without_czmq() {
        return;
    }
    let mut peer = LinePeer::czmq("port");
    peer.send("PORT");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("PORT 0"));

    // A failed BIND says nothing on the pipe: the next line is the STATUS reply.
    peer.send("BIND tcp://999.1.1.1:1");
    peer.send("STATUS");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("STATUS 0"));
    peer.send("PORT");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("PORT -1"));

    peer.send(&format!("BIND {TCP_ANY}"));
    peer.send("STATUS");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("STATUS 0"));
    assert!(peer.port() > 0);

    let (_dir, endpoint) = temp_ipc_endpoint("port");
    peer.send(&format!("BIND {endpoint}"));
    peer.send("PORT");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("PORT 0"));
}

#[test]
fn czmq_delivers_a_local_publish_only_when_the_tuple_is_new() {
    if support::skip_without_czmq() {
        return;
    }
    let mut peer = LinePeer::czmq("local");
    peer.send("PUBLISH key one");
    assert_eq!(
        peer.next_line(LINE_TIMEOUT).as_deref(),
        Some("DELIVER key one")
    );

    peer.send("PUBLISH key one");
    peer.send("STATUS");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("STATUS 1"));

    peer.send("ANNOUNCE key two");
    assert_eq!(
        peer.next_line(LINE_TIMEOUT).as_deref(),
        Some("DELIVER key two")
    );
    peer.send("STATUS");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("STATUS 1"));
    // The actor answers in order: a stray DELIVER would come before this reply.
    peer.send("STATUS");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("STATUS 1"));
}

#[test]
fn czmq_ignores_unknown_verbs_and_the_peer_refuses_short_commands() {
    if support::skip_without_czmq() {
        return;
    }
    let mut peer = LinePeer::czmq("verbs");
    peer.send("FOO bar");
    peer.send("UNPUBLISH key");
    peer.send("STATUS");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("STATUS 0"));

    // These would crash CZMQ; the peer answers them itself, at once.
    for (command, reply) in [
        ("CONNECT", "ERROR CONNECT needs 1 argument"),
        ("PUBLISH key", "ERROR PUBLISH needs 2 arguments"),
        ("SET server/timeout", "ERROR SET needs 2 arguments"),
    ] {
        peer.send(command);
        assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some(reply));
    }

    // The actor is still alive and unchanged.
    peer.send("SET server/timeout 1000");
    assert_eq!(peer.status(LINE_TIMEOUT), 0);
    assert!(peer.delivered().is_empty());
}

#[test]
fn czmq_peer_answers_earlier_commands_then_stops_on_eof() {
    if support::skip_without_czmq() {
        return;
    }
    let mut peer = LinePeer::czmq("eof");
    peer.send("PUBLISH key value");
    peer.send("STATUS");
    peer.send("PORT");
    peer.close_stdin();
    let status = peer.wait_exit(LINE_TIMEOUT).expect("the peer stops on EOF");
    assert!(status.success(), "{status}");
    let mut lines = Vec::new();
    while let Some(line) = peer.next_line(LINE_TIMEOUT) {
        lines.push(line);
    }
    assert_eq!(lines, ["DELIVER key value", "STATUS 1", "PORT 0"]);
}

#[test]
fn czmq_peer_answers_earlier_commands_then_stops_on_term() {
    if support::skip_without_czmq() {
        return;
    }
    let mut peer = LinePeer::czmq("term");
    peer.send("STATUS");
    peer.send("$TERM");
    let status = peer
        .wait_exit(LINE_TIMEOUT)
        .expect("the peer stops on $TERM");
    assert!(status.success(), "{status}");
    assert_eq!(peer.next_line(LINE_TIMEOUT).as_deref(), Some("STATUS 0"));
    assert_eq!(peer.next_line(LINE_TIMEOUT), None);
}
