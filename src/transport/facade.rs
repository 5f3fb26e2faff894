//! [`Transports`]: both transports behind one interface, owned by the actor. It knows which
//! transport carries each remote and client, turns what each reports into [`Incoming`] in the
//! engine's names, and decides in one place what happens to a peer that is not reading.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use tracing::{debug, warn};

use super::curve::{CurveClient, CurveServer};
use super::ids::{ClientIds, Conn};
use super::inproc::{self, Faults, Inproc};
use super::zmq::{Answer, ZmqIo};
use super::{Budget, Endpoint, Error, FrameError, Limits, RemoteKey, Report, Target};
use crate::engine::{ClientId, Peer, RemoteId};

/// Why a remote over tcp/ipc is unreachable once the I/O thread has died.
const IO_STOPPED: &str = "the tcp/ipc transport stopped";

/// What the transports tell the node, in the engine's names.
#[derive(Debug)]
pub enum Incoming {
    /// A frame from a client of our listener; `Err` says why it is not a single ZGP frame.
    ClientFrame {
        /// Who sent it.
        client: ClientId,
        /// The frame, or why there is no usable one.
        frame: Result<Bytes, FrameError>,
    },
    /// The client's connection is gone; its id will not come again.
    ClientGone(ClientId),
    /// The peer is not reading and what waited for it was dropped; a remote is being
    /// redialled.
    Overflow(Peer),
    /// A remote finished connecting (also after a reconnect).
    RemoteConnected(RemoteId),
    /// A remote's connection attempt failed, and why; the transport keeps retrying.
    RemoteUnreachable(RemoteId, &'static str),
    /// A remote lost its connection and is reconnecting.
    RemoteDisconnected(RemoteId),
    /// Everything sent to the peer before [`Transports::mark`] is in libzmq.
    Drained(Peer),
    /// A frame from the server at the other end of a remote.
    RemoteFrame {
        /// Which remote.
        remote: RemoteId,
        /// The frame, or why there is no usable one.
        frame: Result<Bytes, FrameError>,
    },
    /// The tcp/ipc I/O thread died, and why: every tcp/ipc peer is reported gone after this,
    /// and tcp/ipc binds and connects fail from now on.
    Stopped(String),
}

/// Which transport carries a remote, and which of its connections is current.
#[derive(Debug)]
struct Route {
    zmq: bool,
    /// Bumped at each redial, so a report about a replaced connection is recognised.
    dial: u64,
    endpoint: String,
}

/// The libzmq side, started the first time a tcp or ipc endpoint is used.
#[derive(Debug)]
struct Zmq {
    io: ZmqIo,
    /// Reports that came while a bind or connect waited on the thread.
    backlog: VecDeque<Report<Bytes>>,
}

impl Zmq {
    /// Waits for the I/O thread to answer while keeping what it reports meanwhile, so neither
    /// side ever waits on the other.
    async fn wait<T>(&mut self, answer: Answer<T>) -> Result<T, Error> {
        tokio::pin!(answer);
        loop {
            tokio::select! {
                result = &mut answer => return result.map_err(|_| Error::Stopped)?,
                report = self.io.recv() => {
                    let failed = match &report {
                        Report::Stopped(why) => Some(Error::Failed { why: why.clone() }),
                        _ => None,
                    };
                    self.backlog.push_back(report);
                    if let Some(failed) = failed {
                        // Its answer may never come.
                        return Err(failed);
                    }
                }
            }
        }
    }
}

/// Both transports, as the actor sees them.
#[derive(Debug)]
pub struct Transports {
    inproc: Inproc,
    zmq: Option<Box<Zmq>>,
    /// Why the I/O thread died, once it has.
    failed: Option<String>,
    /// Boxed: every idle node's task holds the facade (thousands in a simulation).
    clients: Box<ClientIds>,
    remotes: BTreeMap<RemoteId, Route>,
    /// What the facade has to say at once (a send's outcome, a connection made on the spot),
    /// ahead of anything the transports report.
    ready: VecDeque<Incoming>,
    limits: Limits,
    budget: Budget,
    /// The node's name, for the I/O thread's.
    name: String,
}

/// How a send went, as either transport tells it.
enum Sent {
    Queued,
    /// The peer's connection is gone.
    Gone,
    /// The peer let too much pile up.
    Overflow,
}

impl From<inproc::Sent> for Sent {
    fn from(sent: inproc::Sent) -> Self {
        match sent {
            inproc::Sent::Queued => Sent::Queued,
            inproc::Sent::NotConnected => Sent::Gone,
            inproc::Sent::Overflow => Sent::Overflow,
        }
    }
}

impl Transports {
    /// Transports with nothing bound or connected, for a node called `name` (its label in the
    /// fault plan too) that keeps at most `max_clients` tcp/ipc client ids it has not seen go.
    pub fn new(
        limits: Limits,
        budget: Budget,
        name: &str,
        faults: Option<Faults>,
        max_clients: usize,
    ) -> Self {
        Self {
            inproc: Inproc::new(limits.max_message_bytes, budget.peer_bytes, name, faults),
            zmq: None,
            failed: None,
            clients: Box::new(ClientIds::new(max_clients)),
            remotes: BTreeMap::new(),
            ready: VecDeque::new(),
            limits,
            budget,
            name: name.to_owned(),
        }
    }

