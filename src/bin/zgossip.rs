//! The `zgossip` command: `zgossip node` runs one node whose pipe is this process's stdin and
//! stdout: each stdin line is a command, each stdout line a reply or event, and logs go to
//! stderr. EOF on stdin leaves the node running (it may run under a service manager);
//! `$TERM`, SIGINT or SIGTERM stop it.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use zgossip::{Config, Node};

#[derive(Parser)]
#[command(
    name = "zgossip",
    version,
    about = "Gossip service discovery, wire-compatible with CZMQ's zgossip"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node; its pipe is stdin (commands) and stdout (replies and events).
    Node(NodeArgs),
    /// Benchmarks: many nodes in this process; one result line on stdout.
    #[command(subcommand)]
    Bench(zgossip::bench::Bench),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// Endpoint to listen on (tcp://host:port, tcp://*:*, ipc://path, inproc://name); repeatable.
    #[arg(long, value_name = "EP")]
    bind: Vec<String>,
    /// Peer endpoint to dial; repeatable.
    #[arg(long, value_name = "EP")]
    connect: Vec<String>,
    /// Tuple to publish at start, as KEY=VALUE; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    publish: Vec<String>,
    /// Client session timeout (e.g. 1000, 250ms, 2s).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// A name for this node's logs.
    #[arg(long)]
    name: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("ZGOSSIP_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("zgossip: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => run_node(args).await,
            Command::Bench(bench) => zgossip::bench::run(bench).await,
        }
    });
    // The node has stopped; the blocking stdin reader may still wait for a line that never
    // comes, so do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("zgossip: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_node(args: NodeArgs) -> Result<()> {
    let mut config = Config {
        name: args.name,
        ..Config::default()
    };
    if let Some(timeout) = &args.timeout {
        config.server_timeout =
            zgossip::node::parse_duration(timeout).map_err(anyhow::Error::msg)?;
    }
    let node = Node::spawn(config)?;
    for endpoint in &args.bind {
        node.bind(endpoint).await?;
    }
    for endpoint in &args.connect {
        node.connect(endpoint).await?;
    }
    for tuple in &args.publish {
        let Some((key, value)) = tuple.split_once('=') else {
            bail!("--publish {tuple:?}: expected KEY=VALUE");
        };
        node.publish(key, value)
            .await
            .with_context(|| format!("--publish {tuple:?}"))?;
    }

    let (writer, mut reader) = node.pipe().await?.split();
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
