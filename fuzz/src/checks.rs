//! What the fuzz targets check, shared with the root crate's `tests/fuzz_regressions.rs` (which
//! includes this file with `#[path]`), so a saved input is judged by the same code that found
//! it. Each check takes the fuzzer's raw bytes and panics, with a message saying which invariant
//! broke, when something is wrong; returning is passing.
//!
//! - [`check_decode`]: `Message::decode` on arbitrary bytes; whatever decodes re-encodes to the
//!   same bytes with a matching `encoded_len`, and reading a PUBLISH's stamp never panics.
//! - [`check_engine`]: an [`Engine`] with small limits, driven by a sequence of [`Step`]s read
//!   from the bytes with `arbitrary`: messages (structured, or raw bytes through the decoder)
//!   from seven clients and three remotes, connects and disconnects, clients going away or
//!   overflowing, application publishes and withdrawals, `SET`s of the timers, and time jumps,
//!   and the links the views dial connecting, failing and answering. After every step it
//!   checks the limits, the tuple rules, the deadlines, what the engine sends, and that an
//!   innocent client, which only says HELLO and PING, keeps its session and sees every copy;
//!   `checks/members.rs` builds the membership messages and checks the cluster layer.
//!
//! A saved engine input means the steps `arbitrary` reads from it. Its derived enums pick a
//! variant as `(u32 * variants) >> 32`, so a variant added anywhere, even last, changes what
//! every saved input does: when one is added, the inputs in `fuzz/regressions/engine/` are
//! rewritten to read as the same steps (the fixed-* ones must still replay their bug).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use zgossip::Config;
use zgossip::engine::{
    ClientId, ClusterConfig, Engine, EngineConfig, Event, Kind, Output, RemoteId, TupleError,
    validate,
};
use zgossip::wire::{Hail, Message, Neighbor, Publish, Stamp};

#[path = "checks/members.rs"]
pub mod members;
use members::{MemberId, MemberModel, Record, Seq, Ttl};

/// Decodes `data`; if it is a message, it must re-encode to exactly `data`.
pub fn check_decode(data: &[u8]) {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    assert_eq!(
        message.encoded_len(),
        data.len(),
        "encoded_len disagrees with the frame it was decoded from: {message:?}"
    );
    match message.to_bytes() {
        Ok(bytes) => assert_eq!(&bytes[..], data, "re-encoding changed the bytes"),
        Err(error) => panic!("a decoded message does not encode: {error}: {message:?}"),
    }
    if let Message::Publish(publish) = &message {
        // Any extension either is a stamp that re-encodes to itself, or is refused.
        if let Ok(Some(stamp)) = publish.stamp() {
            assert_eq!(
                stamp.to_bytes(),
                publish.extension,
                "a stamp re-encodes differently"
            );
        }
    }
}

/// How many client ids the fuzzer drives; more than [`MAX_SESSIONS`], so the limit is hit.
const CLIENTS: u8 = 7;
/// How many remotes the engine has.
const REMOTES: u8 = 3;
/// The engine's limits: small, so the fuzzer reaches them.
const MAX_TUPLES: usize = 64;
const MAX_SESSIONS: usize = 6;
const MAX_VALUE_BYTES: usize = 256;
/// Our node's id, so stamps and hails can name it.
const NODE_ID: u64 = 1;
const SERVER_TIMEOUT: Duration = Duration::from_millis(1000);
const TOMBSTONE_TTL: Duration = Duration::from_secs(5);
/// Steps read from one input at most, so one run stays short.
const MAX_STEPS: usize = 200;

/// One thing that happens to the engine.
#[derive(Debug, Arbitrary)]
pub enum Step {
    /// A client of our listener sends a well-formed message.
    Client(u8, Msg),
    /// A client sends a frame of arbitrary bytes (decoded first, as the transport does).
    ClientBytes(u8, Vec<u8>),
    /// A remote's server sends a well-formed message.
    Remote(u8, Msg),
    /// A remote's server sends arbitrary bytes.
    RemoteBytes(u8, Vec<u8>),
    /// A remote's connection completes.
    RemoteConnected(u8),
    /// A remote's connection drops.
    RemoteDisconnected(u8),
    /// The transport saw a client leave.
    ClientGone(u8),
    /// The transport could not queue a message for a client.
    ClientOverflow(u8),
    /// The application publishes, with a lease in ms or without.
    Publish(Key, Value, Option<Ms>),
    /// The application withdraws a key.
    Unpublish(Key),
    /// The node stops gracefully (and then carries on being fuzzed).
    Goodbye,
    /// Time passes; the engine's timers run.
    Advance(Ms),
    /// `SET server/timeout`, if the node's config validation would take it.
    SetServerTimeout(Span),
    /// `SET remote/ping-interval` (or back to the default), if validation would take it.
    SetPingInterval(Option<Span>),
    /// `SET node/tombstone-ttl`, if validation would take it.
    SetTombstoneTtl(Span),
    /// Something happens on one of the links the views dialled (picked among those not
    /// closed); nothing if there is none.
    Dialled(u8, Dial),
}

/// What happens on a link the views dialled. Its server speaks only once it is connected.
#[derive(Debug, Arbitrary)]
pub enum Dial {
    /// The connection completes.
    Connected,
    /// The connection attempt fails.
    Unreachable,
    /// The connection drops.
    Disconnected,
    /// The server answers PONG, hailing as the member that advertised the endpoint dialled.
    Hails,
    /// The server sends a well-formed message.
    Says(Msg),
}

