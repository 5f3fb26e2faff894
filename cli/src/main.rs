//! The `zgossip` command. `zgossip node` runs one node whose pipe is this process's stdin and
//! stdout; `lookup`, `watch` and `status` join a network as a short-lived client node to ask it
//! something. `keygen` prints a fresh CURVE keypair as a config file's `[curve]` section.
//!
//! Exit codes (also in `--help`):
//! - 0: success.
//! - 1: what was asked for is not there (`lookup`: the network answered and no endpoint offers
//!   the service), or the node failed while running (`cannot bind ...`).
//! - 2: bad usage (flags, endpoints, durations without a unit, config file), before anything
//!   starts.
//! - 3: the network did not answer (`lookup`, `status`: no node dialled sent its resync within
//!   `--timeout`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};
use zgossip::{
    Config, CurveKey, CurveKeys, Endpoint, EventsError, LineFormat, Membership, Node, PipeReader,
    PipeWriter, event_json, validate_tuple,
};

use duration::parse_duration_with_unit;
use file::{Announcement, SecureConnect, Setup};

mod bench;
mod duration;
mod file;

/// What the exit codes mean, for `--help`.
const EXIT_CODES: &str = "Exit codes: 0 success; 1 not found (lookup: the network answered and \
no endpoint offers the service) or the node failed while running; 2 bad usage (flags, endpoints, \
durations without a unit, config file); 3 the network did not answer within --timeout (lookup, \
status).";

/// How long a stop by signal waits for the node's withdrawals and goodbyes, and then for lines
/// already queued to reach stdout, before exiting anyway: a stop is due within a second, and a
/// reader that stopped reading must not hold it up.
const STOP_LIMIT: Duration = Duration::from_millis(800);

/// How much of [`STOP_LIMIT`] the queued lines get once the node has stopped.
const STDOUT_GRACE: Duration = Duration::from_millis(200);

#[derive(Parser)]
#[command(
    name = "zgossip",
    version,
    about = "Gossip service discovery, wire-compatible with CZMQ's zgossip",
    after_help = EXIT_CODES
)]
struct Cli {
    /// More logging on stderr: -v info, -vv debug (ZGOSSIP_LOG overrides).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node; its pipe is stdin (commands) and stdout (replies and events).
    #[command(after_help = EXIT_CODES)]
    Node(NodeArgs),
    /// Print the endpoints of a service, one per line (exit 1 when there are none, 3 when the
    /// network does not answer).
    #[command(after_help = EXIT_CODES)]
    Lookup(LookupArgs),
    /// Print every event as it happens until interrupted.
    #[command(after_help = EXIT_CODES)]
    Watch(ClientArgs),
    /// Print every tuple known, with its remaining lease, and the count (exit 3 when the
    /// network does not answer).
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Print every member of the cluster as the node dialled knows it: id, name, state,
    /// incarnation, endpoints and tags (exit 3 when the network does not answer).
    #[command(after_help = EXIT_CODES)]
    Members(StatusArgs),
    /// Benchmarks: many nodes in this process; one result line on stdout.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Print a fresh CURVE keypair as the `[curve]` section of a config file.
    Keygen,
}

