//! `zgossip node` driven by another program over stdin/stdout, as the CLI contract says:
//! one command per stdin line, one reply or event per stdout line and nothing else on stdout,
//! EOF on stdin leaves the node running, `$TERM`, SIGTERM and SIGINT stop it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use support::{LINE_TIMEOUT, LinePeer, TCP_ANY, tcp_endpoint};

/// Every line a node may print starts with one of these words.
const LINE_WORDS: [&str; 12] = [
    "PORT", "STATUS", "LOOKUP", "VALUE", "NOVALUE", "ERROR", "DELIVER", "CHANGE", "REMOVE",
    "EXPIRE", "PEER", "LAGGED",
];

fn assert_only_protocol_lines(peer: &LinePeer) {
    for line in peer.history() {
        let word = line.split(' ').next().unwrap_or("");
        assert!(
            LINE_WORDS.contains(&word),
            "{}: unexpected stdout line {line:?}",
            peer.name()
        );
        assert!(
            !line.contains("  ") && !line.ends_with(' '),
            "words separated by single spaces: {line:?}"
        );
    }
}

#[test]
fn two_cli_nodes_exchange_tuples_over_tcp() {
    let mut server = LinePeer::zgossip_named(
        "server",
        &["--bind", TCP_ANY, "--publish", "tcp://10.0.0.1:9000=orders"],
    );
    let port = server.port();
    let mut client = LinePeer::zgossip_named("client", &["--connect", &tcp_endpoint(port)]);
    client.send("ANNOUNCE tcp://10.0.0.2:9000 billing");
    client.send("PUBLISH tcp://10.0.0.3:9000 orders service");
    client.wait_for_delivers(&[("tcp://10.0.0.1:9000", "orders")], LINE_TIMEOUT);
    server.wait_for_delivers(
        &[
            ("tcp://10.0.0.2:9000", "billing"),
            ("tcp://10.0.0.3:9000", "orders service"),
        ],
        LINE_TIMEOUT,
    );
    server.wait_status(3, LINE_TIMEOUT);
    client.wait_status(3, LINE_TIMEOUT);
    assert_only_protocol_lines(&server);
    assert_only_protocol_lines(&client);
}

#[test]
fn bad_commands_get_an_error_line_and_the_node_goes_on() {
    let mut node = LinePeer::zgossip(&[]);
    for (command, says) in [
        ("FROB", "ERROR unknown command FROB"),
        ("PUBLISH lonely", "ERROR usage: PUBLISH key value"),
        ("PUBLISH bad\u{7}key v", "ERROR key"),
        (
            "SET server/timeout soon",
            "ERROR bad setting server/timeout",
        ),
        (
            "SET no/such 1",
            "ERROR bad setting no/such: unknown SET path",
        ),
        (
            "BIND tcp://256.1.1.1:1",
            "ERROR cannot bind tcp://256.1.1.1:1",
        ),
        ("CONNECT nowhere", "ERROR bad endpoint \"nowhere\""),
    ] {
        node.send(command);
        let line = node.expect(|l| l.starts_with("ERROR"), LINE_TIMEOUT);
        assert!(line.starts_with(says), "{command:?} answered {line:?}");
    }
    node.send("PUBLISH good value");
    node.wait_status(1, LINE_TIMEOUT);
    assert_only_protocol_lines(&node);
}

#[test]
fn eof_on_stdin_leaves_the_node_serving_until_sigterm() {
    let mut server =
        LinePeer::zgossip_named("server", &["--bind", TCP_ANY, "--publish", "kept=alive"]);
    let port = server.port();
    server.close_stdin();
    // Nothing to read any more, yet the node still serves a newcomer.
    std::thread::sleep(Duration::from_millis(300));
    let mut client = LinePeer::zgossip_named("client", &["--connect", &tcp_endpoint(port)]);
    client.wait_for_delivers(&[("kept", "alive")], LINE_TIMEOUT);
    assert!(
        server.wait_exit(Duration::from_millis(100)).is_none(),
        "still running after EOF"
    );

    server.signal("TERM");
    let status = server
        .wait_exit(LINE_TIMEOUT)
        .expect("SIGTERM stops the node");
    assert!(status.success(), "clean exit, got {status}");
}

