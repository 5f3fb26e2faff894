#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! The attacks of issue 11 at their CI sizes: `scripts/attack --quick --strict` against this
//! build's `zgossip node`, one scenario per test, each with an innocent client measuring PONG
//! latency, an innocent publisher whose leased tuples must stay, the target's RSS and its stop
//! time. RELIABILITY.md has the full-size figures; the script's docstring says how it measures.
//!
//! All but one failed on the code the suite was written against (commit a028f2f) and pass
//! since the issue 11 fixes; the endless multipart message is libzmq's buffering, which has no
//! mitigation here (README, Security), so it stays ignored. The view flood (scenario 7: a hailed
//! peer sending the cluster layer's JOIN, SHUFFLE, MEMBERS and NEIGHBOR) came with issue 14's
//! views; it failed on b4c9de9 (unbounded dials, a contact answering every JOIN with the whole
//! list, 403 ms PONGs while newcomers each got it encoded anew). The scenarios share the
//! machine's cores, so they run one at a time.
//! Needs Debian's python3-zmq at /usr/bin/python3 (`scripts/setup` installs it); without it
//! each test says so and passes, unless `ZGOSSIP_REQUIRE_ALL=1`.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use support::PYTHON;

const SCRIPT: &str = "../scripts/attack";

/// One scenario at a time: each measures latency and memory that another would disturb.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs one scenario at its quick size and fails with every verdict it failed.
fn attack(scenario: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if support::skip_without_pyzmq() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
    let output = Command::new(PYTHON)
        .arg(&script)
        .args(["--quick", "--strict", "--json", "--bin"])
        .arg(env!("CARGO_BIN_EXE_zgossip"))
        .arg(scenario)
        .output()
        .expect("run scripts/attack");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line per scenario"))
        .collect();
    assert_eq!(
        results.len(),
        1,
        "one result for {scenario}:\n{stdout}\n{stderr}"
    );
    let result = &results[0];
    assert!(
        result.get("harness_error").is_none(),
        "the harness failed: {}\n{stderr}",
        result["harness_error"]
    );
    let failed: Vec<String> = result["verdicts"]
        .as_object()
        .expect("verdicts")
        .iter()
        .filter(|(_, v)| v["ok"] != true)
        .map(|(name, v)| format!("{name}: {}", v["text"]))
        .collect();
    assert!(
        failed.is_empty() && output.status.success(),
        "scenario {scenario} failed:\n  {}\n{stderr}",
        failed.join("\n  ")
    );
}

#[test]
fn a_reading_client_at_five_hellos_a_second_leaves_the_innocents_alone() {
    attack("resync-ratio");
}

#[test]
fn clients_that_say_hello_and_never_read_stay_within_the_memory_budget() {
    attack("resync-idle");
}

#[test]
fn a_client_repeating_hello_without_reading_stays_within_the_memory_budget() {
    attack("resync-repeat");
}

#[test]
fn a_client_saying_hello_as_fast_as_it_can_does_not_starve_the_innocents() {
    attack("resync-flood");
}

#[test]
fn a_node_killed_and_restarted_keeps_its_leased_service_at_every_other_node() {
    attack("restart");
}

#[test]
fn a_poisoned_version_does_not_cut_the_owner_off() {
    attack("poison");
}

#[test]
fn a_half_open_connection_flood_leaves_room_for_a_new_client() {
    attack("fd-flood");
}

#[test]
fn malformed_frames_do_not_flood_the_log() {
    attack("log-flood");
}

#[test]
fn a_peer_flooding_view_messages_leaves_the_innocents_alone() {
    attack("view-flood");
}

#[test]
#[ignore = "fails until issue 11 item 9 gets a mitigation (the issue allows documenting it instead)"]
fn an_endless_multipart_message_stays_within_the_memory_budget() {
    attack("multipart-empty");
}
