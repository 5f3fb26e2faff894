//! Quick start: three nodes in one process over `inproc://`. `registry` listens; `alpha` and
//! `beta` dial it and announce services; everyone looks services up by name. Then a service is
//! withdrawn, and a node dies without a word so its leased service expires.
//!
//! Run: `cargo run --example quick_start`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::Result;
use zgossip::{Config, Event, Node};

fn node(name: &str) -> Result<Node> {
    Ok(Node::spawn(Config::named(name))?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let registry = node("registry")?;
    registry.bind("inproc://registry").await?;
    let mut events = registry.events().await?;

    let alpha = node("alpha")?;
    alpha.connect("inproc://registry").await?;
    let beta = node("beta")?;
    beta.connect("inproc://registry").await?;
    println!("registry listens on inproc://registry; alpha and beta dial it");

    // A lease keeps a service only while its node lives; without one it stays until withdrawn.
    let lease = Some(Duration::from_secs(1));
    alpha
        .publish_for("tcp://10.0.0.1:6000", "orders", lease)
        .await?;
    alpha.publish("tcp://10.0.0.1:6001", "billing").await?;
    beta.publish_for("tcp://10.0.0.2:6000", "orders", lease)
        .await?;
    println!("alpha announces orders (1s lease) and billing; beta announces orders (1s lease)");

    let billing = beta
        .wait_for_service("billing", Duration::from_secs(2))
        .await?;
    println!("beta waited for billing: {billing:?}");
    while registry.lookup("orders").await?.len() < 2 {
        tokio::time::timeout(Duration::from_secs(2), events.recv()).await??;
    }
    println!(
        "registry looks up orders: {:?}",
        registry.lookup("orders").await?
    );

    alpha.unpublish("tcp://10.0.0.1:6001").await?;
    println!("alpha withdraws billing");
    beta.kill().await?;
    println!("beta dies without a word");
    let mut seen = 0;
    while seen < 2 {
        match tokio::time::timeout(Duration::from_secs(3), events.recv()).await?? {
            Event::Remove { key, .. } => {
                println!("  registry: REMOVE {key}");
                seen += 1;
            }
            Event::Expire { key, .. } => {
                println!("  registry: EXPIRE {key} (its lease ran out)");
                seen += 1;
            }
            _ => {}
        }
    }
    println!(
        "registry looks up orders: {:?}",
        registry.lookup("orders").await?
    );
    println!("done in {:?}", started.elapsed());
    for node in [registry, alpha] {
        node.shutdown().await?;
    }
    Ok(())
}