/// A duration an operator might type: usually milliseconds, sometimes anything.
#[derive(Debug, Arbitrary)]
pub enum Span {
    /// Milliseconds.
    Ms(u16),
    /// Whole seconds, up to the largest `Duration`.
    Secs(u64),
}

impl Span {
    fn get(&self) -> Duration {
        match self {
            Self::Ms(n) => Duration::from_millis(u64::from(*n)),
            Self::Secs(n) => Duration::from_secs(*n),
        }
    }
}

/// A ZGP message, built from parts that collide often (a few keys, small versions, a few
/// member ids). The extensions come after the v1 messages.
#[derive(Debug, Arbitrary)]
pub enum Msg {
    /// HELLO, with or without a hail.
    Hello(Option<HailIn>),
    /// PUBLISH.
    Publish(Key, Value, Ms, Ext),
    /// PING.
    Ping(Option<HailIn>),
    /// PONG.
    Pong(Option<HailIn>),
    /// INVALID.
    Invalid,
    /// BATCH.
    Batch(Vec<Entry>),
    /// MEMBERS (none: the encoder refuses it, and the step does nothing).
    Members(Vec<Record>),
    /// JOIN.
    Join(Ttl, Record),
    /// NEIGHBOR, a request (high priority or not) with the sender's record.
    NeighborRequest(bool, Record),
    /// NEIGHBOR, an answer (accepted or not).
    NeighborAnswer(bool),
    /// DISCONNECT (stopping or not).
    Disconnect(bool),
    /// SHUFFLE (the answer or not), with at most 16 records.
    Shuffle(bool, Vec<Record>),
    /// PROBE: answer, failed (only said in an answer), seq, target.
    Probe(bool, bool, Seq, MemberId),
}

/// A BATCH entry, as a PUBLISH.
#[derive(Debug, Arbitrary)]
pub struct Entry(Key, Value, Ms, Ext);

/// A hail; a node id of 0 is refused by the decoder, which is worth hitting too.
#[derive(Debug, Arbitrary)]
pub struct HailIn {
    node: Num,
    goodbye: bool,
}

/// What follows a PUBLISH's ttl.
#[derive(Debug, Arbitrary)]
pub enum Ext {
    /// Nothing: a CZMQ copy.
    None,
    /// A stamp.
    Stamp {
        /// The copy's version.
        version: Num,
        /// The node that made it.
        origin: Num,
        /// The lease refresh count.
        lease_seq: u32,
        /// A tombstone.
        withdrawn: bool,
    },
    /// Anything else.
    Raw(Vec<u8>),
}

/// A u64 that is usually small or at an edge.
#[derive(Debug, Arbitrary)]
pub enum Num {
    /// 0–255.
    Small(u8),
    /// `u64::MAX`.
    Max,
    /// Anything.
    Any(u64),
}

impl Num {
    fn get(&self) -> u64 {
        match self {
            Self::Small(n) => u64::from(*n),
            Self::Max => u64::MAX,
            Self::Any(n) => *n,
        }
    }
}

/// Milliseconds, usually around the engine's timeouts.
#[derive(Debug, Arbitrary)]
pub enum Ms {
    /// 0–2550 ms in steps of 10.
    Tens(u8),
    /// Up to a minute.
    Short(u16),
    /// Anything a u32 holds (49 days).
    Any(u32),
}

impl Ms {
    fn get(&self) -> u32 {
        match self {
            Self::Tens(n) => u32::from(*n) * 10,
            Self::Short(n) => u32::from(*n),
            Self::Any(n) => *n,
        }
    }
}

/// A key: mostly from a small pool so copies collide, sometimes one the rules refuse.
#[derive(Debug, Arbitrary)]
pub enum Key {
    /// One of [`KEYS`].
    Pool(u8),
    /// Anything (over 255 bytes cannot be encoded; that step is skipped).
    Any(String),
}

const KEYS: [&str; 8] = [
    "a",
    "b",
    "c",
    "tcp://10.0.0.1:9000",
    "",
    "with space",
    "tab\t",
    "ünï",
];

impl Key {
    fn get(&self) -> String {
        match self {
            Self::Pool(n) => pick(&KEYS, *n).to_owned(),
            Self::Any(s) => s.clone(),
        }
    }
}

/// A value: mostly from a small pool, sometimes too long or with a control character.
#[derive(Debug, Arbitrary)]
pub enum Value {
    /// One of [`VALUES`].
    Pool(u8),
    /// `n` bytes of `x`, around the value limit.
    Long(u16),
    /// Anything.
    Any(String),
}

const VALUES: [&str; 6] = ["", "v", "w", "orders service", "line\nbreak", "é"];

impl Value {
    fn get(&self) -> String {
        match self {
            Self::Pool(n) => pick(&VALUES, *n).to_owned(),
            Self::Long(n) => "x".repeat(usize::from(*n) % (2 * MAX_VALUE_BYTES)),
            Self::Any(s) => s.clone(),
        }
    }
}

fn pick<'a>(pool: &[&'a str], n: u8) -> &'a str {
    pool.get(usize::from(n) % pool.len())
        .copied()
        .unwrap_or_default()
}

