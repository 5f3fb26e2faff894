//! The client subcommands and the config file, through the real binary: `lookup`, `status` and
//! `watch` against a node started here, their exit codes and JSON, and `node --config`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{LINE_TIMEOUT, LinePeer, TCP_ANY, tcp_endpoint};

use support::zgossip::run as zgossip;

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
        stderr(&output).contains("waiting up to 5s for"),
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
    let mut lookup = Command::new(env!("CARGO_BIN_EXE_zgossip"))
        .args(["lookup", "late", "--connect", &endpoint, "--wait", "30s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zgossip lookup");
    // Publish only once the lookup has synced, found nothing and says it waits.
    let mut said = Vec::new();
    for line in BufReader::new(lookup.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let waiting = line.contains("no late yet; waiting up to");
        said.push(line);
        if waiting {
            break;
        }
    }
    assert!(
        said.last().is_some_and(|l| l.contains("waiting up to 30s")),
        "the lookup never said it waits: {said:?}"
    );
    node.send("PUBLISH tcp://10.0.0.9:1 late");
    let mut found = String::new();
    lookup
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut found)
        .unwrap();
    let status = lookup.wait().unwrap();
    assert!(status.success(), "{status}: {said:?}");
    assert_eq!(found, "tcp://10.0.0.9:1\n");
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
    // Refreshed every third of the 30 s ttl, so more than 20 s is left but for a late refresh.
    let lease = status["tuples"][0]["lease_ms"].as_u64().unwrap();
    assert!(
        (15_000..=30_000).contains(&lease),
        "remaining lease {lease}"
    );
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
fn status_of_a_network_that_does_not_answer_exits_3_and_says_so() {
    let output = zgossip(&[
        "status",
        "--connect",
        "tcp://127.0.0.1:1",
        "--timeout",
        "300ms",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("tcp://127.0.0.1:1 did not answer within 300ms"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), "");
}

#[test]
fn lookup_tells_a_network_that_does_not_answer_from_a_missing_service() {
    let output = zgossip(&[
        "lookup",
        "orders",
        "--connect",
        "tcp://127.0.0.1:1",
        "--timeout",
        "300ms",
    ]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(
        said.contains("tcp://127.0.0.1:1 did not answer within 300ms"),
        "{said}"
    );
    assert!(!said.contains("no endpoint offers"), "{said}");
}

#[test]
fn lookup_wait_0_answers_from_what_the_network_holds_now() {
    let (_node, endpoint) = registry();
    let output = zgossip(&["lookup", "orders", "--connect", &endpoint, "--wait", "0"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "tcp://10.0.0.1:9000\ntcp://10.0.0.2:9000\n"
    );
    let output = zgossip(&["lookup", "nothing", "--connect", &endpoint, "--wait", "0"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no endpoint offers nothing"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn status_counts_one_tuple_in_the_singular() {
    let mut node = LinePeer::zgossip(&["--bind", TCP_ANY, "--publish", "k=v"]);
    let endpoint = tcp_endpoint(node.port());
    let output = zgossip(&["status", "--connect", &endpoint]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "k v -\n1 tuple\n");
}

#[test]
fn client_commands_refuse_inproc_endpoints_with_a_reason() {
    for args in [
        &["lookup", "orders", "--connect", "inproc://x"][..],
        &["watch", "--connect", "inproc://x"],
        &["status", "--connect", "inproc://x"],
    ] {
        let output = zgossip(args);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {said}");
        assert!(
            said.contains("inproc://x") && said.contains("process"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn durations_without_a_unit_are_refused_suggesting_one() {
    let (_node, endpoint) = registry();
    for (args, flag, suggestion) in [
        (&["node", "--ttl", "30"][..], "--ttl", "30s"),
        (&["node", "--timeout", "100"], "--timeout", "100ms"),
        (
            &["lookup", "orders", "--connect", &endpoint, "--wait", "5"],
            "--wait",
            "5s",
        ),
        (
            &["lookup", "orders", "--connect", &endpoint, "--timeout", "2"],
            "--timeout",
            "2s",
        ),
        (
            &["status", "--connect", &endpoint, "--timeout", "2"],
            "--timeout",
            "2s",
        ),
    ] {
        let output = zgossip(args);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {said}");
        assert!(
            said.contains(flag) && said.contains("needs a unit") && said.contains(suggestion),
            "{args:?}: {said}"
        );
        assert_eq!(stdout(&output), "", "{args:?}: nothing started");
    }
}

#[test]
fn a_bind_to_a_host_name_says_what_libzmq_wants_once() {
    let output = zgossip(&["node", "--bind", "tcp://localhost:*"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("IP address"), "{said}");
    assert!(said.contains("tcp://127.0.0.1:* or tcp://*:*"), "{said}");
    assert_eq!(said.matches("cannot bind").count(), 1, "said once: {said}");
}

#[test]
fn curve_connect_takes_a_server_key_that_starts_with_a_dash() {
    // About one key in 82 starts with '-'.
    let keys = (0..100_000)
        .map(|_| zgossip::CurveKeys::generate().unwrap())
        .find(|keys| keys.public.to_string().starts_with('-'))
        .expect("a public key starting with '-'");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("curve.toml");
    std::fs::write(
        &config,
        format!(
            "[curve]\npublic-key = \"{}\"\nsecret-key = \"{}\"\n",
            keys.public, keys.secret
        ),
    )
    .unwrap();
    let mut node = LinePeer::zgossip(&[
        "--config",
        config.to_str().unwrap(),
        "--bind",
        TCP_ANY,
        "--publish",
        "tcp://10.0.0.1:9000=orders",
    ]);
    let endpoint = tcp_endpoint(node.port());
    let public = keys.public.to_string();
    let found = zgossip(&["lookup", "orders", "--curve-connect", &endpoint, &public]);
    assert!(found.status.success(), "{}", stderr(&found));
    assert_eq!(stdout(&found), "tcp://10.0.0.1:9000\n");
    let mut client = LinePeer::zgossip(&["--curve-connect", &endpoint, &public]);
    client.wait_for_delivers(&[("tcp://10.0.0.1:9000", "orders")], LINE_TIMEOUT);
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
        &[
            "status",
            "--connect",
            "tcp://127.0.0.1:1",
            "--timeout",
            "soon",
        ],
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
    // Refreshed every third of it: never below two thirds of 20 s but for a late refresh, at
    // whatever moment after the node's start the status is taken.
    assert!(
        (10.0..=20.0).contains(&lease),
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
        ("[node]\nttl = 30\n", "ttl = 30"),
        ("[server]\ntimeout = \"100\"\n", "timeout"),
    ] {
        std::fs::write(&file, text).unwrap();
        let output = zgossip(&["node", "--config", file.to_str().unwrap()]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{text:?}: {}",
            stderr(&output)
        );
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
    assert_eq!(
        keys.lines().next(),
        Some("[curve]"),
        "a whole section: {keys}"
    );
    let public = keys
        .lines()
        .find_map(|l| l.strip_prefix("public-key = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a public-key line")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("curve.toml");
    std::fs::write(&config, &keys).unwrap();
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

    // A plain client never completes the handshake: the network did not answer it.
    let plain = zgossip(&[
        "lookup",
        "orders",
        "--connect",
        &endpoint,
        "--timeout",
        "1s",
    ]);
    assert_eq!(plain.status.code(), Some(3), "{}", stderr(&plain));
    assert_eq!(stdout(&plain), "");

    let bad = zgossip(&["lookup", "orders", "--curve-connect", &endpoint, "nokey"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("bad CURVE key"), "{}", stderr(&bad));
}

/// At the common default soft limit of 1,024 open files, `zgossip node` raises it to the hard
/// limit at start, and says so at -v.
#[test]
fn node_raises_the_open_file_limit_to_the_hard_limit() {
    let script = format!(
        "ulimit -Sn 1024 && ulimit -Hn 4096 && echo '$TERM' | exec {} node -v",
        env!("CARGO_BIN_EXE_zgossip")
    );
    let output = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("raised the open-file limit") && stderr.contains("after=4096"),
        "{stderr}"
    );
}

#[test]
fn seeds_that_cannot_be_reached_are_reported_dead_with_their_cause() {
    // A closed port, and a name that never resolves (RFC 6761 reserves `.invalid`).
    let refused = "tcp://127.0.0.1:1";
    let unknown = "tcp://nowhere.invalid:5670";
    let mut node = LinePeer::zgossip(&["--connect", refused, "--connect", unknown]);
    // The two failures come in either order.
    let mut told = std::collections::BTreeSet::new();
    while told.len() < 2 {
        let line = node.expect(
            |l| {
                [refused, unknown]
                    .iter()
                    .any(|seed| l.starts_with(&format!("PEER {seed} dead ")))
            },
            LINE_TIMEOUT,
        );
        assert!(line.contains("unknown host"), "{line}");
        told.insert(line.split(' ').nth(1).unwrap_or_default().to_owned());
    }
    // A client command with only an unknown host tells it from a missing service.
    let output = zgossip(&[
        "lookup",
        "orders",
        "--connect",
        unknown,
        "--timeout",
        "300ms",
    ]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(
        said.contains(&format!("{unknown} did not answer")),
        "{said}"
    );
}

#[test]
fn members_lists_every_node_of_the_cluster_and_a_stopped_one_as_left() {
    let mut first = LinePeer::zgossip_named(
        "first",
        &["--bind", TCP_ANY, "--name", "first", "--tag", "zone=eu1"],
    );
    let seed = tcp_endpoint(first.port());
    let mut others: Vec<LinePeer> = (1..3)
        .map(|n| {
            let name = format!("member-{n}");
            LinePeer::zgossip_named(&name, &["--connect", &seed, "--name", &name])
        })
        .collect();
    // The first node hears of both from their links; each of them hears of the other through
    // the first.
    let listed = |output: &Output| -> Vec<(String, String)> {
        stdout(output)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let cells: Vec<&str> = line.split_whitespace().collect();
                Some(((*cells.get(1)?).to_owned(), (*cells.get(3)?).to_owned()))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted =
        |state: &str| ["first", "member-1", "member-2"].map(|n| (n.to_owned(), state.to_owned()));
    let output = loop {
        let output = zgossip(&["members", "--connect", &seed]);
        assert!(output.status.success(), "{}", stderr(&output));
        let mut got = listed(&output);
        got.sort();
        if got == wanted("alive") {
            break output;
        }
        assert!(
            Instant::now() < deadline,
            "members never listed all three: {}",
            stdout(&output)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = stdout(&output);
    assert!(text.starts_with("Node"), "{text}");
    assert!(text.contains("zone=eu1"), "{text}");
    // A graceful stop shows as left at once.
    if let Some(mut stopped) = others.pop() {
        stopped.send("$TERM");
        let _ = stopped.next_line(LINE_TIMEOUT);
    }
    loop {
        let output = zgossip(&["members", "--connect", &seed, "--json"]);
        let text = stdout(&output);
        if text.contains(r#""name":"member-2","state":"left""#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member-2 never listed as left: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
