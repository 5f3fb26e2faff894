//! The client subcommands and the config file, through the real binary: `lookup`, `status` and
//! `watch` against a node started here, their exit codes and JSON, and `node --config`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{LINE_TIMEOUT, LinePeer, TCP_ANY, tcp_endpoint};

fn zgossip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zgossip"))
        .args(args)
        .output()
        .expect("run zgossip")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// A node announcing two `orders` endpoints and one `billing`, and its endpoint.
fn registry() -> (LinePeer, String) {
    let mut node = LinePeer::zgossip_named(
        "registry",
        &[
            "--bind",
            TCP_ANY,
            "--ttl",
            "30s",
            "--publish",
            "tcp://10.0.0.2:9000=orders",
            "--publish",
            "tcp://10.0.0.1:9000=orders",
            "--publish",
            "tcp://10.0.0.3:9000=billing",
        ],
    );
    let port = node.port();
    (node, tcp_endpoint(port))
}

#[test]
fn lookup_prints_the_endpoints_of_a_service_one_per_line() {
    let (_node, endpoint) = registry();
    let output = zgossip(&["lookup", "orders", "--connect", &endpoint]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "tcp://10.0.0.1:9000\ntcp://10.0.0.2:9000\n"
    );
    assert!(
        stderr(&output).contains("waiting up to 2s"),
        "progress on stderr: {}",
        stderr(&output)
    );
}