impl Msg {
    /// The message; `seen` is the pool of node ids [`MemberId::Seen`] picks from.
    fn build(&self, seen: &[u64]) -> Message {
        let hail = |h: &Option<HailIn>| {
            // Half the hails carry a digest, drawn from the node id so that saved inputs keep
            // decoding to the same steps.
            h.as_ref().map(|h| Hail {
                node: h.node.get(),
                goodbye: h.goodbye,
                digest: (h.node.get() % 2 == 0).then(|| h.node.get().rotate_left(17)),
            })
        };
        match self {
            Self::Hello(h) => Message::Hello(hail(h)),
            Self::Ping(h) => Message::Ping(hail(h)),
            Self::Pong(h) => Message::Pong(hail(h)),
            Self::Invalid => Message::Invalid,
            Self::Publish(key, value, ttl, ext) => Message::Publish(publish(key, value, ttl, ext)),
            Self::Batch(entries) => Message::Batch(
                (entries.iter())
                    .map(|Entry(key, value, ttl, ext)| publish(key, value, ttl, ext))
                    .collect(),
            ),
            Self::Members(records) => members::members(records, seen),
            Self::Join(ttl, record) => Message::Join {
                ttl: ttl.get(),
                member: Box::new(record.build(seen)),
            },
            Self::NeighborRequest(high, record) => members::neighbor_request(*high, record, seen),
            Self::NeighborAnswer(accepted) => Message::Neighbor(Neighbor::Answer {
                accepted: *accepted,
            }),
            Self::Disconnect(stopping) => Message::Disconnect {
                stopping: *stopping,
            },
            Self::Shuffle(reply, records) => members::shuffle(*reply, records, seen),
            Self::Probe(answer, failed, seq, target) => {
                members::probe(*answer, *failed, seq, target, seen)
            }
        }
    }
}

/// A PUBLISH body from its parts.
fn publish(key: &Key, value: &Value, ttl: &Ms, ext: &Ext) -> Publish {
    let extension = match ext {
        Ext::None => Bytes::new(),
        Ext::Stamp {
            version,
            origin,
            lease_seq,
            withdrawn,
        } => Stamp {
            version: version.get(),
            origin: origin.get(),
            lease_seq: *lease_seq,
            withdrawn: *withdrawn,
        }
        .to_bytes(),
        Ext::Raw(bytes) => Bytes::copy_from_slice(bytes),
    };
    Publish {
        key: Arc::from(key.get()),
        value: Arc::from(value.get()),
        ttl_ms: ttl.get(),
        extension,
    }
}

/// A message as the transport would deliver it: encoded, then decoded. `None` if it cannot be
/// encoded (a key over 255 bytes), which no peer could send.
fn through_the_wire(message: &Message) -> Option<Result<Message, String>> {
    let bytes = message.to_bytes().ok()?;
    Some(Message::decode(&bytes).map_err(|e| e.to_string()))
}

fn client_id(n: u8) -> ClientId {
    ClientId(u64::from(n % CLIENTS))
}

fn remote_id(n: u8) -> RemoteId {
    RemoteId(u32::from(n % REMOTES))
}

/// The innocent client: it only says HELLO (when it has no session) and PING (every step).
fn innocent_id() -> ClientId {
    ClientId(u64::MAX)
}

/// Runs the engine on the steps read from `data`, checking it after every step.
pub fn check_engine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut harness = Harness::new();
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        harness.run(&step);
    }
}

/// Reads the steps `data` holds, for printing a failing input.
pub fn engine_steps(data: &[u8]) -> Vec<Step> {
    let mut u = Unstructured::new(data);
    let mut steps = Vec::new();
    while steps.len() < MAX_STEPS && !u.is_empty() {
        match Step::arbitrary(&mut u) {
            Ok(step) => steps.push(step),
            Err(_) => break,
        }
    }
    steps
}

/// What the innocent client has been sent for each key, last copy first.
type Mirror = BTreeMap<Arc<str>, (Stamp, Arc<str>)>;

struct Harness {
    engine: Engine,
    /// Known bugs not to step around.
    t0: Instant,
    now: Instant,
    step: usize,
    /// Every key any step named, to look entries up (the store lists only shared ones).
    keys: BTreeSet<String>,
    /// Clients that have sent us something, so replies to them make sense.
    clients_heard: BTreeSet<String>,
    /// Remotes the engine dialled itself (views and probes), until it closes them: never one
    /// of the CONNECTs.
    view_remotes: BTreeMap<u32, Dialled>,
    innocent: Innocent,
    /// What each remote's server has: whether it is connected, and the copies it was sent or
    /// sent us.
    remotes: Vec<RemoteModel>,
    /// The live tuples as the application knows them from the events it was given.
    app_view: BTreeMap<String, String>,
    /// The keys the application owned when the step began.
    owned_before: BTreeSet<String>,
    /// This step's PUBLISH (or BATCH) from a peer: who sent it and each key with the copy it
    /// carried (`None` when its stamp is bad), for the no-echo check and the remotes' mirrors.
    published_by: Option<(Peer, Vec<Received>)>,
    /// The settings in force, as the node would hold them, to validate a `SET` against.
    settings: Config,
    /// The cluster layer as the checks know it.
    members: MemberModel,
    /// This step's claim against us from a peer whose message the engine should take in (see
    /// [`Harness::claim_taken`]): the peer, and the claim's incarnation.
    claim: Option<(Peer, u64)>,
}

