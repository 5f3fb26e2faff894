//! The actor: one tokio task that owns the engine and the transports. It turns commands from
//! handles and what the transports report into engine inputs, carries out the engine's outputs,
//! and sleeps until the engine's next deadline. Nothing else touches the engine.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::batch::{Batches, Dest};
use super::{Command, Config, ConfigError, Error, Event, Status, TupleInfo, parse_duration};
use crate::engine::{ClientId, Engine, EngineConfig, Output, Peer, RemoteId, node_name};
use crate::transport::curve::CurveKey;
use crate::transport::{Endpoint, FrameError, Incoming, Transports};
use crate::wire::{EncodeError, Message};

/// Work done in one go before the engine's outputs are sent: a frame counts one, a BATCH one per
/// tuple, so a pass over BATCH frames keeps as few forwarded copies waiting as one over PUBLISHes.
const INCOMING_BATCH: usize = 256;

/// A resync to a tcp/ipc peer goes out this many bytes of copies at a time, the next slice
/// only once the last is in libzmq: what a peer that does not read costs us stays this small.
const RESYNC_SLICE: usize = 128 * 1024;

/// How soon a resync waiting for room on an in-process link looks again.
const RESYNC_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// Resync bytes one pass builds before it lets other work in: hundreds of clients saying HELLO
/// at once are served a few slices at a time, between other peers' PINGs.
const RESYNC_PASS: usize = 4 * RESYNC_SLICE;

/// tcp/ipc client ids kept per session the engine may hold (and at least [`MIN_CLIENT_IDS`]):
/// libzmq does not say when a client hangs up, so ids past that are forgotten longest idle
/// first, and a client still there is only forgotten once that many others spoke since.
const CLIENT_IDS_PER_SESSION: usize = 2;
const MIN_CLIENT_IDS: usize = 1024;

pub(super) struct Actor {
    config: Config,
    engine: Engine,
    commands: mpsc::Receiver<Command>,
    transports: Transports,
    events: Option<broadcast::Sender<Event>>,
    port: i32,
    verbose: bool,
    /// The PUBLISH last encoded during this flush and its frame: the engine forwards one copy
    /// to every peer as consecutive outputs, so it is encoded once and the frame shared.
    last_publish: Option<(Message, Bytes)>,
    /// PUBLISHes held back during a flush, to go out as BATCH frames.
    batches: Batches,
    /// tcp/ipc peers sent a resync slice whose [`Incoming::Drained`] has not come yet.
    awaiting_drain: HashSet<Peer>,
    /// The last pass stopped at [`RESYNC_PASS`] with slices still to send: come back at once.
    more_resyncs: bool,
    /// An in-process peer's link had no room for its next slice: look again shortly.
    resync_waiting: bool,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor {
    pub(super) fn new(config: Config, commands: mpsc::Receiver<Command>) -> Self {
        let node_id = config.node_id.unwrap_or_else(super::random_node_id);
        let label = config.name.clone().unwrap_or_else(|| node_name(node_id));
        let batches = Batches::new(config.max_message_bytes);
        let max_sessions = super::fds::sessions_within_limit(config.max_sessions);
        let transports = Transports::new(
            config.limits(),
            config.budget(),
            &label,
            config.faults(),
            max_sessions
                .saturating_mul(CLIENT_IDS_PER_SESSION)
                .max(MIN_CLIENT_IDS),
        );
        Self {
            engine: Engine::new(EngineConfig {
                max_sessions,
                ..config.engine(node_id)
            }),
            transports,
            config,
            commands,
            events: None,
            port: 0,
            verbose: false,
            last_publish: None,
            batches,
            awaiting_drain: HashSet::new(),
            more_resyncs: false,
            resync_waiting: false,
        }
    }

    /// The actor's task. A plain function, not an `async fn`: an async wrapper would hold
    /// the actor a second time in every node's task.
    pub(super) fn run(self) -> impl std::future::Future<Output = ()> {
        let span = info_span!("node", name = self.config.name.as_deref().unwrap_or(""));
        self.serve().instrument(span)
    }

    // Not an `async fn`: that would keep the actor both as its argument and as a local.
    #[allow(clippy::manual_async_fn)]
    fn serve(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            let terminate = loop {
                self.flush();
                let engine_due = self
                    .engine
                    .poll_timeout()
                    .map(tokio::time::Instant::from_std);
                let deadline = if self.more_resyncs {
                    Some(tokio::time::Instant::now())
                } else if self.resync_waiting {
                    let soon = tokio::time::Instant::now() + RESYNC_RETRY;
                    Some(engine_due.map_or(soon, |due| due.min(soon)))
                } else {
                    engine_due
                };
                // The select below prefers traffic, so under a steady stream its timer branch would
                // not win: what we send on a clock (PINGs, refreshes) goes out here regardless. What
                // judges silence waits for the timer branch, reached only once input is read.
                if self.engine.poll_outbound_timeout().is_some_and(|at| {
                    tokio::time::Instant::from_std(at) <= tokio::time::Instant::now()
                }) {
                    self.engine.handle_outbound_timeout(now());
                    continue;
                }
                tokio::select! {
                    biased;
                    command = self.commands.recv() => match command {
                        Some(Command::Terminate { graceful, reply }) => {
                            if graceful {
                                self.engine.goodbye(now());
                                self.flush();
                            }
                            break Some(reply);
                        }
                        // Boxed: a bind or connect waits on the I/O thread, and that state would
                        // otherwise be part of every idle node's task (thousands in a simulation).
                        Some(command) => Box::pin(self.on_command(command)).await,
                        None => break None,
                    },
                    // One clock reading per batch: a batch takes well under a millisecond.
                    incoming = self.transports.recv() => {
                        let now = now();
                        let mut done = self.on_incoming(now, incoming);
                        while done < INCOMING_BATCH {
                            let Some(incoming) = self.transports.try_recv() else { break };
                            done += self.on_incoming(now, incoming);
                        }
                    }
                    () = sleep_until(deadline) => {
                        let now = now();
                        self.excuse_reachable_peers(now);
                        self.engine.handle_timeout(now);
                    }
                }
            };
            Box::pin(self.stop(terminate)).await;
        }
    }

