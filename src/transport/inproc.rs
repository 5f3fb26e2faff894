//! `inproc://`: this project's own in-process transport. Nodes in one process find each other
//! through a process-wide registry of bound names; bind and connect may come in either order (a
//! connect to an unbound name waits for it). Each node has one unbounded inbox; what is queued
//! on every link is counted in bytes, and a peer that lets more than the budget's `peer_bytes`
//! pile up is treated as not reading, so memory stays bounded without ever blocking a sender
//! (two nodes blocked sending to each other would deadlock). Clients are known by connection
//! numbers, unique in the process; the facade maps them to the engine's ids.
//!
//! For simulations, a shared [`Faults`] plan can lose, duplicate and delay frames, cut links
//! and partition nodes; each node is known to it by its label (its configured name).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

use super::faults::Fate;
#[cfg(feature = "sim")]
pub use super::faults::FaultStats;
pub use super::faults::Faults;
use super::{Error, FrameError, RemoteKey, Report};

/// A node's inbox, as other nodes hold it.
type Inbox = mpsc::UnboundedSender<Event>;

/// Bytes in flight on one connection, each way; both ends hold it.
#[derive(Debug, Default)]
struct Link {
    to_server: AtomicUsize,
    to_client: AtomicUsize,
}

/// The server's end of a connection: how to reach the client.
#[derive(Debug)]
struct ClientPeer {
    inbox: Inbox,
    /// The client node's label, for the fault plan.
    label: Arc<str>,
    remote: RemoteKey,
    dial: u64,
    link: Arc<Link>,
    /// Frames held back by the fault plan, in order.
    line: Option<DelayLine>,
}

/// The client's end of a connection: how to reach the server.
#[derive(Debug)]
struct ServerPeer {
    inbox: Inbox,
    /// The server node's label, for the fault plan.
    label: Arc<str>,
    client: u64,
    link: Arc<Link>,
    /// Frames held back by the fault plan, in order.
    line: Option<DelayLine>,
}

/// A task that hands frames to one peer after their delay, in the order they were sent.
#[derive(Debug)]
struct DelayLine(mpsc::UnboundedSender<(tokio::time::Instant, Event)>);

impl DelayLine {
    fn start(inbox: Inbox) -> Self {
        let (line, mut held) = mpsc::unbounded_channel::<(tokio::time::Instant, Event)>();
        tokio::spawn(async move {
            while let Some((due, event)) = held.recv().await {
                tokio::time::sleep_until(due).await;
                if inbox.send(event).is_err() {
                    break;
                }
            }
        });
        Self(line)
    }

    fn send(&self, delay: Duration, event: Event) {
        let _ = self.0.send((tokio::time::Instant::now() + delay, event));
    }
}

/// Hands a frame to a peer through the fault plan, if there is one. `false` when the peer's
/// inbox is gone.
fn send_frame(
    faults: Option<(&Faults, &str)>,
    peer: (&Inbox, &str),
    line: &mut Option<DelayLine>,
    queued: &AtomicUsize,
    len: usize,
    event: impl Fn() -> Kind,
) -> bool {
    let (inbox, to) = peer;
    let (copies, delay) = match faults.map(|(plan, from)| plan.judge(from, to)) {
        None => (1, Duration::ZERO),
        Some(Fate::Lost) => return !inbox.is_closed(),
        Some(Fate::Delivered { copies, delay }) => (copies, delay),
    };
    for _ in 0..copies {
        queued.fetch_add(len, Ordering::Relaxed);
        if delay.is_zero() && line.is_none() {
            if inbox.send(Event(event())).is_err() {
                return false;
            }
        } else {
            // Once a link has a delay line, everything goes through it, so order holds.
            let line = line.get_or_insert_with(|| DelayLine::start(inbox.clone()));
            line.send(delay, Event(event()));
        }
    }
    true
}

/// What nodes put in each other's inboxes.
#[derive(Debug)]
pub(crate) struct Event(Kind);

#[derive(Debug)]
enum Kind {
    Accepted {
        client: u64,
        peer: ClientPeer,
    },
    FromClient {
        client: u64,
        frame: Bytes,
    },
    ClientGone {
        client: u64,
    },
    Connected {
        remote: RemoteKey,
        dial: u64,
        server: ServerPeer,
    },
    FromServer {
        remote: RemoteKey,
        dial: u64,
        frame: Bytes,
    },
    Disconnected {
        remote: RemoteKey,
        dial: u64,
    },
    /// To ourselves: a redial after a disconnect found the server back at once.
    Reconnected {
        remote: RemoteKey,
    },
}

struct Waiter {
    inbox: Inbox,
    label: Arc<str>,
    remote: RemoteKey,
    dial: u64,
}