    /// Binds a listener, as a CURVE server when `curve` says so (tcp/ipc only); the endpoint as
    /// bound (the real port for `*`).
    pub async fn bind(
        &mut self,
        endpoint: &Endpoint,
        curve: Option<CurveServer>,
    ) -> Result<String, Error> {
        match endpoint {
            Endpoint::Inproc(name) => self.inproc.bind(name).map(|()| endpoint.to_string()),
            Endpoint::Zmq(spelled) => {
                let zmq = self.zmq()?;
                let answer = zmq.io.bind(spelled, curve)?;
                zmq.wait(answer).await
            }
        }
    }

    /// Whether `endpoint` can be bound or connected at all: not over tcp/ipc once the I/O
    /// thread has died.
    pub fn check(&self, endpoint: &Endpoint) -> Result<(), Error> {
        match (endpoint, &self.failed) {
            (Endpoint::Zmq(_), Some(why)) => Err(Error::Failed { why: why.clone() }),
            _ => Ok(()),
        }
    }

    /// Dials `endpoint` for `remote` (as a CURVE client when `curve` says so); the transport
    /// redials it whenever the connection drops. A connection made at once is
    /// [`Transports::ready`].
    pub async fn connect(
        &mut self,
        remote: RemoteId,
        endpoint: &Endpoint,
        curve: Option<CurveClient>,
    ) -> Result<(), Error> {
        let key = RemoteKey(remote.0);
        let route = Route {
            zmq: !endpoint.is_inproc(),
            dial: 0,
            endpoint: endpoint.to_string(),
        };
        match endpoint {
            Endpoint::Inproc(name) => {
                self.remotes.insert(remote, route);
                if self.inproc.connect(key, name) {
                    self.ready.push_back(Incoming::RemoteConnected(remote));
                }
                Ok(())
            }
            Endpoint::Zmq(spelled) => {
                let zmq = self.zmq()?;
                let answer = zmq.io.connect(key, 0, spelled, curve)?;
                // Known before the answer: the thread reports on it from the start.
                self.remotes.insert(remote, route);
                let zmq = self.zmq()?;
                zmq.wait(answer).await
            }
        }
    }

    /// Drops a remote's connection and dials afresh (a connection the server has not seen).
    pub fn redial(&mut self, remote: RemoteId) {
        let Some(route) = self.remotes.get_mut(&remote) else {
            return;
        };
        route.dial += 1;
        let key = RemoteKey(remote.0);
        if !route.zmq {
            if self.inproc.redial(key) {
                self.ready.push_back(Incoming::RemoteConnected(remote));
            }
            return;
        }
        let dial = route.dial;
        if let Some(zmq) = self.live_zmq() {
            // A thread that just died says so through its reports.
            let _ = zmq.io.redial(key, dial);
        }
    }