#[test]
fn sigint_and_term_command_stop_the_node_cleanly() {
    let mut by_signal = LinePeer::zgossip_named("sigint", &[]);
    by_signal.send("STATUS");
    by_signal.expect_line("STATUS 0", LINE_TIMEOUT);
    by_signal.signal("INT");
    assert!(
        by_signal
            .wait_exit(LINE_TIMEOUT)
            .expect("SIGINT stops it")
            .success()
    );

    let mut by_command = LinePeer::zgossip_named("term", &[]);
    by_command.send("$TERM");
    assert!(
        by_command
            .wait_exit(LINE_TIMEOUT)
            .expect("$TERM stops it")
            .success()
    );
}

#[test]
fn set_takes_milliseconds_and_humantime_durations() {
    let mut node = LinePeer::zgossip(&[]);
    node.send("SET server/timeout 250");
    node.send("SET server/timeout 2s");
    node.send("SET remote/ping-interval 100ms");
    node.send("STATUS");
    node.expect_line("STATUS 0", LINE_TIMEOUT);
    assert!(
        !node.history().iter().any(|l| l.starts_with("ERROR")),
        "{:?}",
        node.history()
    );
}

#[test]
fn bad_flags_fail_before_the_node_starts() {
    let mut node = LinePeer::zgossip(&["--publish", "no-equals-sign"]);
    let status = node.wait_exit(LINE_TIMEOUT).expect("exits");
    assert!(!status.success());
    let mut node = LinePeer::zgossip(&["--bind", "nonsense"]);
    assert!(!node.wait_exit(LINE_TIMEOUT).expect("exits").success());
}

#[test]
fn lookup_get_unpublish_and_leases_on_the_pipe() {
    let mut server = LinePeer::zgossip_named("server", &["--bind", TCP_ANY]);
    let port = server.port();
    let mut client = LinePeer::zgossip_named("client", &["--connect", &tcp_endpoint(port)]);
    client.send("PUBLISH tcp://10.0.0.2:9000 orders");
    client.send("PUBLISH tcp://10.0.0.1:9000 orders 2s");
    client.send("PUBLISH tcp://10.0.0.3:9000 billing");
    server.wait_status(3, LINE_TIMEOUT);

    server.send("LOOKUP orders");
    server.expect_line(
        "LOOKUP orders tcp://10.0.0.1:9000 tcp://10.0.0.2:9000",
        LINE_TIMEOUT,
    );
    server.send("LOOKUP nothing");
    server.expect_line("LOOKUP nothing", LINE_TIMEOUT);
    server.send("GET tcp://10.0.0.3:9000");
    server.expect_line("VALUE tcp://10.0.0.3:9000 billing", LINE_TIMEOUT);
    server.send("GET tcp://10.9.9.9:1");
    server.expect_line("NOVALUE tcp://10.9.9.9:1", LINE_TIMEOUT);

    client.send("UNPUBLISH tcp://10.0.0.3:9000");
    server.expect_line("REMOVE tcp://10.0.0.3:9000", LINE_TIMEOUT);
    client.send("PUBLISH tcp://10.0.0.2:9000 payments");
    server.expect_line("CHANGE tcp://10.0.0.2:9000 payments", LINE_TIMEOUT);
    client.send("UNPUBLISH tcp://10.9.9.9:1");
    client.expect(|l| l.starts_with("ERROR key"), LINE_TIMEOUT);

    // kill -9: the leased tuple expires at the server, the plain one stays.
    client.signal("KILL");
    server.expect_line("EXPIRE tcp://10.0.0.1:9000", LINE_TIMEOUT);
    server.send("GET tcp://10.0.0.2:9000");
    server.expect_line("VALUE tcp://10.0.0.2:9000 payments", LINE_TIMEOUT);
    assert_only_protocol_lines(&server);
}

#[test]
fn sigterm_withdraws_what_the_node_published() {
    let mut server = LinePeer::zgossip_named("server", &["--bind", TCP_ANY]);
    let port = server.port();
    let mut client = LinePeer::zgossip_named(
        "client",
        &["--connect", &tcp_endpoint(port), "--publish", "svc=orders"],
    );
    server.wait_for_delivers(&[("svc", "orders")], LINE_TIMEOUT);
    client.signal("TERM");
    assert!(client.wait_exit(LINE_TIMEOUT).expect("stops").success());
    server.expect_line("REMOVE svc", LINE_TIMEOUT);
    server.expect(
        |l| l.starts_with("PEER ") && l.contains(" left "),
        LINE_TIMEOUT,
    );
}