/// A bound name: where its node's inbox is, and what the node is called.
struct Listener {
    inbox: Inbox,
    label: Arc<str>,
}

#[derive(Default)]
struct Registry {
    listeners: HashMap<String, Listener>,
    waiters: HashMap<String, Vec<Waiter>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);
/// Connection numbers and dial tokens are process-wide so they never collide between nodes.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, Registry> {
    // The registry holds no invariant a panic elsewhere could break halfway.
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// One outbound connection's state.
#[derive(Debug)]
struct Dial {
    name: String,
    dial: u64,
    server: Option<ServerPeer>,
}

/// A node's in-process transport.
#[derive(Debug)]
pub(crate) struct Inproc {
    inbox: Inbox,
    /// This node's name in the fault plan.
    label: Arc<str>,
    faults: Option<Faults>,
    receiver: mpsc::UnboundedReceiver<Event>,
    bound: Vec<String>,
    clients: HashMap<u64, ClientPeer>,
    remotes: HashMap<RemoteKey, Dial>,
    /// Frames longer than this are refused.
    max_message_bytes: usize,
    /// Bytes in flight toward one peer past which it counts as not reading (the budget's
    /// `peer_bytes`).
    peer_bytes: usize,
}

/// How a send went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Queued for the peer.
    Queued,
    /// The peer is not connected; nothing was sent.
    NotConnected,
    /// The peer let too much pile up; nothing was sent and the connection should be dropped.
    Overflow,
}

impl Inproc {
    /// A transport with no bindings and no connections, called `label` in the fault plan.
    pub(crate) fn new(
        max_message_bytes: usize,
        peer_bytes: usize,
        label: &str,
        faults: Option<Faults>,
    ) -> Self {
        let (inbox, receiver) = mpsc::unbounded_channel();
        Self {
            inbox,
            label: Arc::from(label),
            faults,
            receiver,
            bound: Vec::new(),
            clients: HashMap::new(),
            remotes: HashMap::new(),
            max_message_bytes,
            peer_bytes,
        }
    }

    /// Binds `inproc://name`; clients already waiting for it connect now.
    pub(crate) fn bind(&mut self, name: &str) -> Result<(), Error> {
        let mut registry = registry();
        if registry
            .listeners
            .get(name)
            .is_some_and(|listener| !listener.inbox.is_closed())
        {
            return Err(Error::Bind {
                endpoint: format!("inproc://{name}"),
                why: "address in use".into(),
            });
        }
        let listener = Listener {
            inbox: self.inbox.clone(),
            label: Arc::clone(&self.label),
        };
        registry.listeners.insert(name.to_owned(), listener);
        for waiter in registry.waiters.remove(name).unwrap_or_default() {
            let client = next_id();
            let link = Arc::new(Link::default());
            let server = ServerPeer {
                inbox: self.inbox.clone(),
                label: Arc::clone(&self.label),
                client,
                link: Arc::clone(&link),
                line: None,
            };
            let connected = Kind::Connected {
                remote: waiter.remote,
                dial: waiter.dial,
                server,
            };
            if waiter.inbox.send(Event(connected)).is_ok() {
                let peer = ClientPeer {
                    inbox: waiter.inbox,
                    label: waiter.label,
                    remote: waiter.remote,
                    dial: waiter.dial,
                    link,
                    line: None,
                };
                self.clients.insert(client, peer);
            }
        }
        self.bound.push(name.to_owned());
        Ok(())
    }

    /// Dials `inproc://name` for `remote`. Returns whether it connected at once; otherwise it
    /// connects when the name is bound and [`Report::RemoteConnected`] follows.
    pub(crate) fn connect(&mut self, remote: RemoteKey, name: &str) -> bool {
        let mut dial = Dial {
            name: name.to_owned(),
            dial: next_id(),
            server: None,
        };
        let connected = self.dial(remote, &mut dial);
        self.remotes.insert(remote, dial);
        connected
    }

    /// Drops a remote's connection and dials again. Returns whether it connected at once.
    pub(crate) fn redial(&mut self, remote: RemoteKey) -> bool {
        let Some(mut dial) = self.remotes.remove(&remote) else {
            return false;
        };
        if let Some(server) = dial.server.take() {
            let _ = server.inbox.send(Event(Kind::ClientGone {
                client: server.client,
            }));
        }
        dial.dial = next_id();
        let connected = self.dial(remote, &mut dial);
        self.remotes.insert(remote, dial);
        connected
    }

