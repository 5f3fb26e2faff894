//! `zgossip bench load`: one node under test, loaded the way a service registry is. By default
//! it is a `zgossip node` child process, so its resident memory is its own. In this process:
//! C client nodes dial it over tcp and each publishes S leased services (the node refreshes
//! every lease at a third of its ttl), an observer node dials it too, and short-lived lookup
//! clients arrive at a steady rate, each syncing and asking for one service as `zgossip lookup`
//! does.
//!
//! After every client and the observer hold all C×S tuples, a window of `--seconds` is measured:
//!
//! - **Latency through one hop.** Service 0 of every client is its *moving* service: the client
//!   gives it a new value every `--update-every` (clients staggered). A timed publish goes
//!   client → node under test → observer, crossing one intermediate node (the node under test);
//!   the latency is from the client's `publish_for` call to the observer's event for that exact
//!   value (a side table holds the send times).
//! - **Lookups.** A lookup asks for one of the stable services (1..S), which all C clients
//!   offer: anything but all C endpoints, or no sync within [`LOOKUP_WAIT`], is a miss.
//! - **Memory.** The node under test's `VmRSS` every second; after the warm-up (default one
//!   lease, at most half the window) it counts as flat when its highest value stays within
//!   `--rss-limit-pct` of its value at the end of the warm-up.
//! - **Lost tuples.** After the window, with nothing new published, the observer gets up to
//!   `--settle` to hold exactly the C×S tuples with the values last published; then a fresh
//!   client syncs and must hold the same. Missing or stale tuples count as lost.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::{Process, Report};
use crate::duration::parse_duration_with_unit;
use server::Server;
use wire::{Moves, Plan, WireClients};
use zgossip::rng::XorShift;
use zgossip::{Config, Node};
use zgossip::{Event, Events, EventsError};

mod server;
mod wire;

/// How long a lookup client may take to sync before its lookup counts as a miss (`zgossip
/// lookup` waits 2 s by default; a loaded node gets more).
pub const LOOKUP_WAIT: Duration = Duration::from_secs(5);
/// Lookups allowed in flight at once; past it a due lookup is skipped (and counted), so a
/// node that stops answering does not pile up clients here.
const LOOKUPS_IN_FLIGHT: usize = 64;
/// Progress goes to stderr this often during the window.
const PROGRESS_EVERY: u64 = 10;
/// How often RSS is sampled, and settling is checked.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const SETTLE_POLL: Duration = Duration::from_millis(200);
/// The observer's event buffer: it must not lag during the initial C×S burst.
const OBSERVER_EVENTS: usize = 1 << 17;
/// How long any node, the child included, gets to answer, and the child to stop after `$TERM`.
const CHILD_WAIT: Duration = Duration::from_secs(30);
/// Misses described on stderr (the rest are only counted).
const MISSES_SHOWN: u64 = 5;