/// A link the views dialled.
struct Dialled {
    endpoint: String,
    /// Its server speaks only while it is connected.
    connected: bool,
    /// Its server hailed (a PONG with a hail, not a goodbye) since it last connected: whether
    /// it had, for what the engine sent it before closing it in the same step.
    hailed: bool,
}

/// A remote's server, as far as the engine should know it.
#[derive(Default)]
struct RemoteModel {
    connected: bool,
    mirror: Mirror,
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    Client(ClientId),
    Remote(RemoteId),
}

/// The innocent client's model of its session.
struct Innocent {
    /// Whether the engine should hold a connected session for it.
    connected: bool,
    /// When it last sent something.
    last_sent: Instant,
    /// The copies it was sent.
    mirror: Mirror,
}

impl Harness {
    fn new() -> Self {
        let t0 = Instant::now();
        let mut engine = Engine::new(EngineConfig {
            node_id: NODE_ID,
            server_timeout: SERVER_TIMEOUT,
            ping_interval: None,
            max_tuples: MAX_TUPLES,
            max_store_bytes: usize::MAX,
            max_origin_bytes: usize::MAX,
            max_value_bytes: MAX_VALUE_BYTES,
            max_sessions: MAX_SESSIONS,
            max_remotes: usize::from(REMOTES),
            tombstone_ttl: TOMBSTONE_TTL,
            withdraw_on_stop: true,
            version_clock: None,
            // The cluster layer on: peers' bytes may decode to membership messages, and what
            // the engine sends must still be plain v1 to every peer that never hailed.
            cluster: Some(Box::new(ClusterConfig::default())),
        });
        for n in 0..REMOTES {
            // Within max_remotes by construction.
            let _ = engine.add_remote(t0, &format!("tcp://remote-{n}:5670"));
        }
        Self {
            engine,
            t0,
            now: t0,
            step: 0,
            keys: BTreeSet::new(),
            clients_heard: BTreeSet::new(),
            view_remotes: BTreeMap::new(),
            innocent: Innocent {
                connected: false,
                last_sent: t0,
                mirror: Mirror::new(),
            },
            remotes: (0..REMOTES).map(|_| RemoteModel::default()).collect(),
            app_view: BTreeMap::new(),
            owned_before: BTreeSet::new(),
            published_by: None,
            settings: {
                let mut config = Config::default();
                config.server_timeout = SERVER_TIMEOUT;
                config.tombstone_ttl = TOMBSTONE_TTL;
                config
            },
            members: MemberModel::new(),
            claim: None,
        }
    }