    /// Sends a frame to a peer. When it cannot go (the peer is gone or not reading), the
    /// outcome is [`Transports::ready`].
    pub fn send(&mut self, peer: &Peer, frame: Bytes) {
        let sent = match peer {
            Peer::Client(client) => self.send_to_client(client, frame),
            Peer::Remote(remote) => self.send_to_remote(*remote, frame),
        };
        match sent {
            Sent::Queued => {}
            Sent::Gone => {
                if let Peer::Client(client) = peer {
                    self.clients.remove(client);
                    self.ready.push_back(Incoming::ClientGone(client.clone()));
                }
                // A remote not connected now is redialled by its transport, and resyncs.
            }
            Sent::Overflow => self.overflowed(peer.clone()),
        }
    }

    fn send_to_client(&mut self, client: &ClientId, frame: Bytes) -> Sent {
        let routing_id = match self.clients.conn(client) {
            None => return Sent::Gone,
            Some(Conn::Inproc(n)) => {
                let n = *n;
                return self.inproc.send_to_client(n, frame).into();
            }
            Some(Conn::Zmq(routing_id)) => routing_id.clone(),
        };
        let channel_bytes = self.budget.channel_bytes;
        let Some(zmq) = self.live_zmq() else {
            return Sent::Gone;
        };
        if zmq.io.in_channel().saturating_add(frame.len()) > channel_bytes {
            return Sent::Overflow;
        }
        match zmq.io.send_to_client(routing_id, frame) {
            Ok(()) => Sent::Queued,
            Err(_) => Sent::Gone,
        }
    }

    fn send_to_remote(&mut self, remote: RemoteId, frame: Bytes) -> Sent {
        let key = RemoteKey(remote.0);
        match self.remotes.get(&remote) {
            None => return Sent::Gone,
            Some(route) if !route.zmq => return self.inproc.send_to_server(key, frame).into(),
            Some(_) => {}
        }
        let channel_bytes = self.budget.channel_bytes;
        let Some(zmq) = self.live_zmq() else {
            return Sent::Gone;
        };
        if zmq.io.in_channel().saturating_add(frame.len()) > channel_bytes {
            return Sent::Overflow;
        }
        match zmq.io.send_to_server(key, frame) {
            Ok(()) => Sent::Queued,
            Err(_) => Sent::Gone,
        }
    }

    /// The one policy for a peer that is not reading, whichever transport found it: the node
    /// hears once, a client's session ends until it resyncs, and a remote is redialled (the
    /// new connection resyncs).
    fn overflowed(&mut self, peer: Peer) {
        if let Peer::Remote(remote) = &peer {
            let endpoint = self.remotes.get(remote).map(|r| r.endpoint.as_str());
            warn!(endpoint, "server is not reading; reconnecting");
        }
        let remote = match &peer {
            Peer::Remote(remote) => Some(*remote),
            Peer::Client(_) => None,
        };
        // Told before a redial that connects on the spot, so the engine sees them in order.
        self.ready.push_back(Incoming::Overflow(peer));
        if let Some(remote) = remote {
            self.redial(remote);
        }
    }

    /// Whether a resync to `peer` goes a slice at a time, each once the last is in libzmq
    /// ([`Transports::mark`]); inproc links count bytes and say when they are full instead.
    pub fn paced(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Client(client) => self.clients.is_zmq(client),
            Peer::Remote(remote) => self.remotes.get(remote).is_some_and(|r| r.zmq),
        }
    }

    /// For a peer that is not paced (in-process): how many bytes of resync may go to it now,
    /// so what waits on its link stays within a quarter of what it may let pile up; 0 when its
    /// link is that full already (the peer has not read the last slice yet). A whole resync at
    /// once would overflow any peer whose store is bigger than that budget, for ever.
    pub fn room(&mut self, peer: &Peer, slice: usize) -> usize {
        let backlog = match peer {
            Peer::Client(client) => match self.clients.conn(client) {
                Some(Conn::Inproc(n)) => self.inproc.backlog_to_client(*n),
                _ => None,
            },
            Peer::Remote(remote) => self.inproc.backlog_to_server(RemoteKey(remote.0)),
        };
        let quarter = self.inproc.peer_bytes() / 4;
        match backlog {
            Some(queued) if queued >= quarter => 0,
            Some(_) => slice.min(quarter).max(1),
            None => slice,
        }
    }