/// `zgossip bench load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Client nodes, each with its own tcp connection to the node under test.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Leased services each client publishes (at least 2: service 0 moves, the rest are looked
    /// up).
    #[arg(long, default_value_t = 50)]
    pub services: usize,
    /// Lookup clients started per second (0: none).
    #[arg(long, default_value_t = 20)]
    pub lookups_per_s: u32,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// The services' lease; each client's node refreshes it every third of it.
    #[arg(long, default_value = "10s", value_parser = parse_duration_with_unit)]
    pub ttl: Duration,
    /// How often each client gives its moving service a new value (the timed publishes).
    #[arg(long, default_value = "2s", value_parser = parse_duration_with_unit)]
    pub update_every: Duration,
    /// The start of the window not judged for memory; default: one lease, at most half the
    /// window.
    #[arg(long, value_parser = parse_duration_with_unit)]
    pub warmup: Option<Duration>,
    /// Growth of the node's RSS after warm-up, in percent, above which it is not flat.
    #[arg(long, default_value_t = 10.0)]
    pub rss_limit_pct: f64,
    /// Longest wait after the window for the observer to hold every latest value.
    #[arg(long, default_value = "10s", value_parser = parse_duration_with_unit)]
    pub settle: Duration,
    /// `server_timeout` of every node, the one under test included (e.g. `10s`); default: the
    /// node's own (1 s). A session or remote silent this long is dropped and resyncs.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_with_unit)]
    pub server_timeout: Option<Duration>,
    /// The zgossip binary that runs the node under test; default: this one.
    #[arg(long, value_name = "PATH", conflicts_with = "in_process")]
    pub server_bin: Option<PathBuf>,
    /// Run the node under test in this process (its RSS is then the whole process's).
    #[arg(long)]
    pub in_process: bool,
    /// Run each client as a full node in this process (decoding and storing all C×S tuples,
    /// as a real deployment's nodes would) instead of a bare ZGP session that drops what it
    /// receives. On one machine, 200 full nodes take most of the cores from the node under test.
    #[arg(long)]
    pub node_clients: bool,
    /// Seed of the services the lookups ask for.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest wait for every client and the observer to hold all tuples before the window
    /// starts (it starts anyway, and `setup_short` says how many nodes lacked some).
    #[arg(long, default_value = "60s", value_parser = parse_duration_with_unit)]
    pub setup_timeout: Duration,
}

impl LoadArgs {
    /// The configuration of every node of the run, named `name`.
    fn config(&self, name: impl Into<String>) -> Config {
        let mut config = Config::named(name);
        if let Some(timeout) = self.server_timeout {
            config.server_timeout = timeout;
        }
        config
    }
}

/// The key of client `client`'s service `service`.
fn service_key(client: usize, service: usize) -> String {
    format!("tcp://load/{client}/{service}")
}

/// The value of stable service `service` (1..S), offered by every client.
fn stable_value(service: usize) -> String {
    format!("svc-{service}")
}

/// The value of client `client`'s moving service (0) at its `generation`-th update.
fn moving_value(client: usize, generation: u64) -> String {
    format!("moving-{client}-{generation}")
}

/// Locks a side table; a panicked holder leaves figures that are still worth reporting.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the tasks of a run count and time.
#[derive(Debug, Default)]
struct Shared {
    updates: AtomicU64,
    delivered: AtomicU64,
    lagged: AtomicU64,
    lookups: AtomicU64,
    lookup_misses: AtomicU64,
    lookups_skipped: AtomicU64,
    /// When each timed `(key, value)` was handed to its client, until the observer sees it.
    sent: Mutex<HashMap<(String, String), Instant>>,
    /// Publish → observer delivery, one per timed publish seen.
    latencies: Mutex<Latencies>,
    /// Lookup client spawned → answer, one per lookup that did not miss.
    lookup_times: Mutex<Latencies>,
}

/// Durations in microseconds to three significant digits: the same memory however long the
/// run.
#[derive(Debug)]
struct Latencies(Histogram<u64>);

impl Default for Latencies {
    #[allow(
        clippy::expect_used,
        reason = "3 is within the 0 to 5 digits `new` takes"
    )]
    fn default() -> Self {
        Self(Histogram::new(3).expect("3 significant digits"))
    }
}

impl Latencies {
    fn record(&mut self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        // `record` grows the histogram as needed (`saturating_record` would clamp instead).
        if self.0.record(micros).is_err() {
            self.0.saturating_record(micros);
        }
    }

    /// The `fraction` quantile (1.0: the largest), in milliseconds with `decimals`; `None`
    /// when nothing was recorded.
    fn quantile_ms(&self, fraction: f64, decimals: usize) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let micros = if fraction >= 1.0 {
            self.0.max()
        } else {
            self.0.value_at_quantile(fraction)
        };
        Some(format!("{:.decimals$}", micros as f64 / 1000.0))
    }
}

/// Resident memory of the node under test, one sample a second from the start of the window.
#[derive(Debug, Default)]
struct RssSamples {
    /// (seconds into the window, KB).
    samples: Vec<(f64, u64)>,
}

