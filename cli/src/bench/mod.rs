//! `zgossip bench`: two workloads that run many nodes in this process and time how fast tuples
//! spread, so the numbers can be set beside CZMQ's (`scripts/bench/czmq_bench.c` runs the same
//! workloads on libczmq's zgossip; `scripts/bench-vs-czmq` runs both), and a load test of one
//! node under many leased clients and lookups (`load`, in [`load`]).
//!
//! - `chain`: N nodes, node i-1 CONNECTs to node i; T tuples are published at node 0; the time
//!   until the last node holds all T.
//! - `mesh`: N nodes, each dials D random earlier nodes (a seeded xorshift, so the topology is
//!   the same every run); S services are announced (one per node by default); the time until
//!   every node holds all S, the PUBLISH messages sent per node, and the memory each idle node
//!   costs.
//! - `cluster`: the membership layer at scale on the engine harness (see [`cluster`]).
//!
//! Each run prints exactly one line on stdout, `key=value` fields separated by spaces
//! (all numbers for `chain` and `mesh`); progress goes to
//! stderr. Waiting is done by polling STATUS every millisecond or so: a node answers between two
//! messages, so the measurement is at most a poll interval late and costs the nodes next to
//! nothing.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use tokio::task::JoinSet;

use zgossip::rng::XorShift;
use zgossip::{Config, Node};

pub mod cluster;
pub mod load;

/// How often the node being waited on is asked for its STATUS.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// After the links are up, how long nodes are left alone before memory is measured, so the
/// first PINGs and PONGs have been exchanged and every lazily made buffer exists.
const SETTLE: Duration = Duration::from_millis(300);
/// Concurrent publishers at node 0 in `chain`: the handle's `publish` waits for the node's
/// answer, so a few in flight keep the node busy rather than the round trips.
const CHAIN_PUBLISHERS: usize = 8;
/// The value every benchmark tuple carries.
const SERVICE: &str = "svc";

/// Distinguishes the inproc names and ipc paths of benchmarks run in one process.
static RUN: AtomicU64 = AtomicU64::new(0);

/// The benchmarks.
#[derive(Debug, Clone, Subcommand)]
pub enum Bench {
    /// N nodes in a line; T tuples published at the first; time until the last holds all T.
    Chain(ChainArgs),
    /// N nodes, each dialing D random earlier ones; S services; time until all hold all S.
    Mesh(MeshArgs),
    /// One node under test; C tcp clients each publish and refresh S leased services while
    /// lookups run; latency through one hop, lookup misses, lost tuples, the node's RSS.
    Load(load::LoadArgs),
    /// N members join one at a time through the first (engine harness, virtual time); then the
    /// first and a fraction of the rest die at once: convergence, idle cost, time to reconnect.
    Cluster(cluster::ClusterArgs),
}

/// Which transport the nodes use to reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// `tcp://127.0.0.1:*`, over libzmq.
    Tcp,
    /// `ipc://` sockets in a temporary directory, over libzmq.
    Ipc,
    /// `inproc://`, this project's in-process transport.
    Inproc,
}

/// `zgossip bench chain`.
#[derive(Debug, Clone, Args)]
pub struct ChainArgs {
    /// Nodes in the chain (at least 2).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Tuples published at the first node.
    #[arg(long, default_value_t = 10_000)]
    pub tuples: usize,
    /// How the nodes are linked.
    #[arg(long, value_enum, default_value_t = Transport::Inproc)]
    pub transport: Transport,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Whether the nodes are cluster members (`member`) or only spread tuples (`off`).
    #[arg(long, value_enum, default_value_t = Cluster::Member)]
    pub cluster: Cluster,
}

/// The nodes' part in the cluster, for a benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cluster {
    /// Members (the default of a node).
    Member,
    /// Tuples only: what the benchmarks measured before the cluster layer.
    Off,
}

impl Cluster {
    fn config(self) -> Config {
        let mut config = Config::default();
        if self == Cluster::Off {
            config.cluster = zgossip::Membership::Off;
        }
        config
    }
}

/// `zgossip bench mesh`.
#[derive(Debug, Clone, Args)]
pub struct MeshArgs {
    /// Nodes in the mesh.
    #[arg(long, default_value_t = 300)]
    pub nodes: usize,
    /// Earlier nodes each node dials (fewer for the first ones).
    #[arg(long, default_value_t = 2)]
    pub degree: usize,
    /// Services announced, each at its own node; default: one per node.
    #[arg(long)]
    pub services: Option<usize>,
    /// Seed of the topology and of where the services are.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How the nodes are linked; inproc is the one for large meshes (tcp and ipc cost a libzmq
    /// I/O thread and sockets per node).
    #[arg(long, value_enum, default_value_t = Transport::Inproc)]
    pub transport: Transport,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// The nodes' `server_timeout` (e.g. `10s`); default: the node's own default (1 s). Under
    /// a load that delays answers past it, remotes are redialled and resync.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration_with_unit)]
    pub server_timeout: Option<Duration>,
    /// Whether the nodes are cluster members (`member`) or only spread tuples (`off`).
    #[arg(long, value_enum, default_value_t = Cluster::Member)]
    pub cluster: Cluster,
}

