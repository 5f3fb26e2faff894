//! A tcp cluster across processes: this program starts three child processes (itself, run as
//! `child`), each a node on 127.0.0.1 announcing a service with a 2 s lease, all dialling the
//! first. Then it joins as a client, looks the services up, kills one child with SIGKILL (its
//! service expires) and stops another with SIGTERM (its service is withdrawn at once).
//!
//! Run: `cargo run --example tcp_cluster`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use zgossip::{Config, Event, Node};

/// A child node: binds a free port, dials `seed` (unless "-"), announces `service`, prints
/// `READY <endpoint>` and runs until SIGTERM.
async fn child(name: &str, seed: &str, service: &str) -> Result<()> {
    let node = Node::spawn(Config::named(name))?;
    let endpoint = node.bind("tcp://127.0.0.1:*").await?;
    if seed != "-" {
        node.connect(seed).await?;
    }
    node.publish_for(
        &format!("{endpoint}/{service}"),
        service,
        Some(Duration::from_secs(2)),
    )
    .await?;
    println!("READY {endpoint}");
    signal(SignalKind::terminate())?.recv().await;
    node.shutdown().await?;
    Ok(())
}

fn spawn_child(name: &str, seed: &str, service: &str) -> Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["child", name, seed, service])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let endpoint = line
        .trim()
        .strip_prefix("READY ")
        .context("child did not start")?
        .to_owned();
    println!(
        "{name}: pid {} on {endpoint}, announcing {service}",
        child.id()
    );
    Ok((child, endpoint))
}

fn signal_child(child: &Child, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{signal} {} failed", child.id());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, name, seed, service] = args.as_slice()
        && mode == "child"
    {
        return child(name, seed, service).await;
    }

    let (mut first, seed) = spawn_child("node-1", "-", "registry")?;
    let (mut second, _) = spawn_child("node-2", &seed, "orders")?;
    let (mut third, _) = spawn_child("node-3", &seed, "billing")?;

    let client = Node::spawn(Config::default())?;
    let mut events = client.events().await?;
    client.connect(&seed).await?;
    for service in ["registry", "orders", "billing"] {
        let found = client
            .wait_for_service(service, Duration::from_secs(5))
            .await?;
        println!("client: {service} is at {found:?}");
    }

    signal_child(&third, "KILL")?;
    let killed = Instant::now();
    println!("node-3 killed with SIGKILL");
    loop {
        if let Event::Expire { key, .. } =
            tokio::time::timeout(Duration::from_secs(5), events.recv()).await??
        {
            println!(
                "client: EXPIRE {key}, {:?} after the kill",
                killed.elapsed()
            );
            break;
        }
    }
    signal_child(&second, "TERM")?;
    let stopped = Instant::now();
    println!("node-2 stopped with SIGTERM");
    loop {
        if let Event::Remove { key, .. } =
            tokio::time::timeout(Duration::from_secs(5), events.recv()).await??
        {
            println!(
                "client: REMOVE {key}, {:?} after the stop",
                stopped.elapsed()
            );
            break;
        }
    }
    println!("client: services left: {:?}", client.tuples().await?);
    signal_child(&first, "TERM")?;
    for child in [&mut first, &mut second, &mut third] {
        child.wait()?;
    }
    client.shutdown().await?;
    Ok(())
}