    /// Feeds one step, the innocent client's turn, and checks everything.
    fn run(&mut self, step: &Step) {
        self.step += 1;
        let now = self.now;
        let mut timed_out = false;
        self.published_by = None;
        self.claim = None;
        self.owned_before = (self.keys.iter())
            .filter(|k| self.engine.store().entry(k).is_some_and(|e| e.owned()))
            .cloned()
            .collect();
        match step {
            Step::Client(n, msg) => {
                let message = msg.build(&self.members.seen);
                self.note_keys(&message);
                if let Some(received) = through_the_wire(&message) {
                    self.client_sends(client_id(*n), received);
                }
            }
            Step::ClientBytes(n, bytes) => {
                let received = Message::decode(bytes).map_err(|e| e.to_string());
                if let Ok(message) = &received {
                    self.note_keys(message);
                }
                self.client_sends(client_id(*n), received);
            }
            Step::Remote(n, msg) => {
                let message = msg.build(&self.members.seen);
                self.note_keys(&message);
                if let Some(received) = through_the_wire(&message) {
                    self.remote_sends(remote_id(*n), received);
                }
            }
            Step::RemoteBytes(n, bytes) => {
                let received = Message::decode(bytes).map_err(|e| e.to_string());
                if let Ok(message) = &received {
                    self.note_keys(message);
                }
                self.remote_sends(remote_id(*n), received);
            }
            Step::RemoteConnected(n) => {
                self.remote_model(remote_id(*n)).connected = true;
                self.engine.handle_remote_connected(now, remote_id(*n));
            }
            Step::RemoteDisconnected(n) => {
                self.remote_model(remote_id(*n)).connected = false;
                self.engine.handle_remote_disconnected(now, remote_id(*n));
            }
            Step::ClientGone(n) => self.engine.handle_client_gone(self.now, &client_id(*n)),
            Step::ClientOverflow(n) => self.engine.handle_client_overflow(now, &client_id(*n)),
            Step::Publish(key, value, lease) => {
                let (key, value) = (key.get(), value.get());
                self.keys.insert(key.clone());
                let lease = lease
                    .as_ref()
                    .map(|ms| Duration::from_millis(u64::from(ms.get())));
                let result = self.engine.publish(now, &key, &value, lease);
                let valid = validate(&key, &value, MAX_VALUE_BYTES);
                match (&result, &valid) {
                    (Ok(()), Ok(())) | (Err(TupleError::StoreFull { .. }), Ok(())) => {}
                    (Err(a), Err(b)) if a == b => {}
                    _ => panic!("publish({key:?}, {value:?}) gave {result:?}; rules say {valid:?}"),
                }
                if result.is_ok() {
                    // What the application just published is in force here, with its value.
                    let held = self.engine.store().get(&key).map(|v| v.to_string());
                    assert_eq!(
                        held.as_deref(),
                        Some(value.as_str()),
                        "publish({key:?}, {value:?}) returned Ok but the store holds {held:?}"
                    );
                }
            }
            Step::Unpublish(key) => {
                let key = key.get();
                self.keys.insert(key.clone());
                let was_live = self.engine.store().get(&key).is_some();
                let result = self.engine.unpublish(now, &key);
                assert_eq!(
                    result.is_ok(),
                    was_live,
                    "unpublish({key:?}) gave {result:?} for a key that was live: {was_live}"
                );
                if result.is_ok() {
                    let entry = self.engine.store().entry(&key).map(|e| e.kind);
                    assert_eq!(
                        entry,
                        Some(Kind::Withdrawn),
                        "unpublish({key:?}) returned Ok but the store holds {entry:?}"
                    );
                }
            }
            Step::Goodbye => {
                self.members.left = true;
                self.engine.goodbye(now);
            }
            Step::Advance(ms) => {
                self.now = now + Duration::from_millis(u64::from(ms.get()));
                if self.innocent.connected
                    && self.now.duration_since(self.innocent.last_sent)
                        >= self.settings.server_timeout
                {
                    // The innocent client was silent for the timeout: its session expires,
                    // as it should (it will say HELLO again).
                    self.innocent.connected = false;
                }
                self.engine.handle_timeout(self.now);
                timed_out = true;
            }
            Step::SetServerTimeout(span) => {
                let settings = {
                    let mut config = self.settings.clone();
                    config.server_timeout = span.get();
                    config
                };
                if settings.validate().is_ok() {
                    self.engine.set_server_timeout(now, settings.server_timeout);
                    self.settings = settings;
                }
            }
            Step::SetPingInterval(span) => {
                let settings = {
                    let mut config = self.settings.clone();
                    config.ping_interval = span.as_ref().map(Span::get);
                    config
                };
                if settings.validate().is_ok() {
                    self.engine.set_ping_interval(now, settings.ping_interval);
                    self.settings = settings;
                }
            }
            Step::SetTombstoneTtl(span) => {
                let settings = {
                    let mut config = self.settings.clone();
                    config.tombstone_ttl = span.get();
                    config
                };
                if settings.validate().is_ok() {
                    self.engine.set_tombstone_ttl(settings.tombstone_ttl);
                    self.settings = settings;
                }
            }
            Step::Dialled(n, dial) => self.dialled(*n, dial),
        }
        let outputs = self.drain();
        self.check_outputs(&outputs);
        self.check_no_echo(&outputs);
        self.note_kept_from_remote();
        let refute = self.claim_taken(&outputs);
        self.innocent_turn();
        self.check_state(timed_out);
        self.members.check_state(&self.engine, refute, self.step);
    }

    /// Something happens on a link the views dialled, as a transport would report it: a
    /// connection completes only when it is not up, fails only then, drops only when up, and
    /// its server speaks only while it is up.
    fn dialled(&mut self, n: u8, dial: &Dial) {
        let now = self.now;
        let ids: Vec<u32> = self.view_remotes.keys().copied().collect();
        let Some(&id) = ids.get(usize::from(n) % ids.len().max(1)) else {
            return;
        };
        let Some(link) = self.view_remotes.get_mut(&id) else {
            return;
        };
        let remote = RemoteId(id);
        match (dial, link.connected) {
            (Dial::Connected, false) => {
                link.connected = true;
                link.hailed = false;
                self.engine.handle_remote_connected(now, remote);
            }
            (Dial::Unreachable, false) => {
                self.engine
                    .handle_remote_unreachable(now, remote, "connection refused");
            }
            (Dial::Disconnected, true) => {
                link.connected = false;
                self.engine.handle_remote_disconnected(now, remote);
            }
            (Dial::Hails, true) => {
                let node = self.members.advertised.get(&link.endpoint).copied();
                if let Some(node) = node {
                    link.hailed = true;
                    let pong = Message::Pong(Some(Hail {
                        node,
                        ..Hail::default()
                    }));
                    self.remote_sends(remote, Ok(pong));
                }
            }
            (Dial::Says(msg), true) => {
                let message = msg.build(&self.members.seen);
                if let Message::Pong(Some(hail)) = &message {
                    link.hailed |= !hail.goodbye;
                }
                self.note_keys(&message);
                if let Some(received) = through_the_wire(&message) {
                    self.remote_sends(remote, received);
                }
            }
            _ => {}
        }
    }

    /// The incarnation of this step's claim against us, if the engine took the message in for
    /// sure: every MEMBERS from a CONNECT's server; the other membership messages from one
    /// that hailed before; anything from a client that hailed before, unless the engine
    /// refused it (INVALID). Dials of the views are left out: a probe's ignores all but PONG.
    fn claim_taken(&mut self, outputs: &[Output]) -> Option<u64> {
        let (peer, claim) = self.claim.take()?;
        let refused = |from: &ClientId| {
            (outputs.iter())
                .any(|o| matches!(o, Output::ToClient(c, Message::Invalid) if c == from))
        };
        match &peer {
            Peer::Client(from) if refused(from) => None,
            _ => Some(claim),
        }
    }

