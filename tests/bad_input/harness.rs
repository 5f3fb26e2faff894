//! One node under attack: started in-process on a real tcp or ipc listener, holding two known
//! tuples, with a well-behaved "veteran" client that said HELLO before anything bad happened.
//! [`Harness::assert_unharmed`] is the verdict every test ends with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use zgossip::Stats;
use zgossip::{Config, Node};

use crate::client::Client;
use crate::support;

/// The tuples every node under attack holds before the attack.
pub const KNOWN: [(&str, &str); 2] = [
    ("tcp://10.0.0.1:5555", "alpha"),
    ("tcp://10.0.0.2:5555", "beta"),
];

/// Which listener the node binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `tcp://127.0.0.1:*`.
    Tcp,
    /// `ipc://` in a fresh temporary directory.
    Ipc,
}

/// Settings for a node under attack: a session timeout long enough that no client in a test
/// needs to PING to keep its session, so a session that ends was ended by the attack.
pub fn config() -> Config {
    {
        let mut config = Config::default();
        config.server_timeout = Duration::from_secs(60);
        config
    }
}

/// A frame from `proto/vectors/bad/<name>` (hex text, `#` comments).
pub fn bad_vector(name: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("proto/vectors/bad")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let digits: String = text
        .lines()
        .flat_map(|line| line.split('#').next().unwrap_or("").split_whitespace())
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

/// A node under attack and its veteran client.
pub struct Harness {
    /// The node.
    pub node: Node,
    /// Where it listens, as bound (the real tcp port).
    pub endpoint: String,
    /// The tuples it must hold after the attack.
    pub tuples: Vec<(String, String)>,
    /// A client that said HELLO before the attack and must keep its session.
    pub veteran: Client,
    _dir: Option<TempDir>,
}

impl Harness {
    /// A node with [`config`].
    pub async fn start(transport: Transport) -> Harness {
        Harness::start_with(transport, config()).await
    }

    /// A node with `config`, listening, holding [`KNOWN`], with its veteran greeted.
    pub async fn start_with(transport: Transport, config: Config) -> Harness {
        let node = support::spawn(config);
        let (dir, wanted) = match transport {
            Transport::Tcp => (None, "tcp://127.0.0.1:*".to_owned()),
            Transport::Ipc => {
                let dir = tempfile::tempdir().unwrap();
                let endpoint = format!("ipc://{}/zgp.sock", dir.path().display());
                (Some(dir), endpoint)
            }
        };
        let endpoint = node.bind(&wanted).await.unwrap();
        if transport == Transport::Tcp {
            let port: u16 = endpoint.rsplit_once(':').unwrap().1.parse().unwrap();
            assert_ne!(port, 0, "bound {endpoint}");
        }
        for (key, value) in KNOWN {
            node.publish(key, value).await.unwrap();
        }
        let tuples = node.tuples().await.unwrap();
        assert_eq!(tuples.len(), KNOWN.len());
        let veteran = Client::connect(&endpoint).await;
        assert_eq!(
            veteran.hello().await,
            as_map(&tuples),
            "the veteran's resync"
        );
        Harness {
            node,
            endpoint,
            tuples,
            veteran,
            _dir: dir,
        }
    }

    /// The node's counters.
    /// The node's counters of refused, malformed and expired input. Traffic counters (PUBLISH
    /// sent and received) are zeroed: these tests are about what was refused, and a refused
    /// PUBLISH still counts as received.
    pub async fn stats(&self) -> Stats {
        {
            let mut stats = self.node.status().await.unwrap().stats;
            stats.publish_sent = 0;
            stats.publish_received = 0;
            stats
        }
    }

    /// Connected sessions.
    pub async fn sessions(&self) -> usize {
        self.node.status().await.unwrap().sessions
    }

    /// Polls the counters until `done` holds; fails after [`support::WAIT`].
    pub async fn wait_for_stats(&self, done: impl Fn(&Stats) -> bool, what: &str) -> Stats {
        support::wait_until(what, async || {
            let stats = self.stats().await;
            if done(&stats) { Ok(stats) } else { Err(stats) }
        })
        .await
    }

    /// A client with a connected session (it said HELLO and got the resync and a PONG).
    pub async fn greeted_client(&self) -> Client {
        let client = Client::connect(&self.endpoint).await;
        assert_eq!(
            client.hello().await,
            as_map(&self.tuples),
            "a greeted client's resync"
        );
        client
    }

    /// The verdict: no bad tuple was stored, a fresh client is served in full, and the veteran
    /// still has its session (a tuple published now reaches it). Then the node shuts down.
    pub async fn assert_unharmed(self) {
        let held = self.node.tuples().await.unwrap();
        assert_eq!(held, self.tuples, "the node's tuples changed");

        let fresh = Client::connect(&self.endpoint).await;
        assert_eq!(
            fresh.hello().await,
            as_map(&self.tuples),
            "a fresh client's resync"
        );

        self.node
            .publish("tcp://10.0.0.9:5555", "after-the-attack")
            .await
            .unwrap();
        for client in [&self.veteran, &fresh] {
            client
                .expect_publish("tcp://10.0.0.9:5555", "after-the-attack")
                .await;
        }
        self.veteran.ping().await;
        self.node.shutdown().await.unwrap();
    }
}

/// Tuples as a client collects them.
pub fn as_map(tuples: &[(String, String)]) -> BTreeMap<String, String> {
    tuples.iter().cloned().collect()
}
