//! The cluster as real processes: five `zgossip node`s over tcp on loopback, node-1 to node-4
//! each given only node-0's endpoint, form one cluster, and stay one when node-0 is killed.
//!
//! This is the acceptance test of active views (every node opens links of its own to other
//! members, HyParView-style). Without them the survivors' only links went to node-0, so after
//! its SIGKILL nothing published at one of them would reach the others.
//!
//! What it checks, through the pipe's events and `zgossip members`, never by timing:
//! 1. node-0 starts, then node-1 to node-4 with `--connect` node-0 only; each publishes one
//!    service of its own on its pipe.
//! 2. `zgossip members` at every node lists all five as alive.
//! 3. every node delivers all five services and holds exactly those.
//! 4. node-0 is SIGKILLed: a tuple published at node-1 afterwards reaches node-2, node-3 and
//!    node-4; `zgossip members` at node-1 to node-4 lists node-0 as dead and the four others as
//!    alive; node-0's service is dropped at each (`EXPIRE key origin-died`).
//! 5. node-4 is SIGTERMed (a graceful stop): node-1 to node-3 list it as left.
//!
//! The limits are ceilings a working cluster never comes near: every wait ends as soon as what
//! it waits for is there. Every child is stopped when the test ends, failed or not (a
//! [`LinePeer`] sends `$TERM` and then kills it when dropped).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::{LINE_TIMEOUT, LinePeer, TCP_ANY, tcp_endpoint};

/// How many nodes the cluster has.
const NODES: usize = 5;

/// How long every node may take to list every member as alive once all have started.
const JOIN_LIMIT: Duration = Duration::from_secs(30);

/// How long a tuple may take to reach every node.
const SPREAD_LIMIT: Duration = Duration::from_secs(30);

/// How long, after node-0's SIGKILL, the survivors may take to list it as dead (suspicion,
/// then an unrefuted 4 s: seconds in practice) and to drop its service (a second later).
const DEATH_LIMIT: Duration = Duration::from_secs(60);

/// How long, after node-4's SIGTERM, the others may take to list it as left (at once in
/// practice).
const LEAVE_LIMIT: Duration = Duration::from_secs(10);

/// How often `zgossip members` is asked again while the answer is not yet the one wanted.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Why a survivor may miss what is asked of it after node-0's death: said with every such
/// failure.
const NEEDS_ACTIVE_VIEWS: &str = "needs active views: node-1 to node-4 were each given only \
node-0's endpoint, so once node-0 is gone they reach one another only over links they opened \
themselves";

/// The tuple node-1 publishes once node-0 is dead.
const LATE_KEY: &str = "tcp://127.0.0.1:9100";
const LATE_SERVICE: &str = "svc/after-kill";

/// One `zgossip node` of the cluster.
struct ClusterNode {
    /// `node-N`: its `--name`, so its name in every member list, and its name in failures.
    name: String,
    /// Where it listens (and so what it advertises): what `zgossip members` dials.
    endpoint: String,
    /// The tuple it publishes, `endpoint=service` as the pipe's `PUBLISH key value` has it.
    key: String,
    service: String,
    peer: LinePeer,
}

impl ClusterNode {
    /// Starts `node-{index}` bound to a free loopback port, dialling `seed` if given, and
    /// publishes its service on its pipe.
    fn start(index: usize, seed: Option<&str>) -> ClusterNode {
        let name = format!("node-{index}");
        let mut args = vec!["--bind", TCP_ANY, "--name", &name];
        if let Some(seed) = seed {
            args.extend(["--connect", seed]);
        }
        let mut peer = LinePeer::zgossip_named(&name, &args);
        let endpoint = tcp_endpoint(peer.port());
        // The endpoints are made up (no one dials a service here); they only need to differ.
        let key = format!("tcp://127.0.0.1:{}", 9000 + index);
        let service = format!("svc/{name}");
        peer.send(&format!("PUBLISH {key} {service}"));
        ClusterNode {
            name,
            endpoint,
            key,
            service,
            peer,
        }
    }

    /// The pipe line that says this node's service arrived.
    fn deliver_line(&self) -> String {
        format!("DELIVER {} {}", self.key, self.service)
    }
}

/// One run of `zgossip members --connect EP`.
struct Listing {
    /// `(name, state)` for each member listed, sorted.
    rows: Vec<(String, String)>,
    /// What to show in a failure: the command and its table, or its exit status and stderr.
    shown: String,
}

/// Asks `node` for the members it knows, with `zgossip members` (an observer, not a member).
fn members(node: &ClusterNode) -> Listing {
    let output = support::zgossip::run(&["members", "--connect", &node.endpoint]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let command = format!(
        "zgossip members --connect {} (at {})",
        node.endpoint, node.name
    );
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Listing {
            rows: Vec::new(),
            shown: format!("`{command}` failed ({}):\n{stdout}{stderr}", output.status),
        };
    }
    // Columns: Node, Name, Address, Status, Incarnation, Tags; no cell holds a space.
    let mut rows: Vec<(String, String)> = stdout
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            Some(((*cells.get(1)?).to_owned(), (*cells.get(3)?).to_owned()))
        })
        .collect();
    rows.sort();
    Listing {
        rows,
        shown: format!("`{command}`:\n{stdout}"),
    }
}

/// The member list wanted: every node in `nodes` in the state `state_of` gives its name, sorted.
fn wanted_members(
    nodes: &[ClusterNode],
    state_of: impl Fn(&str) -> &'static str,
) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.name.clone(), state_of(&n.name).to_owned()))
        .collect();
    rows.sort();
    rows
}

