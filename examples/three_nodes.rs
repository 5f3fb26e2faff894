//! Three nodes over three transports in one process: `base` listens on tcp and inproc,
//! `alpha` dials it over tcp, `beta` over inproc. Each announces services; every node ends up
//! knowing all of them, and each looks one up by name. Then `alpha` stops and restarts, and
//! gets everything back at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::Result;
use zgossip::{Config, Event, Node};

fn config(name: &str) -> Config {
    Config {
        name: Some(name.into()),
        ..Config::default()
    }
}

/// Waits until `node` holds `count` tuples.
async fn wait_count(node: &Node, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.status().await?.tuples < count {
        anyhow::ensure!(Instant::now() < deadline, "never got {count} tuples");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn lookup(node: &Node, service: &str) -> Result<Vec<String>> {
    Ok(node
        .tuples()
        .await?
        .into_iter()
        .filter(|(_, v)| v == service)
        .map(|(k, _)| k)
        .collect())
}

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let base = Node::spawn(config("base"))?;
    let tcp = base.bind("tcp://127.0.0.1:*").await?;
    let inproc = base.bind("inproc://base").await?;
    println!("base    listens on {tcp} and {inproc}");

    let alpha = Node::spawn(config("alpha"))?;
    let mut alpha_events = alpha.events().await?;
    alpha.connect(&tcp).await?;
    let beta = Node::spawn(config("beta"))?;
    beta.connect(&inproc).await?;
    println!("alpha   dials {tcp}; beta dials {inproc}");

    base.publish("tcp://10.0.0.1:5000", "registry").await?;
    alpha.publish("tcp://10.0.0.2:6000", "orders").await?;
    alpha.publish("tcp://10.0.0.2:6001", "billing").await?;
    beta.publish("tcp://10.0.0.3:6000", "orders").await?;
    println!("announced: registry at base, orders+billing at alpha, orders at beta");

    for node in [&base, &alpha, &beta] {
        wait_count(node, 4).await?;
    }
    println!(
        "all three nodes hold all 4 tuples after {:?}",
        started.elapsed()
    );
    for _ in 0..4 {
        if let Ok(Event::Deliver { key, value }) = alpha_events.recv().await {
            println!("  alpha DELIVER {key} {value}");
        }
    }
    println!(
        "beta  looks up orders  -> {:?}",
        lookup(&beta, "orders").await?
    );
    println!(
        "alpha looks up registry -> {:?}",
        lookup(&alpha, "registry").await?
    );

    alpha.shutdown().await?;
    let restarted = Instant::now();
    let alpha = Node::spawn(config("alpha-again"))?;
    alpha.connect(&tcp).await?;
    wait_count(&alpha, 4).await?;
    println!(
        "alpha restarted and had all 4 tuples back in {:?}",
        restarted.elapsed()
    );

    let status = base.status().await?;
    println!(
        "base: {} tuples, {} client sessions, {} malformed messages seen",
        status.tuples, status.sessions, status.stats.malformed
    );
    for node in [base, alpha, beta] {
        node.shutdown().await?;
    }
    Ok(())
}