    async fn stop(self, terminate: Option<oneshot::Sender<()>>) {
        debug!("stopping");
        self.transports.shutdown().await;
        if let Some(reply) = terminate {
            let _ = reply.send(());
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Bind { endpoint, reply } => {
                let result = self.bind(&endpoint).await;
                let _ = reply.send(result);
            }
            Command::Connect {
                endpoint,
                server_key,
                reply,
            } => {
                let result = self.connect(&endpoint, server_key).await;
                let _ = reply.send(result);
            }
            Command::Publish {
                key,
                value,
                lease,
                reply,
            } => {
                let result = self
                    .engine
                    .publish(now(), &key, &value, lease)
                    .map_err(Error::from);
                let _ = reply.send(result);
            }
            Command::Unpublish { key, reply } => {
                let _ = reply.send(self.engine.unpublish(now(), &key).map_err(Error::from));
            }
            Command::Lookup { service, reply } => {
                let found = self.engine.store().lookup(&service);
                let _ = reply.send(found.iter().map(|k| k.to_string()).collect());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.engine.peers());
            }
            Command::Members { reply } => {
                let _ = reply.send(self.engine.members());
            }
            Command::Status { reply } => {
                let (remotes, remotes_connected) = self.engine.remotes();
                let _ = reply.send(Status {
                    tuples: self.engine.store().len(),
                    held: self.engine.store().held(),
                    sessions: self.engine.connected_sessions(),
                    remotes,
                    remotes_connected,
                    remotes_synced: self.engine.remotes_synced(),
                    node_id: self.engine.config().node_id,
                    stats: self.engine.stats().clone(),
                    curve_refused: self.transports.curve_refused(),
                    handshakes_failed: self.transports.handshakes_failed(),
                    transport_failure: self.transports.failure().map(str::to_owned),
                });
            }
            Command::Port { reply } => {
                let _ = reply.send(self.port);
            }
            Command::Get { key, reply } => {
                let _ = reply.send(self.engine.store().get(&key).map(|v| v.to_string()));
            }
            Command::Tuples { reply } => {
                let now = now();
                let details = self.engine.store().details().map(|(key, entry)| TupleInfo {
                    key: key.to_string(),
                    value: entry.value.to_string(),
                    lease_remaining: entry.ends.map(|ends| ends.saturating_duration_since(now)),
                    owned: entry.owned(),
                    origin: entry.stamp.origin,
                    version: entry.stamp.version,
                });
                let _ = reply.send(details.collect());
            }
            Command::Set { path, value, reply } => {
                let _ = reply.send(self.set(&path, &value));
            }
            Command::Verbose(on) => self.verbose = on,
            Command::Subscribe { reply } => {
                let capacity = self.config.event_capacity;
                let sender = self
                    .events
                    .get_or_insert_with(|| broadcast::channel(capacity).0);
                let _ = reply.send(sender.subscribe());
            }
            Command::Terminate { reply, .. } => {
                // Handled by the loop; kept here so the match is complete.
                let _ = reply.send(());
            }
            #[cfg(any(test, feature = "sim"))]
            Command::FailIoThread { reply } => {
                let _ = reply.send(self.transports.fail_io_thread().map_err(Error::from));
            }
        }
    }

    async fn bind(&mut self, endpoint: &str) -> Result<String, Error> {
        let parsed = Endpoint::parse(endpoint)?;
        let curve = self.config.curve_server().filter(|_| !parsed.is_inproc());
        let secure = curve.is_some();
        let result = self.transports.bind(&parsed, curve).await;
        match &result {
            Ok(bound) => {
                self.port = port_of(bound);
                info!(endpoint = %bound, "bound");
                self.advertise_bound(bound);
                if secure {
                    // Members dial this node over CURVE: its record says with which key.
                    let key = self.config.curve_public_key.map(|k| k.to_z85());
                    self.engine.set_curve_key(now(), key);
                }
            }
            Err(error) => {
                self.port = -1;
                debug!(%error, "bind failed");
            }
        }
        Ok(result?)
    }

    /// Without `advertise`, members are told to dial what we bind, except a tcp wildcard,
    /// which names no address another host can dial: that gets a warning instead.
    fn advertise_bound(&mut self, bound: &str) {
        if self.config.cluster != super::Membership::Member || !self.config.advertise.is_empty() {
            return;
        }
        if super::config::is_wildcard(bound) {
            warn!(
                endpoint = %bound,
                "bound to a wildcard address without `advertise`: other nodes will not dial this \
                 one (it can still dial them); set advertise to an address they can reach"
            );
            return;
        }
        let mut endpoints = self.engine.advertised();
        if !endpoints.iter().any(|e| e == bound) && endpoints.len() < 8 {
            endpoints.push(bound.to_owned());
            self.engine.set_advertised(now(), endpoints);
        }
    }

    async fn connect(&mut self, endpoint: &str, server_key: Option<CurveKey>) -> Result<(), Error> {
        let parsed = Endpoint::parse(endpoint)?;
        // Checked before the remote exists, so a refusal leaves nothing behind.
        let curve = self.config.curve_client(&parsed, server_key)?;
        self.transports.check(&parsed)?;
        let remote = self.engine.add_remote(now(), endpoint)?;
        let result = self.transports.connect(remote, &parsed, curve).await;
        // A connection made on the spot counts even if a later step failed.
        self.take_ready();
        result?;
        info!(endpoint, "connecting");
        Ok(())
    }

    fn set(&mut self, path: &str, value: &str) -> Result<(), Error> {
        let bad = |why: String| {
            Error::Config(ConfigError {
                field: path.to_owned(),
                why,
            })
        };
        if let Some(result) = self.config.set_curve(path, value) {
            return Ok(result?);
        }
        match path {
            "server/timeout" => {
                let timeout = parse_duration(value).map_err(bad)?;
                let candidate = Config {
                    server_timeout: timeout,
                    ..self.config.clone()
                };
                candidate.validate()?;
                self.config = candidate;
                self.engine.set_server_timeout(now(), timeout);
            }
            "remote/ping-interval" => {
                let interval = parse_duration(value).map_err(bad)?;
                let candidate = Config {
                    ping_interval: Some(interval),
                    ..self.config.clone()
                };
                candidate.validate()?;
                self.config = candidate;
                self.engine.set_ping_interval(now(), Some(interval));
            }
            "node/tombstone-ttl" => {
                let ttl = parse_duration(value).map_err(bad)?;
                let candidate = Config {
                    tombstone_ttl: ttl,
                    ..self.config.clone()
                };
                candidate.validate()?;
                self.config = candidate;
                self.engine.set_tombstone_ttl(ttl);
            }
            "node/advertise" => {
                let endpoints = comma_list(value);
                let mut config = self.config.clone();
                config.advertise = endpoints.clone();
                config.validate()?;
                self.config.advertise = endpoints.clone();
                self.engine.set_advertised(now(), endpoints);
            }
            "node/tags" => {
                // `-` for none, as MEMBERS prints an empty list.
                let mut tags = comma_list(value);
                tags.retain(|t| t != "-");
                let mut config = self.config.clone();
                config.tags = tags.clone();
                config.validate()?;
                self.config.tags = tags.clone();
                self.engine.set_tags(now(), tags);
            }
            "node/withdraw-on-stop" => {
                let on =
                    parse_flag(value).ok_or_else(|| bad(format!("{value:?} is not 0 or 1")))?;
                self.engine.set_withdraw_on_stop(on);
            }
            "server/animate" | "server/verbose" => {
                self.verbose =
                    parse_flag(value).ok_or_else(|| bad(format!("{value:?} is not 0 or 1")))?;
            }
            _ => return Err(bad("unknown SET path".into())),
        }
        Ok(())
    }

    /// Hands one transport event to the engine and carries out what it asked for, except that
    /// PUBLISHes for peers that read BATCH wait for the end of the pass; returns the event's
    /// weight in [`INCOMING_BATCH`]. Dispatching per event keeps the engine's output queue at
    /// one message's worth instead of a whole pass's.
    fn on_incoming(&mut self, now: Instant, incoming: Incoming) -> usize {
        let weight = self.take_incoming(now, incoming);
        self.dispatch();
        weight
    }

    /// Hands the engine what the transports had to say at once after a call.
    fn take_ready(&mut self) {
        while let Some(incoming) = self.transports.ready() {
            self.take_incoming(now(), incoming);
        }
    }

    fn take_incoming(&mut self, now: Instant, incoming: Incoming) -> usize {
        let weight = |message: &Message| match message {
            Message::Batch(entries) => entries.len().max(1),
            _ => 1,
        };
        match incoming {
            Incoming::ClientFrame { client, frame } => match decode(now, frame, &mut self.engine) {
                None => {}
                Some(Ok(message)) => {
                    self.trace_in(&client, &message);
                    let weight = weight(&message);
                    self.engine.handle_client_message(now, client, message);
                    return weight;
                }
                Some(Err(error)) => self.engine.handle_client_malformed(now, client, &error),
            },
            Incoming::ClientGone(client) => {
                self.engine.handle_client_gone(now, &client);
                // What it was sent is moot: no Drained comes for a connection that is gone.
                self.awaiting_drain.remove(&Peer::Client(client));
            }
            Incoming::Overflow(Peer::Client(client)) => {
                self.engine.handle_client_overflow(now, &client)
            }
            Incoming::Overflow(Peer::Remote(remote)) => {
                self.engine.handle_remote_overflow(now, remote)
            }
            Incoming::RemoteConnected(remote) => self.engine.handle_remote_connected(now, remote),
            Incoming::RemoteDisconnected(remote) => {
                self.engine.handle_remote_disconnected(now, remote)
            }
            Incoming::RemoteUnreachable(remote, cause) => {
                self.engine.handle_remote_unreachable(now, remote, cause);
            }
            Incoming::Drained(peer) => {
                self.awaiting_drain.remove(&peer);
            }
            Incoming::RemoteFrame { remote, frame } => match decode(now, frame, &mut self.engine) {
                None => {}
                Some(Ok(message)) => {
                    self.trace_in(&remote, &message);
                    let weight = weight(&message);
                    self.engine.handle_remote_message(now, remote, message);
                    return weight;
                }
                Some(Err(error)) => self.engine.handle_remote_malformed(now, remote, &error),
            },
            Incoming::Stopped(why) => {
                // Its peers are reported gone next; the node goes on over inproc.
                error!(%why, "the tcp/ipc transport stopped: tcp and ipc peers are lost, and tcp/ipc binds and connects fail until the node restarts");
                self.awaiting_drain.clear();
            }
        }
        1
    }

    fn trace_in(&self, from: &dyn std::fmt::Debug, message: &Message) {
        if self.verbose {
            info!(?from, ?message, "recv");
        }
    }

    /// Carries out everything the engine asked for, and sends the batches gathered.
    fn flush(&mut self) {
        self.dispatch();
        self.pump_resyncs();
        if !self.batches.is_empty() {
            for (dest, frame) in self.batches.drain() {
                self.deliver(dest, frame);
            }
        }
        self.last_publish = None;
    }

    /// Carries out everything the engine asked for, gathering PUBLISHes into batches.
    fn dispatch(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::ToClient(client, message) => self.send_to_client(client, &message),
                Output::ToRemote(remote, message) => self.send_to_remote(remote, &message),
                Output::Redial(remote) => {
                    self.release(&Dest::Remote(remote));
                    self.transports.redial(remote);
                    self.take_ready();
                }
                Output::Connect(remote, endpoint) => self.dial_member(remote, &endpoint),
                Output::Close(remote) => {
                    // What is gathered for it (a DISCONNECT, say) goes first.
                    self.release(&Dest::Remote(remote));
                    self.transports.close(remote);
                }
                Output::Event(event) => self.tell(event),
                Output::Frame(peer, frame) => {
                    let dest = match peer {
                        Peer::Client(client) => Dest::Client(client),
                        Peer::Remote(remote) => Dest::Remote(remote),
                    };
                    if self.verbose {
                        info!(to = ?dest, bytes = frame.len(), "send an encoded frame");
                    }
                    self.release(&dest);
                    self.deliver(dest, frame);
                }
            }
        }
    }

    /// Dials a member for the active view, over plain ZGP: a member's record does not carry
    /// a CURVE server key.
    fn dial_member(&mut self, remote: RemoteId, endpoint: &str) {
        // A member that advertises a CURVE key (its listeners require CURVE) is dialled over
        // CURVE with it, as this node's keypair (or a throwaway one).
        let key = (self.engine.dial_key(remote)).and_then(|key| CurveKey::from_z85(&key).ok());
        let opened = Endpoint::parse(endpoint)
            .map_err(Error::from)
            .and_then(|parsed| {
                let curve = match key {
                    Some(key) if !parsed.is_inproc() => {
                        self.config.curve_client(&parsed, Some(key))?
                    }
                    _ => None,
                };
                self.transports.check(&parsed)?;
                Ok(self.transports.open(remote, &parsed, curve)?)
            });
        if let Err(error) = opened {
            debug!(endpoint, %error, "cannot dial a member");
            self.engine
                .handle_remote_unreachable(now(), remote, "the address was refused");
        }
        self.take_ready();
    }

    /// Sends the next slice of every resync whose peer has room: all of it at once to an
    /// in-process peer (its link counts bytes and says when it is full), one slice at a time
    /// to a tcp/ipc peer, each once the last is in libzmq.
    fn pump_resyncs(&mut self) {
        self.more_resyncs = false;
        self.resync_waiting = false;
        if !self.engine.has_resyncs() {
            self.awaiting_drain.clear();
            return;
        }
        let now = now();
        let mut budget = RESYNC_PASS;
        for peer in self.engine.resyncs() {
            if self.awaiting_drain.contains(&peer) {
                continue;
            }
            if budget == 0 {
                self.more_resyncs = true;
                return;
            }
            let paced = self.transports.paced(&peer);
            // An in-process peer gets a slice whenever its link has room: it says nothing when
            // it has read one, so the next pass looks again, a millisecond later.
            let slice = if paced {
                RESYNC_SLICE
            } else {
                self.transports.room(&peer, RESYNC_SLICE)
            };
            if slice == 0 {
                self.resync_waiting = true;
                continue;
            }
            budget = budget.saturating_sub(RESYNC_SLICE);
            let done = self.engine.resync_step(now, &peer, slice);
            self.dispatch();
            if paced && !done {
                self.release(&peer);
                if self.transports.mark(&peer) {
                    self.awaiting_drain.insert(peer);
                }
            }
        }
    }

    /// Sends what is held back for `dest` (before a message that must not overtake it).
    fn release(&mut self, dest: &Dest) {
        if let Some(frame) = self.batches.take(dest) {
            self.deliver(dest.clone(), frame);
        }
    }

    /// Sends `message` to `dest`, holding a PUBLISH back for a BATCH when the peer reads them.
    fn send(&mut self, dest: Dest, message: &Message) {
        let frame = match self.encode(message) {
            Ok(frame) => frame,
            Err(error) => return warn!(%error, "cannot encode a message"),
        };
        let batched = matches!(message, Message::Publish(_))
            && match &dest {
                Dest::Client(client) => self.engine.client_reads_batches(client),
                Dest::Remote(remote) => self.engine.remote_reads_batches(*remote),
            };
        if !batched {
            self.release(&dest);
            return self.deliver(dest, frame);
        }
        let (held, alone) = self.batches.push(dest.clone(), frame);
        for frame in held.into_iter().chain(alone) {
            self.deliver(dest.clone(), frame);
        }
    }

    /// Hands a frame to the transports; a peer gone or not reading is the engine's news now.
    fn deliver(&mut self, dest: Dest, frame: Bytes) {
        self.transports.send(&dest, frame);
        self.take_ready();
    }

    /// A message's frame; a PUBLISH that is the same copy as the last one reuses its frame.
    fn encode(&mut self, message: &Message) -> Result<Bytes, EncodeError> {
        let Message::Publish(publish) = message else {
            return message.to_bytes();
        };
        if let Some((Message::Publish(last), frame)) = &self.last_publish
            && Arc::ptr_eq(&last.key, &publish.key)
            && Arc::ptr_eq(&last.value, &publish.value)
            && last.ttl_ms == publish.ttl_ms
            && last.extension == publish.extension
        {
            return Ok(frame.clone());
        }
        let frame = message.to_bytes()?;
        self.last_publish = Some((message.clone(), frame.clone()));
        Ok(frame)
    }

    fn send_to_client(&mut self, client: ClientId, message: &Message) {
        if self.verbose {
            info!(to = ?client, ?message, "send");
        }
        self.send(Dest::Client(client), message);
    }

    fn send_to_remote(&mut self, remote: RemoteId, message: &Message) {
        if self.verbose {
            info!(to = self.engine.remote_endpoint(remote), ?message, "send");
        }
        self.send(Dest::Remote(remote), message);
    }

    /// In-process peers that are there (and reachable, under a fault plan) are busy, not
    /// silent: a peer that goes away says so. Without this, thousands of nodes sharing a few
    /// cores take each other's turns for silence, and the resyncs that follow add to the load
    /// that caused them.
    fn excuse_reachable_peers(&mut self, now: Instant) {
        for peer in self.transports.reachable() {
            match peer {
                Peer::Remote(remote) => self.engine.handle_remote_reachable(now, remote),
                Peer::Client(client) => self.engine.handle_client_reachable(now, &client),
            }
        }
    }

    fn tell(&mut self, event: Event) {
        if let Some(sender) = &self.events {
            if sender.receiver_count() == 0 {
                // Nobody listens any more; stop paying for the channel.
                self.events = None;
            } else {
                let _ = sender.send(event);
            }
        }
    }
}

