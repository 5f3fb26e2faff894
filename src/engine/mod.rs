//! The node as a sans-IO state machine. It owns the store, one session per client of our
//! listener, and one remote per CONNECT. Every entry point takes `now`; the engine never reads a
//! clock, sleeps or touches a socket. The actor feeds it what the transports received, sends what
//! [`Engine::poll_output`] returns, and calls [`Engine::handle_timeout`] at
//! [`Engine::poll_timeout`]. The rules it implements are in `proto/zgp.md` §5, §6 and §11.
//!
//! # Layout
//! One file per role, each an `impl Engine` block over the state this file declares:
//! - `sessions`: the server role (clients of our listeners).
//! - `remotes`: the client role (one remote per CONNECT, and per member the views dial).
//! - `gossip`: publishes, copies judged and kept, and forwarding.
//! - `members`: the cluster's members, their gossip and failure detection (§12).
//! - `views`: the links the node keeps by its own choice (HyParView's views, §12).
//! - `timers`: deadlines and what falls due at them.
//! - `resync`: a store sent a slice at a time.
//! - `output`, `stats`, `config`: what the engine says, counts and is told.
//! - `store`, `peers`: the tuple store, and the per-peer records.
//! - `harness` (tests and the `sim` feature): many engines on a virtual clock, without tokio.

mod config;
mod gossip;
#[cfg(any(test, feature = "sim"))]
pub mod harness;
mod known;
mod members;
mod output;
mod peers;
mod remotes;
mod resync;
mod sessions;
mod stats;
mod store;
mod timers;
mod views;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use tracing::{debug, info, warn};

use crate::warnings::Warnings;
use crate::wire::{Hail, MemberState, Message, Publish, Stamp};
pub use config::{EngineConfig, MAX_SERVER_TIMEOUT};
use members::Cluster;
#[cfg(feature = "sim")]
pub use members::MAX_INCARNATION;
pub use members::{ClusterConfig, MAX_NAME_BYTES, MAX_TAG_BYTES};
pub use output::{Event, ExpireReason, Output};
pub use peers::{ClientId, PeerState, RemoteId, node_name};
use peers::{Remote, Session, SessionState};
pub use remotes::TooManyRemotes;
pub use resync::Peer;
use resync::Resync;
pub use stats::Stats;
pub use store::{Entry, Kind, Own, Store, TupleError, millis, validate};

/// Where a copy came from, so it is not echoed back there.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    App,
    Client(ClientId),
    Remote(RemoteId),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::App => f.write_str("app"),
            Self::Client(client) => client.fmt(f),
            Self::Remote(remote) => write!(f, "remote {}", remote.0),
        }
    }
}

/// The node's state machine.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    store: Store,
    /// In the order clients came, so the same inputs give the same outputs, run after run.
    sessions: IndexMap<ClientId, Session>,
    /// By id; ids are never reused, so a stale report cannot reach a newer remote.
    remotes: IndexMap<RemoteId, Remote>,
    next_remote: u32,
    /// Resyncs under way, in the order they started.
    resyncs: IndexMap<Peer, Resync>,
    outputs: VecDeque<Output>,
    next_deadline: Option<Instant>,
    stats: Stats,
    /// What peers can make us log, rate-limited.
    warnings: Warnings,
    /// The cluster layer, when on.
    cluster: Option<Box<Cluster>>,
}

impl Engine {
    /// A node with no tuples, sessions or remotes.
    pub fn new(config: EngineConfig) -> Self {
        let cluster = (config.cluster.clone())
            .map(|cluster| Box::new(Cluster::new(config.node_id, *cluster)));
        Self {
            config,
            store: Store::default(),
            sessions: IndexMap::new(),
            remotes: IndexMap::new(),
            next_remote: 0,
            resyncs: IndexMap::new(),
            outputs: VecDeque::new(),
            next_deadline: None,
            stats: Stats::default(),
            warnings: Warnings::default(),
            cluster,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Changes the server timeout (and with it the default ping interval).
    pub fn set_server_timeout(&mut self, now: Instant, timeout: Duration) {
        self.config.server_timeout = timeout.min(MAX_SERVER_TIMEOUT);
        self.schedule(now);
    }

    /// Changes how often remotes PING; `None` is the default.
    pub fn set_ping_interval(&mut self, now: Instant, interval: Option<Duration>) {
        self.config.ping_interval = interval;
        self.schedule(now);
    }

    /// Changes how long tombstones are kept (for tombstones made from now on).
    pub fn set_tombstone_ttl(&mut self, ttl: Duration) {
        self.config.tombstone_ttl = ttl;
    }

    /// Whether stopping gracefully withdraws our own tuples.
    pub fn set_withdraw_on_stop(&mut self, on: bool) {
        self.config.withdraw_on_stop = on;
    }

    /// The tuples held.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What has happened so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every peer and its state: remotes by endpoint, connected sessions by node id.
    pub fn peers(&self) -> Vec<(String, PeerState)> {
        let remotes = self
            .remotes
            .values()
            .map(|r| (r.endpoint.clone(), r.liveness));
        let sessions = self
            .sessions
            .iter()
            .filter(|(_, s)| s.state == SessionState::Connected)
            .map(|(c, s)| (s.name(c), s.liveness));
        let mut peers: Vec<_> = remotes.chain(sessions).collect();
        peers.sort();
        peers
    }

    /// The next thing the actor should do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        let next = self.outputs.pop_front();
        // A resync can queue a whole store; an idle node should not keep room for it (with
        // thousands of nodes in a process, that room was a third of its memory).
        if next.is_none() && self.outputs.capacity() > 256 {
            self.outputs.shrink_to(64);
        }
        next
    }

    /// An in-process frame over `max_message_bytes` arrived: counted.
    pub fn handle_frame_too_large(&mut self, now: Instant, len: usize, max: usize) {
        self.stats.frames_too_large += 1;
        if self.warnings.allow(now, "oversized frame", &"in-process") {
            warn!(len, max, "dropped an oversized frame");
        }
    }

    fn hail(&self) -> Hail {
        Hail {
            node: self.config.node_id,
            goodbye: false,
            digest: None,
        }
    }
}

#[cfg(test)]
mod tests;