/// `node-0 dead, node-1 alive, ...`, for failure messages.
fn describe(rows: &[(String, String)]) -> String {
    let words: Vec<String> = rows.iter().map(|(n, s)| format!("{n} {s}")).collect();
    words.join(", ")
}

/// Asks `node` with `zgossip members` until it lists exactly `wanted`.
///
/// # Panics
/// When it does not by `since + limit`, saying what was wanted, `why`, and the last listing.
#[track_caller]
fn expect_members(
    node: &ClusterNode,
    wanted: &[(String, String)],
    since: Instant,
    limit: Duration,
    why: &str,
) {
    let deadline = since + limit;
    loop {
        let listing = members(node);
        if listing.rows == wanted {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{}: `zgossip members` never listed exactly [{}] within {limit:?} ({why}); \
                 it listed [{}]. The last run, {}",
                node.name,
                describe(wanted),
                describe(&listing.rows),
                listing.shown
            );
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Whether `peer` has printed `line`, reading its lines until it does or `deadline` passes
/// (lines read before count too).
fn has_printed(peer: &mut LinePeer, line: &str, deadline: Instant) -> bool {
    if peer.history().iter().any(|l| l == line) {
        return true;
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match peer.next_line(left) {
            Some(read) if read == line => return true,
            Some(_) => {}
            // Its stdout closed: no more lines will come.
            None => return false,
        }
    }
}

/// Reads `node`'s pipe until it prints `line`.
///
/// # Panics
/// When it does not by `since + limit`, saying what was wanted and `why`, with the node's
/// recent lines and stderr and what `zgossip members` says at it.
#[track_caller]
fn expect_line(node: &mut ClusterNode, line: &str, since: Instant, limit: Duration, why: &str) {
    if has_printed(&mut node.peer, line, since + limit) {
        return;
    }
    let listing = members(node);
    let report = node.peer.report();
    panic!(
        "{}: no `{line}` on its pipe within {limit:?} ({why})\n{report}\nThe last run, {}",
        node.name, listing.shown
    );
}

#[test]
fn five_nodes_told_only_the_first_ones_endpoint_stay_one_cluster_when_it_is_killed() {
    // 1. node-0, then node-1 to node-4, each given only node-0's endpoint.
    let first = ClusterNode::start(0, None);
    let seed = first.endpoint.clone();
    let mut nodes = vec![first];
    nodes.extend((1..NODES).map(|index| ClusterNode::start(index, Some(&seed))));

    // 2. Every node lists all five as alive.
    let started = Instant::now();
    let all_alive = wanted_members(&nodes, |_| "alive");
    for node in &nodes {
        expect_members(
            node,
            &all_alive,
            started,
            JOIN_LIMIT,
            "all five started, node-1 to node-4 dialling node-0",
        );
    }

    // 3. Every node holds all five services: each delivers every one (its own included), and
    //    holds nothing else.
    let services: Vec<String> = nodes.iter().map(ClusterNode::deliver_line).collect();
    for node in &mut nodes {
        for service in &services {
            expect_line(
                node,
                service,
                started,
                SPREAD_LIMIT,
                "every node published its service once it started",
            );
        }
        node.peer.wait_status(NODES, LINE_TIMEOUT);
    }

    // 4. node-0 dies without a word.
    nodes[0].peer.signal("KILL");
    let killed = Instant::now();
    assert!(
        nodes[0].peer.wait_exit(LINE_TIMEOUT).is_some(),
        "node-0 still running {LINE_TIMEOUT:?} after its SIGKILL"
    );

    // A tuple published at node-1 afterwards reaches every survivor.
    let late = format!("DELIVER {LATE_KEY} {LATE_SERVICE}");
    nodes[1]
        .peer
        .send(&format!("PUBLISH {LATE_KEY} {LATE_SERVICE}"));
    let published = Instant::now();
    let why = format!("published at node-1 after node-0's SIGKILL; {NEEDS_ACTIVE_VIEWS}");
    for node in &mut nodes[1..] {
        expect_line(node, &late, published, SPREAD_LIMIT, &why);
    }

    // Every survivor lists node-0 as dead, and the other survivors as alive.
    let node_0_dead = wanted_members(&nodes, |name| match name {
        "node-0" => "dead",
        _ => "alive",
    });
    let why = format!("node-0 was SIGKILLed; {NEEDS_ACTIVE_VIEWS}");
    for node in &nodes[1..] {
        expect_members(node, &node_0_dead, killed, DEATH_LIMIT, &why);
    }

    // Every survivor drops node-0's service, dead with its origin.
    let expired = format!("EXPIRE {} origin-died", nodes[0].key);
    let why = "node-0 was SIGKILLed and is listed as dead";
    for node in &mut nodes[1..] {
        expect_line(node, &expired, killed, DEATH_LIMIT, why);
    }

    // 5. node-4 stops gracefully: the others list it as left.
    nodes[4].peer.signal("TERM");
    let stopped = Instant::now();
    assert!(
        nodes[4].peer.wait_exit(LINE_TIMEOUT).is_some(),
        "node-4 still running {LINE_TIMEOUT:?} after its SIGTERM"
    );
    let node_4_left = wanted_members(&nodes, |name| match name {
        "node-0" => "dead",
        "node-4" => "left",
        _ => "alive",
    });
    let why = format!("node-4 was SIGTERMed (a graceful stop); {NEEDS_ACTIVE_VIEWS}");
    for node in &nodes[1..4] {
        expect_members(node, &node_4_left, stopped, LEAVE_LIMIT, &why);
    }
}