    /// Drops a remote for good: its server hears the client go, after the frames already sent
    /// (but for those still on a fault plan's delay line, which are lost), a dial still waiting
    /// for the name is withdrawn, and what still comes for the remote is ignored.
    pub(crate) fn close(&mut self, remote: RemoteKey) {
        let Some(dial) = self.remotes.remove(&remote) else {
            return;
        };
        if let Some(server) = dial.server {
            let _ = server.inbox.send(Event(Kind::ClientGone {
                client: server.client,
            }));
            return;
        }
        let mut registry = registry();
        if let Some(waiters) = registry.waiters.get_mut(&dial.name) {
            waiters.retain(|w| w.dial != dial.dial);
            if waiters.is_empty() {
                registry.waiters.remove(&dial.name);
            }
        }
    }

    fn dial(&self, remote: RemoteKey, dial: &mut Dial) -> bool {
        let mut registry = registry();
        let listener = registry
            .listeners
            .get(&dial.name)
            .filter(|listener| !listener.inbox.is_closed());
        if let Some(listener) = listener {
            let client = next_id();
            let link = Arc::new(Link::default());
            let peer = ClientPeer {
                inbox: self.inbox.clone(),
                label: Arc::clone(&self.label),
                remote,
                dial: dial.dial,
                link: Arc::clone(&link),
                line: None,
            };
            if listener
                .inbox
                .send(Event(Kind::Accepted { client, peer }))
                .is_ok()
            {
                dial.server = Some(ServerPeer {
                    inbox: listener.inbox.clone(),
                    label: Arc::clone(&listener.label),
                    client,
                    link,
                    line: None,
                });
                return true;
            }
        }
        let waiters = registry.waiters.entry(dial.name.clone()).or_default();
        waiters.retain(|w| !w.inbox.is_closed());
        waiters.push(Waiter {
            inbox: self.inbox.clone(),
            label: Arc::clone(&self.label),
            remote,
            dial: dial.dial,
        });
        false
    }

    /// Bytes sent to a client and not yet taken from its inbox; `None` if it is not ours.
    pub(crate) fn backlog_to_client(&self, client: u64) -> Option<usize> {
        let peer = self.clients.get(&client)?;
        Some(peer.link.to_client.load(Ordering::Relaxed))
    }

    /// Bytes sent through a remote and not yet taken by its server; `None` if not connected.
    pub(crate) fn backlog_to_server(&self, remote: RemoteKey) -> Option<usize> {
        let server = self.remotes.get(&remote)?.server.as_ref()?;
        Some(server.link.to_server.load(Ordering::Relaxed))
    }

    /// What a peer may let pile up before it counts as not reading.
    pub(crate) fn peer_bytes(&self) -> usize {
        self.peer_bytes
    }

    /// Sends a frame to a client of one of our bindings.
    pub(crate) fn send_to_client(&mut self, client: u64, frame: Bytes) -> Sent {
        let Some(peer) = self.clients.get_mut(&client) else {
            return Sent::NotConnected;
        };
        if peer.link.to_client.load(Ordering::Relaxed) > self.peer_bytes {
            return Sent::Overflow;
        }
        let (remote, dial) = (peer.remote, peer.dial);
        let sent = send_frame(
            self.faults.as_ref().map(|f| (f, &*self.label)),
            (&peer.inbox, &peer.label),
            &mut peer.line,
            &peer.link.to_client,
            frame.len(),
            || Kind::FromServer {
                remote,
                dial,
                frame: frame.clone(),
            },
        );
        if !sent {
            self.clients.remove(&client);
            return Sent::NotConnected;
        }
        Sent::Queued
    }

    /// Sends a frame through one of our remotes.
    pub(crate) fn send_to_server(&mut self, remote: RemoteKey, frame: Bytes) -> Sent {
        let Some(server) = self
            .remotes
            .get_mut(&remote)
            .and_then(|d| d.server.as_mut())
        else {
            return Sent::NotConnected;
        };
        if server.link.to_server.load(Ordering::Relaxed) > self.peer_bytes {
            return Sent::Overflow;
        }
        let client = server.client;
        let sent = send_frame(
            self.faults.as_ref().map(|f| (f, &*self.label)),
            (&server.inbox, &server.label),
            &mut server.line,
            &server.link.to_server,
            frame.len(),
            || Kind::FromClient {
                client,
                frame: frame.clone(),
            },
        );
        if !sent {
            return Sent::NotConnected;
        }
        Sent::Queued
    }