    /// Asks for [`Incoming::Drained`] once what was sent to a paced peer so far is in libzmq;
    /// whether it will come.
    pub fn mark(&mut self, peer: &Peer) -> bool {
        let target = match peer {
            Peer::Client(client) => match self.clients.conn(client) {
                Some(Conn::Zmq(routing_id)) => Target::Client(routing_id.clone()),
                _ => return false,
            },
            Peer::Remote(remote) if self.paced(peer) => Target::Remote(RemoteKey(remote.0)),
            Peer::Remote(_) => return false,
        };
        self.live_zmq()
            .is_some_and(|zmq| zmq.io.mark(target).is_ok())
    }

    /// What the facade had to say at once after a call (see [`Incoming`]), one at a time.
    pub fn ready(&mut self) -> Option<Incoming> {
        self.ready.pop_front()
    }

    /// The next thing either transport has to say. Cancel-safe.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            if let Some(incoming) = self.try_ready_or_backlog() {
                return incoming;
            }
            let live = self.failed.is_none();
            let zmq = self.zmq.as_deref_mut().filter(|_| live);
            tokio::select! {
                biased;
                event = self.inproc.recv() => {
                    if let Some(incoming) = self.on_inproc(event) {
                        return incoming;
                    }
                }
                report = next_report(zmq) => {
                    if let Some(incoming) = self.on_zmq(report) {
                        return incoming;
                    }
                }
            }
        }
    }

    /// The next thing either transport has to say, if anything is waiting.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        loop {
            if let Some(incoming) = self.try_ready_or_backlog() {
                return Some(incoming);
            }
            if let Some(event) = self.inproc.try_recv() {
                if let Some(incoming) = self.on_inproc(event) {
                    return Some(incoming);
                }
                continue;
            }
            let report = self.live_zmq()?.io.try_recv()?;
            if let Some(incoming) = self.on_zmq(report) {
                return Some(incoming);
            }
        }
    }

    fn try_ready_or_backlog(&mut self) -> Option<Incoming> {
        loop {
            if let Some(incoming) = self.ready.pop_front() {
                return Some(incoming);
            }
            let report = self.live_zmq()?.backlog.pop_front()?;
            if let Some(incoming) = self.on_zmq(report) {
                return Some(incoming);
            }
        }
    }

    fn on_inproc(&mut self, event: inproc::Event) -> Option<Incoming> {
        let report = self.inproc.handle(event)?;
        Some(match report {
            Report::ClientFrame { client, frame } => Incoming::ClientFrame {
                client: self.clients.heard_inproc(client),
                frame,
            },
            Report::ClientGone(client) => {
                let id = self.clients.inproc(client)?;
                Incoming::ClientGone(self.clients.remove(&id)?)
            }
            other => self.on_either(other)?,
        })
    }

    fn on_zmq(&mut self, report: Report<Bytes>) -> Option<Incoming> {
        Some(match report {
            Report::ClientFrame { client, frame } => {
                let mut forgotten = Vec::new();
                let id = self.clients.heard_zmq(client, &mut forgotten);
                if !forgotten.is_empty() {
                    debug!(
                        clients = forgotten.len(),
                        "too many tcp/ipc clients; forgetting the longest idle"
                    );
                    let gone = forgotten.into_iter().map(Incoming::ClientGone);
                    self.ready.extend(gone);
                }
                Incoming::ClientFrame { client: id, frame }
            }
            Report::ClientGone(client) => {
                let id = self.clients.zmq(&client)?;
                Incoming::ClientGone(self.clients.remove(&id)?)
            }
            Report::ClientOverflow(client) => {
                Incoming::Overflow(Peer::Client(self.clients.zmq(&client)?))
            }
            Report::Drained(Target::Client(client)) => {
                Incoming::Drained(Peer::Client(self.clients.zmq(&client)?))
            }
            Report::RemoteOverflow { remote, dial } => {
                let remote = RemoteId(remote.0);
                if self.remotes.get(&remote)?.dial != dial {
                    return None;
                }
                self.overflowed(Peer::Remote(remote));
                return self.ready.pop_front();
            }
            Report::Stopped(why) => return self.stopped(why),
            other => self.on_either(other)?,
        })
    }

    /// What reads the same from either transport.
    fn on_either<C>(&mut self, report: Report<C>) -> Option<Incoming> {
        let remote = |key: RemoteKey| RemoteId(key.0);
        Some(match report {
            Report::RemoteConnected(key) => Incoming::RemoteConnected(remote(key)),
            Report::RemoteUnreachable(key, why) => Incoming::RemoteUnreachable(remote(key), why),
            Report::RemoteDisconnected(key) => Incoming::RemoteDisconnected(remote(key)),
            Report::RemoteFrame { remote: key, frame } => Incoming::RemoteFrame {
                remote: remote(key),
                frame,
            },
            Report::Drained(Target::Remote(key)) => Incoming::Drained(Peer::Remote(remote(key))),
            // Clients are each transport's own business (see `on_inproc`, `on_zmq`).
            _ => return None,
        })
    }

    /// The I/O thread died: every tcp/ipc peer is gone with it, and the node hears so, remotes
    /// as unreachable for that reason, clients as gone.
    fn stopped(&mut self, why: String) -> Option<Incoming> {
        if self.failed.is_some() {
            return None;
        }
        self.failed = Some(why.clone());
        if let Some(zmq) = &mut self.zmq {
            zmq.backlog.clear();
        }
        for (remote, _) in self.remotes.iter().filter(|(_, r)| r.zmq) {
            self.ready
                .push_back(Incoming::RemoteUnreachable(*remote, IO_STOPPED));
            self.ready.push_back(Incoming::RemoteDisconnected(*remote));
        }
        let gone = self.clients.remove_all_zmq().into_iter();
        self.ready.extend(gone.map(Incoming::ClientGone));
        Some(Incoming::Stopped(why))
    }

    /// Peers over inproc that are there (and reachable, under a fault plan): a peer that goes
    /// away says so, so their silence is a backlog, not a loss.
    pub fn reachable(&self) -> impl Iterator<Item = Peer> + '_ {
        let remotes = (self.inproc.reachable_remotes()).map(|key| Peer::Remote(RemoteId(key.0)));
        let clients = (self.inproc.reachable_clients())
            .filter_map(|client| self.clients.inproc(client))
            .map(Peer::Client);
        remotes.chain(clients)
    }

    /// CURVE clients refused by the allow list so far.
    pub fn curve_refused(&self) -> u64 {
        self.zmq.as_ref().map_or(0, |zmq| zmq.io.curve_refused())
    }

    /// Failed handshakes on our tcp/ipc listeners so far.
    pub fn handshakes_failed(&self) -> u64 {
        self.zmq
            .as_ref()
            .map_or(0, |zmq| zmq.io.handshakes_failed())
    }

    /// Why the tcp/ipc transport died, if it has.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Makes the I/O thread die as if `zmq_poll` had failed, starting it if need be.
    #[cfg(any(test, feature = "sim"))]
    pub fn fail_io_thread(&mut self) -> Result<(), Error> {
        self.zmq()?.io.fail()
    }

    /// Closes everything: inproc peers hear at once, and what is queued for tcp/ipc peers
    /// (goodbyes, withdrawals) gets a moment to leave before the I/O thread ends.
    pub async fn shutdown(self) {
        let Transports { inproc, zmq, .. } = self;
        // Dropping the inproc transport unbinds our names and tells our peers.
        drop(inproc);
        if let Some(thread) = zmq.and_then(|zmq| zmq.io.shutdown()) {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// The I/O thread, started the first time a tcp or ipc endpoint is used.
    fn zmq(&mut self) -> Result<&mut Zmq, Error> {
        if let Some(why) = &self.failed {
            return Err(Error::Failed { why: why.clone() });
        }
        if self.zmq.is_none() {
            let io = ZmqIo::start(self.limits.clone(), self.budget, &self.name)?;
            self.zmq = Some(Box::new(Zmq {
                io,
                backlog: VecDeque::new(),
            }));
        }
        self.zmq.as_deref_mut().ok_or(Error::Stopped)
    }

    /// The I/O thread, if it was started and has not died.
    fn live_zmq(&mut self) -> Option<&mut Zmq> {
        self.zmq.as_deref_mut().filter(|_| self.failed.is_none())
    }
}

/// The next report from the I/O thread; pends without one.
async fn next_report(zmq: Option<&mut Zmq>) -> Report<Bytes> {
    match zmq {
        Some(zmq) => zmq.io.recv().await,
        None => std::future::pending().await,
    }
}