/// The words of a comma-separated list (`SET node/advertise`, `SET node/tags`), trimmed.
fn comma_list(value: &str) -> Vec<String> {
    (value.split(','))
        .map(str::trim)
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A frame as a ZGP message, or what is wrong with it; `None` for a frame over our size limit,
/// which is counted and dropped like a refused tuple, without costing the session.
fn decode(
    now: Instant,
    frame: Result<bytes::Bytes, FrameError>,
    engine: &mut Engine,
) -> Option<Result<Message, String>> {
    let frame = match frame {
        Ok(frame) => frame,
        Err(FrameError::TooLarge { len, max }) => {
            engine.handle_frame_too_large(now, len, max);
            return None;
        }
        Err(error) => return Some(Err(error.to_string())),
    };
    Some(Message::decode_frame(&frame).map_err(|e| e.to_string()))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A SET flag: 1/0, true/false, on/off.
fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "1" | "true" | "on" => Some(true),
        "0" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// The port in a bound endpoint: the number after the last colon of a tcp endpoint, else 0.
fn port_of(endpoint: &str) -> i32 {
    endpoint
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .map_or(0, i32::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use crate::node::{Events, Node};
    use crate::{Config, Error, Event, PeerState, TransportError};

    /// Waits for a PEER event about `peer` in `state`; its reason.
    async fn peer_event(events: &mut Events, peer: &str, state: PeerState) -> String {
        let wait = async {
            loop {
                if let Ok(Event::Peer {
                    peer: p,
                    state: s,
                    reason,
                }) = events.recv().await
                    && p == peer
                    && s == state
                {
                    return reason;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no PEER {peer} {state} within 10 s"))
    }

    fn io_failed(error: &Error) -> bool {
        matches!(error, Error::Transport(TransportError::Failed { why }) if why.contains("zmq poll failed"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_io_thread_is_reported_and_refuses_tcp_from_then_on() {
        let server = Node::spawn(Config::named("server")).unwrap();
        let endpoint = server.bind("tcp://127.0.0.1:*").await.unwrap();
        let client = Node::spawn(Config::named("client")).unwrap();
        let mut events = client.events().await.unwrap();
        client.connect(&endpoint).await.unwrap();
        peer_event(&mut events, &endpoint, PeerState::Alive).await;

        client.fail_io_thread().await.unwrap();
        let reason = peer_event(&mut events, &endpoint, PeerState::Dead).await;
        assert_eq!(reason, "the tcp/ipc transport stopped");
        let status = client.status().await.unwrap();
        let why = status.transport_failure.clone().expect("status tells");
        assert!(why.contains("zmq poll failed"), "{why}");
        assert!(status.detail().ends_with(" transport_failed=1"));

        let bind = client.bind("tcp://127.0.0.1:*").await.unwrap_err();
        assert!(io_failed(&bind), "{bind}");
        let connect = client.connect(&endpoint).await.unwrap_err();
        assert!(io_failed(&connect), "{connect}");
        assert_eq!(
            client.status().await.unwrap().remotes,
            1,
            "a refused CONNECT adds no remote"
        );
        // inproc does not depend on the I/O thread.
        client.bind("inproc://after-the-io-thread").await.unwrap();

        client.shutdown().await.unwrap();
        server.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_whose_io_thread_dies_loses_its_tcp_clients() {
        let server = Node::spawn(Config::named("server")).unwrap();
        let mut events = server.events().await.unwrap();
        let endpoint = server.bind("tcp://127.0.0.1:*").await.unwrap();
        let client = Node::spawn(Config::named("client")).unwrap();
        client.connect(&endpoint).await.unwrap();
        assert!(client.wait_synced(Duration::from_secs(10)).await.unwrap());
        let name = crate::engine::node_name(client.status().await.unwrap().node_id);

        server.fail_io_thread().await.unwrap();
        let reason = peer_event(&mut events, &name, PeerState::Dead).await;
        assert_eq!(reason, "connection closed");
        assert_eq!(server.status().await.unwrap().sessions, 0);

        client.shutdown().await.unwrap();
        server.shutdown().await.unwrap();
    }

    /// Every node is one task; its future's size is most of an idle node's memory.
    #[test]
    fn an_idle_node_task_stays_small() {
        let (_commands, receiver) = tokio::sync::mpsc::channel(1);
        let task = super::Actor::new(super::Config::default(), receiver).run();
        let size = std::mem::size_of_val(&task);
        // 1,736 bytes when written; 7,312 before `run` and `serve` stopped being `async fn`s
        // (each held the actor again) and commands were boxed.
        assert!(size < 2500, "the actor's task is {size} bytes");
    }
}
