//! The node as a sans-IO state machine. It owns the store, one session per client of our
//! listener, and one remote per CONNECT. Every entry point takes `now`; the engine never reads a
//! clock, sleeps or touches a socket. The actor feeds it what the transports received, sends what
//! [`Engine::poll_output`] returns, and calls [`Engine::handle_timeout`] at
//! [`Engine::poll_timeout`]. The rules it implements are in `proto/zgp.md` §5, §6 and §11.

mod peers;
mod resync;
mod store;

use std::collections::{HashMap, VecDeque};

use indexmap::IndexMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::warnings::Warnings;
use crate::wire::{Hail, Message, Publish, Stamp};
pub use peers::{ClientId, PeerState, RemoteId, node_name};
use peers::{Remote, Session, SessionState};
pub use resync::Peer;
use resync::Resync;
pub use store::{Entry, Kind, Own, Store, TupleError, millis, validate};

/// How long an expired session is remembered, in server timeouts. A client we expired that
/// later PINGs is told INVALID (so it says HELLO and resyncs) instead of getting a PONG that
/// would hide the tuples it missed.
const EXPIRED_MEMORY_TIMEOUTS: u32 = 30;

/// The highest version a copy may carry. Versions start from a millisecond clock (about 2^41
/// today) and grow by one per publish, so no honest copy comes near it; refusing more keeps
/// `version + 1` from overflowing.
pub const MAX_VERSION: u64 = 1 << 62;

/// How far a peer's copy may reach above both the version held for its key and this node's own
/// version clock: about 139 years of milliseconds, so nodes' clocks need only agree within a
/// century, while one hostile copy cannot put a key out of its owner's reach (it would take a
/// million copies in a row, each accepted, to climb to [`MAX_VERSION`]).
pub const MAX_VERSION_LEAD: u64 = 1 << 42;

/// The longest server timeout the engine takes (a day); longer ones are clamped.
pub const MAX_SERVER_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The longest a remote holds back its HELLO after repeated INVALIDs.
const MAX_HELLO_BACKOFF: Duration = Duration::from_secs(30);

/// How long a HELLO is held back after `doublings` failures in a row: `base` doubled that many
/// times, at most [`MAX_HELLO_BACKOFF`]. Shared by INVALID streaks and silent redials.
fn hello_backoff(base: Duration, doublings: u32) -> Duration {
    base.saturating_mul(1 << doublings.min(16))
        .min(MAX_HELLO_BACKOFF)
}

/// PONGs in a row whose digest differs from ours, the same way each time, before a remote
/// resyncs: a difference that stays while neither store changes is a copy that went missing.
const DIGEST_PATIENCE: u32 = 3;

/// The longest wait between digest resyncs of one remote while the stores keep differing (as
/// they do for good when the nodes' limits differ).
const MAX_DIGEST_BACKOFF: Duration = Duration::from_secs(600);

/// A remote that has not connected for this long, while the transport reported no failure (an
/// address where nothing answers, so the connection attempt hangs), is told as dead, once.
pub const NO_ANSWER: Duration = Duration::from_secs(5);

/// The longest default ping interval: a third of CZMQ's 1 s server timeout.
pub const MAX_DEFAULT_PING: Duration = Duration::from_millis(333);

/// Engine settings. See [`crate::Config`] for the reasons behind the defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id, sent in hails and stamps; never 0.
    pub node_id: u64,
    /// A client session that sends nothing for this long expires; a remote that hears nothing
    /// for this long is redialled.
    pub server_timeout: Duration,
    /// How often a remote PINGs; `None` is a third of the timeout, at most [`MAX_DEFAULT_PING`].
    pub ping_interval: Option<Duration>,
    /// At most this many copies (tuples, tombstones, expiry records) are held.
    pub max_tuples: usize,
    /// What the copies held may weigh in all ([`Store::weight`]); an eighth of it is kept for
    /// this node's own publishes, which peers' copies cannot take.
    pub max_store_bytes: usize,
    /// What the copies made by any one origin node may weigh (CZMQ's unstamped copies share
    /// origin 0): one publisher cannot fill every node's store.
    pub max_origin_bytes: usize,
    /// At most this many bytes in a value.
    pub max_value_bytes: usize,
    /// At most this many client sessions (expired ones included) are held.
    pub max_sessions: usize,
    /// At most this many remotes (CONNECTs).
    pub max_remotes: usize,
    /// How long tombstones and expiry records are kept.
    pub tombstone_ttl: Duration,
    /// Withdraw our own tuples when stopping gracefully.
    pub withdraw_on_stop: bool,
    /// Where versions start: at this instant the version clock read this many milliseconds
    /// (since the Unix epoch, for a real node). A publish takes at least the clock's reading,
    /// so a node restarted with a new id beats the copies its previous lives left. `None`
    /// counts versions from 1, for tests.
    pub version_clock: Option<(Instant, u64)>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            server_timeout: Duration::from_millis(1000),
            ping_interval: None,
            max_tuples: 1_000_000,
            max_store_bytes: 96 << 20,
            max_origin_bytes: 24 << 20,
            max_value_bytes: 16 * 1024,
            max_sessions: 10_000,
            max_remotes: 1024,
            tombstone_ttl: Duration::from_secs(600),
            withdraw_on_stop: true,
            version_clock: None,
        }
    }
}

impl EngineConfig {
    /// How long a peer may be silent before it is reported suspect: two and a half PING
    /// intervals, so one late or lost answer on a lossy link is not a suspicion, but at least
    /// half the timeout and at most nine tenths of it.
    pub fn suspect_after(&self) -> Duration {
        let timeout = self.server_timeout;
        (self.ping_interval() * 5 / 2).clamp(timeout / 2, timeout * 9 / 10)
    }

    /// The version clock's reading at `now` (0 without a clock).
    pub fn version_clock(&self, now: Instant) -> u64 {
        self.version_clock.map_or(0, |(at, ms)| {
            let since = now.saturating_duration_since(at).as_millis();
            ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
        })
    }

    /// The stamp of our own new copy of `key` (a tuple, or a withdrawal), held at version
    /// `held`: a version past the held copy and no less than the clock; refused past
    /// [`MAX_VERSION`].
    fn own_stamp(
        &self,
        now: Instant,
        key: &str,
        held: Option<u64>,
        withdrawn: bool,
    ) -> Result<Stamp, TupleError> {
        let version = held
            .map_or(1, |v| v.saturating_add(1))
            .max(self.version_clock(now));
        if version > MAX_VERSION {
            return Err(TupleError::VersionExhausted {
                key: key.to_owned(),
            });
        }
        Ok(Stamp {
            version,
            origin: self.node_id,
            lease_seq: 0,
            withdrawn,
        })
    }

    /// The interval remotes PING at: as set, or a third of our own timeout but never more
    /// than [`MAX_DEFAULT_PING`], since the server we dial may use CZMQ's 1 s timeout.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
            .unwrap_or_else(|| (self.server_timeout / 3).min(MAX_DEFAULT_PING))
    }
}