/// One benchmark's result: `key=value` fields, the ones the issue asks for first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    fields: Vec<(&'static str, String)>,
}

impl Report {
    fn add(&mut self, key: &'static str, value: impl fmt::Display) -> &mut Self {
        self.fields.push((key, value.to_string()));
        self
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (key, value)) in self.fields.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{key}={value}")?;
        }
        Ok(())
    }
}

/// Reads a result line back: every field must be `key=number`.
#[cfg(test)]
fn parse_result_line(line: &str) -> Result<Vec<(String, f64)>> {
    line.split_whitespace()
        .map(|field| {
            let (key, value) = field
                .split_once('=')
                .with_context(|| format!("field {field:?} is not key=value"))?;
            let value = value
                .parse::<f64>()
                .with_context(|| format!("field {field:?} is not a number"))?;
            Ok((key.to_owned(), value))
        })
        .collect()
}

/// Runs a benchmark and prints its result line on stdout.
pub async fn run(bench: Bench) -> Result<()> {
    let report = match bench {
        Bench::Chain(args) => chain(&args).await?,
        Bench::Mesh(args) => mesh(&args).await?,
        Bench::Load(args) => load::load(&args).await?,
        Bench::Cluster(args) => cluster::cluster(&args)?,
    };
    println!("{report}");
    Ok(())
}

/// Where nodes listen: unique names and paths for this run, and the directory to remove after.
struct Endpoints {
    transport: Transport,
    tag: String,
    dir: Option<PathBuf>,
}