#[derive(Args)]
struct NodeArgs {
    /// A TOML configuration file; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Endpoint to listen on (tcp://host:port, tcp://*:*, ipc://path, inproc://name); repeatable;
    /// replaces the file's list.
    #[arg(long, value_name = "EP")]
    bind: Vec<String>,
    /// Peer endpoint to dial; repeatable; replaces the file's list.
    #[arg(long, value_name = "EP")]
    connect: Vec<String>,
    /// Peer endpoint to dial over CURVE, with its server's public key (Z85); repeatable;
    /// replaces the file's [[curve.connect]] list. This node's own keys come from the file only.
    // A Z85 key may start with '-'.
    #[arg(long, num_args = 2, value_names = ["EP", "SERVER_KEY"], allow_hyphen_values = true)]
    curve_connect: Vec<String>,
    /// Tuple to announce, as KEY=VALUE; repeatable; added to the file's announcements.
    #[arg(long, value_name = "KEY=VALUE")]
    publish: Vec<String>,
    /// Lease for announcements that do not name their own (e.g. 30s); none by default.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    ttl: Option<Duration>,
    /// Client session timeout (e.g. 250ms, 2s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    timeout: Option<Duration>,
    /// A name for this node's logs and its member record.
    #[arg(long)]
    name: Option<String>,
    /// An endpoint other nodes should dial to reach this one (e.g. tcp://10.0.0.5:5670);
    /// repeatable; replaces the file's list. Default: what it binds, except wildcards.
    #[arg(long, value_name = "EP")]
    advertise: Vec<String>,
    /// A tag other members see (e.g. zone=eu1); repeatable; replaces the file's list.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Print replies and events as JSON lines instead of words.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ClientArgs {
    /// A node of the network to ask; repeatable.
    #[arg(long, value_name = "EP", required_unless_present = "curve_connect")]
    connect: Vec<String>,
    /// A node to ask over CURVE, with its server's public key (Z85); repeatable. This client
    /// presents a throwaway keypair, so a server with an allow list refuses it.
    #[arg(long, num_args = 2, value_names = ["EP", "SERVER_KEY"], allow_hyphen_values = true)]
    curve_connect: Vec<String>,
    /// Print JSON instead of words.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LookupArgs {
    /// The service to look up.
    service: String,
    #[command(flatten)]
    client: ClientArgs,
    /// How long to wait for the network to answer (its resync); exit 3 when it does not.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "5s")]
    timeout: Duration,
    /// How long to wait, once the network has answered, for the service to appear. 0 (the
    /// default): answer from what the network holds now, as a query should; a script that has
    /// just started the service says how long it may take.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "0")]
    wait: Duration,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// How long to wait for the network to answer (its resync); exit 3 when it does not.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "5s")]
    timeout: Duration,
}

/// A mistake in what the user asked for: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// What was asked for is not there: exit code 1, with this said on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

/// The network did not answer: exit code 3, with this said on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NoAnswer(String);

/// Durations on the command line need a unit: `--ttl 30` is refused, suggesting `30s`.
fn duration(text: &str) -> Result<Duration, String> {
    parse_duration_with_unit(text)
}

/// The log filter on stderr, which the node's verbosity can raise while the process runs.
struct Logs {
    /// The filter given by `-v` or `ZGOSSIP_LOG`.
    base: String,
    reload: reload::Handle<EnvFilter, Registry>,
}

