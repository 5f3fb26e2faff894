//! [`Transports`]: both transports behind one interface, owned by the actor. It knows which
//! transport carries each remote and client, turns what each reports into [`Incoming`] in the
//! engine's names, and decides in one place what happens to a peer that is not reading.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use tracing::{debug, warn};

use super::curve::{CurveClient, CurveServer, NO_CURVE, curve_available};
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
    /// A remote's connection attempt failed, and why; the transport keeps retrying, except
    /// when libzmq would not dial a remote [`Transports::open`]ed at all (the cause says "not
    /// retried"): nothing more comes for that remote, which is left for the node to close.
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

impl Incoming {
    /// The remote this is about, if it is about one.
    fn remote(&self) -> Option<RemoteId> {
        match self {
            Incoming::Overflow(Peer::Remote(remote))
            | Incoming::Drained(Peer::Remote(remote))
            | Incoming::RemoteConnected(remote)
            | Incoming::RemoteUnreachable(remote, _)
            | Incoming::RemoteDisconnected(remote)
            | Incoming::RemoteFrame { remote, .. } => Some(*remote),
            Incoming::ClientFrame { .. }
            | Incoming::ClientGone(_)
            | Incoming::Overflow(Peer::Client(_))
            | Incoming::Drained(Peer::Client(_))
            | Incoming::Stopped(_) => None,
        }
    }
}

/// Which transport carries a remote, and which of its connections is current.
#[derive(Debug)]
struct Route {
    zmq: bool,
    /// Bumped at each redial, so a report about a replaced connection is recognised.
    dial: u64,
    endpoint: String,
}