    fn remote_model(&mut self, id: RemoteId) -> &mut RemoteModel {
        let index = id.0 as usize;
        let Some(model) = self.remotes.get_mut(index) else {
            panic!("no model for {id:?}")
        };
        model
    }

    /// A copy is not sent back to the peer it came from (`proto/zgp.md` §6, §11).
    fn check_no_echo(&self, outputs: &[Output]) {
        let Some((from, received)) = &self.published_by else {
            return;
        };
        let sent_by_them = |key: &Arc<str>| received.iter().any(|(k, _)| k == key);
        for output in outputs {
            let echo = match (output, from) {
                (Output::ToClient(c, Message::Publish(p)), Peer::Client(f)) => {
                    c == f && sent_by_them(&p.key)
                }
                (Output::ToRemote(r, Message::Publish(p)), Peer::Remote(f)) => {
                    r == f && sent_by_them(&p.key)
                }
                _ => false,
            };
            assert!(
                !echo,
                "step {}: a PUBLISH from {from:?} was answered with {output:?}",
                self.step
            );
        }
    }

    /// A CONNECT's server that sent us the copy we now hold has it: nothing need be sent back.
    fn note_kept_from_remote(&mut self) {
        let Some((Peer::Remote(id), received)) = self.published_by.clone() else {
            return;
        };
        if id.0 >= u32::from(REMOTES) {
            return;
        }
        for (key, carried) in received {
            let Some(entry) = self.engine.store().entry(&key) else {
                continue;
            };
            let copy = (entry.stamp, Arc::clone(&entry.value));
            if carried.as_ref() == Some(&copy) {
                self.remote_model(id).mirror.insert(key, copy);
            }
        }
    }

    fn note_keys(&mut self, message: &Message) {
        for (key, _) in carried(message).unwrap_or_default() {
            self.keys.insert(key.to_string());
        }
    }

    fn client_sends(&mut self, client: ClientId, received: Result<Message, String>) {
        self.clients_heard.insert(client.to_string());
        if let Ok(message) = &received {
            self.published_by = carried(message).map(|r| (Peer::Client(client.clone()), r));
            self.members.note(message);
            if let Some(claim) = self.members.accusation(message)
                && self.engine.client_reads_batches(&client)
            {
                self.claim = Some((Peer::Client(client.clone()), claim));
            }
        }
        match received {
            Ok(message) => self.engine.handle_client_message(self.now, client, message),
            Err(error) => self
                .engine
                .handle_client_malformed(self.now, client, &error),
        }
    }

    fn remote_sends(&mut self, remote: RemoteId, received: Result<Message, String>) {
        if let Ok(message) = &received {
            self.published_by = carried(message).map(|r| (Peer::Remote(remote), r));
            self.members.note(message);
            let taken = remote.0 < u32::from(REMOTES)
                && (matches!(message, Message::Members(_))
                    || self.engine.remote_reads_batches(remote));
            if let Some(claim) = self.members.accusation(message)
                && taken
            {
                self.claim = Some((Peer::Remote(remote), claim));
            }
        }
        match received {
            Ok(message) => self.engine.handle_remote_message(self.now, remote, message),
            Err(error) => self
                .engine
                .handle_remote_malformed(self.now, remote, &error),
        }
    }

    /// What the engine asked for, with resyncs sent whole (as the actor does in-process).
    fn drain(&mut self) -> Vec<Output> {
        for peer in self.engine.resyncs() {
            self.engine.resync_step(self.now, &peer, usize::MAX);
        }
        std::iter::from_fn(|| self.engine.poll_output().map(Output::decoded)).collect()
    }