    /// Remotes whose server is there and reachable through the fault plan. An in-process
    /// server that goes away says so, so silence from one of these is a backlog, not a loss.
    pub(crate) fn reachable_remotes(&self) -> impl Iterator<Item = RemoteKey> + '_ {
        self.remotes
            .iter()
            .filter(|(_, dial)| {
                dial.server
                    .as_ref()
                    .is_some_and(|s| !s.inbox.is_closed() && self.can_reach(&s.label))
            })
            .map(|(remote, _)| *remote)
    }

    /// Clients that are there and reachable through the fault plan (see
    /// [`Inproc::reachable_remotes`]).
    pub(crate) fn reachable_clients(&self) -> impl Iterator<Item = u64> + '_ {
        self.clients
            .iter()
            .filter(|(_, peer)| !peer.inbox.is_closed() && self.can_reach(&peer.label))
            .map(|(client, _)| *client)
    }

    fn can_reach(&self, peer: &str) -> bool {
        self.faults
            .as_ref()
            .is_none_or(|plan| plan.reachable(&self.label, peer))
    }

    /// Waits for the next event from another node.
    pub(crate) async fn recv(&mut self) -> Event {
        // We hold a sender ourselves, so the channel never closes.
        match self.receiver.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    /// Events other nodes have put in our inbox that we have not taken yet.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.receiver.len()
    }

    /// The next event if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Event> {
        self.receiver.try_recv().ok()
    }

    /// Books an event and says what it means for the node, if anything.
    pub(crate) fn handle(&mut self, Event(kind): Event) -> Option<Report<u64>> {
        match kind {
            Kind::Accepted { client, peer } => {
                self.clients.insert(client, peer);
                None
            }
            Kind::FromClient { client, frame } => {
                let peer = self.clients.get(&client)?;
                peer.link
                    .to_server
                    .fetch_sub(frame.len(), Ordering::Relaxed);
                Some(Report::ClientFrame {
                    client,
                    frame: self.check(frame),
                })
            }
            Kind::ClientGone { client } => {
                self.clients.remove(&client)?;
                Some(Report::ClientGone(client))
            }
            Kind::Connected {
                remote,
                dial,
                server,
            } => match self.remotes.get_mut(&remote) {
                Some(current) if current.dial == dial && current.server.is_none() => {
                    current.server = Some(server);
                    Some(Report::RemoteConnected(remote))
                }
                _ => {
                    // A dial we gave up on: close the connection it made.
                    let _ = server.inbox.send(Event(Kind::ClientGone {
                        client: server.client,
                    }));
                    None
                }
            },
            Kind::FromServer {
                remote,
                dial,
                frame,
            } => {
                let current = self.remotes.get(&remote).filter(|d| d.dial == dial)?;
                if let Some(server) = &current.server {
                    server
                        .link
                        .to_client
                        .fetch_sub(frame.len(), Ordering::Relaxed);
                }
                Some(Report::RemoteFrame {
                    remote,
                    frame: self.check(frame),
                })
            }
            Kind::Disconnected { remote, dial } => {
                let current = self.remotes.get(&remote).filter(|d| d.dial == dial)?;
                debug!(name = %current.name, "inproc server went away; waiting for it to return");
                if self.redial(remote) {
                    // It is back already: the engine sees a disconnect and a connect.
                    let _ = self.inbox.send(Event(Kind::Reconnected { remote }));
                }
                Some(Report::RemoteDisconnected(remote))
            }
            Kind::Reconnected { remote } => self
                .remotes
                .contains_key(&remote)
                .then_some(Report::RemoteConnected(remote)),
        }
    }

    fn check(&self, frame: Bytes) -> Result<Bytes, FrameError> {
        let max = self.max_message_bytes;
        if frame.len() > max {
            return Err(FrameError::TooLarge {
                len: frame.len(),
                max,
            });
        }
        Ok(frame)
    }
}

impl Drop for Inproc {
    /// Unbinds our names and tells every peer the connection is gone, as a closing socket would.
    fn drop(&mut self) {
        let mut registry = registry();
        for name in &self.bound {
            if registry
                .listeners
                .get(name)
                .is_some_and(|listener| listener.inbox.same_channel(&self.inbox))
            {
                registry.listeners.remove(name);
            }
        }
        for dial in self.remotes.values() {
            if let Some(waiters) = registry.waiters.get_mut(&dial.name) {
                waiters.retain(|w| !w.inbox.same_channel(&self.inbox));
                if waiters.is_empty() {
                    registry.waiters.remove(&dial.name);
                }
            }
        }
        drop(registry);
        for peer in self.clients.values() {
            let gone = Kind::Disconnected {
                remote: peer.remote,
                dial: peer.dial,
            };
            let _ = peer.inbox.send(Event(gone));
        }
        for server in self.remotes.values().filter_map(|d| d.server.as_ref()) {
            let _ = server.inbox.send(Event(Kind::ClientGone {
                client: server.client,
            }));
        }
    }
}