/// What [`RssSamples::judge`] makes of them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RssVerdict {
    warm_kb: u64,
    end_kb: u64,
    max_kb: u64,
    growth_pct: f64,
    flat: bool,
}

impl RssSamples {
    /// RSS at the end of `warmup`, its highest value after, and whether that growth stays
    /// within `limit_pct`.
    fn judge(&self, warmup: f64, limit_pct: f64) -> Option<RssVerdict> {
        let after: Vec<u64> = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= warmup)
            .map(|(_, kb)| *kb)
            .collect();
        let (&warm_kb, &end_kb) = (after.first()?, after.last()?);
        let max_kb = after.iter().copied().max().unwrap_or(warm_kb);
        let growth_pct = (max_kb as f64 - warm_kb as f64) * 100.0 / warm_kb.max(1) as f64;
        Some(RssVerdict {
            warm_kb,
            end_kb,
            max_kb,
            growth_pct,
            flat: growth_pct <= limit_pct,
        })
    }
}

/// Tuples of `expected` that `held` lacks or holds with another value, and keys held that are
/// not expected.
fn compare(held: &[(String, String)], expected: &HashMap<String, String>) -> (usize, usize) {
    let held_map: HashMap<&str, &str> =
        held.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lost = expected
        .iter()
        .filter(|(key, value)| held_map.get(key.as_str()) != Some(&value.as_str()))
        .count();
    let extra = held
        .iter()
        .filter(|(key, _)| !expected.contains_key(key))
        .count();
    (lost, extra)
}

/// Runs the observer: times every delivery of a value in the side table.
async fn observe(mut events: Events, shared: Arc<Shared>) {
    loop {
        let (key, value) = match events.recv().await {
            Ok(Event::Deliver { key, value, .. } | Event::Change { key, value, .. }) => {
                (key, value)
            }
            Ok(_) => continue,
            Err(EventsError::Lagged(missed)) => {
                shared.lagged.fetch_add(missed, Ordering::Relaxed);
                continue;
            }
            Err(EventsError::Closed) => return,
        };
        let seen = Instant::now();
        let sent = lock(&shared.sent).remove(&(key.to_string(), value.to_string()));
        if let Some(sent) = sent {
            lock(&shared.latencies).record(seen.saturating_duration_since(sent));
            shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One client's moving service: a new value every `every` from `first` until `end` (fewer
/// when the node is slow to take them); returns the client and the last generation published.
async fn move_service(
    node: Node,
    client: usize,
    (first, every, end): (Instant, Duration, Instant),
    ttl: Duration,
    shared: Arc<Shared>,
) -> Result<(usize, u64)> {
    let key = service_key(client, 0);
    let mut generation = 0;
    let mut next = first;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let value = moving_value(client, generation + 1);
        lock(&shared.sent).insert((key.clone(), value.clone()), Instant::now());
        node.publish_for(&key, &value, Some(ttl)).await?;
        generation += 1;
        shared.updates.fetch_add(1, Ordering::Relaxed);
        // A node slow to take the publish makes us late: skip the missed updates rather than
        // send them in a burst (or past the end of the window).
        let now = Instant::now();
        next += every;
        while next < now {
            next += every;
        }
    }
    Ok((client, generation))
}

/// One lookup as `zgossip lookup` makes it: a new node dials the node under test, waits for
/// its resync, asks for `service`, and leaves.
async fn lookup_once(
    config: Config,
    endpoint: String,
    service: String,
    want: usize,
    shared: Arc<Shared>,
) {
    let started = Instant::now();
    let result = async {
        let node = Node::spawn(config)?;
        node.connect(&endpoint).await?;
        let found = if node.wait_synced(LOOKUP_WAIT).await? {
            Some(node.lookup(&service).await?.len())
        } else {
            None
        };
        let took = started.elapsed();
        node.shutdown().await?;
        anyhow::Ok((found, took))
    }
    .await;
    shared.lookups.fetch_add(1, Ordering::Relaxed);
    let why = match result {
        Ok((Some(found), took)) if found == want => {
            lock(&shared.lookup_times).record(took);
            return;
        }
        Ok((Some(found), _)) => format!("{found} of {want} endpoints"),
        Ok((None, _)) => format!("no sync within {LOOKUP_WAIT:?}"),
        Err(error) => format!("{error:#}"),
    };
    if shared.lookup_misses.fetch_add(1, Ordering::Relaxed) < MISSES_SHOWN {
        eprintln!("load: lookup miss: {service}: {why}");
    }
}

/// Starts `rate` lookups a second until `end`, each for a random stable service.
async fn run_lookups(args: LoadArgs, endpoint: String, end: Instant, shared: Arc<Shared>) {
    if args.lookups_per_s == 0 {
        return;
    }
    let mut rng = XorShift::new(args.seed);
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.lookups_per_s)));
    let mut running = JoinSet::new();
    loop {
        ticks.tick().await;
        if Instant::now() >= end {
            break;
        }
        while running.try_join_next().is_some() {}
        if running.len() >= LOOKUPS_IN_FLIGHT {
            shared.lookups_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let service = stable_value(1 + rng.below(args.services - 1));
        running.spawn(lookup_once(
            args.config("lookup"),
            endpoint.clone(),
            service,
            args.clients,
            Arc::clone(&shared),
        ));
    }
    while running.join_next().await.is_some() {}
}

