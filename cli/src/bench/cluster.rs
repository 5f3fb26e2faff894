//! `zgossip bench cluster`: the membership layer at a size no test runs, on the engine harness
//! (virtual time, no sockets, every message through the codec). N members join one at a time,
//! each told only the first; then the first and a fraction of the rest die at once, without
//! goodbye. Times are virtual (what a real cluster would see with 2 ms links), memory is this
//! process's, divided by N; idle traffic counts frames received and their ZGP bytes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use zgossip::engine::harness::Net;
use zgossip::engine::{ClusterConfig, EngineConfig};
use zgossip::rng::XorShift;
use zgossip::wire::MemberState;

use super::{Process, Report};

/// `bench cluster`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Members.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// The fraction of the members (the first among them) that die at once after the join.
    #[arg(long, default_value_t = 0.5)]
    pub fail: f64,
    /// Virtual milliseconds between two joins.
    #[arg(long, default_value_t = 20)]
    pub gap_ms: u64,
    /// Seeds the simulation: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// After the failure, print every 100 ms how many dead members some survivor still
    /// holds alive, and how many no survivor has found yet (costs a look at every list).
    #[arg(long)]
    pub timeline: bool,
}

fn config(node: usize, seed: u64, clock: Instant) -> EngineConfig {
    let mut cluster = ClusterConfig {
        name: format!("n{node}"),
        endpoints: vec![format!("sim://{node}")],
        seed,
        ..ClusterConfig::default()
    };
    cluster.joined_ms = node as u64;
    EngineConfig {
        node_id: node as u64 + 1,
        server_timeout: Duration::from_secs(1),
        version_clock: Some((clock, 1)),
        cluster: Some(Box::new(cluster)),
        ..EngineConfig::default()
    }
}

/// Whether each of `nodes` lists exactly `ids` as alive (sorted): the counts first, which cost
/// nothing, so the lists are compared only once every count is right.
fn lists_exact(net: &Net, nodes: &[usize], ids: &[u64]) -> bool {
    nodes
        .iter()
        .all(|&v| net.engine(v).alive_count() == ids.len())
        && nodes.iter().all(|&v| net.alive_ids(v) == ids)
}

/// One line of `--timeline`: the dead members some survivor holds alive, those every survivor
/// does (nobody found them yet), and the pairs of the two.
fn print_timeline(net: &Net, survivors: &[usize], dead: &[usize], at: Duration) {
    let dead: HashSet<u64> = dead.iter().map(|&v| v as u64 + 1).collect();
    let mut holders: HashMap<u64, usize> = HashMap::new();
    for &v in survivors {
        for (id, state) in net.engine(v).member_states() {
            if state == MemberState::Alive && dead.contains(&id) {
                *holders.entry(id).or_default() += 1;
            }
        }
    }
    let pairs: usize = holders.values().sum();
    let unfound = holders.values().filter(|&&c| c == survivors.len()).count();
    eprintln!(
        "t={:.1}s dead held alive somewhere={} found by nobody={unfound} pairs={pairs}",
        at.as_secs_f64(),
        holders.len()
    );
}

