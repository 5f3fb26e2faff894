//! The node as a sans-IO state machine. It owns the tuple store, one session per client of our
//! listener, and one remote per CONNECT. Every entry point takes `now`; the engine never reads a
//! clock, sleeps or touches a socket. The actor feeds it what the transports received, sends what
//! [`Engine::poll_output`] returns, and calls [`Engine::handle_timeout`] at
//! [`Engine::poll_timeout`].

mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::wire::{Message, Publish};
pub use store::{Store, TupleError, validate};

/// How long an expired session is remembered, in server timeouts. A client we expired that
/// later PINGs is told INVALID (so it says HELLO and resyncs) instead of getting a PONG that
/// would hide the tuples it missed.
const EXPIRED_MEMORY_TIMEOUTS: u32 = 30;

/// The longest default ping interval: a third of CZMQ's 1 s server timeout.
pub const MAX_DEFAULT_PING: Duration = Duration::from_millis(333);

/// Engine settings. See [`crate::Config`] for the reasons behind the defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A client session that sends nothing for this long expires; a remote that hears nothing
    /// for this long is redialled.
    pub server_timeout: Duration,
    /// How often a remote PINGs when it has sent nothing else; `None` is a third of the timeout.
    pub ping_interval: Option<Duration>,
    /// At most this many tuples are held.
    pub max_tuples: usize,
    /// At most this many bytes in a value.
    pub max_value_bytes: usize,
    /// At most this many client sessions (expired ones included) are held.
    pub max_sessions: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            server_timeout: Duration::from_millis(1000),
            ping_interval: None,
            max_tuples: 1_000_000,
            max_value_bytes: 16 * 1024,
            max_sessions: 10_000,
        }
    }
}

impl EngineConfig {
    /// The interval remotes PING at: as set, or a third of our own timeout but never more
    /// than [`MAX_DEFAULT_PING`], since the server we dial may use CZMQ's 1 s timeout.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
            .unwrap_or_else(|| (self.server_timeout / 3).min(MAX_DEFAULT_PING))
    }
}

/// A client of one of our listeners, named by its transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// A ZeroMQ ROUTER routing id (tcp and ipc).
    Zmq(Bytes),
    /// An in-process connection number.
    Inproc(u64),
}

/// One of our outbound connections, numbered in CONNECT order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteId(pub u32);

/// Where a tuple came from, so it is not echoed back there.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    App,
    Client(ClientId),
    Remote(RemoteId),
}

