//! Interop with a real CZMQ zgossip node: builds the small C program in
//! `tests/czmq/zgossip_peer.c` (a CZMQ 4.2 zgossip actor behind a line protocol) with gcc and
//! pkg-config, starts it listening on tcp, and has our node dial it. Each side announces a
//! service; each sees the other's.
//!
//! Needs `libczmq-dev` (`scripts/setup` installs it). Run: `cargo run --example czmq_interop`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use zgossip::{Config, Node};

/// Compiles the CZMQ peer into the system temp dir.
fn build_czmq_peer() -> Result<PathBuf> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/czmq/zgossip_peer.c");
    let binary = std::env::temp_dir().join("zgossip-czmq-peer");
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libczmq"])
        .output()?;
    if !flags.status.success() {
        bail!("pkg-config cannot find libczmq: install libczmq-dev (bash scripts/setup)");
    }
    let flags = String::from_utf8(flags.stdout)?;
    let status = Command::new("gcc")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .args(flags.split_whitespace())
        .status()?;
    if !status.success() {
        bail!("gcc failed to build {}", source.display());
    }
    Ok(binary)
}

#[tokio::main]
async fn main() -> Result<()> {
    let peer = build_czmq_peer()?;
    let mut czmq = Command::new(&peer)
        .args([
            "--name",
            "czmq",
            "--bind",
            "tcp://127.0.0.1:*",
            "--publish",
            "tcp://10.0.0.9:7000=legacy",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_czmq = czmq.stdin.take().context("stdin")?;
    let mut from_czmq = BufReader::new(czmq.stdout.take().context("stdout")?).lines();
    writeln!(to_czmq, "PORT")?;
    let port = loop {
        let line = from_czmq.next().context("CZMQ peer exited")??;
        if let Some(port) = line.strip_prefix("PORT ") {
            break port.to_owned();
        }
    };
    let endpoint = format!("tcp://127.0.0.1:{port}");
    println!("CZMQ 4.2 zgossip node listening on {endpoint}");

    let ours = Node::spawn(Config::default())?;
    ours.connect(&endpoint).await?;
    ours.publish("tcp://10.0.0.1:9000", "orders").await?;
    let legacy = ours
        .wait_for_service("legacy", Duration::from_secs(5))
        .await?;
    println!("our node learned from CZMQ: legacy is at {legacy:?}");

    loop {
        let line = from_czmq.next().context("CZMQ peer exited")??;
        println!("CZMQ node says: {line}");
        if line == "DELIVER tcp://10.0.0.1:9000 orders" {
            break;
        }
    }
    writeln!(to_czmq, "$TERM")?;
    czmq.wait()?;
    ours.shutdown().await?;
    Ok(())
}
