#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! CURVE interop: our `zgossip node` (configured by a `[curve]` file and `--curve-connect`) and a
//! foreign CURVE peer exchange tuples in both directions, and our allow list refuses the foreign
//! keys it does not name.
//!
//! The foreign peer is `tests/pyzmq/zgp_curve_peer.py` (pyzmq on libzmq 4.3.4, ZGP spelled out by
//! hand), not CZMQ: zgossip's CURVE commands are CZMQ draft API and Debian's libczmq 4.2.1 is built
//! without it. Its library holds none of the strings `SET PUBLICKEY`, `SET SECRETKEY` or
//! `ZAP DOMAIN`, and, seen with tests/czmq/zgossip_peer.c, `CONNECT endpoint key` connects in
//! plain text, ignoring the key. Needs Debian's python3-zmq (`scripts/setup` installs it); the
//! tests run `/usr/bin/python3`, which is where Debian's pyzmq is, and skip without it unless
//! `ZGOSSIP_REQUIRE_ALL=1`.

mod support;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::{LINE_TIMEOUT, LinePeer, PYTHON, TCP_ANY, tcp_endpoint};
use tempfile::TempDir;
use zgossip::CurveKeys;

const PEER: &str = "../tests/pyzmq/zgp_curve_peer.py";

fn keys() -> CurveKeys {
    CurveKeys::generate().unwrap()
}

/// The pyzmq peer, presenting `keys` (and a CURVE server when it binds).
fn python_peer(name: &str, keys: &CurveKeys) -> LinePeer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(PEER);
    let (public, secret) = (keys.public.to_string(), keys.secret.to_string());
    LinePeer::spawn(
        name,
        Path::new(PYTHON),
        &[
            script.to_str().unwrap(),
            "--public-key",
            &public,
            "--secret-key",
            &secret,
        ],
    )
}

/// A config file giving our node `keys` and admitting `allow`; keep the directory alive.
fn curve_config(keys: &CurveKeys, allow: &[&CurveKeys]) -> (TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zgossip.toml");
    let allow: Vec<String> = allow
        .iter()
        .map(|k| format!("{:?}", k.public.to_string()))
        .collect();
    let text = format!(
        "[curve]\npublic-key = {:?}\nsecret-key = {:?}\nallow = [{}]\n",
        keys.public.to_string(),
        keys.secret.to_string(),
        allow.join(", ")
    );
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

/// Our node's count of refused CURVE clients, from `STATUS detail`.
fn curve_refused(ours: &mut LinePeer) -> u64 {
    ours.send("STATUS detail");
    let detail = ours.expect(|l| l.starts_with("STATUS tuples="), LINE_TIMEOUT);
    detail
        .split(' ')
        .find_map(|pair| pair.strip_prefix("curve_refused="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no curve_refused in {detail:?}"))
}

/// Publishes on `peer` and waits until it has delivered the tuple to itself.
fn publish(peer: &mut LinePeer, (key, value): (&str, &str)) {
    peer.send(&format!("PUBLISH {key} {value}"));
    peer.wait_for_delivers(&[(key, value)], LINE_TIMEOUT);
}

#[test]
fn python_curve_client_and_our_curve_server_exchange_tuples_both_ways() {
    if support::skip_without_pyzmq() {
        return;
    }
    let ours_before = ("tcp://10.7.0.1:1", "ours-before");
    let theirs = ("tcp://10.7.0.2:2", "theirs");
    let ours_after = ("tcp://10.7.0.3:3", "ours-after");
    let (our_keys, their_keys) = (keys(), keys());
    let (_dir, config) = curve_config(&our_keys, &[]);
    let mut ours = LinePeer::zgossip_named("ours", &["--config", &config, "--bind", TCP_ANY]);
    let endpoint = tcp_endpoint(ours.port());
    publish(&mut ours, ours_before);

    let mut python = python_peer("python-client", &their_keys);
    python.send(&format!("CONNECT {endpoint} {}", our_keys.public));
    publish(&mut python, theirs);
    python.wait_for_delivers(&[ours_before], LINE_TIMEOUT);
    ours.wait_for_delivers(&[theirs], LINE_TIMEOUT);
    publish(&mut ours, ours_after);
    python.wait_for_delivers(&[ours_after], LINE_TIMEOUT);
    python.wait_status(3, LINE_TIMEOUT);
    ours.wait_status(3, LINE_TIMEOUT);
}

#[test]
fn our_curve_client_and_a_python_curve_server_exchange_tuples_both_ways() {
    if support::skip_without_pyzmq() {
        return;
    }
    let theirs_before = ("tcp://10.8.0.1:1", "theirs-before");
    let ours = ("tcp://10.8.0.2:2", "ours");
    let theirs_after = ("tcp://10.8.0.3:3", "theirs-after");
    let their_keys = keys();
    let mut python = python_peer("python-server", &their_keys);
    python.send(&format!("BIND {TCP_ANY}"));
    let endpoint = tcp_endpoint(python.port());
    publish(&mut python, theirs_before);

    // No keys of its own: a throwaway pair, which a server without an allow list accepts.
    let key = their_keys.public.to_string();
    let mut ours_node = LinePeer::zgossip_named("ours", &["--curve-connect", &endpoint, &key]);
    publish(&mut ours_node, ours);
    ours_node.wait_for_delivers(&[theirs_before], LINE_TIMEOUT);
    python.wait_for_delivers(&[ours], LINE_TIMEOUT);
    publish(&mut python, theirs_after);
    ours_node.wait_for_delivers(&[theirs_after], LINE_TIMEOUT);
    ours_node.wait_status(3, LINE_TIMEOUT);
    python.wait_status(3, LINE_TIMEOUT);
}

#[test]
fn our_allow_list_admits_a_listed_python_client_and_refuses_an_unlisted_one() {
    if support::skip_without_pyzmq() {
        return;
    }
    let (our_keys, listed, unlisted) = (keys(), keys(), keys());
    let (_dir, config) = curve_config(&our_keys, &[&listed]);
    let mut ours = LinePeer::zgossip_named("ours", &["--config", &config, "--bind", TCP_ANY]);
    let endpoint = tcp_endpoint(ours.port());
    let connect = format!("CONNECT {endpoint} {}", our_keys.public);

    let mut admitted = python_peer("python-listed", &listed);
    admitted.send(&connect);
    publish(&mut admitted, ("tcp://10.9.0.1:1", "listed"));
    ours.wait_for_delivers(&[("tcp://10.9.0.1:1", "listed")], LINE_TIMEOUT);

    let mut refused = python_peer("python-unlisted", &unlisted);
    refused.send(&connect);
    publish(&mut refused, ("tcp://10.9.0.2:2", "unlisted"));
    // Refused at the handshake, before any message: once counted, nothing of the unlisted
    // peer's has crossed, and every redial is refused alike.
    let deadline = Instant::now() + LINE_TIMEOUT;
    while curve_refused(&mut ours) == 0 {
        assert!(Instant::now() < deadline, "{:?}", ours.history());
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ours.status(LINE_TIMEOUT), 1, "{:?}", ours.history());
    assert_eq!(refused.status(LINE_TIMEOUT), 1, "{:?}", refused.history());
}
