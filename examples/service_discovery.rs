//! Discovery inside an application: an echo service listens on a free TCP port and registers
//! itself with a lease; a client that knows only the service's name waits for it, connects to
//! the endpoint it found, and talks to it. Neither knows the other's address in advance.
//!
//! Run: `cargo run --example service_discovery`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use zgossip::{Config, Node};

/// The service: echoes each line back, upper-cased.
async fn echo_service(gossip: Node) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("tcp://{}", listener.local_addr()?);
    gossip
        .publish_for(&endpoint, "echo", Some(Duration::from_secs(10)))
        .await?;
    println!("service: listening on {endpoint}, registered as `echo`");
    let (stream, _) = listener.accept().await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        write
            .write_all(format!("{}\n", line.to_uppercase()).as_bytes())
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // A gossip network of two nodes; in real life, one per process or machine.
    let service_node = Node::spawn(Config::default())?;
    let seed = service_node.bind("tcp://127.0.0.1:*").await?;
    let client_node = Node::spawn(Config::default())?;
    client_node.connect(&seed).await?;

    let service = tokio::spawn(echo_service(service_node.clone()));

    println!("client: waiting for `echo`...");
    let endpoints = client_node
        .wait_for_service("echo", Duration::from_secs(5))
        .await?;
    let address = endpoints
        .first()
        .and_then(|e| e.strip_prefix("tcp://"))
        .context("no tcp endpoint for echo")?;
    println!("client: found echo at {address}");
    let stream = TcpStream::connect(address).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"hello from the client\n").await?;
    let reply = BufReader::new(read)
        .lines()
        .next_line()
        .await?
        .context("no reply")?;
    println!("client: echo said {reply:?}");
    drop(write);
    service.await??;

    // A graceful stop withdraws `echo` everywhere at once, instead of after its lease.
    let mut events = client_node.events().await?;
    service_node.shutdown().await?;
    while !client_node.lookup("echo").await?.is_empty() {
        tokio::time::timeout(Duration::from_secs(2), events.recv()).await??;
    }
    println!(
        "the service stopped; lookup now finds {:?}",
        client_node.lookup("echo").await?
    );
    client_node.shutdown().await?;
    Ok(())
}