#[test]
fn lookup_of_an_unknown_service_exits_1_after_waiting() {
    let (_node, endpoint) = registry();
    let output = zgossip(&[
        "lookup",
        "nothing",
        "--connect",
        &endpoint,
        "--wait",
        "300ms",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    assert!(
        stderr(&output).contains("no endpoint offers nothing"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn lookup_waits_for_a_service_that_appears_later() {
    let (mut node, endpoint) = registry();
    let lookup = std::thread::spawn(move || {
        zgossip(&["lookup", "late", "--connect", &endpoint, "--wait", "5s"])
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    node.send("PUBLISH tcp://10.0.0.9:1 late");
    let output = lookup.join().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "tcp://10.0.0.9:1\n");
}

#[test]
fn json_output_of_lookup_and_status_parses() {
    let (_node, endpoint) = registry();
    let output = zgossip(&["lookup", "orders", "--connect", &endpoint, "--json"]);
    let lookup: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(lookup["service"], "orders");
    assert_eq!(
        lookup["endpoints"],
        serde_json::json!(["tcp://10.0.0.1:9000", "tcp://10.0.0.2:9000"])
    );

    let output = zgossip(&["status", "--connect", &endpoint, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let status: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(status["count"], 3);
    let lease = status["tuples"][0]["lease_ms"].as_u64().unwrap();
    assert!(lease > 20_000 && lease <= 30_000, "remaining lease {lease}");
}

#[test]
fn status_lists_every_tuple_with_its_lease_and_the_count() {
    let (_node, endpoint) = registry();
    let output = zgossip(&["status", "--connect", &endpoint]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("tcp://10.0.0.1:9000 orders "),
        "{text}"
    );
    assert!(lines[0].ends_with('s'), "a lease: {text}");
    assert_eq!(lines[3], "3 tuples");
}

#[test]
fn status_of_an_unreachable_network_exits_1_and_says_so() {
    let output = zgossip(&[
        "status",
        "--connect",
        "tcp://127.0.0.1:1",
        "--wait",
        "300ms",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot reach tcp://127.0.0.1:1"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn watch_prints_events_as_they_happen_and_stops_on_sigint() {
    let (mut node, endpoint) = registry();
    let mut watch = LinePeer::spawn(
        "watch",
        Path::new(env!("CARGO_BIN_EXE_zgossip")),
        &["watch", "--connect", &endpoint, "--json"],
    );
    let first: serde_json::Value =
        serde_json::from_str(&watch.expect(|l| l.contains("\"deliver\""), LINE_TIMEOUT)).unwrap();
    assert_eq!(first["event"], "deliver");
    node.send("UNPUBLISH tcp://10.0.0.3:9000");
    let removed = watch.expect(|l| l.contains("\"remove\""), LINE_TIMEOUT);
    let removed: serde_json::Value = serde_json::from_str(&removed).unwrap();
    assert_eq!(removed["key"], "tcp://10.0.0.3:9000");
    watch.signal("INT");
    assert!(watch.wait_exit(LINE_TIMEOUT).expect("stops").success());
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["lookup", "orders"][..],
        &["lookup", "orders", "--connect", "nowhere"],
        &["status", "--connect", "tcp://127.0.0.1:1", "--wait", "soon"],
        &["node", "--publish", "two words=v"],
        &["node", "--bind", "udp://1.2.3.4:5"],
        &["frobnicate"],
    ] {
        let output = zgossip(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_config_file_sets_up_the_node_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zgossip.toml");
    std::fs::write(
        &file,
        r#"
name = "from-file"
bind = ["tcp://127.0.0.1:1"]

[server]
timeout = "2s"

[node]
ttl = "20s"

[[announce]]
key = "tcp://10.0.0.1:9000"
value = "orders"
"#,
    )
    .unwrap();
    // --bind replaces the file's list (port 1 would need root).
    let mut node = LinePeer::zgossip(&["--config", file.to_str().unwrap(), "--bind", TCP_ANY]);
    let port = node.port();
    let output = zgossip(&["status", "--connect", &tcp_endpoint(port)]);
    let text = stdout(&output);
    let first = text.lines().next().unwrap_or_default();
    let lease: f64 = first
        .strip_prefix("tcp://10.0.0.1:9000 orders ")
        .and_then(|l| l.strip_suffix('s'))
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("announced from the file, with a lease: {text}"));
    assert!(
        (15.0..=20.0).contains(&lease),
        "a 20s lease from [node] ttl: {text}"
    );
}

#[test]
fn a_bad_config_file_fails_before_starting_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    for (text, key) in [
        ("[server]\ntimout = \"1s\"\n", "timout"),
        ("[server]\ntimeout = \"soon\"\n", "timeout"),
        (
            "[[announce]]\nkey = \"a b\"\nvalue = \"v\"\n",
            "announce[0]",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let output = zgossip(&["node", "--config", file.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{text:?}");
        let error = stderr(&output);
        assert!(
            error.contains("bad.toml") && error.contains(key),
            "{text:?}: {error}"
        );
        assert_eq!(stdout(&output), "", "nothing started");
    }
    let output = zgossip(&["node", "--config", "/no/such/file.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/no/such/file.toml"));
}

#[test]
fn node_json_prints_replies_and_events_as_json_lines() {
    let mut node = LinePeer::zgossip(&["--json"]);
    node.send("PUBLISH k v");
    node.send("STATUS");
    node.send("FROB");
    let deliver: serde_json::Value =
        serde_json::from_str(&node.expect(|l| l.contains("deliver"), LINE_TIMEOUT)).unwrap();
    assert_eq!(
        (deliver["key"].as_str(), deliver["value"].as_str()),
        (Some("k"), Some("v"))
    );
    let status: serde_json::Value =
        serde_json::from_str(&node.expect(|l| l.contains("STATUS"), LINE_TIMEOUT)).unwrap();
    assert_eq!(status["args"], serde_json::json!(["1"]));
    let error: serde_json::Value =
        serde_json::from_str(&node.expect(|l| l.contains("error"), LINE_TIMEOUT)).unwrap();
    assert!(error["error"].as_str().unwrap().contains("FROB"));
}

#[test]
fn keygen_configures_a_curve_node_that_only_curve_clients_reach() {
    let output = zgossip(&["keygen"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let keys = stdout(&output);
    let public = keys
        .lines()
        .find_map(|l| l.strip_prefix("public-key = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a public-key line")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("curve.toml");
    std::fs::write(&config, format!("[curve]\n{keys}")).unwrap();
    let mut node = LinePeer::zgossip_named(
        "curve-registry",
        &[
            "--config",
            config.to_str().unwrap(),
            "--bind",
            TCP_ANY,
            "--publish",
            "tcp://10.0.0.1:9000=orders",
        ],
    );
    let endpoint = tcp_endpoint(node.port());

    let found = zgossip(&["lookup", "orders", "--curve-connect", &endpoint, &public]);
    assert!(found.status.success(), "{}", stderr(&found));
    assert_eq!(stdout(&found), "tcp://10.0.0.1:9000\n");

    let plain = zgossip(&["lookup", "orders", "--connect", &endpoint, "--wait", "1s"]);
    assert_eq!(plain.status.code(), Some(1), "{}", stderr(&plain));
    assert_eq!(stdout(&plain), "");

    let bad = zgossip(&["lookup", "orders", "--curve-connect", &endpoint, "nokey"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("bad CURVE key"), "{}", stderr(&bad));
}