/// Runs `step` for at most [`CHILD_WAIT`]: an overloaded node may not answer; says so on stderr.
async fn within<T>(
    what: &str,
    step: impl Future<Output = Result<T, impl Into<anyhow::Error>>>,
) -> Option<T> {
    match tokio::time::timeout(CHILD_WAIT, step).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            eprintln!("load: {what}: {:#}", error.into());
            None
        }
        Err(_) => {
            eprintln!("load: {what}: no answer within {CHILD_WAIT:?}");
            None
        }
    }
}

/// A figure, or `na` when it could not be measured (a node did not answer in time).
fn or_na(figure: Option<impl std::fmt::Display>) -> String {
    figure.map_or_else(|| "na".to_owned(), |figure| figure.to_string())
}

/// Polls until every node holds `want` tuples or `deadline` passes, saying how far it got
/// every [`PROGRESS_EVERY`] seconds; returns how many nodes still lack some.
async fn wait_all_hold(nodes: &[Node], want: usize, deadline: Instant) -> Result<usize> {
    let started = Instant::now();
    let mut said = 0;
    let mut waiting = nodes.to_vec();
    while !waiting.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(SETTLE_POLL).await;
        // All at once and bounded: one busy node must not hold up the others or the deadline.
        let mut asking = JoinSet::new();
        for node in waiting {
            let node = node.clone();
            asking.spawn(async move {
                let status = tokio::time::timeout(SETTLE_POLL * 5, node.status()).await;
                (
                    node,
                    matches!(status, Ok(Ok(status)) if status.tuples >= want),
                )
            });
        }
        waiting = Vec::with_capacity(asking.len());
        while let Some(answer) = asking.join_next().await {
            let (node, holds) = answer?;
            if !holds {
                waiting.push(node);
            }
        }
        let waited = started.elapsed().as_secs();
        if waited / PROGRESS_EVERY > said {
            said = waited / PROGRESS_EVERY;
            eprintln!(
                "load: setting up, {waited}s: {} of {} nodes hold all {want} tuples",
                nodes.len() - waiting.len(),
                nodes.len()
            );
        }
    }
    Ok(waiting.len())
}

