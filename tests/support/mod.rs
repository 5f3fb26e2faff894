//! What the root test files share: logging, starting nodes, and waiting for what a node holds or
//! says. Every wait polls or listens until the thing happens and fails only at [`WAIT`], a
//! ceiling a working node never comes near even on a loaded 2-core machine; in paused-time tests
//! the same waits run in virtual time.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;
use std::time::Duration;

use tokio::time::Instant;
use zgossip::{Config, Event, Events, EventsError, Node, Status};

/// The ceiling of every wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often a wait asks again: nodes have no event for "holds this now".
const POLL: Duration = Duration::from_millis(10);

/// Sends the nodes' log to the test's captured output (shown when it fails, or with
/// `--nocapture`), at the level `ZGOSSIP_LOG` says and warnings without it.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ZGOSSIP_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A node with `config`, logging as [`init_logging`] says.
pub fn spawn(config: Config) -> Node {
    init_logging();
    Node::spawn(config).unwrap()
}

/// A node with the default settings, named `name` in its log.
pub fn node(name: &str) -> Node {
    spawn(Config::named(name))
}

/// Asks `probe` until it gives `Ok`, and returns that; fails after [`WAIT`] naming `what` and
/// the last `Err` (what the node held instead).
pub async fn wait_until<T, E: Debug>(what: &str, probe: impl AsyncFnMut() -> Result<T, E>) -> T {
    wait_until_within(WAIT, what, probe).await
}

/// [`wait_until`] with its own ceiling.
pub async fn wait_until_within<T, E: Debug>(
    within: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; last {last:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `node` holds `key` with `value`.
pub async fn wait_holds(node: &Node, key: &str, value: &str) {
    wait_until(&format!("{key}={value} held"), async || {
        let held = node.get(key).await.unwrap();
        if held.as_deref() == Some(value) {
            Ok(())
        } else {
            Err(held)
        }
    })
    .await
}

/// Waits until `node` holds exactly `count` tuples; returns its status then.
pub async fn wait_tuples(node: &Node, count: usize) -> Status {
    wait_until(&format!("{count} tuples held"), async || {
        let status = node.status().await.unwrap();
        if status.tuples == count {
            Ok(status)
        } else {
            Err(status.tuples)
        }
    })
    .await
}

/// Reads events until one that `matches` accepts, and returns it; fails after `within` naming
/// `what`. Paused-time tests pass exact protocol bounds; others pass [`WAIT`].
pub async fn expect_event(
    events: &mut Events,
    within: Duration,
    what: &str,
    matches: impl Fn(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(event) if matches(&event) => return event,
                Err(EventsError::Closed) => panic!("the node stopped before {what}"),
                _ => {}
            }
        }
    });
    found
        .await
        .unwrap_or_else(|_| panic!("no {what} within {within:?}"))
}
