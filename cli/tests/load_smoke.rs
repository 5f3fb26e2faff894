//! `zgossip bench load` with tiny numbers, through the real binary (the node under test is its
//! own child process): it finishes in a few seconds and prints one summary line with every
//! figure, and nothing is lost. The full run is `scripts/load` (BENCHMARKS.md, "Load").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::process::Command;

#[test]
fn a_small_load_run_with_wire_clients_prints_its_figures_and_loses_nothing() {
    small_run(&[], "wire");
}

#[test]
fn a_small_load_run_with_node_clients_prints_its_figures_and_loses_nothing() {
    small_run(&["--node-clients"], "nodes");
}

fn small_run(extra: &[&str], clients_as: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_zgossip"))
        .args([
            "bench",
            "load",
            "--clients",
            "5",
            "--services",
            "5",
            "--seconds",
            "3",
            "--lookups-per-s",
            "5",
            // Leases refreshed every 0.5 s and a new value every 0.5 s, so both happen here.
            "--ttl",
            "1500ms",
            "--update-every",
            "500ms",
        ])
        .args(extra)
        .output()
        .expect("run zgossip bench load");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("load:   3s rss="), "progress: {stderr}");

    let line = stdout.trim();
    assert_eq!(line.lines().count(), 1, "one summary line: {stdout}");
    let fields: HashMap<&str, &str> = line
        .split_whitespace()
        .map(|field| field.split_once('=').expect("key=value"))
        .collect();
    let number = |key: &str| -> f64 {
        fields
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number in {line}"))
    };
    for zero in [
        "lost",
        "lost_fresh",
        "extra",
        "lookup_misses",
        "setup_short",
    ] {
        assert_eq!(number(zero), 0.0, "{zero} in {line}\n{stderr}");
    }
    assert_eq!(number("clients"), 5.0);
    assert_eq!(number("services"), 5.0);
    // 5 clients × a new value every 0.5 s for 3 s, each seen by the observer and timed.
    assert!(number("publishes") >= 20.0, "{line}");
    assert_eq!(number("delivered"), number("publishes"), "{line}");
    assert!(number("p50_ms") > 0.0 && number("p50_ms") <= number("p99_ms"));
    assert!(number("p99_ms") <= number("max_ms"));
    assert!(number("lookups") >= 5.0, "{line}");
    assert!(number("rss_warm_kb") > 0.0 && number("rss_max_kb") >= number("rss_warm_kb"));
    for key in [
        "rss_end_kb",
        "rss_growth_pct",
        "server_out_per_s",
        "setup_s",
    ] {
        number(key);
    }
    assert!(["flat", "growing"].contains(&fields["rss"]), "{line}");
    assert!(["pass", "fail"].contains(&fields["verdict"]), "{line}");
    assert_eq!(fields["clients_as"], clients_as, "{line}");
    number("hellos_again");
}