/// A CONNECT past `max_remotes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many remotes (at most {max})")]
pub struct TooManyRemotes {
    /// The limit.
    pub max: usize,
}

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

/// What the application is told. Variants gain fields as the node learns more: match them
/// with `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A key new to this node (or back after a withdrawal or expiry), from anywhere, the
    /// application's own publishes included.
    #[non_exhaustive]
    Deliver {
        /// The tuple's key.
        key: Arc<str>,
        /// The tuple's value.
        value: Arc<str>,
    },
    /// A held key took a new value.
    #[non_exhaustive]
    Change {
        /// The key.
        key: Arc<str>,
        /// Its new value.
        value: Arc<str>,
    },
    /// The key was withdrawn (UNPUBLISH anywhere, or its owner stopped gracefully).
    #[non_exhaustive]
    Remove {
        /// The key.
        key: Arc<str>,
    },
    /// The key's lease ran out: its owner stopped refreshing it.
    #[non_exhaustive]
    Expire {
        /// The key.
        key: Arc<str>,
    },
    /// A peer changed state.
    #[non_exhaustive]
    Peer {
        /// The remote's endpoint, or a client's node id (or transport id before it hails).
        peer: String,
        /// Its new state.
        state: PeerState,
        /// Why, in a few words.
        reason: String,
    },
}

/// What the engine asks the actor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a message to a client of our listener.
    ToClient(ClientId, Message),
    /// Send a message through one of our remotes.
    ToRemote(RemoteId, Message),
    /// Close this remote's connection and dial it afresh.
    Redial(RemoteId),
    /// Tell the application.
    Event(Event),
}

/// Counters of what happened, for STATUS and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages from clients or servers that failed to decode.
    pub malformed: u64,
    /// INVALID replies sent.
    pub invalid_sent: u64,
    /// Client sessions expired for silence.
    pub sessions_expired: u64,
    /// New clients refused because `max_sessions` were held and none could be evicted.
    pub sessions_refused: u64,
    /// Sessions dropped to make room for a new client (silent, or never said HELLO).
    pub sessions_evicted: u64,
    /// Tuples from peers refused by the rules (key and value checks, `max_value_bytes`).
    pub tuples_refused: u64,
    /// New keys refused because `max_tuples` copies were held.
    pub store_full: u64,
    /// CONNECTs refused because `max_remotes` remotes existed.
    pub remotes_refused: u64,
    /// Peers dropped because they let more than `max_queued_bytes` pile up (not reading).
    pub overflows: u64,
    /// In-process frames refused for exceeding `max_message_bytes` (libzmq drops tcp/ipc
    /// connections that send one before we see it).
    pub frames_too_large: u64,
    /// Remotes redialled after a silence.
    pub redials: u64,
    /// PUBLISH messages sent.
    pub publish_sent: u64,
    /// PUBLISH messages received.
    pub publish_received: u64,
    /// Lease refreshes this node made for its own tuples.
    pub refreshes: u64,
    /// Tuples dropped because their lease ran out.
    pub expired: u64,
    /// Peers' new copies refused because their origin's share of the store was taken.
    pub origin_full: u64,
    /// Resyncs a remote asked for because its store and the server's stayed different.
    pub digest_resyncs: u64,
    /// BATCH frames received (their tuples count in `publish_received`).
    pub batches_received: u64,
    /// Peers' copies refused because their version was out of reach (see
    /// [`MAX_VERSION_LEAD`]); the sender's session goes on.
    pub versions_refused: u64,
    /// HELLOs that started no resync: one was under way for the session, or it had one less
    /// than a server timeout before.
    pub hellos_limited: u64,
}

impl Stats {
    /// Every counter by name, for `STATUS detail` and logs.
    pub fn pairs(&self) -> [(&'static str, u64); 20] {
        [
            ("malformed", self.malformed),
            ("invalid_sent", self.invalid_sent),
            ("sessions_expired", self.sessions_expired),
            ("sessions_refused", self.sessions_refused),
            ("sessions_evicted", self.sessions_evicted),
            ("tuples_refused", self.tuples_refused),
            ("store_full", self.store_full),
            ("origin_full", self.origin_full),
            ("remotes_refused", self.remotes_refused),
            ("overflows", self.overflows),
            ("redials", self.redials),
            ("publish_sent", self.publish_sent),
            ("publish_received", self.publish_received),
            ("refreshes", self.refreshes),
            ("expired", self.expired),
            ("frames_too_large", self.frames_too_large),
            ("digest_resyncs", self.digest_resyncs),
            ("batches_received", self.batches_received),
            ("versions_refused", self.versions_refused),
            ("hellos_limited", self.hellos_limited),
        ]
    }
}

/// The node's state machine.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    store: Store,
    sessions: HashMap<ClientId, Session>,
    remotes: Vec<Remote>,
    /// Resyncs under way, in the order they started.
    resyncs: IndexMap<Peer, Resync>,
    outputs: VecDeque<Output>,
    next_deadline: Option<Instant>,
    stats: Stats,
    /// What peers can make us log, rate-limited.
    warnings: Warnings,
}

impl Engine {
    /// A node with no tuples, sessions or remotes.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            store: Store::default(),
            sessions: HashMap::new(),
            remotes: Vec::new(),
            resyncs: IndexMap::new(),
            outputs: VecDeque::new(),
            next_deadline: None,
            stats: Stats::default(),
            warnings: Warnings::default(),
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

