//! Simulations: hundreds to thousands of nodes in one process over `inproc://`, with faults
//! injected by a seeded plan, on tokio's paused clock (time jumps whenever every node is idle,
//! so leases and timeouts play out exactly, however loaded the machine).
//!
//! Each scenario prints its seed when it fails; `ZGOSSIP_SIM_SEED=<n>` runs it again with the
//! same topology and the same faults. (Scheduling on one thread is repeatable too, but hash-map
//! order is not, so a rerun is the same scenario rather than the same trace.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use zgossip::engine::PeerState;
use zgossip::rng::XorShift;
use zgossip::transport::inproc::Faults;
use zgossip::{Config, Membership, Node};

type Tuples = BTreeMap<String, String>;

/// One simulated network: its nodes by join order, `None` once stopped.
struct Sim {
    tag: &'static str,
    seed: u64,
    rng: XorShift,
    faults: Faults,
    template: Config,
    nodes: Vec<Option<Node>>,
    /// Which nodes each node dialled.
    dials: Vec<Vec<usize>>,
}

fn seed(default: u64) -> u64 {
    std::env::var("ZGOSSIP_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

impl Sim {
    fn new(tag: &'static str, seed: u64, template: Config) -> Self {
        eprintln!("{tag}: seed {seed} (rerun with ZGOSSIP_SIM_SEED={seed})");
        Self {
            tag,
            seed,
            rng: XorShift::new(seed),
            faults: Faults::new(seed),
            template,
            nodes: Vec::new(),
            dials: Vec::new(),
        }
    }

    fn name(&self, index: usize) -> String {
        format!("{}-{index}", self.tag)
    }

    fn node(&self, index: usize) -> &Node {
        self.nodes[index].as_ref().expect("a live node")
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Starts a node that dials each of `dial`; returns its index.
    async fn spawn(&mut self, dial: &[usize]) -> usize {
        let index = self.nodes.len();
        let node = Node::spawn({
            let mut config = self.template.clone();
            config.name = Some(self.name(index));
            config.node_id = Some(self.rng.next_u64() | 1);
            config.faults = Some(self.faults.clone());
            config
        })
        .unwrap();
        node.bind(&format!("inproc://{}", self.name(index)))
            .await
            .unwrap();
        self.nodes.push(Some(node));
        self.dials.push(Vec::new());
        for &peer in dial {
            self.dial(index, peer).await;
        }
        index
    }

    async fn dial(&mut self, from: usize, to: usize) {
        let endpoint = format!("inproc://{}", self.name(to));
        self.node(from).connect(&endpoint).await.unwrap();
        self.dials[from].push(to);
    }

    /// `count` nodes, each dialling up to `degree` random earlier ones: connected, with cycles.
    async fn spawn_mesh(&mut self, count: usize, degree: usize) {
        for index in 0..count {
            let dial = self.rng.distinct_below(index, degree);
            self.spawn(&dial).await;
        }
    }

    /// The service node `index` announces: its endpoint, by its name.
    fn service(&self, index: usize) -> (String, String) {
        let name = self.name(index);
        (format!("inproc://{name}/api"), format!("svc-{index}"))
    }

    async fn announce(&self, index: usize, ttl: Option<Duration>) {
        let (key, value) = self.service(index);
        self.node(index)
            .publish_for(&key, &value, ttl)
            .await
            .unwrap();
    }

    fn services_of(&self, nodes: impl IntoIterator<Item = usize>) -> Tuples {
        nodes.into_iter().map(|i| self.service(i)).collect()
    }

    /// Waits until every node in `nodes` holds exactly `expected`; returns how long that took
    /// in virtual time. Fails naming the seed and the first node that differs.
    async fn converge(&self, nodes: &[usize], expected: &Tuples, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let mut behind = None;
            for &index in nodes {
                if self.node(index).status().await.unwrap().tuples != expected.len() {
                    behind = Some(index);
                    break;
                }
            }
            if behind.is_none() {
                // Counts match everywhere: now the contents, exactly.
                for &index in nodes {
                    behind = self.differs(index, expected).await.then_some(index);
                    if behind.is_some() {
                        break;
                    }
                }
            }
            let Some(index) = behind else {
                return started.elapsed();
            };
            if started.elapsed() > within {
                let held = self.held(index).await;
                let missing: Vec<_> = expected.keys().filter(|k| !held.contains_key(*k)).collect();
                let extra: Vec<_> = held.keys().filter(|k| !expected.contains_key(*k)).collect();
                panic!(
                    "{} seed {}: node {index} has not converged after {within:?}: holds {} of {}; \
                     missing {:?}; extra {:?} (first few); faults {:?}",
                    self.tag,
                    self.seed,
                    held.len(),
                    expected.len(),
                    &missing[..missing.len().min(5)],
                    &extra[..extra.len().min(5)],
                    self.faults.stats(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn held(&self, index: usize) -> Tuples {
        let tuples = self.node(index).tuples().await.unwrap();
        tuples.into_iter().collect()
    }

    async fn differs(&self, index: usize, expected: &Tuples) -> bool {
        self.held(index).await != *expected
    }

    /// The sum of one counter over the live nodes.
    async fn total(&self, counter: &str) -> u64 {
        let mut sum = 0;
        for index in self.live() {
            let stats = self.node(index).status().await.unwrap().stats;
            sum += stats
                .pairs()
                .iter()
                .find(|(name, _)| *name == counter)
                .map_or(0, |(_, n)| *n);
        }
        sum
    }

    async fn stop_all(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.kill().await.unwrap();
        }
    }
}

/// Settings for simulated nodes: the defaults (1 s timeout, PING every 333 ms).
/// Tuples only: these scenarios are about tuples reaching everyone, at thousands of nodes,
/// where every node holding every member is N² records (about 200 bytes each). The cluster
/// layer has its own seeded scenarios on the engine harness (src/engine/tests/cluster.rs).
fn defaults() -> Config {
    let mut config = Config::default();
    config.cluster = Membership::Off;
    config
}

#[tokio::test(start_paused = true)]
async fn a_thousand_nodes_in_a_random_topology_each_end_with_exactly_every_service() {
    let mut sim = Sim::new("sim-mesh", seed(1), defaults());
    sim.spawn_mesh(1000, 2).await;
    let all = sim.live();
    for &index in &all {
        sim.announce(index, None).await;
    }
    let expected = sim.services_of(all.iter().copied());
    let took = sim.converge(&all, &expected, Duration::from_secs(30)).await;
    eprintln!(
        "sim-mesh: 1000 nodes hold all 1000 services after {took:?} (virtual); {} PUBLISH sent, \
         {} redials",
        sim.total("publish_sent").await,
        sim.total("redials").await,
    );
    sim.stop_all().await;
}

/// Simulated nodes in the long scenarios: PING every 2 s, silence judged after 6 s, so idle
/// heartbeats do not dominate minutes of virtual time.
fn slow_heartbeats() -> Config {
    {
        let mut config = defaults();
        config.server_timeout = Duration::from_secs(6);
        config.ping_interval = Some(Duration::from_secs(2));
        config
    }
}

#[tokio::test(start_paused = true)]
async fn churn_two_thousand_nodes_then_quiet_leaves_exactly_the_live_services() {
    const SEEDS: usize = 10;
    const INITIAL: usize = 1000;
    const CHURN: usize = 1000;
    const LEASE: Duration = Duration::from_secs(30);
    let mut sim = Sim::new("sim-churn", seed(2), slow_heartbeats());
    // A random tree: every node dials one node that joined before it, so each has a path to the
    // first ones, the seeds, which never leave. (Every lease refresh floods all nodes, so the
    // cost of this scenario is the number of links times the live services.)
    sim.spawn_mesh(INITIAL, 1).await;
    for index in sim.live() {
        sim.announce(index, Some(LEASE)).await;
    }
    let (mut crashed, mut stopped) = (0, 0);
    for step in 0..CHURN {
        // One node leaves and one joins every 20 ms of virtual time.
        let live = sim.live();
        let victim = live[SEEDS + sim.rng.below(live.len() - SEEDS)];
        let node = sim.nodes[victim].take().unwrap();
        if step % 2 == 0 {
            node.kill().await.unwrap();
            crashed += 1;
        } else {
            node.shutdown().await.unwrap();
            stopped += 1;
        }
        // Whoever dialled it dials another node that joined before it.
        for index in sim.live() {
            if sim.dials[index].contains(&victim) {
                let earlier: Vec<usize> = sim.live().into_iter().filter(|i| *i < index).collect();
                let target = earlier[sim.rng.below(earlier.len())];
                sim.dial(index, target).await;
            }
        }
        let live = sim.live();
        let parent = live[sim.rng.below(live.len())];
        let joined = sim.spawn(&[parent]).await;
        sim.announce(joined, Some(LEASE)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = sim.live();
    assert_eq!(live.len(), INITIAL);
    let expected = sim.services_of(live.iter().copied());
    // Crashed nodes' leases run out within one lease of their last refresh.
    let took = sim.converge(&live, &expected, LEASE * 2).await;
    eprintln!(
        "sim-churn: {} nodes in all, {crashed} crashed and {stopped} stopped; the {} live ones \
         hold exactly the live services {took:?} (virtual) after the churn; {} PUBLISH sent, {} \
         leases ran out",
        sim.nodes.len(),
        live.len(),
        sim.total("publish_sent").await,
        sim.total("expired").await,
    );
    sim.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_keeps_each_half_to_itself_and_healing_converges_everyone() {
    const NODES: usize = 400;
    const NEW: usize = 20;
    let mut sim = Sim::new("sim-split", seed(3), defaults());
    // Two halves, each connected within itself, and about one node in five of the second half
    // also dials into the first.
    let half = NODES / 2;
    for index in 0..NODES {
        let first = if index < half { 0 } else { half };
        let mut dial: Vec<usize> = sim
            .rng
            .distinct_below(index - first, 2)
            .into_iter()
            .map(|i| first + i)
            .collect();
        if index == half || (index > half && sim.rng.below(5) == 0) {
            dial.push(sim.rng.below(half));
        }
        sim.spawn(&dial).await;
    }
    let all = sim.live();
    for &index in &all {
        sim.announce(index, None).await;
    }
    let before = sim.services_of(all.iter().copied());
    sim.converge(&all, &before, Duration::from_secs(30)).await;

    // Links between the halves now carry nothing.
    let (left, right): (Vec<usize>, Vec<usize>) = all.iter().partition(|i| **i < half);
    let names = |half: &[usize]| half.iter().map(|i| sim.name(*i)).collect::<Vec<_>>();
    sim.faults.partition([names(&left), names(&right)]);

    // New services on both sides, published under new keys by existing nodes.
    let mut added = [Tuples::new(), Tuples::new()];
    for (side, half) in [&left, &right].into_iter().enumerate() {
        for n in 0..NEW {
            let publisher = half[sim.rng.below(half.len())];
            let key = format!("inproc://{}/new-{n}", sim.name(publisher));
            let value = format!("new-{side}-{n}");
            sim.node(publisher).publish(&key, &value).await.unwrap();
            added[side].insert(key, value);
        }
    }
    for (side, half) in [&left, &right].into_iter().enumerate() {
        let mut expected = before.clone();
        expected.extend(added[side].clone());
        sim.converge(half, &expected, Duration::from_secs(30)).await;
    }
    // Long enough for the links across to be judged silent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut dead = 0;
    for &index in &all {
        let peers = sim.node(index).peers().await.unwrap();
        dead += peers.iter().filter(|(_, s)| *s == PeerState::Dead).count();
    }
    assert!(
        dead > 0,
        "seed {}: no peer across the partition was declared dead",
        sim.seed
    );

    sim.faults.heal_all();
    let mut expected = before.clone();
    expected.extend(added[0].clone());
    expected.extend(added[1].clone());
    let took = sim.converge(&all, &expected, Duration::from_secs(60)).await;
    eprintln!(
        "sim-split: {} and {} nodes, {dead} peers dead across the split; all {} converged \
         {took:?} (virtual) after healing",
        left.len(),
        right.len(),
        all.len(),
    );
    sim.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn ten_percent_loss_with_duplicates_and_delay_still_converges() {
    const NODES: usize = 300;
    let mut sim = Sim::new("sim-loss", seed(4), defaults());
    sim.faults.set_loss(0.10);
    sim.faults.set_duplication(0.02);
    sim.faults
        .set_delay(Duration::from_millis(1), Duration::from_millis(20));
    sim.spawn_mesh(NODES, 2).await;
    let all = sim.live();
    for &index in &all {
        sim.announce(index, None).await;
    }
    let expected = sim.services_of(all.iter().copied());
    let took = sim
        .converge(&all, &expected, Duration::from_secs(120))
        .await;
    let stats = sim.faults.stats();
    let repairs = sim.total("digest_resyncs").await;
    eprintln!(
        "sim-loss: {NODES} nodes converged in {took:?} (virtual) with {} of {} frames lost and {} \
         duplicated; {repairs} digest resyncs",
        stats.lost, stats.frames, stats.duplicated,
    );
    assert!(stats.lost > 0 && stats.duplicated > 0 && stats.delayed > 0);
    assert!(
        repairs > 0,
        "seed {}: loss was repaired without a resync?",
        sim.seed
    );
    sim.stop_all().await;
}