impl Logs {
    fn init(verbose: u8) -> Logs {
        let default_level = match verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        };
        let base = std::env::var("ZGOSSIP_LOG")
            .ok()
            .filter(|filter| EnvFilter::try_new(filter).is_ok())
            .unwrap_or_else(|| default_level.to_owned());
        let (filter, reload) = reload::Layer::new(EnvFilter::new(&base));
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colour codes only for a terminal; a log file or CI gets plain text.
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init();
        Logs { base, reload }
    }

    /// Follows the node's verbosity (`VERBOSE`, `SET server/animate`): its message logs are at
    /// info level, so a filter quieter than that lets this node's info through while it is on.
    async fn follow(self, mut verbose: watch::Receiver<bool>) {
        let base = EnvFilter::new(&self.base);
        if base
            .max_level_hint()
            .is_none_or(|max| max >= LevelFilter::INFO)
        {
            return;
        }
        while verbose.changed().await.is_ok() {
            let filter = if *verbose.borrow_and_update() {
                format!("{},zgossip=info", self.base)
            } else {
                self.base.clone()
            };
            if let Err(error) = self.reload.reload(EnvFilter::new(filter)) {
                eprintln!("zgossip: cannot change the log level: {error}");
                return;
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = Logs::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("zgossip: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => run_node(args, logs).await,
            Command::Lookup(args) => run_lookup(args).await,
            Command::Watch(args) => run_watch(args).await,
            Command::Status(args) => run_status(args).await,
            Command::Members(args) => run_members(args).await,
            Command::Bench(bench) => bench::run(bench).await,
            Command::Keygen => keygen(),
        }
    });
    // The blocking stdin reader may still wait for a line that never comes; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("zgossip: {error:#}");
            if error.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else if error.downcast_ref::<NoAnswer>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The file (if any) with the flags laid over it, checked before anything starts.
fn node_setup(args: &NodeArgs) -> Result<Setup> {
    let mut setup = match &args.config {
        Some(path) => Setup::load(path).map_err(|e| Usage(e.to_string()))?,
        None => Setup::default(),
    };
    if args.name.is_some() {
        setup.config.name.clone_from(&args.name);
    }
    if !args.tags.is_empty() {
        setup.config.tags.clone_from(&args.tags);
    }
    if !args.advertise.is_empty() {
        setup.config.advertise.clone_from(&args.advertise);
    }
    if let Some(timeout) = args.timeout {
        setup.config.server_timeout = timeout;
    }
    if args.ttl.is_some() {
        setup.default_ttl = args.ttl;
    }
    if !args.bind.is_empty() {
        setup.bind.clone_from(&args.bind);
    }
    if !args.connect.is_empty() {
        setup.connect.clone_from(&args.connect);
    }
    if !args.curve_connect.is_empty() {
        setup.curve_connect = curve_connects(&args.curve_connect)?;
    }
    for tuple in &args.publish {
        let (key, value) = tuple
            .split_once('=')
            .ok_or_else(|| Usage(format!("--publish {tuple:?}: expected KEY=VALUE")))?;
        validate_tuple(key, value, setup.config.max_value_bytes)
            .map_err(|e| Usage(format!("--publish {tuple:?}: {e}")))?;
        setup.announce.push(Announcement {
            key: key.to_owned(),
            value: value.to_owned(),
            ttl: None,
        });
    }
    setup.config.validate().map_err(|e| Usage(e.to_string()))?;
    for endpoint in setup.bind.iter().chain(&setup.connect) {
        Endpoint::parse(endpoint).map_err(|e| Usage(e.to_string()))?;
    }
    Ok(setup)
}

/// `--curve-connect EP KEY` pairs, checked: a tcp or ipc endpoint and a Z85 key.
fn curve_connects(words: &[String]) -> Result<Vec<SecureConnect>> {
    let mut remotes = Vec::new();
    for pair in words.chunks_exact(2) {
        let [endpoint, key] = pair else { continue };
        let usage = |why: String| Usage(format!("--curve-connect {endpoint}: {why}"));
        if Endpoint::parse(endpoint)
            .map_err(|e| usage(e.to_string()))?
            .is_inproc()
        {
            return Err(usage("CURVE needs tcp:// or ipc://".into()).into());
        }
        remotes.push(SecureConnect {
            endpoint: endpoint.clone(),
            server_key: CurveKey::from_z85(key).map_err(|e| usage(e.to_string()))?,
        });
    }
    Ok(remotes)
}

/// Prints a fresh keypair as a TOML `[curve]` section: append it to a config file, hand out the
/// public key.
fn keygen() -> Result<()> {
    let keys = CurveKeys::generate()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "[curve]")?;
    writeln!(stdout, "public-key = \"{}\"", keys.public)?;
    writeln!(stdout, "secret-key = \"{}\"", keys.secret)?;
    Ok(())
}

/// Dials every plain and CURVE remote.
async fn dial_all(node: &Node, plain: &[String], curve: &[SecureConnect]) -> Result<()> {
    for endpoint in plain {
        node.connect(endpoint).await?;
    }
    for remote in curve {
        node.connect_secure(&remote.endpoint, &remote.server_key)
            .await?;
    }
    Ok(())
}