    /// The innocent client says HELLO if it has no session, else PING, and checks the answer.
    fn innocent_turn(&mut self) {
        let me = innocent_id();
        let refused_before = self.engine.stats().sessions_refused;
        let hello = !self.innocent.connected;
        // It hails, as our own nodes do, so it is sent stamped copies and withdrawals.
        let message = if hello {
            Message::Hello(Some(Hail {
                node: 0x1_2345,
                ..Hail::default()
            }))
        } else {
            Message::Ping(None)
        };
        self.members.note(&message);
        self.engine
            .handle_client_message(self.now, me.clone(), message);
        self.innocent.last_sent = self.now;
        let outputs = self.drain();
        self.check_outputs(&outputs);
        let mine: Vec<&Message> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::ToClient(c, m) if *c == me => Some(m),
                _ => None,
            })
            .collect();
        assert!(
            !mine.iter().any(|m| **m == Message::Invalid),
            "step {}: the innocent client, {}, was sent INVALID: {mine:?}",
            self.step,
            if hello { "saying HELLO" } else { "PINGing" },
        );
        if hello {
            if self.engine.stats().sessions_refused > refused_before {
                // The node is full of other sessions; it may ignore a new client. Try again.
                assert!(mine.is_empty(), "a refused HELLO was answered: {mine:?}");
                return;
            }
            // It hailed, so it is told the cluster's members too.
            assert!(
                mine.iter()
                    .all(|m| matches!(m, Message::Publish(_)) || m.is_membership()),
                "HELLO got something but a resync: {mine:?}"
            );
            self.innocent.connected = true;
        } else {
            let pongs = mine.iter().filter(|m| ***m == Message::Pong(None)).count();
            assert_eq!(
                pongs, 1,
                "step {}: the innocent client PINGed and got {mine:?}",
                self.step
            );
        }
    }

    /// What any step's outputs must look like.
    fn check_outputs(&mut self, outputs: &[Output]) {
        let me = innocent_id();
        for output in outputs {
            match output {
                Output::ToClient(client, message) => {
                    assert!(
                        *client == me || self.clients_heard.contains(&client.to_string()),
                        "sent {message:?} to {client}, who never sent us anything"
                    );
                    let membership = message.is_membership();
                    assert!(
                        membership
                            || matches!(
                                message,
                                Message::Publish(_) | Message::Pong(_) | Message::Invalid
                            ),
                        "a server does not send {message:?} to a client"
                    );
                    assert!(
                        !membership || self.engine.client_reads_batches(client),
                        "{message:?} to {client}, which never hailed"
                    );
                    check_sent(message, self.engine.client_reads_batches(client));
                    self.members.check_sent(message, &self.engine, self.step);
                    if let (true, Message::Publish(p)) = (*client == me, message) {
                        let stamp = p.stamp().ok().flatten().unwrap_or_default();
                        let copy = (stamp, Arc::clone(&p.value));
                        self.innocent.mirror.insert(Arc::clone(&p.key), copy);
                    }
                }
                Output::ToRemote(remote, message) if self.view_remotes.contains_key(&remote.0) => {
                    // A dial of the views: only membership messages and the session's own
                    // HELLO and PINGs, and membership only once its server hailed. One the
                    // engine closed in this step (its Close follows) is judged by the model.
                    let hailed = if self.engine.remote_endpoint(*remote).is_some() {
                        self.engine.remote_reads_batches(*remote)
                    } else {
                        self.view_remotes.get(&remote.0).is_some_and(|d| d.hailed)
                    };
                    assert!(
                        message.is_membership()
                            || matches!(
                                message,
                                Message::Hello(_) | Message::Ping(_) | Message::Publish(_)
                            ),
                        "a client does not send {message:?} to a server"
                    );
                    assert!(
                        !message.is_membership() || hailed,
                        "{message:?} to {remote:?}, whose server never hailed"
                    );
                    check_sent(message, hailed);
                    self.members.check_sent(message, &self.engine, self.step);
                }
                Output::ToRemote(remote, message) => {
                    assert!(remote.0 < u32::from(REMOTES), "no such remote {remote:?}");
                    let membership = message.is_membership();
                    assert!(
                        membership
                            || matches!(
                                message,
                                Message::Hello(_) | Message::Publish(_) | Message::Ping(_)
                            ),
                        "a client does not send {message:?} to a server"
                    );
                    assert!(
                        !membership || self.engine.remote_reads_batches(*remote),
                        "{message:?} to {remote:?}, whose server never hailed"
                    );
                    check_sent(message, self.engine.remote_reads_batches(*remote));
                    self.members.check_sent(message, &self.engine, self.step);
                    if let Message::Publish(p) = message {
                        let stamp = p.stamp().ok().flatten().unwrap_or_default();
                        let copy = (stamp, Arc::clone(&p.value));
                        let model = self.remote_model(*remote);
                        model.mirror.insert(Arc::clone(&p.key), copy);
                    }
                }
                Output::Redial(remote) => {
                    assert!(remote.0 < u32::from(REMOTES), "no such remote {remote:?}");
                    self.remote_model(*remote).connected = false;
                }
                Output::Connect(remote, endpoint) => {
                    assert!(
                        remote.0 >= u32::from(REMOTES)
                            && (self.view_remotes)
                                .insert(
                                    remote.0,
                                    Dialled {
                                        endpoint: endpoint.clone(),
                                        connected: false,
                                        hailed: false,
                                    }
                                )
                                .is_none(),
                        "dialled {endpoint} as {remote:?}, an id already in use"
                    );
                }
                Output::Close(remote) => {
                    // The views close only what they dialled: a CONNECT stays.
                    assert!(
                        self.view_remotes.remove(&remote.0).is_some(),
                        "closed {remote:?}, which the views did not dial"
                    );
                }
                Output::Event(event) => self.on_event(event),
                Output::Frame(..) => unreachable!("frames are decoded as they are taken"),
            }
        }
    }

    /// Keeps the application's view, and checks each event makes sense against it.
    fn on_event(&mut self, event: &Event) {
        let step = self.step;
        match event {
            Event::Deliver { key, value, .. } | Event::Change { key, value, .. } => {
                assert_eq!(
                    validate(key, value, MAX_VALUE_BYTES),
                    Ok(()),
                    "the application was told of a tuple that breaks the rules"
                );
                let old = self.app_view.insert(key.to_string(), value.to_string());
                match (event, old) {
                    (Event::Deliver { .. }, None) => {}
                    (Event::Change { .. }, Some(old)) if *old != **value => {}
                    (_, old) => panic!("step {step}: {event:?} when the application had {old:?}"),
                }
            }
            Event::Remove { key, .. } | Event::Expire { key, .. } => {
                let old = self.app_view.remove(&**key);
                assert!(
                    old.is_some(),
                    "step {step}: {event:?} for a key the application did not have"
                );
                if let Event::Expire { .. } = event {
                    assert!(
                        !self.owned_before.contains(&**key),
                        "step {step}: the owner's own tuple {key:?} expired"
                    );
                }
            }
            Event::Peer { .. } => {}
            Event::Member { .. } => self.members.on_event(event, step),
            other => panic!("step {step}: an event these checks do not know: {other:?}"),
        }
    }

    /// What must hold between steps.
    fn check_state(&self, timed_out: bool) {
        let store = self.engine.store();
        let step = self.step;
        assert!(
            store.held() <= MAX_TUPLES,
            "step {step}: {} copies held, limit {MAX_TUPLES}",
            store.held()
        );
        assert!(store.len() <= store.held(), "more live tuples than copies");
        assert_eq!(
            store.len(),
            store.iter().count(),
            "the live count drifted from the entries"
        );
        let sessions = self.engine.connected_sessions();
        assert!(
            sessions <= MAX_SESSIONS,
            "{sessions} connected sessions, limit {MAX_SESSIONS}"
        );
        let deadline = self.engine.poll_timeout();
        if let Some(at) = deadline {
            assert!(
                at >= self.now,
                "step {step}: poll_timeout is {:?} in the past",
                self.now - at
            );
            assert!(
                !timed_out || at > self.now,
                "step {step}: handle_timeout(now) left poll_timeout at now; the actor would spin"
            );
        }
        let mut seen = 0;
        for key in &self.keys {
            let Some(entry) = store.entry(key) else {
                continue;
            };
            seen += 1;
            assert_eq!(
                validate(key, &entry.value, MAX_VALUE_BYTES),
                Ok(()),
                "step {step}: the store holds a tuple that breaks the rules"
            );
            for at in [entry.ends, entry.refresh_at()].into_iter().flatten() {
                assert!(
                    deadline.is_some_and(|d| d <= at),
                    "step {step}: {key:?} is due at +{:?} but poll_timeout is {:?}",
                    at - self.t0,
                    deadline.map(|d| d - self.t0)
                );
                assert!(
                    !timed_out || at > self.now,
                    "step {step}: {key:?} was due at +{:?}, handle_timeout(+{:?}) left it",
                    at - self.t0,
                    self.now - self.t0
                );
            }
        }
        assert_eq!(seen, store.held(), "the store holds a key no step named");
        let live: BTreeMap<String, String> = (store.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            live, self.app_view,
            "step {step}: the store's live tuples and what the events told the application differ"
        );
        let resyncing = self.engine.resyncs();
        for (n, remote) in self.remotes.iter().enumerate() {
            // Only a server that hailed gets every copy as we hold it (stamped, withdrawals
            // too), and only once our resync to it, which follows its first answer, is out.
            let id = remote_id(n as u8);
            if !remote.connected
                || !self.engine.remote_reads_batches(id)
                || resyncing.contains(&zgossip::engine::Peer::Remote(id))
            {
                continue;
            }
            for (key, entry) in store.shared() {
                let sent = remote.mirror.get(key);
                assert_eq!(
                    sent,
                    Some(&(entry.stamp, Arc::clone(&entry.value))),
                    "step {step}: remote {n} last had {sent:?} for {key:?}, \
                     but the store holds {:?} {:?}",
                    entry.stamp,
                    entry.value
                );
            }
        }
        if self.innocent.connected {
            for (key, entry) in store.shared() {
                let sent = self.innocent.mirror.get(key);
                assert_eq!(
                    sent,
                    Some(&(entry.stamp, Arc::clone(&entry.value))),
                    "step {step}: the innocent client was last sent {sent:?} for {key:?}, \
                     but the store holds {:?} {:?}",
                    entry.stamp,
                    entry.value
                );
            }
        }
    }
}

