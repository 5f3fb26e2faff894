//! Many engines in one loop, without tokio or sockets: a virtual clock, links that carry every
//! message through the codec after a delay, seeded loss, cuts between nodes, and nodes that die
//! and come back. Engine tests and protocol simulations of thousands of nodes run on it in
//! seconds, and the same seed and inputs give the same trace ([`Net::trace_digest`]), so a
//! failure replays exactly.
//!
//! It plays the part of the actor and the in-process transport: resyncs go whole, a dial reaches
//! its listener one latency later (and is retried every [`REDIAL`] while nothing listens), and a
//! node going away is seen at once by its peers. A cut or loss drops frames only, as the inproc
//! transport's faults do, so it looks like a network that silently carries nothing.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{ClientId, Engine, EngineConfig, Event, Output, Peer, RemoteId};
use crate::rng::XorShift;
use crate::wire::Message;

/// How often a dial to a node that is down is tried again (libzmq's reconnect interval).
pub const REDIAL: Duration = Duration::from_millis(100);

/// The shortest step a node's timer takes: an engine whose deadline is already due is not
/// asked again at the same instant.
const TICK: Duration = Duration::from_millis(1);

/// A network of engines. Nodes are numbered from 0 in the order they were added.
pub struct Net {
    start: Instant,
    now: Instant,
    nodes: Vec<Host>,
    links: Vec<Link>,
    /// Open links by their dialer's remote, and by the session's client id (unique in the net).
    by_remote: HashMap<(usize, RemoteId), usize>,
    by_client: HashMap<ClientId, usize>,
    flights: BinaryHeap<Reverse<Flight>>,
    /// Each node's current deadline, and the heap of them (stale entries are skipped).
    due: Vec<Option<Instant>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    seq: u64,
    rng: XorShift,
    latency: Duration,
    jitter: Duration,
    loss: f64,
    cuts: BTreeSet<(usize, usize)>,
    next_client: u64,
    trace: u64,
    /// Whether outputs go into the trace digest (hashing their text costs a tenth of a run).
    tracing: bool,
    /// Whether what the engines tell their applications is kept (see [`Net::skip_events`]).
    keeping_events: bool,
    frames: u64,
    bytes: u64,
}

/// One engine and what it told its application.
struct Host {
    engine: Engine,
    config: EngineConfig,
    up: bool,
    events: Vec<Event>,
    /// The nodes it CONNECTed to, in order: a restart dials them again.
    dialled: Vec<usize>,
}

/// One CONNECT: `dialer`'s remote, and the session it has at `server` while connected.
struct Link {
    dialer: usize,
    remote: RemoteId,
    server: usize,
    /// The session's id at the server while connected.
    client: Option<ClientId>,
    /// A dial in flight, so a second is not started.
    dialling: bool,
    /// The dialer closed it (or died): it is never dialled again.
    closed: bool,
    /// When the last frame each way lands: a connection delivers in order, whatever the
    /// jitter.
    last_landing: [Option<Instant>; 2],
}

struct Flight {
    at: Instant,
    seq: u64,
    hop: Hop,
}

// Flights land in time order, and in the order they left when they land together.
impl PartialEq for Flight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Flight {}

impl PartialOrd for Flight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Flight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

enum Hop {
    /// A dial reaches the server.
    Dial(usize),
    /// A frame from the dialer to the server, on the connection `client` names.
    ToServer(usize, ClientId, Bytes),
    /// A frame from the server back to the dialer, on the connection `client` names.
    ToDialer(usize, ClientId, Bytes),
    /// The dialer closed the link: the server sees its client go, after what was sent before.
    HangUp(usize),
}

impl Net {
    /// An empty network whose frames take `latency`, drawing loss and jitter from `seed`.
    pub fn new(seed: u64, latency: Duration) -> Self {
        let start = Instant::now();
        Net {
            start,
            now: start,
            nodes: Vec::new(),
            links: Vec::new(),
            by_remote: HashMap::new(),
            by_client: HashMap::new(),
            flights: BinaryHeap::new(),
            due: Vec::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            rng: XorShift::new(seed),
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
            cuts: BTreeSet::new(),
            next_client: 0,
            trace: 0xcbf2_9ce4_8422_2325,
            tracing: true,
            keeping_events: true,
            frames: 0,
            bytes: 0,
        }
    }

    /// Frames take up to `jitter` longer than the latency, drawn per frame (never passing an
    /// earlier frame of the same connection).
    pub fn set_jitter(&mut self, jitter: Duration) {
        self.jitter = jitter;
    }