impl Route {
    /// A first dial of `endpoint`.
    fn new(endpoint: &Endpoint) -> Self {
        Route {
            zmq: !endpoint.is_inproc(),
            dial: 0,
            endpoint: endpoint.to_string(),
        }
    }
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
        let route = Route::new(endpoint);
        match endpoint {
            Endpoint::Inproc(name) => {
                self.open_inproc(remote, route, name);
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

    /// Dials `inproc://name` for `remote`; a connection made at once is ready.
    fn open_inproc(&mut self, remote: RemoteId, route: Route, name: &str) {
        self.remotes.insert(remote, route);
        if self.inproc.connect(RemoteKey(remote.0), name) {
            self.ready.push_back(Incoming::RemoteConnected(remote));
        }
    }

    /// [`Transports::connect`] without waiting for the I/O thread: over inproc the same, over
    /// tcp/ipc the dial is handed to the thread and a failure there (libzmq will not dial the
    /// address) comes as [`Incoming::RemoteUnreachable`]. What is known here is returned: the
    /// I/O thread is dead, CURVE is not available, or `remote` is open already (ids are not
    /// reused; [`Transports::close`] it first).
    pub fn open(
        &mut self,
        remote: RemoteId,
        endpoint: &Endpoint,
        curve: Option<CurveClient>,
    ) -> Result<(), Error> {
        let refused = |why: String| Error::Connect {
            endpoint: endpoint.to_string(),
            why,
        };
        if self.remotes.contains_key(&remote) {
            return Err(refused(format!("remote {} is open already", remote.0)));
        }
        self.check(endpoint)?;
        let key = RemoteKey(remote.0);
        let route = Route::new(endpoint);
        match endpoint {
            Endpoint::Inproc(name) => self.open_inproc(remote, route, name),
            Endpoint::Zmq(spelled) => {
                if curve.is_some() && !curve_available() {
                    return Err(refused(NO_CURVE.to_owned()));
                }
                self.zmq()?.io.open(key, spelled, curve)?;
                self.remotes.insert(remote, route);
            }
        }
        Ok(())
    }

    /// Drops a remote for good; nothing more is reported for it, even what the transports had
    /// already said, and what is sent to it is dropped. Over inproc the server hears the client
    /// go after what was already sent. Over tcp/ipc, what waits in the I/O thread's queue gets
    /// one last offer to libzmq, and what libzmq holds gets a short linger (100 ms) to reach the
    /// server (a goodbye sent just before the close has a chance); the rest is dropped. Closing
    /// an unknown remote does nothing.
    pub fn close(&mut self, remote: RemoteId) {
        let Some(route) = self.remotes.remove(&remote) else {
            return;
        };
        let key = RemoteKey(remote.0);
        if route.zmq {
            if let Some(zmq) = self.live_zmq() {
                // A thread that just died says so through its reports.
                let _ = zmq.io.close(key);
            }
        } else {
            self.inproc.close(key);
        }
        self.ready
            .retain(|incoming| incoming.remote() != Some(remote));
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

    /// What reads the same from either transport. Reports about a remote closed since are
    /// dropped.
    fn on_either<C>(&mut self, report: Report<C>) -> Option<Incoming> {
        let remote = |key: RemoteKey| RemoteId(key.0);
        let incoming = match report {
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
        };
        match incoming.remote() {
            Some(remote) if !self.remotes.contains_key(&remote) => None,
            _ => Some(incoming),
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use std::time::Duration;

    use super::super::zmq::ADDRESS_REFUSED;
    use super::*;

    /// The ceiling of every wait for something that should happen; a working transport never
    /// comes near it.
    const WAIT: Duration = Duration::from_secs(30);
    /// How long one look for a server's report lasts before it sends again.
    const LOOK: Duration = Duration::from_millis(20);

    fn transports(name: &str) -> Transports {
        let limits = Limits {
            max_message_bytes: 64 * 1024,
            handshake_timeout_ms: 5000,
            socket_hwm: 1000,
        };
        Transports::new(limits, Budget::new(1 << 20, 8 << 20), name, None, 1024)
    }

    fn endpoint(spelled: &str) -> Endpoint {
        Endpoint::parse(spelled).unwrap()
    }

    /// Takes what `transports` says until `want` picks something out, keeping all it saw in
    /// `seen`; fails after [`WAIT`].
    async fn wait_for<T>(
        transports: &mut Transports,
        seen: &mut Vec<Incoming>,
        mut want: impl FnMut(&Incoming) -> Option<T>,
    ) -> T {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let incoming = transports.recv().await;
                let found = want(&incoming);
                seen.push(incoming);
                if let Some(found) = found {
                    return found;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("nothing wanted within {WAIT:?}; saw {seen:?}"))
    }

    /// What the transports have said that `transports` has not taken yet.
    fn waiting(transports: &Transports) -> usize {
        let zmq = transports.zmq.as_ref().map_or(0, |zmq| zmq.io.waiting());
        transports.inproc.waiting() + zmq
    }

    /// What in `seen` is about `remote`.
    fn about(seen: &[Incoming], remote: RemoteId) -> Vec<&Incoming> {
        seen.iter()
            .filter(|incoming| incoming.remote() == Some(remote))
            .collect()
    }

    /// Waits for `remote` to be reported unreachable; why.
    async fn unreachable(
        transports: &mut Transports,
        seen: &mut Vec<Incoming>,
        remote: RemoteId,
    ) -> &'static str {
        wait_for(transports, seen, |incoming| match incoming {
            Incoming::RemoteUnreachable(r, why) if *r == remote => Some(*why),
            _ => None,
        })
        .await
    }

    /// Opens `remote` on `client` to `server`, waits for it to connect, and sends a frame each
    /// way; the server's id for the client.
    async fn round_trip(
        client: &mut Transports,
        server: &mut Transports,
        remote: RemoteId,
        at: &Endpoint,
        seen: &mut Vec<Incoming>,
    ) -> ClientId {
        client.open(remote, at, None).unwrap();
        wait_for(client, seen, |incoming| {
            matches!(incoming, Incoming::RemoteConnected(r) if *r == remote).then_some(())
        })
        .await;
        client.send(&Peer::Remote(remote), Bytes::from_static(b"ping"));
        let id = wait_for(server, &mut Vec::new(), |incoming| match incoming {
            Incoming::ClientFrame { client, frame } if frame.as_deref() == Ok(b"ping") => {
                Some(client.clone())
            }
            _ => None,
        })
        .await;
        server.send(&Peer::Client(id.clone()), Bytes::from_static(b"pong"));
        wait_for(client, seen, |incoming| match incoming {
            Incoming::RemoteFrame { remote: r, frame }
                if *r == remote && frame.as_deref() == Ok(b"pong") =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
        id
    }

    /// Opens a remote to `at`, trades a frame, closes it: the server sees the client go and
    /// nothing more about the remote reaches the client, even what the server sent it after.
    async fn closed_remote_goes_quiet(at: &str) {
        let mut server = transports("server");
        let at = endpoint(&server.bind(&endpoint(at), None).await.unwrap());
        let mut client = transports("client");
        let mut seen = Vec::new();
        let first = RemoteId(1);
        let id = round_trip(&mut client, &mut server, first, &at, &mut seen).await;

        // Left unread on the client's side when it closes: the facade drops them.
        for _ in 0..3 {
            server.send(&Peer::Client(id.clone()), Bytes::from_static(b"late"));
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while waiting(&client) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "late frames not in");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let closed_at = seen.len();
        client.close(first);
        client.send(&Peer::Remote(first), Bytes::from_static(b"after"));
        assert!(client.ready().is_none(), "a send after close is dropped");
        client.close(first);

        // libzmq says nothing when a client leaves: a server learns it when a send finds the
        // client gone. Over inproc it hears at once.
        let deadline = tokio::time::Instant::now() + WAIT;
        'gone: loop {
            assert!(tokio::time::Instant::now() < deadline, "client not gone");
            server.send(&Peer::Client(id.clone()), Bytes::from_static(b"late"));
            while let Ok(incoming) = tokio::time::timeout(LOOK, server.recv()).await {
                match incoming {
                    Incoming::ClientGone(gone) if gone == id => break 'gone,
                    Incoming::ClientFrame { frame, .. } => {
                        assert_ne!(frame.as_deref(), Ok(&b"after"[..]), "sent after close");
                    }
                    _ => {}
                }
            }
        }
        for _ in 0..3 {
            server.send(&Peer::Client(id.clone()), Bytes::from_static(b"later"));
        }

        // Whatever the client could still hear about the first remote comes before what it
        // hears through a second one opened now.
        let second = RemoteId(2);
        round_trip(&mut client, &mut server, second, &at, &mut seen).await;
        let late = about(&seen[closed_at..], first);
        assert!(late.is_empty(), "after close: {late:?}");
        client.shutdown().await;
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_inproc_remote_goes_quiet() {
        closed_remote_goes_quiet("inproc://facade-close").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_tcp_remote_goes_quiet() {
        closed_remote_goes_quiet("tcp://127.0.0.1:0").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_ipc_remote_goes_quiet() {
        let dir = tempfile::tempdir().unwrap();
        closed_remote_goes_quiet(&format!("ipc://{}/server", dir.path().display())).await;
    }

    /// A server that says its last words and stops: the client hears every one of them before
    /// it hears that the connection went (a node that acts on the disconnect, closing the
    /// remote, must not lose a goodbye still unread).
    async fn last_words_come_before_the_disconnect(at: &str) {
        const WORDS: usize = 900; // several read batches, fewer than the socket holds
        let mut server = transports("server");
        let at = endpoint(&server.bind(&endpoint(at), None).await.unwrap());
        let mut client = transports("client");
        let mut seen = Vec::new();
        let remote = RemoteId(1);
        let id = round_trip(&mut client, &mut server, remote, &at, &mut seen).await;
        for _ in 0..WORDS {
            server.send(&Peer::Client(id.clone()), Bytes::from_static(b"bye"));
        }
        server.shutdown().await;
        let heard = wait_for(&mut client, &mut Vec::new(), {
            let mut heard = 0;
            move |incoming| match incoming {
                Incoming::RemoteFrame { frame, .. } if frame.as_deref() == Ok(b"bye") => {
                    heard += 1;
                    None
                }
                Incoming::RemoteDisconnected(r) if *r == remote => Some(heard),
                _ => None,
            }
        })
        .await;
        let mut after = 0;
        while let Ok(incoming) =
            tokio::time::timeout(Duration::from_millis(500), client.recv()).await
        {
            if matches!(incoming, Incoming::RemoteFrame { .. }) {
                after += 1;
            }
        }
        assert_eq!(
            (heard, after),
            (WORDS, 0),
            "frames heard before the disconnect"
        );
        client.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn last_words_over_tcp_come_before_the_disconnect() {
        last_words_come_before_the_disconnect("tcp://127.0.0.1:0").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn last_words_over_ipc_come_before_the_disconnect() {
        let dir = tempfile::tempdir().unwrap();
        last_words_come_before_the_disconnect(&format!("ipc://{}/server", dir.path().display()))
            .await;
    }

    /// Nothing a transport said about a remote before it was closed reaches the node after.
    #[tokio::test]
    async fn reports_about_a_closed_remote_are_dropped() {
        let mut client = transports("client");
        let remote = RemoteId(7);
        client
            .open(remote, &endpoint("inproc://facade-never-bound"), None)
            .unwrap();
        client.close(remote);
        let key = RemoteKey(remote.0);
        let reports = [
            Report::RemoteConnected(key),
            Report::RemoteUnreachable(key, "test"),
            Report::RemoteDisconnected(key),
            Report::RemoteFrame {
                remote: key,
                frame: Ok(Bytes::from_static(b"late")),
            },
            Report::RemoteOverflow {
                remote: key,
                dial: 0,
            },
            Report::Drained(Target::Remote(key)),
        ];
        for report in reports {
            let shown = format!("{report:?}");
            assert!(client.on_zmq(report).is_none(), "{shown}");
        }
        assert!(client.ready().is_none());
        assert!(client.try_recv().is_none());
    }

    /// Whatever the facade had to say about a remote (a connection made on the spot) goes
    /// with it.
    #[tokio::test]
    async fn close_takes_back_what_was_ready() {
        let mut server = transports("server");
        let at = endpoint("inproc://facade-close-ready");
        server.bind(&at, None).await.unwrap();
        let mut client = transports("client");
        client.open(RemoteId(1), &at, None).unwrap();
        client.close(RemoteId(1));
        assert!(client.ready().is_none());
        assert!(client.try_recv().is_none());
    }

    #[tokio::test]
    async fn close_of_an_unknown_remote_does_nothing() {
        let mut client = transports("client");
        client.close(RemoteId(3));
        assert!(client.ready().is_none());
    }

    #[tokio::test]
    async fn an_open_remote_cannot_be_opened_again() {
        let mut client = transports("client");
        let at = endpoint("inproc://facade-open-twice");
        client.open(RemoteId(1), &at, None).unwrap();
        let error = client.open(RemoteId(1), &at, None).unwrap_err();
        assert!(error.to_string().contains("open already"), "{error}");
    }

    /// A dial libzmq refuses outright is reported, not silent; one it takes and then cannot
    /// complete is reported as it retries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_dial_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let too_long = format!("ipc://{}/{}", dir.path().display(), "x".repeat(200));
        let mut client = transports("client");
        let mut seen = Vec::new();
        // No port to connect to; a path longer than a Unix socket's.
        for (n, spelled) in ["tcp://127.0.0.1:*", &too_long].into_iter().enumerate() {
            let remote = RemoteId(n as u32);
            client.open(remote, &endpoint(spelled), None).unwrap();
            let why = unreachable(&mut client, &mut seen, remote).await;
            assert_eq!(why, ADDRESS_REFUSED, "{spelled}");
        }
        // Resolved only when dialling, so libzmq takes it and retries.
        let remote = RemoteId(9);
        client
            .open(remote, &endpoint("tcp://999.1.1.1:1"), None)
            .unwrap();
        let why = unreachable(&mut client, &mut seen, remote).await;
        assert!(why.contains("retrying"), "{why}");
        client.shutdown().await;
    }

    /// A remote closed while libzmq retries it is not retried, or heard of, again: another
    /// remote to the same dead address is retried several times meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remote_closed_while_retrying_goes_quiet() {
        // A port nothing listens on: bound, then let go.
        let mut probe = transports("probe");
        let dead = probe
            .bind(&endpoint("tcp://127.0.0.1:0"), None)
            .await
            .unwrap();
        probe.shutdown().await;
        let dead = endpoint(&dead);
        let mut client = transports("client");
        let mut seen = Vec::new();
        let (closed, other) = (RemoteId(1), RemoteId(2));
        client.open(closed, &dead, None).unwrap();
        unreachable(&mut client, &mut seen, closed).await;
        let closed_at = seen.len();
        client.close(closed);
        client.open(other, &dead, None).unwrap();
        for _ in 0..4 {
            unreachable(&mut client, &mut seen, other).await;
        }
        let late = about(&seen[closed_at..], closed);
        assert!(late.is_empty(), "after close: {late:?}");
        client.shutdown().await;
    }

    #[tokio::test]
    async fn open_fails_at_once_once_the_io_thread_is_dead() {
        let mut client = transports("client");
        client.fail_io_thread().unwrap();
        let mut seen = Vec::new();
        wait_for(&mut client, &mut seen, |incoming| {
            matches!(incoming, Incoming::Stopped(_)).then_some(())
        })
        .await;
        let error = client
            .open(RemoteId(1), &endpoint("tcp://127.0.0.1:1"), None)
            .unwrap_err();
        assert!(matches!(error, Error::Failed { .. }), "{error}");
    }
}
