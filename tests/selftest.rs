//! CZMQ's zgossip selftest, ported: base binds with a short client timeout; alpha and beta
//! connect to it and announce two services each; alpha ends up delivering all four and STATUS
//! says 4. Then everyone stays idle for well over the timeout and a new tuple still crosses
//! base, because our remotes PING and so their sessions never expire. Run over inproc, ipc and
//! tcp, through the same string pipe a CZMQ application would use.
//!
//! Over inproc the clock is tokio's paused one and the timeout CZMQ's 100 ms, exactly; but an
//! in-process peer that is there is never judged silent (the transport says when one goes), so
//! the idle check bites over ipc and tcp. There the clock is the machine's and the timeout 2 s:
//! a loaded 2-core machine can pause a node for a good part of 100 ms, which looks like silence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{WAIT, init_logging};
use tokio::time::timeout;
use zgossip::{Config, Node, Pipe};

struct Peer {
    node: Node,
    pipe: Pipe,
    delivered: BTreeSet<(String, String)>,
}

impl Peer {
    async fn spawn(name: &str) -> Peer {
        // ZGOSSIP_LOG=debug shows what the nodes did when a run fails.
        init_logging();
        let config = Config::named(name);
        let node = Node::spawn(config).unwrap();
        let pipe = node.pipe().await.unwrap();
        Peer {
            node,
            pipe,
            delivered: BTreeSet::new(),
        }
    }

    async fn send(&mut self, line: &str) {
        self.pipe.send(line).await.unwrap();
    }

    /// Reads lines until one starts with `prefix`, noting every DELIVER on the way.
    async fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = timeout(WAIT, self.pipe.recv())
                .await
                .unwrap_or_else(|_| panic!("no {prefix} line within {WAIT:?}"))
                .expect("pipe closed");
            if let Some(rest) = line.strip_prefix("DELIVER ") {
                let (key, value) = rest.split_once(' ').unwrap();
                self.delivered.insert((key.into(), value.into()));
            }
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    async fn status(&mut self) -> usize {
        self.send("STATUS").await;
        self.expect("STATUS ").await["STATUS ".len()..]
            .parse()
            .unwrap()
    }

    /// Asks STATUS until it reaches `count`.
    async fn wait_status(&mut self, count: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.status().await != count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "STATUS never reached {count}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_delivered(&mut self, key: &str, value: &str) {
        let wanted = (key.to_owned(), value.to_owned());
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.delivered.contains(&wanted) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{key}={value} never delivered"
            );
            if let Ok(Some(line)) = timeout(Duration::from_millis(50), self.pipe.recv()).await
                && let Some((k, v)) = line
                    .strip_prefix("DELIVER ")
                    .and_then(|r| r.split_once(' '))
            {
                self.delivered.insert((k.into(), v.into()));
            }
        }
    }
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The selftest with base bound at `bind` (`tcp://host:*` binds a free port and uses it) and a
/// client timeout of `timeout_ms`.
async fn selftest(bind: &str, timeout_ms: u64) {
    let set_timeout = format!("SET server/timeout {timeout_ms}");
    let mut base = Peer::spawn("base").await;
    // A short timeout on clients so we can test expiry, as CZMQ's selftest does. The timeout
    // is a network setting: alpha and beta take it too, so they PING every third of it.
    base.send(&set_timeout).await;
    base.send(&format!("BIND {bind}")).await;
    base.send("PORT").await;
    let port: u16 = base.expect("PORT ").await["PORT ".len()..].parse().unwrap();
    let endpoint = match bind.strip_suffix(":*") {
        Some(host) => format!("{host}:{port}"),
        None => bind.to_owned(),
    };

    let mut alpha = Peer::spawn("alpha").await;
    alpha.send(&set_timeout).await;
    alpha.send(&format!("CONNECT {endpoint}")).await;
    alpha.send("ANNOUNCE inproc://alpha-1 service1").await;
    alpha.send("ANNOUNCE inproc://alpha-2 service2").await;

    let mut beta = Peer::spawn("beta").await;
    beta.send(&set_timeout).await;
    beta.send(&format!("CONNECT {endpoint}")).await;
    beta.send("ANNOUNCE inproc://beta-1 service1").await;
    beta.send("ANNOUNCE inproc://beta-2 service2").await;

    alpha.wait_status(4).await;
    let all = set(&[
        ("inproc://alpha-1", "service1"),
        ("inproc://alpha-2", "service2"),
        ("inproc://beta-1", "service1"),
        ("inproc://beta-2", "service2"),
    ]);
    assert_eq!(alpha.delivered, all, "alpha delivers all four");
    beta.wait_status(4).await;
    base.wait_status(4).await;

    // Idle for well over the timeout: sessions live on PINGs alone.
    let expired_before = base.node.status().await.unwrap().stats.sessions_expired;
    tokio::time::sleep(Duration::from_millis(timeout_ms * 3 / 2)).await;
    beta.send("ANNOUNCE inproc://beta-3 service3").await;
    alpha.wait_delivered("inproc://beta-3", "service3").await;
    let status = base.node.status().await.unwrap();
    assert_eq!(
        status.stats.sessions_expired, expired_before,
        "no session expired while idle"
    );
    assert_eq!(status.sessions, 2);
    assert_eq!(alpha.status().await, 5);

    for peer in [base, alpha, beta] {
        peer.node.shutdown().await.unwrap();
    }
}

/// The timeout over real sockets, where the clock is the machine's.
const REAL_CLOCK_TIMEOUT_MS: u64 = 2000;

#[tokio::test(start_paused = true)]
async fn selftest_over_inproc() {
    selftest("inproc://selftest-base", 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_over_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let bind = format!("ipc://{}/base", dir.path().display());
    selftest(&bind, REAL_CLOCK_TIMEOUT_MS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_over_tcp() {
    selftest("tcp://127.0.0.1:*", REAL_CLOCK_TIMEOUT_MS).await;
}