    /// Each frame is lost with this probability.
    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss;
    }

    /// Frames between `a` and `b` are lost, both ways, until [`Net::heal`].
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cuts.insert((a.min(b), a.max(b)));
    }

    /// Frames between `a` and `b` flow again.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.cuts.remove(&(a.min(b), a.max(b)));
    }

    /// Every cut healed.
    pub fn heal_all(&mut self) {
        self.cuts.clear();
    }

    /// Adds a node running `config`; returns its number.
    pub fn add(&mut self, config: EngineConfig) -> usize {
        self.nodes.push(Host {
            engine: Engine::new(config.clone()),
            config,
            up: true,
            events: Vec::new(),
            dialled: Vec::new(),
        });
        self.due.push(None);
        let node = self.nodes.len() - 1;
        self.settle(node);
        node
    }

    /// `dialer` CONNECTs to `server`.
    pub fn connect(&mut self, dialer: usize, server: usize) -> RemoteId {
        let now = self.now;
        let remote = match self
            .engine_mut(dialer)
            .add_remote(now, &format!("sim://{server}"))
        {
            Ok(remote) => remote,
            Err(error) => panic!("node {dialer}: {error}"),
        };
        if let Some(member) = self.nodes.get_mut(dialer) {
            member.dialled.push(server);
        }
        self.open_link(dialer, remote, server);
        self.settle(dialer);
        remote
    }

    /// A new link for `dialer`'s remote, dialled one latency from now.
    fn open_link(&mut self, dialer: usize, remote: RemoteId, server: usize) {
        self.links.push(Link {
            dialer,
            remote,
            server,
            client: None,
            dialling: false,
            closed: false,
            last_landing: [None; 2],
        });
        let link = self.links.len() - 1;
        self.by_remote.insert((dialer, remote), link);
        self.dial(link, self.latency);
    }

    /// The dialer is done with `link` for good.
    fn close_link(&mut self, link: usize) {
        if let Some(l) = self.links.get_mut(link) {
            l.closed = true;
            let key = (l.dialer, l.remote);
            self.by_remote.remove(&key);
        }
    }

    /// The node stops as a crash would: no goodbye. Its peers see its connections close.
    pub fn kill(&mut self, node: usize) {
        let now = self.now;
        if let Some(member) = self.nodes.get_mut(node) {
            member.up = false;
        }
        for link in 0..self.links.len() {
            let Some(&Link {
                dialer,
                remote,
                server,
                ..
            }) = self.links.get(link)
            else {
                continue;
            };
            if self.link(link).closed {
                continue;
            }
            if dialer == node {
                self.hang_up(link);
                self.close_link(link);
            } else if server == node && self.hang_up(link) {
                self.engine_mut(dialer)
                    .handle_remote_disconnected(now, remote);
                self.settle(dialer);
                self.dial(link, REDIAL);
            }
        }
    }

    /// The node stops gracefully: it withdraws and says goodbye, and is gone one latency later.
    pub fn stop(&mut self, node: usize) {
        let now = self.now;
        self.engine_mut(node).goodbye(now);
        self.settle(node);
        self.run_for(self.latency * 2);
        self.kill(node);
    }

    /// The node comes back as a new process with the same settings: an empty store, and its
    /// CONNECTs dialled again in order.
    pub fn restart(&mut self, node: usize) {
        let Some(member) = self.nodes.get_mut(node) else {
            return;
        };
        member.engine = Engine::new(member.config.clone());
        member.up = true;
        let dialled = member.dialled.clone();
        let now = self.now;
        for server in dialled {
            let endpoint = format!("sim://{server}");
            if let Ok(remote) = self.engine_mut(node).add_remote(now, &endpoint) {
                self.open_link(node, remote, server);
            }
        }
        self.settle(node);
    }

    /// The application at `node` publishes (see [`Engine::publish`]).
    pub fn publish(&mut self, node: usize, key: &str, value: &str, lease: Option<Duration>) {
        let now = self.now;
        if let Err(error) = self.engine_mut(node).publish(now, key, value, lease) {
            panic!("node {node}: publish {key}: {error}");
        }
        self.settle(node);
    }

    /// The application at `node` withdraws `key`.
    pub fn unpublish(&mut self, node: usize, key: &str) {
        let now = self.now;
        if let Err(error) = self.engine_mut(node).unpublish(now, key) {
            panic!("node {node}: unpublish {key}: {error}");
        }
        self.settle(node);
    }

    /// Runs for `span` of virtual time.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        while self.step(until) {}
        self.now = until;
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time has
    /// passed; returns whether it holds.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let until = self.now + limit;
        // Asked once per instant of the virtual clock, not after every delivery: a predicate
        // over every node's member list costs more than the steps themselves.
        let mut asked: Option<Instant> = None;
        loop {
            if asked != Some(self.now) {
                if done(self) {
                    return true;
                }
                asked = Some(self.now);
            }
            if !self.step(until) {
                self.now = until;
                return done(self);
            }
        }
    }

    /// Virtual time since the network was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The virtual clock's reading.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node's engine.
    pub fn engine(&self, node: usize) -> &Engine {
        match self.nodes.get(node) {
            Some(member) => &member.engine,
            None => panic!("no node {node}"),
        }
    }

    /// What a node's application was told, in order, since its last [`Net::take_events`].
    pub fn events(&self, node: usize) -> &[Event] {
        self.nodes.get(node).map_or(&[], |m| &m.events)
    }

    /// Takes what a node's application was told.
    pub fn take_events(&mut self, node: usize) -> Vec<Event> {
        self.nodes
            .get_mut(node)
            .map(|m| std::mem::take(&mut m.events))
            .unwrap_or_default()
    }

    /// Whether the active views of `nodes` (each link counted both ways) connect them all.
    /// Node `n` is member `n + 1`, as the engine tests and benchmarks number them.
    pub fn overlay_connected(&self, nodes: &[usize]) -> bool {
        let Some(&first) = nodes.first() else {
            return true;
        };
        let within: std::collections::HashSet<usize> = nodes.iter().copied().collect();
        let mut edges: HashMap<usize, Vec<usize>> = HashMap::new();
        for &node in nodes {
            for id in self.engine(node).views().0 {
                let other = (id as usize).wrapping_sub(1);
                if within.contains(&other) {
                    edges.entry(node).or_default().push(other);
                    edges.entry(other).or_default().push(node);
                }
            }
        }
        let mut seen = std::collections::HashSet::from([first]);
        let mut todo = vec![first];
        while let Some(node) = todo.pop() {
            for &next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next) {
                    todo.push(next);
                }
            }
        }
        seen.len() == nodes.len()
    }

    /// Active peers held one way only, as `(node, member)`: `node` holds `member` active but
    /// the member's node does not hold `node`'s. A settled overlay has none: a one-sided peer
    /// passes its holder no gossip.
    pub fn one_sided_views(&self, nodes: &[usize]) -> Vec<(usize, u64)> {
        let mut one_sided = Vec::new();
        for &node in nodes {
            for id in self.engine(node).views().0 {
                let other = (id as usize).wrapping_sub(1);
                let back = (self.nodes.get(other))
                    .is_some_and(|h| h.up && h.engine.views().0.contains(&(node as u64 + 1)));
                if !back {
                    one_sided.push((node, id));
                }
            }
        }
        one_sided
    }

    /// The members `node` lists as alive, by id, sorted.
    pub fn alive_ids(&self, node: usize) -> Vec<u64> {
        let mut ids: Vec<u64> = (self.engine(node).member_states())
            .filter(|(_, state)| *state == crate::wire::MemberState::Alive)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A digest of every output of every engine, in order: equal for two runs exactly when
    /// they did the same thing.
    pub fn trace_digest(&self) -> u64 {
        self.trace
    }

    /// Stops adding outputs to the trace digest, for runs too big to hash every output of.
    pub fn skip_trace(&mut self) {
        self.tracing = false;
    }

    /// Stops keeping the engines' events: a benchmark that never reads them would otherwise
    /// hold a MEMBER event per member at every node (10⁸ of them at 10,000 nodes).
    pub fn skip_events(&mut self) {
        self.keeping_events = false;
        for host in &mut self.nodes {
            host.events = Vec::new();
        }
    }

    /// Frames delivered so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The bytes of the frames delivered so far (ZGP frames, without any transport's framing).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn engine_mut(&mut self, node: usize) -> &mut Engine {
        match self.nodes.get_mut(node) {
            Some(member) => &mut member.engine,
            None => panic!("no node {node}"),
        }
    }

    fn up(&self, node: usize) -> bool {
        self.nodes.get(node).is_some_and(|m| m.up)
    }

    fn link(&self, link: usize) -> &Link {
        match self.links.get(link) {
            Some(link) => link,
            None => panic!("no link {link}"),
        }
    }

    /// Does the next thing due by `until`; false when nothing is.
    fn step(&mut self, until: Instant) -> bool {
        let flight = self.flights.peek().map(|Reverse(f)| f.at);
        let timer = loop {
            match self.timers.peek() {
                Some(&Reverse((at, node))) if self.due.get(node) != Some(&Some(at)) => {
                    self.timers.pop();
                }
                Some(&Reverse((at, node))) => break Some((at, node)),
                None => break None,
            }
        };
        match (flight, timer) {
            (Some(at), timer) if at <= until && timer.is_none_or(|(t, _)| at <= t) => {
                if let Some(Reverse(flight)) = self.flights.pop() {
                    self.now = self.now.max(flight.at);
                    self.land(flight.hop);
                }
                true
            }
            (_, Some((at, node))) if at <= until => {
                self.timers.pop();
                self.now = self.now.max(at);
                if let Some(due) = self.due.get_mut(node) {
                    *due = None;
                }
                let now = self.now;
                if self.up(node) {
                    self.engine_mut(node).handle_timeout(now);
                    self.settle_after(node, now + TICK);
                }
                true
            }
            _ => false,
        }
    }

    fn land(&mut self, hop: Hop) {
        let now = self.now;
        match hop {
            Hop::Dial(link) => {
                let Link {
                    dialer,
                    remote,
                    server,
                    ..
                } = *self.link(link);
                if let Some(l) = self.links.get_mut(link) {
                    l.dialling = false;
                }
                if !self.up(dialer) || self.link(link).closed {
                    return;
                }
                if !self.up(server) {
                    self.dial(link, REDIAL);
                    return;
                }
                let client = ClientId(self.next_client);
                self.next_client += 1;
                if let Some(l) = self.links.get_mut(link) {
                    l.client = Some(client.clone());
                }
                self.by_client.insert(client, link);
                self.engine_mut(dialer).handle_remote_connected(now, remote);
                self.settle(dialer);
            }
            Hop::ToServer(link, client, frame) => {
                let Link { server, .. } = *self.link(link);
                if !self.up(server) || self.link(link).client.as_ref() != Some(&client) {
                    return;
                }
                self.frames += 1;
                self.bytes += frame.len() as u64;
                let engine = self.engine_mut(server);
                match Message::decode(&frame) {
                    Ok(message) => engine.handle_client_message(now, client, message),
                    Err(error) => engine.handle_client_malformed(now, client, &error),
                }
                self.settle(server);
            }
            Hop::ToDialer(link, client, frame) => {
                let Link { dialer, remote, .. } = *self.link(link);
                if !self.up(dialer) || self.link(link).client.as_ref() != Some(&client) {
                    return;
                }
                self.frames += 1;
                self.bytes += frame.len() as u64;
                let engine = self.engine_mut(dialer);
                match Message::decode(&frame) {
                    Ok(message) => engine.handle_remote_message(now, remote, message),
                    Err(error) => engine.handle_remote_malformed(now, remote, &error),
                }
                self.settle(dialer);
            }
            Hop::HangUp(link) => {
                self.hang_up(link);
            }
        }
    }

    /// Starts a dial of `link` that lands `after` from now, unless one is under way.
    fn dial(&mut self, link: usize, after: Duration) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.dialling || l.closed {
            return;
        }
        l.dialling = true;
        self.fly(after, Hop::Dial(link));
    }

    /// Ends `link`'s connection: the server sees its client go. Returns whether it was
    /// connected.
    fn hang_up(&mut self, link: usize) -> bool {
        let Some(client) = self.links.get_mut(link).and_then(|l| l.client.take()) else {
            return false;
        };
        self.by_client.remove(&client);
        let server = self.link(link).server;
        if self.up(server) {
            let now = self.now;
            self.engine_mut(server).handle_client_gone(now, &client);
            self.settle(server);
        }
        true
    }

    /// Carries out everything `node`'s engine asked for, and notes its next deadline.
    fn settle(&mut self, node: usize) {
        self.settle_after(node, self.now);
    }

    fn settle_after(&mut self, node: usize, earliest: Instant) {
        let now = self.now;
        let Some(member) = self.nodes.get_mut(node) else {
            return;
        };
        let engine = &mut member.engine;
        for peer in engine.resyncs() {
            engine.resync_step(now, &peer, usize::MAX);
        }
        let mut outputs = Vec::new();
        while let Some(output) = engine.poll_output() {
            // Without a trace, an encoded frame goes as it is: decoding it for each peer only
            // to encode it again was the cost of a whole member list per newcomer.
            outputs.push(if self.tracing {
                output.decoded()
            } else {
                output
            });
        }
        let deadline = engine.poll_timeout().map(|at| at.max(earliest));
        for output in outputs {
            self.record(node, &output);
            self.route(node, output);
        }
        if let Some(at) = deadline
            && self.due.get(node) != Some(&Some(at))
        {
            if let Some(due) = self.due.get_mut(node) {
                *due = Some(at);
            }
            self.timers.push(Reverse((at, node)));
        }
    }

    fn record(&mut self, node: usize, output: &Output) {
        if !self.tracing {
            return;
        }
        let mut fnv = Fnv(self.trace);
        // Writing to a hash cannot fail; the text is never built.
        let _ = write!(fnv, "{node} {output:?}\u{ff}");
        self.trace = fnv.0;
    }

    fn route(&mut self, node: usize, output: Output) {
        match output {
            Output::ToRemote(remote, message) => self.up_to_server(node, remote, frame(&message)),
            Output::ToClient(client, message) => self.back_to_dialer(node, client, frame(&message)),
            Output::Frame(Peer::Remote(remote), bytes) => self.up_to_server(node, remote, bytes),
            Output::Frame(Peer::Client(client), bytes) => self.back_to_dialer(node, client, bytes),
            Output::Redial(remote) => {
                let Some(&link) = self.by_remote.get(&(node, remote)) else {
                    return;
                };
                self.hang_up(link);
                self.dial(link, self.latency);
            }
            Output::Connect(remote, endpoint) => {
                let server = endpoint.strip_prefix("sim://").and_then(|n| n.parse().ok());
                match server {
                    Some(server) if server < self.nodes.len() => {
                        self.open_link(node, remote, server);
                    }
                    _ => {
                        let now = self.now;
                        let engine = self.engine_mut(node);
                        engine.handle_remote_unreachable(now, remote, "no such node");
                        self.settle(node);
                    }
                }
            }
            Output::Close(remote) => {
                let Some(&link) = self.by_remote.get(&(node, remote)) else {
                    return;
                };
                self.close_link(link);
                // The server sees its client go after what was sent before the close.
                if self.link(link).client.is_some() {
                    self.send(link, 0, Hop::HangUp(link));
                }
            }
            Output::Event(event) => {
                if let Some(member) = self.nodes.get_mut(node)
                    && self.keeping_events
                {
                    member.events.push(event);
                }
            }
        }
    }

    /// A frame from `node` through its remote to the server's session.
    fn up_to_server(&mut self, node: usize, remote: RemoteId, bytes: Bytes) {
        let Some(&link) = self.by_remote.get(&(node, remote)) else {
            return;
        };
        let Link { server, .. } = *self.link(link);
        if let Some(client) = self.link(link).client.clone()
            && self.carries(node, server)
        {
            self.send(link, 0, Hop::ToServer(link, client, bytes));
        }
    }

    /// A frame from `node`'s session of `client` back to its dialer.
    fn back_to_dialer(&mut self, node: usize, client: ClientId, bytes: Bytes) {
        let Some(&link) = self.by_client.get(&client) else {
            return;
        };
        if self.link(link).server != node {
            return;
        }
        let dialer = self.link(link).dialer;
        if self.carries(node, dialer) {
            self.send(link, 1, Hop::ToDialer(link, client, bytes));
        }
    }

    /// Whether a frame from `from` to `to` gets through this time.
    fn carries(&mut self, from: usize, to: usize) -> bool {
        if self.cuts.contains(&(from.min(to), from.max(to))) {
            return false;
        }
        self.loss <= 0.0 || self.rng.fraction() >= self.loss
    }

    /// Sends a frame along `link`, one way (0: to the server, 1: back to the dialer), landing
    /// after the latency and jitter but never before the frame sent before it.
    fn send(&mut self, link: usize, way: usize, hop: Hop) {
        let mut at = self.now + self.latency;
        if !self.jitter.is_zero() {
            let jitter_ns = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
            at += Duration::from_nanos(self.rng.next_u64() % jitter_ns.saturating_add(1));
        }
        if let Some(last) = self
            .links
            .get_mut(link)
            .and_then(|l| l.last_landing.get_mut(way))
        {
            at = at.max(last.unwrap_or(at));
            *last = Some(at);
        }
        self.land_at(at, hop);
    }

    fn fly(&mut self, after: Duration, hop: Hop) {
        self.land_at(self.now + after, hop);
    }

    fn land_at(&mut self, at: Instant, hop: Hop) {
        self.seq += 1;
        self.flights.push(Reverse(Flight {
            at,
            seq: self.seq,
            hop,
        }));
    }
}

/// A message as the frame a transport would carry. The engine only makes messages it can encode.
fn frame(message: &Message) -> Bytes {
    match message.to_bytes() {
        Ok(frame) => frame,
        Err(error) => panic!("the engine made a message it cannot encode: {error}"),
    }
}

/// FNV-1a over what is written to it: the trace digest, without building the text.
struct Fnv(u64);

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        for byte in text.bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}