/// A key a peer sent and the copy it carried (`None`: the stamp is bad).
type Received = (Arc<str>, Option<(Stamp, Arc<str>)>);

/// The tuples a PUBLISH or BATCH carries, in order; `None` for other messages.
fn carried(message: &Message) -> Option<Vec<Received>> {
    let one = |p: &Publish| {
        let copy = p
            .stamp()
            .ok()
            .map(|s| (s.unwrap_or_default(), Arc::clone(&p.value)));
        (Arc::clone(&p.key), copy)
    };
    match message {
        Message::Publish(p) => Some(vec![one(p)]),
        Message::Batch(entries) => Some(entries.iter().map(one).collect()),
        _ => None,
    }
}

/// What any message the engine sends must be: encodable, decoding to itself, and for a PUBLISH,
/// within the rules, and stamped to a peer that hailed or plain ZGP v1 (no bytes after the
/// ttl, and no withdrawal) to one that did not.
fn check_sent(message: &Message, hailed: bool) {
    let bytes = match message.to_bytes() {
        Ok(bytes) => bytes,
        Err(error) => panic!("the engine sent a message that cannot be encoded: {error}"),
    };
    assert_eq!(
        Message::decode(&bytes).as_ref(),
        Ok(message),
        "a message the engine sent does not survive the wire"
    );
    if let Message::Publish(p) = message {
        if hailed {
            assert!(
                matches!(p.stamp(), Ok(Some(_))),
                "the engine sent a PUBLISH without a valid stamp to a peer that hailed: {p:?}"
            );
        } else {
            assert!(
                p.extension.is_empty(),
                "the engine sent extension bytes to a peer that never hailed: {p:?}"
            );
        }
        assert_eq!(
            validate(&p.key, &p.value, MAX_VALUE_BYTES),
            Ok(()),
            "the engine sent a tuple that breaks the rules"
        );
    }
}