impl Endpoints {
    fn new(transport: Transport, what: &str) -> Result<Self> {
        let tag = format!(
            "{what}-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        );
        let dir = match transport {
            Transport::Ipc => {
                let dir = std::env::temp_dir().join(format!("zgossip-bench-{tag}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Some(dir)
            }
            Transport::Tcp | Transport::Inproc => None,
        };
        Ok(Self {
            transport,
            tag,
            dir,
        })
    }

    /// What node `index` binds.
    fn bind(&self, index: usize) -> String {
        match (&self.transport, &self.dir) {
            (Transport::Tcp, _) => "tcp://127.0.0.1:*".to_owned(),
            (Transport::Ipc, Some(dir)) => format!("ipc://{}/{index}", dir.display()),
            _ => format!("inproc://bench-{}-{index}", self.tag),
        }
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// N nodes, each bound; returns them with the endpoints their peers dial.
async fn spawn_bound(
    count: usize,
    endpoints: &Endpoints,
    config: &Config,
) -> Result<(Vec<Node>, Vec<String>)> {
    let mut nodes = Vec::with_capacity(count);
    let mut bound = Vec::with_capacity(count);
    for index in 0..count {
        let node = Node::spawn(config.clone())?;
        let endpoint = node
            .bind(&endpoints.bind(index))
            .await
            .with_context(|| format!("binding node {index}"))?;
        nodes.push(node);
        bound.push(endpoint);
    }
    Ok((nodes, bound))
}

/// Waits until every node's CONNECTs are connected, and the nodes' sessions add up to `links`
/// (at least: cluster members open sessions of their own): every link has said HELLO.
async fn wait_for_links(nodes: &[Node], links: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (mut sessions, mut unconnected) = (0, 0);
        for node in nodes {
            let status = node.status().await?;
            sessions += status.sessions;
            unconnected += status.remotes - status.remotes_connected;
        }
        if sessions >= links && unconnected == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "links not up after {timeout:?}: {sessions} of {links} sessions, {unconnected} remotes unconnected"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls one node until it holds `want` tuples; returns what it last held if time runs out.
async fn wait_for_tuples(node: &Node, want: usize, deadline: Instant) -> Result<usize> {
    loop {
        let held = node.status().await?.tuples;
        if held >= want || Instant::now() > deadline {
            return Ok(held);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `zgossip bench chain`.
pub async fn chain(args: &ChainArgs) -> Result<Report> {
    let (count, tuples) = (args.nodes, args.tuples);
    if count < 2 || tuples == 0 {
        bail!("a chain needs at least 2 nodes and 1 tuple");
    }
    let timeout = Duration::from_secs(args.timeout_s);
    let endpoints = Endpoints::new(args.transport, "chain")?;
    let (nodes, bound) = spawn_bound(count, &endpoints, &args.cluster.config()).await?;
    for index in 1..count {
        let (Some(node), Some(endpoint)) = (nodes.get(index - 1), bound.get(index)) else {
            continue;
        };
        node.connect(endpoint).await?;
    }
    wait_for_links(&nodes, count - 1, timeout).await?;
    eprintln!(
        "chain: {count} nodes linked over {:?}; publishing {tuples} tuples at the first",
        args.transport
    );

    let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
        bail!("no nodes");
    };
    let cpu_before = Process::Current.cpu_seconds()?;
    let started = Instant::now();
    let mut publishers = JoinSet::new();
    for worker in 0..CHAIN_PUBLISHERS {
        let node = first.clone();
        publishers.spawn(async move {
            for index in (worker..tuples).step_by(CHAIN_PUBLISHERS) {
                node.publish(&format!("tcp://bench/{index}"), SERVICE)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = publishers.join_next().await {
        done??;
    }
    let published = started.elapsed();
    eprintln!(
        "chain: published in {:.3}s; waiting for the last node",
        published.as_secs_f64()
    );
    let held = wait_for_tuples(last, tuples, started + timeout).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = Process::Current.cpu_seconds()? - cpu_before;
    if held < tuples {
        bail!("the last node holds {held} of {tuples} tuples after {timeout:?}");
    }

    let mut sent = 0;
    for node in &nodes {
        sent += node.status().await?.stats.publish_sent;
    }
    let mut report = Report::default();
    report
        .add("seconds", format!("{seconds:.4}"))
        .add("tuples_per_s", format!("{:.0}", tuples as f64 / seconds))
        .add("cpu_s", format!("{cpu:.2}"))
        .add("publish_s", format!("{:.4}", published.as_secs_f64()))
        .add("publish_sent", sent)
        .add(
            "peak_rss_mb",
            format!("{:.1}", Process::Current.peak_rss_kb()? as f64 / 1024.0),
        );
    Ok(report)
}

/// `zgossip bench mesh`.
pub async fn mesh(args: &MeshArgs) -> Result<Report> {
    let count = args.nodes;
    let services = args.services.unwrap_or(count);
    if count == 0 || args.degree == 0 {
        bail!("a mesh needs at least 1 node and degree 1");
    }
    if services == 0 || services > count {
        bail!("--services must be between 1 and --nodes");
    }
    let timeout = Duration::from_secs(args.timeout_s);
    let endpoints = Endpoints::new(args.transport, "mesh")?;
    let mut rng = XorShift::new(args.seed);

    let rss_before = Process::Current.rss_kb()?;
    let spawning = Instant::now();
    let mut config = args.cluster.config();
    if let Some(timeout) = args.server_timeout {
        config.server_timeout = timeout;
    }
    let (nodes, bound) = spawn_bound(count, &endpoints, &config).await?;
    let mut links = 0;
    for (index, node) in nodes.iter().enumerate() {
        for peer in rng.distinct_below(index, args.degree) {
            let endpoint = bound.get(peer).context("no such peer")?;
            node.connect(endpoint).await?;
            links += 1;
        }
    }
    wait_for_links(&nodes, links, timeout).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_idle = Process::Current.rss_kb()?;
    let idle_kb_per_node = rss_idle.saturating_sub(rss_before) as f64 / count as f64;
    eprintln!(
        "mesh: {count} nodes, {links} links up in {:.2}s; {idle_kb_per_node:.1} KB per idle node; announcing {services} services",
        spawning.elapsed().as_secs_f64()
    );

    let announcers = if services == count {
        (0..count).collect()
    } else {
        rng.distinct_below(count, services)
    };
    let cpu_before = Process::Current.cpu_seconds()?;
    let started = Instant::now();
    let mut publishers = JoinSet::new();
    for index in announcers {
        let node = nodes.get(index).context("no such node")?.clone();
        publishers
            .spawn(async move { node.publish(&format!("tcp://bench/{index}"), SERVICE).await });
    }
    while let Some(done) = publishers.join_next().await {
        done??;
    }
    let published = started.elapsed();

    // The last node dialled only earlier ones and nobody dials it: it is among the last to
    // learn anything, so wait on it alone before asking everyone.
    eprintln!(
        "mesh: announced in {:.3}s; waiting for the last node, then for every node",
        published.as_secs_f64()
    );
    let deadline = started + timeout;
    let last = nodes.last().context("no nodes")?;
    wait_for_tuples(last, services, deadline).await?;
    let mut waiting: Vec<&Node> = nodes.iter().collect();
    loop {
        let mut still = Vec::with_capacity(waiting.len());
        for node in waiting {
            if node.status().await?.tuples < services {
                still.push(node);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for node in waiting.iter().take(5) {
                let status = node.status().await?;
                eprintln!("mesh: a node short of services: {}", status.detail());
            }
            bail!(
                "{} of {count} nodes do not hold all {services} services after {timeout:?}",
                waiting.len()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = Process::Current.cpu_seconds()? - cpu_before;

    let (mut sent, mut redials, mut expired) = (0, 0, 0);
    for node in &nodes {
        let stats = node.status().await?.stats;
        sent += stats.publish_sent;
        redials += stats.redials;
        expired += stats.sessions_expired;
    }
    let mut report = Report::default();
    report
        .add("seconds", format!("{seconds:.4}"))
        .add(
            "messages_per_node",
            format!("{:.1}", sent as f64 / count as f64),
        )
        .add("idle_kb_per_node", format!("{idle_kb_per_node:.1}"))
        .add("cpu_s", format!("{cpu:.2}"))
        .add("links", links)
        .add("redials", redials)
        .add("sessions_expired", expired)
        .add("publish_s", format!("{:.4}", published.as_secs_f64()))
        .add("idle_rss_mb", format!("{:.1}", rss_idle as f64 / 1024.0))
        .add(
            "rss_mb",
            format!("{:.1}", Process::Current.rss_kb()? as f64 / 1024.0),
        )
        .add(
            "peak_rss_mb",
            format!("{:.1}", Process::Current.peak_rss_kb()? as f64 / 1024.0),
        );
    Ok(report)
}

/// A process whose `/proc` entries are read: this one, or another by pid (`bench load` watches
/// the node under test in its own process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Process {
    /// This process.
    Current,
    /// Another process.
    Pid(u32),
}

impl Process {
    fn file(self, name: &str) -> String {
        match self {
            Process::Current => format!("/proc/self/{name}"),
            Process::Pid(pid) => format!("/proc/{pid}/{name}"),
        }
    }

    /// Resident memory now, in KB (`VmRSS`: what `statm` counts in pages).
    pub(crate) fn rss_kb(self) -> Result<u64> {
        self.status_kb("VmRSS:")
    }

    /// The most resident memory the process has had, in KB (`VmHWM`).
    pub(crate) fn peak_rss_kb(self) -> Result<u64> {
        self.status_kb("VmHWM:")
    }

    /// CPU time used, user and system, in seconds (from `stat`, whose clock ticks are Linux's
    /// fixed USER_HZ of 100).
    pub(crate) fn cpu_seconds(self) -> Result<f64> {
        let path = self.file("stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name may hold spaces; the fields after it are plain numbers.
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line; after the name, field 3 is index 0.
        let ticks = |index: usize| -> Result<f64> {
            let field = fields.get(index).context("short stat file")?;
            Ok(field.parse::<u64>().context("bad stat file")? as f64)
        };
        Ok((ticks(11)? + ticks(12)?) / 100.0)
    }

    fn status_kb(self, field: &str) -> Result<u64> {
        let path = self.file("status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in {path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_line_parses_back_into_its_fields() {
        let mut report = Report::default();
        report
            .add("seconds", "0.5000")
            .add("tuples_per_s", "200000")
            .add("peak_rss_mb", "12.5");
        let line = report.to_string();
        assert_eq!(line, "seconds=0.5000 tuples_per_s=200000 peak_rss_mb=12.5");
        let fields = parse_result_line(&line).unwrap_or_default();
        assert_eq!(
            fields,
            vec![
                ("seconds".to_owned(), 0.5),
                ("tuples_per_s".to_owned(), 200_000.0),
                ("peak_rss_mb".to_owned(), 12.5)
            ]
        );
        assert!(parse_result_line("seconds=fast").is_err());
        assert!(parse_result_line("seconds").is_err());
    }

    #[test]
    fn distinct_draws_are_distinct_reproducible_and_below_n() {
        let draw = |seed| XorShift::new(seed).distinct_below(100, 5);
        let picked = draw(7);
        assert_eq!(picked, draw(7));
        assert_eq!(picked.len(), 5);
        assert!(picked.iter().all(|&p| p < 100));
        let mut sorted = picked.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
        assert_eq!(XorShift::new(1).distinct_below(2, 3), vec![0, 1]);
    }

    #[test]
    fn memory_is_readable_here() {
        assert!(Process::Current.rss_kb().unwrap_or(0) > 0);
        assert!(
            Process::Current.peak_rss_kb().unwrap_or(0)
                >= Process::Current.rss_kb().unwrap_or(u64::MAX) / 2
        );
        assert!(Process::Current.cpu_seconds().is_ok());
    }
}