async fn run_node(args: NodeArgs, logs: Logs) -> Result<()> {
    let setup = node_setup(&args)?;
    // Each client is a descriptor: a soft limit of 1,024 is filled by a flood of half-open
    // connections long before the hard limit would be.
    match zgossip::raise_open_file_limit() {
        Ok((before, after)) if after > before => {
            tracing::info!(
                before,
                after,
                "raised the open-file limit to the hard limit"
            );
        }
        Ok((limit, _)) => tracing::info!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let node = Node::spawn(setup.config.clone())?;
    tokio::spawn(logs.follow(node.verbosity()));
    let format = if args.json {
        LineFormat::Json
    } else {
        LineFormat::Words
    };
    // The pipe first, so its events include this node's own announcements.
    let (writer, reader) = node.pipe_with(format).await?.split();
    // stdin and stdout each have a task of their own: a writer that does not read its replies
    // holds up only the commands behind them, never the signals below.
    let mut printer = tokio::spawn(print_lines(reader));
    if setup.verbose {
        node.verbose(true).await?;
    }
    for endpoint in &setup.bind {
        let bound = node.bind(endpoint).await?;
        tracing::info!(%bound, "listening");
    }
    dial_all(&node, &setup.connect, &setup.curve_connect).await?;
    for announce in &setup.announce {
        let ttl = announce.ttl.or(setup.default_ttl);
        node.publish_for(&announce.key, &announce.value, ttl)
            .await
            .with_context(|| format!("announcing {}={}", announce.key, announce.value))?;
    }
    tokio::spawn(forward_stdin(writer));

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
        // The pipe ended: `$TERM`, the node stopped, or stdout is gone.
        printed = &mut printer => {
            let printed = printed.map_err(anyhow::Error::from).and_then(|r| Ok(r?));
            if printed.is_err() {
                // Nobody hears the node any more; it still withdraws what it announced.
                stop(&node, tokio::time::Instant::now() + STOP_LIMIT).await;
            }
            return printed.context("writing to stdout");
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_LIMIT;
    stop(&node, deadline).await;
    let grace = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .min(STDOUT_GRACE);
    if let Ok(printed) = tokio::time::timeout(grace, printer).await {
        printed??;
    }
    Ok(())
}

/// Stops the node gracefully (withdrawals, goodbyes), giving up at `deadline`.
async fn stop(node: &Node, deadline: tokio::time::Instant) {
    // A node already stopped is as good as stopped.
    if tokio::time::timeout_at(deadline, node.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the node did not stop within {STOP_LIMIT:?}; exiting anyway");
    }
}

/// Feeds stdin to the pipe line by line, in order. A line that is not UTF-8 gets its `ERROR`
/// reply from the pipe; EOF (or an unreadable stdin) leaves the node running.
async fn forward_stdin(writer: PipeWriter) {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if writer.send_bytes(&line).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Prints every reply and event line until the pipe ends, flushing whenever it has caught up.
async fn print_lines(mut reader: PipeReader) -> std::io::Result<()> {
    let mut stdout = BufWriter::new(tokio::io::stdout());
    while let Some(mut line) = reader.recv().await {
        loop {
            line.push('\n');
            stdout.write_all(line.as_bytes()).await?;
            match reader.try_recv() {
                Some(next) => line = next,
                None => break,
            }
        }
        stdout.flush().await?;
    }
    stdout.flush().await
}

impl ClientArgs {
    /// The plain and CURVE remotes, checked before anything starts.
    fn remotes(&self) -> Result<Vec<SecureConnect>> {
        for endpoint in &self.connect {
            if Endpoint::parse(endpoint)
                .map_err(|e| Usage(e.to_string()))?
                .is_inproc()
            {
                return Err(Usage(format!(
                    "--connect {endpoint}: an inproc:// endpoint exists only inside the \
                     process that bound it, and this command runs in a process of its own; \
                     dial the node's tcp:// or ipc:// endpoint"
                ))
                .into());
            }
        }
        curve_connects(&self.curve_connect)
    }

    /// Every endpoint asked, for messages.
    fn endpoints(&self) -> String {
        let curve = self.curve_connect.chunks_exact(2).filter_map(|p| p.first());
        let all: Vec<&str> = self
            .connect
            .iter()
            .chain(curve)
            .map(String::as_str)
            .collect();
        all.join(", ")
    }
}

/// A short-lived client node dialling every `--connect` and `--curve-connect` endpoint.
async fn client_node(args: &ClientArgs) -> Result<Node> {
    let curve = args.remotes()?;
    // An observer: it learns the members without becoming one, so tools that come and go do
    // not fill every member list.
    let mut config = Config::named("client");
    config.cluster = Membership::Observer;
    let node = Node::spawn(config)?;
    dial_all(&node, &args.connect, &curve).await?;
    Ok(node)
}

/// Waits for every remote's resync, saying so on stderr. Fails with [`NoAnswer`] when none
/// answered within `timeout`; when only some did, says so and goes on with what they sent.
async fn sync(node: &Node, args: &ClientArgs, timeout: Duration) -> Result<()> {
    let endpoints = args.endpoints();
    let timeout_text = humantime::format_duration(timeout);
    eprintln!("zgossip: waiting up to {timeout_text} for {endpoints} to answer");
    if node.wait_synced(timeout).await? {
        return Ok(());
    }
    let status = node.status().await?;
    if status.remotes_synced == 0 {
        node.shutdown().await?;
        return Err(NoAnswer(format!(
            "{endpoints} did not answer within {timeout_text} (is a node listening there?)"
        ))
        .into());
    }
    eprintln!(
        "zgossip: only {} of {} nodes answered within {timeout_text}; going on with theirs",
        status.remotes_synced, status.remotes
    );
    Ok(())
}

async fn run_lookup(args: LookupArgs) -> Result<()> {
    let node = client_node(&args.client).await?;
    sync(&node, &args.client, args.timeout).await?;
    let mut found = node.lookup(&args.service).await?;
    if found.is_empty() && !args.wait.is_zero() {
        eprintln!(
            "zgossip: no {} yet; waiting up to {}",
            args.service,
            humantime::format_duration(args.wait)
        );
        found = node
            .wait_for_service(&args.service, args.wait)
            .await
            .unwrap_or_default();
    }
    node.shutdown().await?;
    let mut stdout = std::io::stdout().lock();
    if args.client.json {
        writeln!(
            stdout,
            "{}",
            serde_json::json!({ "service": args.service, "endpoints": found })
        )?;
    } else {
        for endpoint in &found {
            writeln!(stdout, "{endpoint}")?;
        }
    }
    if found.is_empty() {
        return Err(NotFound(format!("no endpoint offers {}", args.service)).into());
    }
    Ok(())
}

async fn run_status(args: StatusArgs) -> Result<()> {
    let node = client_node(&args.client).await?;
    sync(&node, &args.client, args.timeout).await?;
    let tuples = node.tuple_details().await?;
    node.shutdown().await?;
    let mut stdout = std::io::stdout().lock();
    if args.client.json {
        let rows: Vec<_> = tuples
            .iter()
            .map(|t| {
                let lease_ms = t.lease_remaining.map(|d| d.as_millis() as u64);
                serde_json::json!({ "key": t.key, "value": t.value, "lease_ms": lease_ms })
            })
            .collect();
        writeln!(
            stdout,
            "{}",
            serde_json::json!({ "tuples": rows, "count": tuples.len() })
        )?;
    } else {
        for t in &tuples {
            let lease = match t.lease_remaining {
                Some(left) => format!("{:.1}s", left.as_secs_f64()),
                None => "-".to_owned(),
            };
            writeln!(stdout, "{} {} {lease}", t.key, t.value)?;
        }
        let noun = if tuples.len() == 1 { "tuple" } else { "tuples" };
        writeln!(stdout, "{} {noun}", tuples.len())?;
    }
    Ok(())
}

async fn run_members(args: StatusArgs) -> Result<()> {
    let node = client_node(&args.client).await?;
    sync(&node, &args.client, args.timeout).await?;
    let members = node.members().await?;
    node.shutdown().await?;
    let mut stdout = std::io::stdout().lock();
    if args.client.json {
        let rows: Vec<_> = members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": format!("node:{:016x}", m.id),
                    "name": m.name,
                    "state": m.state.name(),
                    "incarnation": m.incarnation,
                    "joined_ms": m.joined_ms,
                    "durable": m.durable,
                    "endpoints": m.endpoints,
                    "tags": m.tags,
                })
            })
            .collect();
        let count = members.len();
        writeln!(
            stdout,
            "{}",
            serde_json::json!({ "members": rows, "count": count })
        )?;
        return Ok(());
    }
    let dash = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(",")
        }
    };
    let rows: Vec<[String; 6]> = members
        .iter()
        .map(|m| {
            [
                format!("node:{:016x}", m.id),
                if m.name.is_empty() {
                    "-".into()
                } else {
                    m.name.clone()
                },
                dash(&m.endpoints),
                m.state.name().to_owned(),
                m.incarnation.to_string(),
                dash(&m.tags),
            ]
        })
        .collect();
    let header = ["Node", "Name", "Address", "Status", "Incarnation", "Tags"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(stdout, "{}", line.trim_end())?;
    }
    Ok(())
}

async fn run_watch(args: ClientArgs) -> Result<()> {
    let curve = args.remotes()?;
    let mut config = Config::named("watch");
    config.cluster = Membership::Observer;
    let node = Node::spawn(config)?;
    // Subscribe first, so the resync's events are seen too.
    let mut events = node.events().await?;
    dial_all(&node, &args.connect, &curve).await?;
    eprintln!("zgossip: watching {}; Ctrl-C to stop", args.endpoints());
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut stdout = std::io::stdout().lock();
    loop {
        tokio::select! {
            event = events.recv() => {
                let line = match event {
                    Ok(event) if args.json => event_json(&event).to_string(),
                    Ok(event) => event.to_string(),
                    Err(EventsError::Lagged(missed)) => {
                        eprintln!("zgossip: missed {missed} events");
                        continue;
                    }
                    Err(EventsError::Closed) => break,
                };
                writeln!(stdout, "{line}")?;
                stdout.flush()?;
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    node.shutdown().await?;
    Ok(())
}
