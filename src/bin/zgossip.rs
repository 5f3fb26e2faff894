//! The `zgossip` command. `zgossip node` runs one node whose pipe is this process's stdin and
//! stdout; `lookup`, `watch` and `status` join a network as a short-lived client node to ask it
//! something. Exit codes: 0 success, 1 what was asked for was not found (or the network could not
//! be reached), 2 bad usage (flags, endpoints, config file). `keygen` prints a fresh CURVE
//! keypair for a config file's `[curve]` section.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use zgossip::engine::validate;
use zgossip::node::{
    Announcement, LineFormat, SecureConnect, Setup, event_json, format_event, parse_duration,
};
use zgossip::transport::Endpoint;
use zgossip::{Config, CurveKey, CurveKeys, Node};

#[derive(Parser)]
#[command(
    name = "zgossip",
    version,
    about = "Gossip service discovery, wire-compatible with CZMQ's zgossip"
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
    Node(NodeArgs),
    /// Print the endpoints of a service, one per line (exit 1 when there are none).
    Lookup(LookupArgs),
    /// Print every event as it happens until interrupted.
    Watch(ClientArgs),
    /// Print every tuple known, with its remaining lease, and the count.
    Status(StatusArgs),
    /// Benchmarks: many nodes in this process; one result line on stdout.
    #[command(subcommand)]
    Bench(zgossip::bench::Bench),
    /// Print a fresh CURVE keypair as `[curve]` lines of a config file.
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
    #[arg(long, num_args = 2, value_names = ["EP", "SERVER_KEY"])]
    curve_connect: Vec<String>,
    /// Tuple to announce, as KEY=VALUE; repeatable; added to the file's announcements.
    #[arg(long, value_name = "KEY=VALUE")]
    publish: Vec<String>,
    /// Lease for announcements that do not name their own (e.g. 30s); none by default.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    ttl: Option<Duration>,
    /// Client session timeout (e.g. 1000, 250ms, 2s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    timeout: Option<Duration>,
    /// A name for this node's logs.
    #[arg(long)]
    name: Option<String>,
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
    #[arg(long, num_args = 2, value_names = ["EP", "SERVER_KEY"])]
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
    /// How long to wait for the network to sync, and then for the service to appear.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "2s")]
    wait: Duration,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// How long to wait for the network to sync.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "2s")]
    wait: Duration,
}

/// A mistake in what the user asked for: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// What was asked for is not there: exit code 1, with this said on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal; a log file or CI gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("ZGOSSIP_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();
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
            Command::Node(args) => run_node(args).await,
            Command::Lookup(args) => run_lookup(args).await,
            Command::Watch(args) => run_watch(args).await,
            Command::Status(args) => run_status(args).await,
            Command::Bench(bench) => zgossip::bench::run(bench).await,
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
        validate(key, value, setup.config.max_value_bytes)
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
        match Endpoint::parse(endpoint).map_err(|e| usage(e.to_string()))? {
            Endpoint::Zmq(_) => {}
            Endpoint::Inproc(_) => return Err(usage("CURVE needs tcp:// or ipc://".into()).into()),
        }
        remotes.push(SecureConnect {
            endpoint: endpoint.clone(),
            server_key: CurveKey::from_z85(key).map_err(|e| usage(e.to_string()))?,
        });
    }
    Ok(remotes)
}

/// Prints a fresh keypair as TOML: paste it under `[curve]`, hand out the public key.
fn keygen() -> Result<()> {
    let keys = CurveKeys::generate()?;
    let mut stdout = std::io::stdout().lock();
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

async fn run_node(args: NodeArgs) -> Result<()> {
    let setup = node_setup(&args)?;
    let node = Node::spawn(setup.config.clone())?;
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

    let format = if args.json {
        LineFormat::Json
    } else {
        LineFormat::Words
    };
    let (writer, mut reader) = node.pipe_with(format).await?.split();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut stdout = std::io::stdout().lock();
    loop {
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => writer.send(&line).await?,
                // EOF (or an unreadable stdin) leaves the node running.
                Ok(None) | Err(_) => stdin_open = false,
            },
            line = reader.recv() => match line {
                Some(line) => {
                    writeln!(stdout, "{line}")?;
                    stdout.flush()?;
                }
                None => break,
            },
            _ = sigterm.recv() => writer.send("$TERM").await?,
            _ = sigint.recv() => writer.send("$TERM").await?,
        }
    }
    Ok(())
}

impl ClientArgs {
    /// The plain and CURVE remotes, checked before anything starts.
    fn remotes(&self) -> Result<Vec<SecureConnect>> {
        for endpoint in &self.connect {
            Endpoint::parse(endpoint).map_err(|e| Usage(e.to_string()))?;
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
    let node = Node::spawn(Config {
        name: Some("client".into()),
        ..Config::default()
    })?;
    dial_all(&node, &args.connect, &curve).await?;
    Ok(node)
}

/// Waits for every remote's resync, saying so on stderr.
async fn sync(node: &Node, args: &ClientArgs, wait: Duration) -> Result<bool> {
    let endpoints = args.endpoints();
    eprintln!(
        "zgossip: waiting up to {} for {endpoints} to sync",
        humantime::format_duration(wait)
    );
    let synced = node.wait_synced(wait).await?;
    if !synced {
        eprintln!(
            "zgossip: {endpoints} did not answer within {}",
            humantime::format_duration(wait)
        );
    }
    Ok(synced)
}

async fn run_lookup(args: LookupArgs) -> Result<()> {
    let started = tokio::time::Instant::now();
    let node = client_node(&args.client).await?;
    let synced = sync(&node, &args.client, args.wait).await?;
    let mut found = node.lookup(&args.service).await?;
    // Whole milliseconds, so progress messages stay readable.
    let left =
        Duration::from_millis(args.wait.saturating_sub(started.elapsed()).as_millis() as u64);
    if found.is_empty() && synced && !left.is_zero() {
        eprintln!(
            "zgossip: no {} yet; waiting up to {}",
            args.service,
            humantime::format_duration(left)
        );
        found = node
            .wait_for_service(&args.service, left)
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
    if !sync(&node, &args.client, args.wait).await? {
        node.shutdown().await?;
        return Err(NotFound(format!("cannot reach {}", args.client.endpoints())).into());
    }
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
        writeln!(stdout, "{} tuples", tuples.len())?;
    }
    Ok(())
}

async fn run_watch(args: ClientArgs) -> Result<()> {
    let curve = args.remotes()?;
    let node = Node::spawn(Config {
        name: Some("watch".into()),
        ..Config::default()
    })?;
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
                    Ok(event) => format_event(&event),
                    Err(zgossip::node::EventsError::Lagged(missed)) => {
                        eprintln!("zgossip: missed {missed} events");
                        continue;
                    }
                    Err(zgossip::node::EventsError::Closed) => break,
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