/// `zgossip bench load`.
pub async fn load(args: &LoadArgs) -> Result<Report> {
    let (clients, services) = (args.clients, args.services);
    if clients == 0 || services < 2 {
        bail!("load needs at least 1 client and 2 services per client");
    }
    if args.seconds == 0 || args.update_every.is_zero() {
        bail!("--seconds and --update-every must be positive");
    }
    let window = Duration::from_secs(args.seconds);
    let warmup = args.warmup.unwrap_or(args.ttl.min(window / 2));
    if warmup >= window {
        bail!("--warmup must be shorter than --seconds");
    }
    let total = clients * services;
    let (mut server, endpoint) = Server::start(args).await?;
    let process = server.process();
    eprintln!(
        "load: node under test at {endpoint} ({}), {} KB resident; {clients} clients × {services} services, ttl {}",
        match process {
            Process::Pid(pid) => format!("pid {pid}"),
            Process::Current => "in this process".to_owned(),
        },
        process.rss_kb()?,
        humantime::format_duration(args.ttl)
    );

    // The observer subscribes before it connects, so it sees every delivery.
    let observer = Node::spawn({
        let mut config = args.config("observer");
        config.event_capacity = OBSERVER_EVENTS;
        config
    })?;
    let shared = Arc::new(Shared::default());
    let observing = tokio::spawn(observe(observer.events().await?, Arc::clone(&shared)));
    observer.connect(&endpoint).await?;

    let setup = Instant::now();
    let mut nodes = Vec::with_capacity(clients);
    let mut wire = None;
    if args.node_clients {
        for client in 0..clients {
            let node = Node::spawn(args.config(format!("client-{client}")))?;
            node.connect(&endpoint).await?;
            nodes.push(node);
        }
    } else {
        let config = args.config("wire");
        let plan = Plan {
            endpoint: endpoint.clone(),
            clients,
            services,
            ttl: args.ttl,
            ping_every: config.ping_interval.unwrap_or(config.server_timeout / 3),
        };
        wire = Some(WireClients::start(plan, Arc::clone(&shared))?);
    }
    let mut publishing = JoinSet::new();
    for (client, node) in nodes.iter().enumerate() {
        let (node, ttl) = (node.clone(), args.ttl);
        publishing.spawn(async move {
            node.publish_for(&service_key(client, 0), &moving_value(client, 0), Some(ttl))
                .await?;
            for service in 1..services {
                node.publish_for(
                    &service_key(client, service),
                    &stable_value(service),
                    Some(ttl),
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = publishing.join_next().await {
        done??;
    }
    let mut everyone = nodes.clone();
    everyone.push(observer.clone());
    let short = wait_all_hold(&everyone, total, setup + args.setup_timeout).await?;
    let setup_s = setup.elapsed().as_secs_f64();
    if short == 0 {
        eprintln!("load: {total} tuples at every client and the observer after {setup_s:.1}s");
    } else {
        // Measure anyway: an overloaded node is what this is for.
        eprintln!(
            "load: {short} of {} nodes still lack some of the {total} tuples after {setup_s:.1}s; measuring anyway",
            everyone.len()
        );
    }
    eprintln!(
        "load: measuring {}s (warm-up {})",
        args.seconds,
        humantime::format_duration(warmup)
    );

    let before = server.figures().await;
    let cpu_before = process.cpu_seconds()?;
    let start = Instant::now();
    let end = start + window;
    if let Some(wire) = &wire {
        wire.start_moving(Moves {
            start,
            every: args.update_every,
            end,
        });
    }
    let mut movers = JoinSet::new();
    for (client, node) in nodes.iter().enumerate() {
        let first = start + args.update_every.mul_f64(client as f64 / clients as f64);
        movers.spawn(move_service(
            node.clone(),
            client,
            (first, args.update_every, end),
            args.ttl,
            Arc::clone(&shared),
        ));
    }
    let lookups = tokio::spawn(run_lookups(
        args.clone(),
        endpoint.clone(),
        end,
        Arc::clone(&shared),
    ));

    let mut rss = RssSamples::default();
    let mut ticks = tokio::time::interval_at((start + SAMPLE_EVERY).into(), SAMPLE_EVERY);
    for second in 1..=args.seconds {
        ticks.tick().await;
        let kb = process.rss_kb()?;
        rss.samples.push((start.elapsed().as_secs_f64(), kb));
        if second % PROGRESS_EVERY == 0 || second == args.seconds {
            eprintln!(
                "load: {second:>3}s rss={kb}KB updates={} delivered={} lookups={} misses={} skipped={} lagged={}",
                shared.updates.load(Ordering::Relaxed),
                shared.delivered.load(Ordering::Relaxed),
                shared.lookups.load(Ordering::Relaxed),
                shared.lookup_misses.load(Ordering::Relaxed),
                shared.lookups_skipped.load(Ordering::Relaxed),
                shared.lagged.load(Ordering::Relaxed),
            );
        }
    }
    let cpu = process.cpu_seconds()? - cpu_before;
    let measured = start.elapsed().as_secs_f64();
    let after = server.figures().await;

    // What every node should hold now: the stable services and each moving one's last value.
    let mut expected = HashMap::with_capacity(total);
    for client in 0..clients {
        for service in 1..services {
            expected.insert(service_key(client, service), stable_value(service));
        }
    }
    while let Some(done) = movers.join_next().await {
        let (client, generation) = done??;
        expected.insert(service_key(client, 0), moving_value(client, generation));
    }
    if let Some(wire) = &wire {
        // The clients' thread checks its clock every few milliseconds; let it see the end.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (client, generation) in wire.generations().into_iter().enumerate() {
            expected.insert(service_key(client, 0), moving_value(client, generation));
        }
    }
    lookups.await?;

    eprintln!("load: window over; letting the observer settle");
    let settling = Instant::now();
    let mut observed = None;
    while settling.elapsed() < args.settle {
        observed = within("the observer's tuples", observer.tuples())
            .await
            .map(|held| compare(&held, &expected));
        if observed.is_some_and(|(lost, extra)| lost + extra == 0) {
            break;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    let settle_s = settling.elapsed().as_secs_f64();
    let fresh = within("a fresh client's resync", async {
        let fresh = Node::spawn(args.config("fresh"))?;
        fresh.connect(&endpoint).await?;
        if !fresh.wait_synced(LOOKUP_WAIT).await? {
            eprintln!("load: the fresh client did not sync within {LOOKUP_WAIT:?}");
        }
        let held = fresh.tuples().await?;
        fresh.kill().await?;
        anyhow::Ok(compare(&held, &expected))
    })
    .await;

    let mut asking = JoinSet::new();
    for node in nodes {
        asking.spawn(async move { within("a client's status", node.status()).await });
    }
    let mut redials = 0;
    while let Some(status) = asking.join_next().await {
        redials += status?.map_or(0, |status| status.stats.redials);
    }
    let hellos_again = match wire {
        Some(wire) => {
            tokio::task::spawn_blocking(move || wire.stop())
                .await??
                .hellos_again
        }
        None => 0,
    };
    // The clients and the observer end as their last handles drop; the node under test says
    // goodbye to nobody that matters any more.
    drop(observer);
    observing.abort();
    server.stop().await?;

    let latencies = std::mem::take(&mut *lock(&shared.latencies));
    let lookup_times = std::mem::take(&mut *lock(&shared.lookup_times));
    let verdict = rss
        .judge(warmup.as_secs_f64(), args.rss_limit_pct)
        .context("no RSS sample after the warm-up")?;
    let updates = shared.updates.load(Ordering::Relaxed);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let misses = shared.lookup_misses.load(Ordering::Relaxed);
    let delta = |name: &str| match (&before, &after) {
        (Some(before), Some(after)) => Some(after.get(name)?.saturating_sub(*before.get(name)?)),
        _ => None,
    };
    let per_s = |name: &str| delta(name).map(|n| format!("{:.0}", n as f64 / measured));
    let unverified = (total, total);
    let (lost, extra) = observed.unwrap_or(unverified);
    let (lost_fresh, extra_fresh) = fresh.unwrap_or(unverified);
    let pass = short == 0
        && verdict.flat
        && observed.is_some()
        && fresh.is_some()
        && lost + lost_fresh + extra + extra_fresh == 0
        && misses == 0;

    let mut report = Report::default();
    report
        .add("clients", clients)
        .add("services", services)
        .add("seconds", args.seconds)
        .add("ttl_s", args.ttl.as_secs_f64())
        .add("publishes", updates)
        .add("delivered", delivered)
        .add("lost", or_na(observed.map(|_| lost)))
        .add("lost_fresh", or_na(fresh.map(|_| lost_fresh)))
        .add("extra", extra + extra_fresh)
        .add("lookups", shared.lookups.load(Ordering::Relaxed))
        .add("lookup_misses", misses)
        .add(
            "lookups_skipped",
            shared.lookups_skipped.load(Ordering::Relaxed),
        )
        .add("p50_ms", or_na(latencies.quantile_ms(0.50, 2)))
        .add("p99_ms", or_na(latencies.quantile_ms(0.99, 2)))
        .add("max_ms", or_na(latencies.quantile_ms(1.0, 2)))
        .add("lookup_p99_ms", or_na(lookup_times.quantile_ms(0.99, 1)))
        .add("rss_warm_kb", verdict.warm_kb)
        .add("rss_end_kb", verdict.end_kb)
        .add("rss_max_kb", verdict.max_kb)
        .add("rss_growth_pct", format!("{:.1}", verdict.growth_pct))
        .add("rss", if verdict.flat { "flat" } else { "growing" })
        .add("server_cpu_pct", format!("{:.0}", cpu * 100.0 / measured))
        .add("server_in_per_s", or_na(per_s("publish_received")))
        .add("server_out_per_s", or_na(per_s("publish_sent")))
        .add("sessions_expired", or_na(delta("sessions_expired")))
        .add("overflows", or_na(delta("overflows")))
        .add("invalid_sent", or_na(delta("invalid_sent")))
        .add("expired", or_na(delta("expired")))
        .add(
            "clients_as",
            if args.node_clients { "nodes" } else { "wire" },
        )
        .add("redials", redials)
        .add("hellos_again", hellos_again)
        .add("lagged", shared.lagged.load(Ordering::Relaxed))
        .add("setup_s", format!("{setup_s:.1}"))
        .add("setup_short", short)
        .add("settle_s", format!("{settle_s:.1}"))
        .add("verdict", if pass { "pass" } else { "fail" });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_judged_from_the_end_of_the_warm_up() {
        let rss = RssSamples {
            samples: vec![(1.0, 500), (2.0, 1000), (3.0, 1080), (4.0, 1050)],
        };
        let verdict = rss.judge(2.0, 10.0);
        assert_eq!(
            verdict,
            Some(RssVerdict {
                warm_kb: 1000,
                end_kb: 1050,
                max_kb: 1080,
                growth_pct: 8.0,
                flat: true
            })
        );
        assert!(rss.judge(2.0, 5.0).is_some_and(|v| !v.flat));
        assert_eq!(rss.judge(5.0, 10.0), None);
    }

    #[test]
    fn quantiles_are_milliseconds_to_three_significant_digits() {
        let mut latencies = Latencies::default();
        assert_eq!(latencies.quantile_ms(0.99, 1), None);
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        let ms = |fraction| -> f64 { latencies.quantile_ms(fraction, 3).unwrap().parse().unwrap() };
        for (fraction, exact) in [(0.5, 50.0), (0.99, 99.0), (1.0, 100.0)] {
            let got = ms(fraction);
            assert!(
                (got - exact).abs() <= exact / 1000.0,
                "{fraction}: {got} ms"
            );
        }
        assert_eq!(latencies.quantile_ms(0.5, 1).as_deref(), Some("50.0"));
    }

    #[test]
    fn missing_and_stale_tuples_count_as_lost() {
        let expected: HashMap<String, String> = [("a", "1"), ("b", "2"), ("c", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let held = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            compare(&held(&[("a", "1"), ("b", "2"), ("c", "3")]), &expected),
            (0, 0)
        );
        assert_eq!(
            compare(&held(&[("a", "1"), ("b", "old"), ("d", "4")]), &expected),
            (2, 1)
        );
    }
}
