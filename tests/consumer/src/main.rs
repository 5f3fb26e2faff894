//! zgossip from someone else's crate: plain tcp and ipc listeners, a CURVE listener dialled
//! with its public key, a publish and lookups across all three. Exits non-zero on any failure.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use zgossip::{Config, CurveKeys, Node};

/// Generous: each step takes milliseconds, but the machine may be busy.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("zgossip-consumer-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = tokio::time::timeout(4 * WAIT, run(&dir)).await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(result) => result,
        Err(_) => Err(format!("the consumer did not finish within {:?}", 4 * WAIT).into()),
    }
}

async fn run(dir: &PathBuf) -> Result<(), Box<dyn Error>> {
    // A plain node listening on tcp and ipc at once.
    let base = Node::spawn(Config::default())?;
    let tcp = base.bind("tcp://127.0.0.1:*").await?;
    let ipc = base
        .bind(&format!("ipc://{}", dir.join("base.ipc").display()))
        .await?;
    println!("plain listeners: {tcp} {ipc}");

    // A CURVE listener, itself a client of the plain node.
    let keys = CurveKeys::generate()?;
    let mut config = Config::named("secure");
    config.curve_public_key = Some(keys.public);
    config.curve_secret_key = Some(keys.secret);
    let secure = Node::spawn(config)?;
    let curve = secure.bind("tcp://127.0.0.1:*").await?;
    secure.connect(&tcp).await?;
    println!("CURVE listener: {curve} (public key {})", keys.public);

    // An application publishes over tcp.
    let app = Node::spawn(Config::default())?;
    app.connect(&tcp).await?;
    app.publish_for(
        "tcp://10.0.0.2:6000",
        "orders",
        Some(Duration::from_secs(30)),
    )
    .await?;

    // A client finds it over ipc, and another through the CURVE listener.
    let over_ipc = Node::spawn(Config::default())?;
    over_ipc.connect(&ipc).await?;
    let found = over_ipc.wait_for_service("orders", WAIT).await?;
    println!("over ipc: orders at {found:?}");

    let over_curve = Node::spawn(Config::default())?;
    over_curve.connect_secure(&curve, &keys.public).await?;
    let found = over_curve.wait_for_service("orders", WAIT).await?;
    println!("over CURVE: orders at {found:?}");

    // And what is published behind the CURVE link reaches the plain side.
    over_curve.publish("tcp://10.0.0.3:7000", "billing").await?;
    let found = over_ipc.wait_for_service("billing", WAIT).await?;
    println!("published over CURVE, found over ipc: billing at {found:?}");

    for node in [over_curve, over_ipc, app, secure, base] {
        node.shutdown().await?;
    }
    println!("consumer: ok");
    Ok(())
}