    /// How many client sessions are connected (said HELLO and not expired).
    pub fn connected_sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.state == SessionState::Connected)
            .count()
    }

    /// How many remotes there are, and how many of them are connected.
    pub fn remotes(&self) -> (usize, usize) {
        (
            self.remotes.len(),
            self.remotes.iter().filter(|r| r.connected).count(),
        )
    }

    /// How many remotes are connected and have the server's resync in (a PONG came after our
    /// last HELLO).
    pub fn remotes_synced(&self) -> usize {
        self.remotes
            .iter()
            .filter(|r| r.connected && r.synced)
            .count()
    }

    /// The endpoint a remote was created for.
    pub fn remote_endpoint(&self, id: RemoteId) -> Option<&str> {
        self.remotes.get(id.0 as usize).map(|r| r.endpoint.as_str())
    }

    /// Whether this client hailed, so is one of ours and reads BATCH (§7).
    pub fn client_reads_batches(&self, client: &ClientId) -> bool {
        self.sessions.get(client).is_some_and(|s| s.node.is_some())
    }

    /// Whether this remote's server hailed back, so is one of ours and reads BATCH (§7).
    pub fn remote_reads_batches(&self, id: RemoteId) -> bool {
        self.remotes
            .get(id.0 as usize)
            .is_some_and(|r| r.node.is_some())
    }

    /// Every peer and its state: remotes by endpoint, connected sessions by node id.
    pub fn peers(&self) -> Vec<(String, PeerState)> {
        let remotes = self
            .remotes
            .iter()
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

    /// When [`Engine::handle_timeout`] next has work. It may be called earlier or later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_deadline,
            self.store.next_end(),
            self.store.next_refresh(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When something we send on a clock (a PING, a held-back HELLO, a lease refresh) is next due: the part of
    /// [`Engine::poll_timeout`] that must not wait behind a backlog of input.
    pub fn poll_outbound_timeout(&self) -> Option<Instant> {
        let ping_interval = self.config.ping_interval();
        let pings = self
            .remotes
            .iter()
            .filter(|r| r.connected)
            .map(|r| r.last_sent + ping_interval);
        let hellos = self.remotes.iter().filter_map(|r| r.hello_due);
        pings.chain(hellos).chain(self.store.next_refresh()).min()
    }

    /// Sends the PINGs and lease refreshes that are due, and judges nothing: the actor calls
    /// this while input is still queued, since a peer whose messages we have not read yet is
    /// not silent. [`Engine::handle_timeout`] does this and the rest once the input is read.
    pub fn handle_outbound_timeout(&mut self, now: Instant) {
        let ping_interval = self.config.ping_interval();
        let hail = self.hail();
        for (index, remote) in self.remotes.iter_mut().enumerate() {
            if remote.connected && now.duration_since(remote.last_sent) >= ping_interval {
                remote.last_sent = now;
                // A server that answered without a hail is CZMQ's: plain v1 from then on.
                let cz = remote.synced && remote.node.is_none();
                let ping = Message::Ping((!cz).then_some(hail));
                self.outputs
                    .push_back(Output::ToRemote(RemoteId(index as u32), ping));
            }
        }
        while let Some(key) = self.store.pop_refresh(now) {
            self.refresh(now, key);
        }
        for index in 0..self.remotes.len() {
            let Some(remote) = self.remotes.get_mut(index) else {
                continue;
            };
            if remote.hello_due.is_some_and(|at| at <= now) {
                remote.hello_due = None;
                if remote.connected {
                    self.send_hello(now, RemoteId(index as u32));
                }
            }
        }
    }

    /// The application publishes a tuple, with a lease or without (`None` or zero).
    pub fn publish(
        &mut self,
        now: Instant,
        key: &str,
        value: &str,
        lease: Option<Duration>,
    ) -> Result<(), TupleError> {
        validate(key, value, self.config.max_value_bytes)?;
        let lease = lease.filter(|l| !l.is_zero());
        if let Some(lease) = lease
            && u32::try_from(lease.as_millis()).is_err()
        {
            return Err(TupleError::LeaseTooLong { lease });
        }
        let held = self.store.entry(key);
        if let Some(held) = held
            && held.owned()
            && held.kind == Kind::Live
            && *held.value == *value
            && held.lease() == lease
        {
            // The same tuple again: a duplicate, as in CZMQ.
            return Ok(());
        }
        let held = held.map(|h| h.stamp.version);
        let stamp = self.config.own_stamp(now, key, held, false)?;
        let ttl_ms = lease.map_or(0, millis);
        self.apply(
            now,
            Arc::from(key),
            Arc::from(value),
            ttl_ms,
            stamp,
            Origin::App,
        )?;
        Ok(())
    }

    /// The application withdraws a key, everywhere.
    pub fn unpublish(&mut self, now: Instant, key: &str) -> Result<(), TupleError> {
        let Some(held) = self.store.entry(key).filter(|e| e.kind == Kind::Live) else {
            return Err(TupleError::NotHeld {
                key: key.to_owned(),
            });
        };
        let stamp = (self.config).own_stamp(now, key, Some(held.stamp.version), true)?;
        let ttl_ms = millis(self.config.tombstone_ttl).max(1);
        self.apply(
            now,
            Arc::from(key),
            Arc::from(""),
            ttl_ms,
            stamp,
            Origin::App,
        )?;
        Ok(())
    }

    /// A graceful stop: withdraw our own tuples (unless configured not to) and say goodbye to
    /// every peer that will understand it.
    pub fn goodbye(&mut self, now: Instant) {
        if self.config.withdraw_on_stop {
            for key in self.store.owned() {
                let _ = self.unpublish(now, &key);
            }
        }
        let bye = Some(Hail {
            goodbye: true,
            ..self.hail()
        });
        for (index, remote) in self.remotes.iter().enumerate() {
            if remote.connected && remote.node.is_some() {
                self.outputs
                    .push_back(Output::ToRemote(RemoteId(index as u32), Message::Ping(bye)));
            }
        }
        for (client, session) in &self.sessions {
            if session.state == SessionState::Connected && session.node.is_some() {
                self.outputs
                    .push_back(Output::ToClient(client.clone(), Message::Pong(bye)));
            }
        }
    }

    /// A new outbound connection; the transport dials it and reports when it is connected.
    /// Refused past `max_remotes`.
    pub fn add_remote(&mut self, now: Instant, endpoint: &str) -> Result<RemoteId, TooManyRemotes> {
        if self.remotes.len() >= self.config.max_remotes {
            self.stats.remotes_refused += 1;
            warn!(
                max = self.config.max_remotes,
                endpoint, "too many remotes; refusing a CONNECT"
            );
            return Err(TooManyRemotes {
                max: self.config.max_remotes,
            });
        }
        let id = RemoteId(self.remotes.len() as u32);
        self.remotes.push(Remote::new(now, endpoint));
        self.schedule_at(now + NO_ANSWER);
        Ok(id)
    }

    /// A remote's server was not reading and its connection was dropped (the transport
    /// redials it): counted, and the remote is disconnected.
    pub fn handle_remote_overflow(&mut self, now: Instant, id: RemoteId) {
        self.stats.overflows += 1;
        self.handle_remote_disconnected(now, id);
    }

    /// An in-process frame over `max_message_bytes` arrived: counted.
    pub fn handle_frame_too_large(&mut self, now: Instant, len: usize, max: usize) {
        self.stats.frames_too_large += 1;
        if self.warnings.allow(now, "oversized frame", &"in-process") {
            warn!(len, max, "dropped an oversized frame");
        }
    }

    /// A message arrived from a client of our listener.
    pub fn handle_client_message(&mut self, now: Instant, client: ClientId, message: Message) {
        let state = match self.sessions.get_mut(&client) {
            Some(session) => {
                session.last_heard = now;
                session.state
            }
            None => {
                if !self.open_session(now, &client) {
                    return;
                }
                SessionState::Start
            }
        };
        if let Message::Hello(Some(hail)) | Message::Ping(Some(hail)) = &message
            && let Some(session) = self.sessions.get_mut(&client)
        {
            session.node = Some(hail.node);
        }
        if state == SessionState::Connected {
            self.heard_from_client(&client);
        }
        match (state, message) {
            (SessionState::Connected, Message::Ping(Some(Hail { goodbye: true, .. }))) => {
                // A goodbye ends the session it came on and nothing else: when another session
                // claims the same node, this one is named by its connection, not the node.
                if let Some(session) = self.sessions.remove(&client) {
                    let claimed = session.node.is_some_and(|node| {
                        self.sessions
                            .values()
                            .any(|s| s.node == Some(node) && s.state == SessionState::Connected)
                    });
                    let name = if claimed {
                        client.to_string()
                    } else {
                        session.name(&client)
                    };
                    self.peer_event(name, PeerState::Left, "goodbye");
                }
            }
            (SessionState::Expired { .. }, Message::Ping(_)) => {
                // The client thinks it is still connected; make it say HELLO and resync.
                self.remind(client, true);
            }
            // The PONG answers after the resync: a client takes it as "the resync is in".
            (_, Message::Ping(hail)) if self.resyncing(&Peer::Client(client.clone())) => {
                if let Some(session) = self.sessions.get_mut(&client) {
                    session.pongs_owed = (session.pongs_owed + 1).min(peers::MAX_PONGS_OWED);
                    session.pong_hailed = hail.is_some();
                }
            }
            (_, Message::Ping(hail)) => {
                let hail = hail.map(|_| Hail {
                    digest: Some(self.store.digest()),
                    ..self.hail()
                });
                self.send_to_client(client, Message::Pong(hail));
            }
            // HELLO again on a connected session: our client found our stores differ (§7).
            (_, Message::Hello(_)) => self.on_hello(now, client),
            (SessionState::Connected, Message::Publish(publish)) => {
                self.on_publish(now, Origin::Client(client), publish)
            }
            (SessionState::Expired { .. }, Message::Publish(publish)) => {
                // A client we expired (CZMQ's never PINGs) publishing: it said HELLO before, so
                // keep the tuple rather than lose it, then make it resync.
                self.on_publish(now, Origin::Client(client.clone()), publish);
                self.remind(client, false);
            }
            (SessionState::Connected | SessionState::Expired { .. }, Message::Batch(entries)) => {
                self.stats.batches_received += 1;
                let expired = state != SessionState::Connected;
                for publish in entries {
                    // A bad entry ends the session: the rest of the batch goes with it.
                    if !self.sessions.contains_key(&client) {
                        break;
                    }
                    self.on_publish(now, Origin::Client(client.clone()), publish);
                }
                if expired {
                    self.remind(client, false);
                }
            }
            (_, other) => {
                let why = format!("{} does not fit the session", other.id().name());
                self.refuse(client, &why);
            }
        }
    }

    /// A client sent bytes that are not a ZGP message: that session ends, nothing else changes.
    pub fn handle_client_malformed(
        &mut self,
        now: Instant,
        client: ClientId,
        error: &dyn std::fmt::Display,
    ) {
        self.stats.malformed += 1;
        if self.warnings.allow(now, "malformed", &client) {
            warn!(%client, %error, "malformed message from a client; ending its session");
        }
        self.refuse(client, "malformed message");
    }

    /// The transport saw this client go away.
    pub fn handle_client_gone(&mut self, client: &ClientId) {
        self.cancel_resync(&Peer::Client(client.clone()));
        if let Some(session) = self.sessions.remove(client)
            && session.state == SessionState::Connected
        {
            self.peer_event(session.name(client), PeerState::Dead, "connection closed");
        }
    }

    /// The transport could not queue a message for this client: it missed tuples, so it stops
    /// being forwarded to until it resyncs.
    pub fn handle_client_overflow(&mut self, now: Instant, client: &ClientId) {
        if let Some(session) = self.sessions.get_mut(client)
            && session.state == SessionState::Connected
        {
            if self.warnings.allow(now, "not reading", client) {
                warn!(%client, "client is not reading; dropping its session until it resyncs");
            }
            self.stats.overflows += 1;
            session.state = SessionState::Expired { since: now };
            session.pongs_owed = 0;
            let name = session.name(client);
            self.peer_event(name, PeerState::Dead, "not reading");
            self.cancel_resync(&Peer::Client(client.clone()));
        }
    }

    /// A remote completed its connection (first time or after a reconnect): say HELLO and
    /// republish everything, so a restarted peer has our tuples back at once.
    pub fn handle_remote_connected(&mut self, now: Instant, id: RemoteId) {
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        debug!(endpoint = %remote.endpoint, "remote connected");
        if remote.failures > 0 {
            info!(endpoint = %remote.endpoint, attempts = remote.failures, "reached the peer");
        }
        remote.failures = 0;
        remote.failure_told = None;
        remote.connected = true;
        remote.last_heard = now;
        remote.hello_due = None;
        // Whoever answers now may not be the node that hailed before: no BATCH until it hails.
        remote.node = None;
        // A server that went silent again right after a redial (one that accepts connections
        // but never answers, or one across a partition): each HELLO with our whole store goes
        // nowhere, so they come further apart.
        let held_back = match remote.silent_redials {
            0 | 1 => None,
            n => Some(hello_backoff(self.config.ping_interval(), n - 2)),
        };
        remote.hello_due = held_back.map(|wait| now + wait);
        // After a silence, a connection is not an answer: the server stays dead until it talks.
        let answer_pending = remote.silent_redials > 0;
        let endpoint = remote.endpoint.clone();
        if !answer_pending {
            self.set_remote_state(id, PeerState::Alive, &endpoint, "connected");
        }
        if held_back.is_none() {
            self.send_hello(now, id);
        }
    }

    /// A connection attempt of a remote failed (`cause` says how); the transport retries. The
    /// application hears of it once per cause (a PEER event, dead); the log says so at the
    /// first failure and then at the 2nd, 4th, 8th... in a row, as retries go on for ever.
    pub fn handle_remote_unreachable(&mut self, id: RemoteId, cause: &'static str) {
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        remote.failures = remote.failures.saturating_add(1);
        let endpoint = remote.endpoint.clone();
        if remote.failures.is_power_of_two() {
            warn!(%endpoint, attempts = remote.failures, "cannot reach a peer: {cause}");
        }
        if remote.failure_told != Some(cause) {
            remote.failure_told = Some(cause);
            remote.liveness = PeerState::Dead;
            self.peer_event(endpoint, PeerState::Dead, cause);
        }
    }

    /// A remote lost its connection; the transport is reconnecting it.
    pub fn handle_remote_disconnected(&mut self, now: Instant, id: RemoteId) {
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        debug!(endpoint = %remote.endpoint, "remote disconnected");
        remote.connected = false;
        let left = remote.liveness == PeerState::Left;
        let endpoint = remote.endpoint.clone();
        let unanswered_at = (remote.last_heard + NO_ANSWER).max(now);
        self.schedule_at(unanswered_at);
        self.cancel_resync(&Peer::Remote(id));
        if !left {
            self.set_remote_state(id, PeerState::Dead, &endpoint, "disconnected");
        }
    }

    /// A message arrived through one of our remotes.
    pub fn handle_remote_message(&mut self, now: Instant, id: RemoteId, message: Message) {
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        remote.last_heard = now;
        if remote.silent_redials > 0 {
            // The server answers after all: no reason to hold back our HELLO any longer.
            remote.silent_redials = 0;
            if remote.hello_due.is_some() && remote.invalid_streak == 0 {
                remote.hello_due = Some(now);
            }
        }
        let endpoint = remote.endpoint.clone();
        if let Message::Pong(_) = &message {
            // Servers answer in order: INVALIDs from now on answer what we sent after HELLO.
            remote.synced = true;
            remote.invalid_since_hello = false;
        }
        let resync_due =
            matches!(message, Message::Pong(_)) && std::mem::take(&mut remote.resync_owed);
        if let Message::Pong(Some(hail)) = &message {
            remote.node = Some(hail.node);
            if hail.goodbye {
                self.set_remote_state(id, PeerState::Left, &endpoint, "goodbye");
                return;
            }
            if let Some(theirs) = hail.digest {
                self.compare_digests(now, id, theirs);
            }
        }
        if matches!(self.remotes.get(id.0 as usize), Some(r) if r.liveness == PeerState::Suspect || (r.liveness == PeerState::Dead && r.connected))
        {
            self.set_remote_state(id, PeerState::Alive, &endpoint, "heard again");
        }
        match message {
            Message::Publish(publish) => self.on_publish(now, Origin::Remote(id), publish),
            Message::Batch(entries) => {
                self.stats.batches_received += 1;
                for publish in entries {
                    self.on_publish(now, Origin::Remote(id), publish);
                }
            }
            Message::Invalid => self.on_invalid(now, id),
            Message::Pong(_) if resync_due => self.start_resync(now, Peer::Remote(id)),
            Message::Pong(_) => {}
            other => debug!(%endpoint, message = other.id().name(), "ignored from a server"),
        }
    }

    /// The transport vouches that the server is there (in-process: it says when a peer goes
    /// away), so its silence so far is a backlog, not a lost link.
    pub fn handle_remote_reachable(&mut self, now: Instant, id: RemoteId) {
        if let Some(remote) = self.remotes.get_mut(id.0 as usize)
            && remote.connected
        {
            remote.last_heard = remote.last_heard.max(now);
        }
    }

    /// The transport vouches that the client is there; see
    /// [`Engine::handle_remote_reachable`].
    pub fn handle_client_reachable(&mut self, now: Instant, client: &ClientId) {
        if let Some(session) = self.sessions.get_mut(client)
            && session.state == SessionState::Connected
        {
            session.last_heard = session.last_heard.max(now);
        }
    }

    /// A PONG carried the server's digest. Stores that stay different while neither changes
    /// lack something (a lost frame, a tuple one side refused): after [`DIGEST_PATIENCE`] such
    /// PONGs, say HELLO again on the same session, which resyncs both ways. Repeats back off.
    fn compare_digests(&mut self, now: Instant, id: RemoteId, theirs: u64) {
        // Our resync to the server is still on its way: the stores differ for now.
        if self.resyncing(&Peer::Remote(id)) {
            return;
        }
        let ours = self.store.digest();
        let first_wait = self.config.server_timeout;
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        if ours == theirs {
            remote.digest_mismatch = None;
            remote.digest_backoff = Duration::ZERO;
            return;
        }
        let streak = match remote.digest_mismatch {
            Some((o, t, streak)) if (o, t) == (ours, theirs) => streak.saturating_add(1),
            _ => 1,
        };
        remote.digest_mismatch = Some((ours, theirs, streak));
        if streak < DIGEST_PATIENCE || remote.digest_quiet_until.is_some_and(|at| now < at) {
            return;
        }
        let wait = if remote.digest_backoff.is_zero() {
            first_wait
        } else {
            remote
                .digest_backoff
                .saturating_mul(2)
                .min(MAX_DIGEST_BACKOFF)
        };
        remote.digest_mismatch = None;
        remote.digest_backoff = wait;
        remote.digest_quiet_until = Some(now + wait);
        debug!(endpoint = %remote.endpoint, ours, theirs, "stores differ at rest; resyncing");
        self.stats.digest_resyncs += 1;
        self.send_hello(now, id);
    }

    /// A server sent bytes that are not a ZGP message. Counted; the connection stays.
    pub fn handle_remote_malformed(
        &mut self,
        now: Instant,
        id: RemoteId,
        error: &dyn std::fmt::Display,
    ) {
        self.stats.malformed += 1;
        if self.warnings.allow(now, "malformed", &id.0) {
            warn!(endpoint = self.remote_endpoint(id), %error, "malformed message from a server; ignored");
        }
    }

    /// Expires silent sessions and leases, forgets old tombstones, refreshes our leases,
    /// redials silent remotes and sends due PINGs.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_outbound_timeout(now);
        self.check_sessions(now);
        self.check_remotes(now);
        while let Some(key) = self.store.pop_ended(now) {
            self.on_end(now, key);
        }
        self.warnings.flush(now);
        self.schedule(now);
    }

    fn check_sessions(&mut self, now: Instant) {
        let timeout = self.config.server_timeout;
        let suspect_after = self.config.suspect_after();
        let forget_after = timeout * EXPIRED_MEMORY_TIMEOUTS;
        let mut events = Vec::new();
        let mut expired = 0;
        let mut ended = Vec::new();
        self.sessions.retain(|client, session| {
            let silent = now.duration_since(session.last_heard);
            match session.state {
                SessionState::Expired { since } => now.duration_since(since) < forget_after,
                SessionState::Start => silent < timeout,
                SessionState::Connected if silent >= timeout => {
                    debug!(%client, "client session expired");
                    session.state = SessionState::Expired { since: now };
                    session.pongs_owed = 0;
                    expired += 1;
                    ended.push(client.clone());
                    // A client that never hailed (CZMQ's) never PINGs: its silence says
                    // nothing about whether it is alive, only that its session ended.
                    let state = if session.node.is_some() {
                        PeerState::Dead
                    } else {
                        PeerState::Expired
                    };
                    events.push((session.name(client), state, "session expired".to_owned()));
                    true
                }
                SessionState::Connected => {
                    if silent >= suspect_after
                        && session.liveness == PeerState::Alive
                        && session.node.is_some()
                    {
                        session.liveness = PeerState::Suspect;
                        let reason = format!("silent for {}ms", silent.as_millis());
                        events.push((session.name(client), PeerState::Suspect, reason));
                    }
                    true
                }
            }
        });
        self.stats.sessions_expired += expired;
        for client in ended {
            self.cancel_resync(&Peer::Client(client));
        }
        for (peer, state, reason) in events {
            self.peer_event(peer, state, &reason);
        }
    }

    fn check_remotes(&mut self, now: Instant) {
        let timeout = self.config.server_timeout;
        let suspect_after = self.config.suspect_after();
        for index in 0..self.remotes.len() {
            let id = RemoteId(index as u32);
            let Some(remote) = self.remotes.get_mut(index) else {
                continue;
            };
            // Nothing is judged while our HELLO is held back: we have not asked for anything.
            if !remote.connected || remote.hello_due.is_some() {
                continue;
            }
            let silent = now.duration_since(remote.last_heard);
            let endpoint = remote.endpoint.clone();
            if silent >= timeout {
                warn!(%endpoint, "remote silent for {timeout:?}; redialling");
                remote.connected = false;
                remote.silent_redials = remote.silent_redials.saturating_add(1);
                self.stats.redials += 1;
                self.outputs.push_back(Output::Redial(id));
                let reason = format!("silent for {}ms", silent.as_millis());
                self.set_remote_state(id, PeerState::Dead, &endpoint, &reason);
                continue;
            }
            if silent >= suspect_after && remote.liveness == PeerState::Alive {
                let reason = format!("silent for {}ms", silent.as_millis());
                self.set_remote_state(id, PeerState::Suspect, &endpoint, &reason);
            }
        }
        // After the loop, which may have just found a remote silent and redialled it.
        let unanswered: Vec<RemoteId> = (self.remotes.iter().enumerate())
            .filter(|(_, r)| !r.connected && r.failure_told.is_none())
            .filter(|(_, r)| now.saturating_duration_since(r.last_heard) >= NO_ANSWER)
            .map(|(index, _)| RemoteId(index as u32))
            .collect();
        for id in unanswered {
            self.handle_remote_unreachable(id, "no answer within 5 s");
        }
    }

    /// Refreshes our lease on `key`: same version, next lease sequence, full lease.
    fn refresh(&mut self, now: Instant, key: Arc<str>) {
        let Some(entry) = self.store.entry(&key) else {
            return;
        };
        let Some(lease) = entry.lease() else {
            return;
        };
        let mut refreshed = entry.clone();
        // A refresh must be greater than the copy it refreshes; past the last lease sequence,
        // the next version (same value, so no event anywhere) does it.
        match refreshed.stamp.lease_seq.checked_add(1) {
            Some(next) => refreshed.stamp.lease_seq = next,
            None => {
                refreshed.stamp.version = refreshed.stamp.version.saturating_add(1);
                refreshed.stamp.lease_seq = 0;
            }
        }
        if let Some(own) = refreshed.own.as_mut() {
            own.refresh_at = Some(now + lease / 3);
        }
        let message = Publish::stamped(
            Arc::clone(&key),
            Arc::clone(&refreshed.value),
            millis(lease),
            &refreshed.stamp,
        );
        self.store.put(Arc::clone(&key), refreshed);
        self.stats.refreshes += 1;
        self.forward(&Message::Publish(message), &Origin::App);
    }

    /// The copy of `key` reached its end here: a lease ran out, or a record is forgotten.
    fn on_end(&mut self, now: Instant, key: Arc<str>) {
        let Some(entry) = self.store.entry(&key) else {
            return;
        };
        match entry.kind {
            Kind::Live => {
                let mut record = entry.clone();
                record.kind = Kind::Expired;
                record.ends = Some(now + self.config.tombstone_ttl);
                self.store.put(Arc::clone(&key), record);
                self.stats.expired += 1;
                debug!(%key, "lease ran out");
                self.outputs.push_back(Output::Event(Event::Expire { key }));
            }
            Kind::Withdrawn | Kind::Expired => {
                self.store.remove(&key);
            }
        }
    }

    /// Recomputes the earliest session and remote deadline.
    fn schedule(&mut self, now: Instant) {
        let timeout = self.config.server_timeout;
        let suspect_after = self.config.suspect_after();
        let forget_after = timeout * EXPIRED_MEMORY_TIMEOUTS;
        let ping_interval = self.config.ping_interval();
        let suspect = |last_heard: Instant, liveness: PeerState| {
            if liveness == PeerState::Alive {
                last_heard + suspect_after
            } else {
                last_heard + timeout
            }
        };
        let sessions = self.sessions.values().map(|s| match s.state {
            SessionState::Expired { since } => since + forget_after,
            SessionState::Start => s.last_heard + timeout,
            // A client that never hailed is never suspected (it may never PING): only expired.
            SessionState::Connected if s.node.is_none() => s.last_heard + timeout,
            SessionState::Connected => suspect(s.last_heard, s.liveness),
        });
        let remotes = self
            .remotes
            .iter()
            .filter(|r| r.connected)
            .map(|r| suspect(r.last_heard, r.liveness).min(r.last_sent + ping_interval));
        let unanswered = (self.remotes.iter())
            .filter(|r| !r.connected && r.failure_told.is_none())
            .map(|r| r.last_heard + NO_ANSWER);
        self.next_deadline = sessions
            .chain(remotes)
            .chain(unanswered)
            .min()
            .map(|at| at.max(now));
    }

    /// Moves the deadline earlier if `at` comes first.
    fn schedule_at(&mut self, at: Instant) {
        self.next_deadline = Some(self.next_deadline.map_or(at, |d| d.min(at)));
    }

    fn hail(&self) -> Hail {
        Hail {
            node: self.config.node_id,
            goodbye: false,
            digest: None,
        }
    }

    fn open_session(&mut self, now: Instant, client: &ClientId) -> bool {
        if self.sessions.len() >= self.config.max_sessions {
            // An expired session is only remembered to give a better answer; make room from those.
            let expired = self
                .sessions
                .iter()
                .find(|(_, s)| matches!(s.state, SessionState::Expired { .. }));
            if let Some(old) = expired.map(|(c, _)| c.clone()) {
                self.sessions.remove(&old);
            }
        }
        if self.sessions.len() >= self.config.max_sessions {
            self.evict_for_a_newcomer(now);
        }
        if self.sessions.len() >= self.config.max_sessions {
            self.stats.sessions_refused += 1;
            if self.warnings.allow(now, "too many sessions", client) {
                warn!(%client, max = self.config.max_sessions, "too many client sessions; ignoring a new client");
            }
            return false;
        }
        self.sessions.insert(client.clone(), Session::new(now));
        self.schedule_at(now + self.config.server_timeout);
        true
    }

    /// Makes room for a new client when every session is taken: the one that has waited
    /// longest without saying HELLO, else the connected one silent longest, if it has been
    /// silent long enough to be suspect. A flood of connections that never talk cannot keep
    /// out a client that does; clients that keep talking are never evicted.
    fn evict_for_a_newcomer(&mut self, now: Instant) {
        let suspect_after = self.config.suspect_after();
        let mute = self
            .sessions
            .iter()
            .filter(|(_, s)| s.state == SessionState::Start)
            .min_by_key(|(_, s)| s.last_heard);
        let silent = || {
            self.sessions
                .iter()
                .filter(|(_, s)| s.state == SessionState::Connected)
                .filter(|(_, s)| now.saturating_duration_since(s.last_heard) >= suspect_after)
                .min_by_key(|(_, s)| s.last_heard)
        };
        let Some(victim) = mute.or_else(silent).map(|(c, _)| c.clone()) else {
            return;
        };
        self.stats.sessions_evicted += 1;
        self.cancel_resync(&Peer::Client(victim.clone()));
        if let Some(session) = self.sessions.remove(&victim)
            && session.state == SessionState::Connected
        {
            self.peer_event(
                session.name(&victim),
                PeerState::Dead,
                "evicted for a new client",
            );
        }
    }

    fn heard_from_client(&mut self, client: &ClientId) {
        if let Some(session) = self.sessions.get_mut(client)
            && session.liveness == PeerState::Suspect
        {
            session.liveness = PeerState::Alive;
            let name = session.name(client);
            self.peer_event(name, PeerState::Alive, "heard again");
        }
    }

    fn on_hello(&mut self, now: Instant, client: ClientId) {
        let peer = Peer::Client(client.clone());
        let resyncing = self.resyncs.contains_key(&peer);
        let gap = self.config.server_timeout;
        let Some(session) = self.sessions.get_mut(&client) else {
            return;
        };
        // One resync at a time per session, and none sooner than a server timeout after the
        // last: an honest client says HELLO again only after a digest mismatch that lasted
        // longer than that, while each HELLO costs us the whole store.
        let recent = session.last_resync.is_some_and(|at| now < at + gap);
        if session.state == SessionState::Connected && (resyncing || recent) {
            self.stats.hellos_limited += 1;
            debug!(%client, resyncing, "HELLO again too soon; no new resync");
            return;
        }
        session.last_resync = Some(now);
        let known =
            session.state == SessionState::Connected && session.liveness == PeerState::Alive;
        session.reminded = false;
        session.state = SessionState::Connected;
        session.last_heard = now;
        session.liveness = PeerState::Alive;
        let name = session.name(&client);
        if !known {
            self.peer_event(name, PeerState::Alive, "hello");
        }
        self.schedule_at(now + self.config.suspect_after());
        self.start_resync(now, peer);
    }

    fn on_publish(&mut self, now: Instant, origin: Origin, publish: Publish) {
        self.stats.publish_received += 1;
        let (stamp, ttl_ms) = match publish.stamp() {
            Ok(Some(stamp)) if self.version_in_reach(now, &publish.key, stamp.version) => {
                (stamp, publish.ttl_ms)
            }
            // A version out of reach is a well-formed message: refusing the copy is enough, and
            // ending the session would cut its sender off from everything else it publishes.
            Ok(Some(stamp)) => {
                self.stats.versions_refused += 1;
                if self.warnings.allow(now, "version out of reach", &origin) {
                    warn!(?origin, key = %publish.key, version = stamp.version, "copy's version is out of reach; refused");
                }
                return;
            }
            // CZMQ forwards our PUBLISH with its ttl but without the stamp, and swallows the
            // refreshes as duplicates: a lease cannot be kept through it, so it ends there.
            Ok(None) => (Stamp::default(), 0),
            Err(error) => {
                self.stats.malformed += 1;
                if self.warnings.allow(now, "bad stamp", &origin) {
                    warn!(?origin, %error, "bad stamp");
                }
                if let Origin::Client(client) = origin {
                    self.refuse(client, "bad stamp");
                }
                return;
            }
        };
        // A tombstone's value is empty, so the same rules cover both kinds of copy.
        if let Err(error) = validate(&publish.key, &publish.value, self.config.max_value_bytes) {
            self.stats.tuples_refused += 1;
            if self.warnings.allow(now, "tuple refused", &origin) {
                warn!(?origin, %error, "refused a tuple that breaks the rules");
            }
            return;
        }
        // A refusal (the store is full) was counted and logged where it was made.
        let _ = self.apply(now, publish.key, publish.value, ttl_ms, stamp, origin);
    }

    /// Whether the store has room for this copy (in place of the one held for `key`): room in
    /// all, less the eighth kept for our own publishes when it is a peer's, and room in its
    /// origin's share. Refusals are counted.
    fn check_room(
        &mut self,
        key: &str,
        value: &str,
        stamp: &Stamp,
        origin: &Origin,
    ) -> Result<(), TupleError> {
        let weight = Store::weight(key, value);
        let held = self.store.entry(key);
        let freed = held.map_or(0, |h| Store::weight(key, &h.value));
        let freed_here = held
            .filter(|h| h.stamp.origin == stamp.origin)
            .map_or(0, |h| Store::weight(key, &h.value));
        let max = self.config.max_store_bytes;
        let room = if *origin == Origin::App {
            max
        } else {
            max - max / 8
        };
        if self.store.bytes() - freed + weight > room {
            self.stats.store_full += 1;
            return Err(TupleError::StoreBytesFull { max });
        }
        let share = self.config.max_origin_bytes;
        if *origin != Origin::App
            && self.store.origin_bytes(stamp.origin) - freed_here + weight > share
        {
            self.stats.origin_full += 1;
            return Err(TupleError::StoreBytesFull { max: share });
        }
        Ok(())
    }

    /// Whether a peer's copy of `key` may carry `version`: at most [`MAX_VERSION`], and at most
    /// [`MAX_VERSION_LEAD`] above both the held copy and our own version clock.
    fn version_in_reach(&self, now: Instant, key: &str, version: u64) -> bool {
        let held = self.store.entry(key).map_or(0, |e| e.stamp.version);
        let known = held.max(self.config.version_clock(now));
        version <= MAX_VERSION && version <= known.saturating_add(MAX_VERSION_LEAD)
    }

    /// Keeps the copy if it is greater than the one held, tells the application what changed,
    /// and forwards it to every peer but the one it came from. Returns whether it was kept.
    fn apply(
        &mut self,
        now: Instant,
        key: Arc<str>,
        value: Arc<str>,
        ttl_ms: u32,
        stamp: Stamp,
        origin: Origin,
    ) -> Result<bool, TupleError> {
        if let Some(held) = self.store.entry(&key)
            && !held.is_older_than(&stamp, &value)
        {
            return Ok(false);
        }
        if let Err(error) = self.check_room(&key, &value, &stamp, &origin) {
            if self.warnings.allow(now, "store full", &origin) {
                warn!(%key, %error, "refusing a copy");
            }
            return Err(error);
        }
        let held = self.store.entry(&key);
        if held.is_none() && self.store.held() >= self.config.max_tuples {
            self.stats.store_full += 1;
            if self.warnings.allow(now, "store full", &origin) {
                warn!(max = self.config.max_tuples, %key, "store full; refusing a new key");
            }
            return Err(TupleError::StoreFull {
                max: self.config.max_tuples,
            });
        }
        let held_kind = held.map(|h| (h.kind, Arc::clone(&h.value)));
        let ours = origin == Origin::App;
        let kind = if stamp.withdrawn {
            Kind::Withdrawn
        } else {
            Kind::Live
        };
        let lifetime = (ttl_ms > 0).then(|| Duration::from_millis(u64::from(ttl_ms)));
        let lease = lifetime.filter(|_| ours && kind == Kind::Live);
        let ends = match kind {
            _ if lease.is_some() => None,
            // The sender says how long it keeps the tombstone; we keep it no longer than we
            // would our own, whatever a peer asks for.
            Kind::Withdrawn => Some(
                now + lifetime.map_or(self.config.tombstone_ttl, |l| {
                    l.min(self.config.tombstone_ttl)
                }),
            ),
            _ => lifetime.map(|l| now + l),
        };
        let entry = Entry {
            value: Arc::clone(&value),
            stamp,
            kind,
            ends,
            own: (ours && kind == Kind::Live).then(|| {
                Box::new(Own {
                    lease,
                    refresh_at: lease.map(|l| now + l / 3),
                })
            }),
        };
        self.store.put(Arc::clone(&key), entry);

        let event = match (held_kind, kind) {
            (Some((Kind::Live, old)), Kind::Live) if old != value => Some(Event::Change {
                key: Arc::clone(&key),
                value: Arc::clone(&value),
            }),
            (Some((Kind::Live, _)), Kind::Live) => None,
            (Some((Kind::Live, _)), _) => Some(Event::Remove {
                key: Arc::clone(&key),
            }),
            (_, Kind::Live) => Some(Event::Deliver {
                key: Arc::clone(&key),
                value: Arc::clone(&value),
            }),
            _ => None,
        };
        if let Some(event) = event {
            self.outputs.push_back(Output::Event(event));
        }
        let message = Message::Publish(Publish::stamped(key, value, ttl_ms, &stamp));
        self.forward(&message, &origin);
        Ok(true)
    }

    /// Sends a copy to every connected remote and session except where it came from.
    /// A peer that never hailed (CZMQ's) is sent the copy as ZGP v1 defines it, or nothing
    /// for a withdrawal, which v1 cannot say.
    fn forward(&mut self, message: &Message, origin: &Origin) {
        // Made only if some peer never hailed: most forwards go to our own nodes alone.
        let plain = std::cell::OnceCell::new();
        for (index, remote) in self.remotes.iter().enumerate() {
            let id = RemoteId(index as u32);
            if !remote.connected || *origin == Origin::Remote(id) {
                continue;
            }
            let Some(copy) = copy_for(remote.node.is_some(), message, &plain) else {
                continue;
            };
            self.stats.publish_sent += 1;
            self.outputs.push_back(Output::ToRemote(id, copy.clone()));
        }
        for (client, session) in &self.sessions {
            if session.state != SessionState::Connected
                || matches!(origin, Origin::Client(c) if c == client)
            {
                continue;
            }
            let Some(copy) = copy_for(session.node.is_some(), message, &plain) else {
                continue;
            };
            self.stats.publish_sent += 1;
            self.outputs
                .push_back(Output::ToClient(client.clone(), copy.clone()));
        }
    }

    /// The server forgot our session (or refused what we sent): say HELLO again. If INVALIDs
    /// keep coming — a server that refuses something in every resync, say a value over its
    /// frame limit — hold the HELLO back, doubling the wait each time, instead of looping.
    fn on_invalid(&mut self, now: Instant, id: RemoteId) {
        let timeout = self.config.server_timeout;
        let base = self.config.ping_interval();
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        // INVALIDs while a HELLO is held back, or before the server has seen the HELLO we
        // sent for an earlier one, answer what we sent before it: one refusal, not many.
        if remote.hello_due.is_some() || remote.invalid_since_hello {
            return;
        }
        remote.invalid_since_hello = true;
        let recent = remote
            .last_invalid
            .is_some_and(|at| now.duration_since(at) < timeout);
        remote.invalid_streak = if recent {
            remote.invalid_streak.saturating_add(1)
        } else {
            0
        };
        remote.last_invalid = Some(now);
        if remote.invalid_streak == 0 {
            debug!(endpoint = %remote.endpoint, "server said INVALID; saying HELLO again");
            self.send_hello(now, id);
            return;
        }
        let wait = hello_backoff(base, remote.invalid_streak);
        warn!(endpoint = %remote.endpoint, ?wait, "server keeps saying INVALID; holding back the next HELLO");
        remote.hello_due = Some(now + wait);
    }

    fn send_hello(&mut self, now: Instant, id: RemoteId) {
        if let Some(remote) = self.remotes.get_mut(id.0 as usize) {
            remote.last_sent = now;
            remote.synced = false;
        }
        let hail = Some(self.hail());
        self.outputs
            .push_back(Output::ToRemote(id, Message::Hello(hail)));
        // The server answers in order: the PONG to this PING comes after its resync to us, and
        // says whether it is one of ours. Our copies follow it, stamped or as plain v1.
        self.outputs
            .push_back(Output::ToRemote(id, Message::Ping(hail)));
        self.cancel_resync(&Peer::Remote(id));
        if let Some(remote) = self.remotes.get_mut(id.0 as usize) {
            remote.resync_owed = true;
        }
        let ping_interval = self.config.ping_interval();
        self.schedule_at(now + ping_interval);
    }

    fn send_to_client(&mut self, client: ClientId, message: Message) {
        self.outputs.push_back(Output::ToClient(client, message));
    }

    fn set_remote_state(&mut self, id: RemoteId, state: PeerState, endpoint: &str, reason: &str) {
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        if remote.liveness != state {
            remote.liveness = state;
            self.peer_event(endpoint.to_owned(), state, reason);
        }
    }

    fn peer_event(&mut self, peer: String, state: PeerState, reason: &str) {
        debug!(%peer, %state, reason, "peer");
        self.outputs.push_back(Output::Event(Event::Peer {
            peer,
            state,
            reason: reason.to_owned(),
        }));
    }

    /// Replies INVALID and ends the session.
    /// A session we expired talks as if it were connected: INVALID tells it to say HELLO. The
    /// session stays (expired), so what it publishes until then is kept; after the first
    /// INVALID only its PINGs get another. A busy client's every refresh answered with INVALID
    /// would be a storm, and a fresh session in its place would drop those refreshes.
    fn remind(&mut self, client: ClientId, ping: bool) {
        let Some(session) = self.sessions.get_mut(&client) else {
            return;
        };
        if session.reminded && !ping {
            return;
        }
        session.reminded = true;
        debug!(%client, "INVALID to an expired session");
        self.stats.invalid_sent += 1;
        self.outputs
            .push_back(Output::ToClient(client, Message::Invalid));
    }

    fn refuse(&mut self, client: ClientId, why: &str) {
        debug!(%client, why, "INVALID");
        self.cancel_resync(&Peer::Client(client.clone()));
        self.stats.invalid_sent += 1;
        if let Some(session) = self.sessions.remove(&client)
            && session.state == SessionState::Connected
        {
            self.peer_event(session.name(&client), PeerState::Dead, why);
        }
        self.outputs
            .push_back(Output::ToClient(client, Message::Invalid));
    }
}

#[cfg(test)]
mod tests;

/// The copy for a peer: as made for one that hailed, else its v1 form (if v1 can say it),
/// made once per forward.
fn copy_for<'a>(
    hailed: bool,
    message: &'a Message,
    plain: &'a std::cell::OnceCell<Option<Message>>,
) -> Option<&'a Message> {
    if hailed {
        Some(message)
    } else {
        plain.get_or_init(|| v1_copy(message)).as_ref()
    }
}

/// `message` as ZGP v1 defines it, for a peer that never hailed: a PUBLISH without the bytes
/// after its ttl, and no withdrawal at all (v1 would take one for an empty value). Other
/// messages are unchanged.
fn v1_copy(message: &Message) -> Option<Message> {
    let Message::Publish(publish) = message else {
        return Some(message.clone());
    };
    if matches!(publish.stamp(), Ok(Some(stamp)) if stamp.withdrawn) {
        return None;
    }
    Some(Message::Publish(Publish {
        extension: bytes::Bytes::new(),
        ..publish.clone()
    }))
}