/// What the application is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A tuple that is new to this node, from anywhere, the application's own included.
    Deliver {
        /// The tuple's key.
        key: Arc<str>,
        /// The tuple's value.
        value: Arc<str>,
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
pub struct Stats {
    /// Messages from clients or servers that failed to decode.
    pub malformed: u64,
    /// INVALID replies sent.
    pub invalid_sent: u64,
    /// Client sessions expired for silence.
    pub sessions_expired: u64,
    /// New clients refused because `max_sessions` were held.
    pub sessions_refused: u64,
    /// Tuples refused by the rules or limits.
    pub tuples_refused: u64,
    /// Remotes redialled after a silence.
    pub redials: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionState {
    /// Has not said HELLO.
    Start,
    /// Said HELLO; gets every new tuple.
    Connected,
    /// Went silent (or could not keep up) and is no longer forwarded to.
    Expired { since: Instant },
}

#[derive(Debug)]
struct Session {
    state: SessionState,
    last_heard: Instant,
}

#[derive(Debug)]
struct Remote {
    endpoint: String,
    connected: bool,
    last_heard: Instant,
    last_sent: Instant,
}

/// The node's state machine.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    store: Store,
    sessions: HashMap<ClientId, Session>,
    remotes: Vec<Remote>,
    outputs: VecDeque<Output>,
    next_deadline: Option<Instant>,
    stats: Stats,
}

impl Engine {
    /// A node with no tuples, sessions or remotes.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            store: Store::default(),
            sessions: HashMap::new(),
            remotes: Vec::new(),
            outputs: VecDeque::new(),
            next_deadline: None,
            stats: Stats::default(),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Changes the server timeout (and with it the default ping interval).
    pub fn set_server_timeout(&mut self, now: Instant, timeout: Duration) {
        self.config.server_timeout = timeout;
        self.schedule(now);
    }

    /// Changes how often remotes PING; `None` is a third of the server timeout.
    pub fn set_ping_interval(&mut self, now: Instant, interval: Option<Duration>) {
        self.config.ping_interval = interval;
        self.schedule(now);
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

    /// The endpoint a remote was created for.
    pub fn remote_endpoint(&self, id: RemoteId) -> Option<&str> {
        self.remotes.get(id.0 as usize).map(|r| r.endpoint.as_str())
    }

    /// The next thing the actor should do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Engine::handle_timeout`] next has work. It may be called earlier or later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline
    }

    /// The application publishes a tuple.
    pub fn publish(&mut self, key: &str, value: &str) -> Result<(), TupleError> {
        validate(key, value, self.config.max_value_bytes)?;
        self.accept(Arc::from(key), Arc::from(value), Origin::App)
    }

    /// A new outbound connection; the transport dials it and reports when it is connected.
    pub fn add_remote(&mut self, now: Instant, endpoint: &str) -> RemoteId {
        let id = RemoteId(self.remotes.len() as u32);
        self.remotes.push(Remote {
            endpoint: endpoint.to_owned(),
            connected: false,
            last_heard: now,
            last_sent: now,
        });
        id
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
        match (state, message) {
            (SessionState::Expired { .. }, Message::Ping) => {
                // The client thinks it is still connected; make it say HELLO and resync.
                self.refuse(client, "PING from an expired session");
            }
            (_, Message::Ping) => self.send_to_client(client, Message::Pong),
            (SessionState::Start | SessionState::Expired { .. }, Message::Hello) => {
                self.on_hello(now, client)
            }
            (SessionState::Connected, Message::Publish(publish)) => {
                self.on_publish(Origin::Client(client), publish)
            }
            (SessionState::Expired { .. }, Message::Publish(publish)) => {
                // A client we expired (CZMQ's never PINGs) publishing: it said HELLO before, so
                // keep the tuple rather than lose it, then make it resync.
                self.on_publish(Origin::Client(client.clone()), publish);
                self.refuse(client, "PUBLISH from an expired session");
            }
            (_, other) => {
                let why = format!("{} does not fit the session", other.id().name());
                self.refuse(client, &why);
            }
        }
    }

    /// A client sent bytes that are not a ZGP message: that session ends, nothing else changes.
    pub fn handle_client_malformed(&mut self, client: ClientId, error: &dyn std::fmt::Display) {
        self.stats.malformed += 1;
        warn!(?client, %error, "malformed message from a client; ending its session");
        self.refuse(client, "malformed message");
    }

    /// The transport saw this client go away.
    pub fn handle_client_gone(&mut self, client: &ClientId) {
        self.sessions.remove(client);
    }

    /// The transport could not queue a message for this client: it missed tuples, so it stops
    /// being forwarded to until it resyncs.
    pub fn handle_client_overflow(&mut self, now: Instant, client: &ClientId) {
        if let Some(session) = self.sessions.get_mut(client)
            && session.state == SessionState::Connected
        {
            warn!(
                ?client,
                "client is not reading; dropping its session until it resyncs"
            );
            session.state = SessionState::Expired { since: now };
        }
    }

    /// A remote completed its connection (first time or after a reconnect): say HELLO and
    /// republish everything, so a restarted peer has our tuples back at once.
    pub fn handle_remote_connected(&mut self, now: Instant, id: RemoteId) {
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        debug!(endpoint = %remote.endpoint, "remote connected");
        remote.connected = true;
        remote.last_heard = now;
        self.send_hello(now, id);
    }

    /// A remote lost its connection; the transport is reconnecting it.
    pub fn handle_remote_disconnected(&mut self, id: RemoteId) {
        if let Some(remote) = self.remotes.get_mut(id.0 as usize) {
            debug!(endpoint = %remote.endpoint, "remote disconnected");
            remote.connected = false;
        }
    }

    /// A message arrived through one of our remotes.
    pub fn handle_remote_message(&mut self, now: Instant, id: RemoteId, message: Message) {
        let Some(remote) = self.remotes.get_mut(id.0 as usize) else {
            return;
        };
        remote.last_heard = now;
        match message {
            Message::Publish(publish) => self.on_publish(Origin::Remote(id), publish),
            Message::Invalid => {
                debug!(endpoint = %remote.endpoint, "server said INVALID; saying HELLO again");
                self.send_hello(now, id);
            }
            Message::Pong => {}
            other => {
                debug!(endpoint = %remote.endpoint, message = other.id().name(), "ignored from a server")
            }
        }
    }

    /// A server sent bytes that are not a ZGP message. Counted; the connection stays.
    pub fn handle_remote_malformed(&mut self, id: RemoteId, error: &dyn std::fmt::Display) {
        self.stats.malformed += 1;
        warn!(endpoint = self.remote_endpoint(id), %error, "malformed message from a server; ignored");
    }

    /// Expires silent sessions, redials silent remotes and sends due PINGs.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.server_timeout;
        let forget_after = timeout * EXPIRED_MEMORY_TIMEOUTS;
        let mut expired = 0;
        self.sessions.retain(|client, session| match session.state {
            SessionState::Expired { since } => now.duration_since(since) < forget_after,
            _ if now.duration_since(session.last_heard) < timeout => true,
            SessionState::Start => false,
            SessionState::Connected => {
                debug!(?client, "client session expired");
                session.state = SessionState::Expired { since: now };
                expired += 1;
                true
            }
        });
        self.stats.sessions_expired += expired;

        let ping_interval = self.config.ping_interval();
        for index in 0..self.remotes.len() {
            let id = RemoteId(index as u32);
            let Some(remote) = self.remotes.get_mut(index) else {
                continue;
            };
            if !remote.connected {
                continue;
            }
            if now.duration_since(remote.last_heard) >= timeout {
                warn!(endpoint = %remote.endpoint, "remote silent for {timeout:?}; redialling");
                remote.connected = false;
                self.stats.redials += 1;
                self.outputs.push_back(Output::Redial(id));
            } else if now.duration_since(remote.last_sent) >= ping_interval {
                remote.last_sent = now;
                self.outputs.push_back(Output::ToRemote(id, Message::Ping));
            }
        }
        self.schedule(now);
    }

    /// Recomputes the earliest deadline from every session and remote.
    fn schedule(&mut self, now: Instant) {
        let timeout = self.config.server_timeout;
        let forget_after = timeout * EXPIRED_MEMORY_TIMEOUTS;
        let ping_interval = self.config.ping_interval();
        let sessions = self.sessions.values().map(|s| match s.state {
            SessionState::Expired { since } => since + forget_after,
            _ => s.last_heard + timeout,
        });
        let remotes = self
            .remotes
            .iter()
            .filter(|r| r.connected)
            .map(|r| (r.last_heard + timeout).min(r.last_sent + ping_interval));
        self.next_deadline = sessions.chain(remotes).min().map(|at| at.max(now));
    }

    /// Moves the deadline earlier if `at` comes first.
    fn schedule_at(&mut self, at: Instant) {
        self.next_deadline = Some(self.next_deadline.map_or(at, |d| d.min(at)));
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
            self.stats.sessions_refused += 1;
            warn!(
                ?client,
                max = self.config.max_sessions,
                "too many client sessions; ignoring a new client"
            );
            return false;
        }
        self.sessions.insert(
            client.clone(),
            Session {
                state: SessionState::Start,
                last_heard: now,
            },
        );
        self.schedule_at(now + self.config.server_timeout);
        true
    }

    fn on_hello(&mut self, now: Instant, client: ClientId) {
        if let Some(session) = self.sessions.get_mut(&client) {
            session.state = SessionState::Connected;
            session.last_heard = now;
        }
        self.schedule_at(now + self.config.server_timeout);
        for (key, value) in self.store.iter() {
            let publish = Publish::new(Arc::clone(key), Arc::clone(value));
            self.outputs
                .push_back(Output::ToClient(client.clone(), Message::Publish(publish)));
        }
    }

    fn on_publish(&mut self, origin: Origin, publish: Publish) {
        if let Err(error) = validate(&publish.key, &publish.value, self.config.max_value_bytes) {
            self.stats.tuples_refused += 1;
            warn!(?origin, %error, "refused a tuple");
            return;
        }
        if let Err(error) = self.accept(publish.key, publish.value, origin) {
            warn!(%error, "refused a tuple");
        }
    }

    /// Store-if-new; a new tuple is delivered to the application and forwarded to every
    /// connected remote and session except the one it came from.
    fn accept(&mut self, key: Arc<str>, value: Arc<str>, origin: Origin) -> Result<(), TupleError> {
        match self
            .store
            .insert_if_new(&key, &value, self.config.max_tuples)
        {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(error) => {
                self.stats.tuples_refused += 1;
                return Err(error);
            }
        }
        self.outputs.push_back(Output::Event(Event::Deliver {
            key: Arc::clone(&key),
            value: Arc::clone(&value),
        }));
        let message = Message::Publish(Publish::new(key, value));
        for (index, remote) in self.remotes.iter().enumerate() {
            let id = RemoteId(index as u32);
            if remote.connected && origin != Origin::Remote(id) {
                self.outputs
                    .push_back(Output::ToRemote(id, message.clone()));
            }
        }
        for (client, session) in &self.sessions {
            if session.state == SessionState::Connected
                && !matches!(&origin, Origin::Client(c) if c == client)
            {
                self.outputs
                    .push_back(Output::ToClient(client.clone(), message.clone()));
            }
        }
        Ok(())
    }

    fn send_hello(&mut self, now: Instant, id: RemoteId) {
        if let Some(remote) = self.remotes.get_mut(id.0 as usize) {
            remote.last_sent = now;
        }
        self.outputs.push_back(Output::ToRemote(id, Message::Hello));
        for (key, value) in self.store.iter() {
            let publish = Publish::new(Arc::clone(key), Arc::clone(value));
            self.outputs
                .push_back(Output::ToRemote(id, Message::Publish(publish)));
        }
        let ping_interval = self.config.ping_interval();
        self.schedule_at(now + ping_interval);
    }

    fn send_to_client(&mut self, client: ClientId, message: Message) {
        self.outputs.push_back(Output::ToClient(client, message));
    }

    /// Replies INVALID and ends the session.
    fn refuse(&mut self, client: ClientId, why: &str) {
        debug!(?client, why, "INVALID");
        self.stats.invalid_sent += 1;
        self.sessions.remove(&client);
        self.outputs
            .push_back(Output::ToClient(client, Message::Invalid));
    }
}

#[cfg(test)]
mod tests;