/// Runs the benchmark.
pub fn cluster(args: &ClusterArgs) -> Result<Report> {
    let n = args.nodes;
    if n < 2 || !(0.0..1.0).contains(&args.fail) {
        bail!("--nodes must be at least 2 and --fail in [0, 1)");
    }
    let wall = Instant::now();
    let rss_before = Process::Current.rss_kb()?;
    let mut net = Net::new(args.seed, Duration::from_millis(2));
    net.skip_trace();
    net.skip_events();
    let clock = net.now();
    net.add(config(0, args.seed, clock));
    for node in 1..n {
        net.add(config(node, args.seed, clock));
        net.connect(node, 0);
        net.run_for(Duration::from_millis(args.gap_ms));
        if node % 1000 == 0 {
            eprintln!("{node} joined ({:.0?} wall)", wall.elapsed());
        }
    }
    let joined = net.elapsed();
    let all: Vec<usize> = (0..n).collect();
    let everyone: Vec<u64> = (1..=n as u64).collect();
    // Looked at every 100 ms of virtual time: a look lists every member at every node.
    let step = Duration::from_millis(100);
    while !lists_exact(&net, &all, &everyone) {
        if net.elapsed() - joined > Duration::from_secs(600) {
            bail!("member lists incomplete 600 s after the last join");
        }
        net.run_for(step);
    }
    let converged = net.elapsed() - joined;
    eprintln!(
        "lists complete {converged:.1?} after the last join ({:.0?} wall)",
        wall.elapsed()
    );
    // Idle: a shuffle interval after a settling minute, frames and memory. The whole interval,
    // so every node's shuffle and view confirmations are counted once (a 10 s window missed
    // them all: the joins' 20 s spread their rounds over 40-60 s after the last).
    net.run_for(Duration::from_secs(60));
    let (frames, bytes) = (net.frames(), net.bytes());
    let idle = ClusterConfig::default().shuffle_interval;
    net.run_for(idle);
    let idle_frames = (net.frames() - frames) as f64 / n as f64 / idle.as_secs_f64();
    let idle_bytes = (net.bytes() - bytes) as f64 / n as f64 / idle.as_secs_f64();
    let idle_kb = Process::Current.rss_kb()?.saturating_sub(rss_before) as f64 / n as f64;
    let sizes: Vec<usize> = all.iter().map(|&v| net.engine(v).views().0.len()).collect();
    let (view_min, view_max) = (
        sizes.iter().copied().min().unwrap_or(0),
        sizes.iter().copied().max().unwrap_or(0),
    );
    // The first member and a seeded fraction of the rest die at once.
    let mut rng = XorShift::new(args.seed ^ 0x5eed);
    let count = ((n - 1) as f64 * args.fail) as usize;
    let mut dead: Vec<usize> = rng
        .distinct_below(n - 1, count)
        .into_iter()
        .map(|i| i + 1)
        .collect();
    dead.push(0);
    for &node in &dead {
        net.kill(node);
    }
    let survivors: Vec<usize> = all.iter().copied().filter(|v| !dead.contains(v)).collect();
    let alive: Vec<u64> = survivors.iter().map(|&v| v as u64 + 1).collect();
    let failed_at = net.elapsed();
    let mut reconnected = None;
    let mut exact = None;
    while net.elapsed() - failed_at < Duration::from_secs(120) && exact.is_none() {
        net.run_for(step);
        if reconnected.is_none() && net.overlay_connected(&survivors) {
            reconnected = Some(net.elapsed() - failed_at);
        }
        if lists_exact(&net, &survivors, &alive) {
            exact = Some(net.elapsed() - failed_at);
        }
        if args.timeline {
            print_timeline(&net, &survivors, &dead, net.elapsed() - failed_at);
        }
    }
    let connected_10s = reconnected.is_some_and(|at| at <= Duration::from_secs(10));
    let Some(&publisher) = survivors.first() else {
        bail!("nobody survived");
    };
    net.publish(publisher, "after-failure", "svc", None);
    net.run_for(Duration::from_secs(10));
    let holding = (survivors.iter())
        .filter(|&&v| net.engine(v).store().get("after-failure").is_some())
        .count();
    let secs = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64());
    let mut report = Report::default();
    report
        .add("nodes", n)
        .add("converge_s", format!("{:.2}", converged.as_secs_f64()))
        .add("idle_frames_per_node_s", format!("{idle_frames:.2}"))
        .add("idle_bytes_per_node_s", format!("{idle_bytes:.0}"))
        .add("idle_kb_per_node", format!("{idle_kb:.1}"))
        .add("active_view_min", view_min)
        .add("active_view_max", view_max)
        .add("failed", dead.len())
        .add("reconnect_s", format!("{:.1}", secs(reconnected)))
        .add("connected_within_10s", u8::from(connected_10s))
        .add("exact_alive_s", format!("{:.1}", secs(exact)))
        .add(
            "delivery_after_failure",
            format!("{:.4}", holding as f64 / survivors.len() as f64),
        )
        .add("wall_s", format!("{:.1}", wall.elapsed().as_secs_f64()));
    Ok(report)
}
