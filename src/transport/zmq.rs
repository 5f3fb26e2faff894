//! `tcp://` and `ipc://` over libzmq. libzmq's API blocks, so each node that uses these
//! transports gets one I/O thread that owns its sockets: a ROUTER for every bind and a DEALER
//! (with a monitor, to see each reconnect) per remote. The thread sleeps in `zmq::poll` and is
//! woken through a socketpair when the actor queues a command, so nothing busy-polls. Frames go
//! to the actor through a bounded channel; when the actor falls behind, the thread stops reading
//! and libzmq's receive high-water marks push back on the peers.
//!
//! The thread knows clients by their routing ids and remotes by the facade's keys; it decides
//! nothing about a peer that is not reading beyond dropping what waits for it and saying so
//! (the facade redials). It enforces the budget's `peer_bytes` and `node_bytes` on its queues.
//! If it dies (a failed `zmq_poll`), it says why before it goes.
//!
//! CURVE: a bind or connect may carry a [`CurveServer`] or [`CurveClient`], applied to that
//! listener or DEALER (libzmq copies a socket's options when it binds, so one ROUTER can hold
//! CURVE and plain listeners side by side). A CURVE listener with an allow list makes this thread
//! also serve ZAP on the node's own context. Plain sockets never get a CURVE option: a libzmq
//! built without CURVE refuses them all, and plain tcp/ipc must work there too.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::curve::{CurveClient, CurveKey, CurveServer, NO_CURVE, curve_available, zap_answer};
use super::{Budget, Error, FrameError, Limits, RemoteKey, Report, Target};
use crate::warnings::Warnings;

/// How long closing sockets may keep trying to send what is queued (goodbyes, withdrawals)
/// when a node stops; the I/O thread waits at most this long.
const LINGER_ON_STOP_MS: i32 = 500;
/// How often, while a node stops, frames waiting in our queues are offered to libzmq again.
const STOP_RETRY_MS: i64 = 2;
/// How long a closed remote's DEALER may keep trying to send what is already in libzmq (a
/// last goodbye). Sockets otherwise close with no linger; libzmq lingers in its own threads, so
/// this holds up nothing of ours.
const LINGER_ON_CLOSE_MS: i32 = 100;
/// Why a remote opened without waiting has no connection: libzmq would not dial the endpoint
/// at all, so nothing retries it.
pub(super) const ADDRESS_REFUSED: &str = "libzmq refused the address (not retried)";
/// As [`ADDRESS_REFUSED`], when libzmq had no socket to give (out of file descriptors?).
pub(super) const NO_SOCKET: &str = "libzmq could not make a socket (not retried)";
/// libzmq redials a lost server after 100 ms, doubling up to this: a dead server costs two
/// connection attempts a second, and a restarted one (`Restart=on-failure`) has its peers back,
/// resynced, within a second of listening again (at 1 s, a quarter of restarts took longer).
const RECONNECT_IVL_MAX_MS: i32 = 500;
/// Names for monitor endpoints, unique in the process.
static NEXT_MONITOR: AtomicU64 = AtomicU64::new(1);
/// Frames handed to the actor in one go before the thread looks at its other sockets.
const READ_BATCH: usize = 256;
/// Room in the channel to the actor, in frames and connection events.
const EVENT_CAPACITY: usize = 1024;
/// Where libzmq asks for ZAP verdicts, in each context (RFC 27).
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// libzmq's send high-water mark, in frames, on every socket. It counts frames, not bytes, so
/// it is kept small (at most a few hundred KB per peer at our 16 KiB batches) and what does not
/// fit waits in our own queues, which count bytes.
const SEND_HWM: i32 = 32;
/// How often frames waiting for a client are offered to libzmq again: a ROUTER cannot say
/// which of its peers has room, so the thread tries again on a clock while any wait.
const CLIENT_RETRY: Duration = Duration::from_millis(1);
/// A client whose queue has not moved for this long is not reading: its queue is dropped and
/// its session with it (it resyncs when it reads again).
const CLIENT_STALL: Duration = Duration::from_secs(10);
/// Refused client keys remembered so each is warned about once (libzmq redials a refused client
/// every second or so); past this many, every refusal is warned about.
const WARNED_KEYS_MAX: usize = 1024;

enum Command {
    Bind {
        endpoint: String,
        curve: Option<CurveServer>,
        reply: oneshot::Sender<Result<String, Error>>,
    },
    Connect {
        remote: RemoteKey,
        /// Which of the remote's connections this is, as the facade counts them.
        dial: u64,
        endpoint: String,
        curve: Option<CurveClient>,
        /// `None`: nobody waits, and a failure is [`Report::RemoteUnreachable`] instead.
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
    Redial {
        remote: RemoteKey,
        dial: u64,
    },
    /// Forget the remote: its queue, its DEALER and its monitor.
    Close {
        remote: RemoteKey,
    },
    ToClient(Bytes, Bytes),
    ToServer(RemoteKey, Bytes),
    /// Say [`Report::Drained`] once everything queued for the peer so far is in libzmq.
    Mark(Target<Bytes>),
    /// Die as if `zmq_poll` had failed (tests).
    #[cfg(any(test, feature = "sim"))]
    Fail,
}

impl Command {
    /// The frame bytes this command carries, as counted in the channel's budget.
    fn bytes(&self) -> usize {
        match self {
            Self::ToClient(_, frame) | Self::ToServer(_, frame) => frame.len(),
            _ => 0,
        }
    }
}

/// The I/O thread's answer to a bind or connect.
pub(super) type Answer<T> = oneshot::Receiver<Result<T, Error>>;

/// The facade's handle on a node's libzmq I/O thread.
#[derive(Debug)]
pub(super) struct ZmqIo {
    commands: std_mpsc::Sender<Command>,
    wake: UnixStream,
    wake_pending: Arc<AtomicBool>,
    events: mpsc::Receiver<Report<Bytes>>,
    thread: Option<JoinHandle<()>>,
    curve_refused: Arc<AtomicU64>,
    handshakes_failed: Arc<AtomicU64>,
    /// Frame bytes in the channel to the thread, not yet taken.
    in_channel: Arc<AtomicUsize>,
}

impl ZmqIo {
    /// Starts the I/O thread.
    pub(super) fn start(limits: Limits, budget: Budget, name: &str) -> Result<Self, Error> {
        let io_error = |e: std::io::Error| Error::Bind {
            endpoint: String::new(),
            why: format!("cannot start the zmq I/O thread: {e}"),
        };
        let (wake, wake_rx) = UnixStream::pair().map_err(io_error)?;
        wake.set_nonblocking(true).map_err(io_error)?;
        wake_rx.set_nonblocking(true).map_err(io_error)?;
        let (commands, commands_rx) = std_mpsc::channel();
        let (events_tx, events) = mpsc::channel(EVENT_CAPACITY);
        let wake_pending = Arc::new(AtomicBool::new(false));
        let curve_refused = Arc::new(AtomicU64::new(0));
        let in_channel = Arc::new(AtomicUsize::new(0));
        let handshakes_failed = Arc::new(AtomicU64::new(0));
        let io = Io {
            // One context per node: stopping it waits for what this node still has to send,
            // and no node's sockets can hold up another's.
            context: zmq::Context::new(),
            router: None,
            router_curve: false,
            remotes: BTreeMap::new(),
            events: events_tx,
            commands: commands_rx,
            wake: wake_rx,
            wake_pending: Arc::clone(&wake_pending),
            limits,
            budget,
            zap: None,
            curve_refused: Arc::clone(&curve_refused),
            in_channel: Arc::clone(&in_channel),
            clients: HashMap::new(),
            queued: 0,
            marks: Vec::new(),
            router_monitor: None,
            handshakes_failed: Arc::clone(&handshakes_failed),
            warnings: Warnings::default(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("zgossip-io {name}"))
            .spawn(move || io.run())
            .map_err(io_error)?;
        Ok(Self {
            commands,
            wake,
            wake_pending,
            events,
            thread: Some(thread),
            curve_refused,
            handshakes_failed,
            in_channel,
        })
    }

    /// CURVE clients refused by the allow list so far.
    pub(super) fn curve_refused(&self) -> u64 {
        self.curve_refused.load(Ordering::Relaxed)
    }

    /// Connections to our listeners whose ZeroMQ handshake failed so far (a plain client on a
    /// CURVE listener, a client with the wrong server key, a refused key).
    pub(super) fn handshakes_failed(&self) -> u64 {
        self.handshakes_failed.load(Ordering::Relaxed)
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        let bytes = command.bytes();
        self.in_channel.fetch_add(bytes, Ordering::SeqCst);
        if self.commands.send(command).is_err() {
            self.in_channel.fetch_sub(bytes, Ordering::SeqCst);
            return Err(Error::Stopped);
        }
        // One wake byte per batch of commands: the thread clears the flag before draining.
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            match (&self.wake).write(&[1]) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Err(Error::Stopped),
            }
        }
        Ok(())
    }

    /// Asks for the ROUTER to bind `endpoint`, as a CURVE server when `curve` says so; the
    /// answer is the endpoint as bound (the real port for `*`). The caller must keep reading
    /// reports while it waits.
    pub(super) fn bind(
        &self,
        endpoint: &str,
        curve: Option<CurveServer>,
    ) -> Result<Answer<String>, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Bind {
            endpoint: endpoint.to_owned(),
            curve,
            reply,
        })?;
        Ok(answer)
    }

    /// Asks for a DEALER for `remote`, connected to `endpoint` (as a CURVE client when `curve`
    /// says so); libzmq reconnects it from then on. The caller must keep reading reports while
    /// it waits.
    pub(super) fn connect(
        &self,
        remote: RemoteKey,
        dial: u64,
        endpoint: &str,
        curve: Option<CurveClient>,
    ) -> Result<Answer<()>, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Connect {
            remote,
            dial,
            endpoint: endpoint.to_owned(),
            curve,
            reply: Some(reply),
        })?;
        Ok(answer)
    }

    /// As [`ZmqIo::connect`], without an answer: if libzmq will not dial `endpoint`, the thread
    /// reports the remote unreachable (and does not retry it).
    pub(super) fn open(
        &self,
        remote: RemoteKey,
        endpoint: &str,
        curve: Option<CurveClient>,
    ) -> Result<(), Error> {
        self.send(Command::Connect {
            remote,
            dial: 0,
            endpoint: endpoint.to_owned(),
            curve,
            reply: None,
        })
    }

    /// Drops a remote for good: what waits for it in our queue goes, what is already in
    /// libzmq gets [`LINGER_ON_CLOSE_MS`] to leave, and nothing more is reported for it.
    pub(super) fn close(&self, remote: RemoteKey) -> Result<(), Error> {
        self.send(Command::Close { remote })
    }

    /// Replaces a remote's DEALER with a fresh one (a new connection the server has not seen),
    /// known as `dial` from then on.
    pub(super) fn redial(&self, remote: RemoteKey, dial: u64) -> Result<(), Error> {
        self.send(Command::Redial { remote, dial })
    }

    /// Sends a frame to a client of our ROUTER.
    pub(super) fn send_to_client(&self, routing_id: Bytes, frame: Bytes) -> Result<(), Error> {
        self.send(Command::ToClient(routing_id, frame))
    }

    /// Sends a frame through a remote's DEALER.
    pub(super) fn send_to_server(&self, remote: RemoteKey, frame: Bytes) -> Result<(), Error> {
        self.send(Command::ToServer(remote, frame))
    }

    /// Asks for [`Report::Drained`] for `peer` once what is queued for it so far has gone
    /// into libzmq: a resync's next slice goes then.
    pub(super) fn mark(&self, peer: Target<Bytes>) -> Result<(), Error> {
        self.send(Command::Mark(peer))
    }

    /// Makes the thread die as if `zmq_poll` had failed.
    #[cfg(any(test, feature = "sim"))]
    pub(super) fn fail(&self) -> Result<(), Error> {
        self.send(Command::Fail)
    }

    /// Frame bytes handed to the thread and not yet taken by it.
    pub(super) fn in_channel(&self) -> usize {
        self.in_channel.load(Ordering::SeqCst)
    }

    /// The next thing the I/O thread saw; [`Report::Stopped`] once it is gone.
    pub(super) async fn recv(&mut self) -> Report<Bytes> {
        match self.events.recv().await {
            Some(report) => report,
            None => ended(),
        }
    }

    /// Reports the thread has made that the facade has not taken yet.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.events.len()
    }

    /// The next thing the I/O thread saw, if any is queued.
    pub(super) fn try_recv(&mut self) -> Option<Report<Bytes>> {
        match self.events.try_recv() {
            Ok(report) => Some(report),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(ended()),
        }
    }

    /// Stops the thread and closes its sockets; returns the thread to join.
    pub(super) fn shutdown(mut self) -> Option<JoinHandle<()>> {
        self.thread.take()
        // Dropping `commands` and `wake` here tells the thread to stop.
    }
}

/// What the thread's channel closing means: it ended without saying why (a panic).
fn ended() -> Report<Bytes> {
    Report::Stopped("the I/O thread ended".into())
}

/// A routing id as logs show it.
struct RoutingId<'a>(&'a [u8]);

impl std::fmt::Display for RoutingId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("zmq:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

struct Dealer {
    endpoint: String,
    /// The facade's count of this remote's connections, when this one was made.
    dial: u64,
    /// Its server was reported not reading: what comes for it is dropped until the redial.
    overflowed: bool,
    curve: Option<CurveClient>,
    socket: zmq::Socket,
    monitor: zmq::Socket,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// A [`Command::Mark`] waits for `pending` to empty.
    marked: bool,
}

impl Drop for Dealer {
    /// libzmq sends monitor events with blocking sends from its own I/O thread: an event for a
    /// closing DEALER whose monitor reader is already gone would block that thread, and with it
    /// every connection in the process. Re-registering with no events stops the old monitor
    /// while our reader still listens; the sockets then close in field order.
    fn drop(&mut self) {
        let quiet = format!(
            "inproc://zgossip-monitor-off-{}",
            NEXT_MONITOR.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(error) = self.socket.monitor(&quiet, 0) {
            warn!(endpoint = %self.endpoint, %error, "cannot stop the socket monitor");
        }
    }
}

/// Frames for one client that libzmq had no room for yet.
#[derive(Default)]
struct ClientQueue {
    pending: VecDeque<Bytes>,
    bytes: usize,
    /// When a frame last left the queue (or the queue started).
    moved: Option<Instant>,
    /// A [`Command::Mark`] waits for the queue to empty.
    marked: bool,
}

struct Io {
    context: zmq::Context,
    router: Option<zmq::Socket>,
    /// The ROUTER's options make a CURVE server: set by a CURVE bind, cleared by a later plain one.
    router_curve: bool,
    remotes: BTreeMap<RemoteKey, Dealer>,
    events: mpsc::Sender<Report<Bytes>>,
    commands: std_mpsc::Receiver<Command>,
    wake: UnixStream,
    wake_pending: Arc<AtomicBool>,
    limits: Limits,
    budget: Budget,
    zap: Option<Zap>,
    curve_refused: Arc<AtomicU64>,
    in_channel: Arc<AtomicUsize>,
    /// Frames waiting for clients, by routing id.
    clients: HashMap<Bytes, ClientQueue>,
    /// Bytes waiting in every queue, clients' and servers': at most the node's ceiling.
    queued: usize,
    /// Peers whose queue emptied while a mark waited, to be told to the facade.
    marks: Vec<Target<Bytes>>,
    /// Failed handshakes on our listeners, from this monitor of the ROUTER.
    router_monitor: Option<zmq::Socket>,
    handshakes_failed: Arc<AtomicU64>,
    /// What peers can make this thread log, rate-limited.
    warnings: Warnings,
}

/// The ZAP handler: a REP socket on [`ZAP_ENDPOINT`] in this node's context, answered here.
struct Zap {
    socket: zmq::Socket,
    allow: BTreeSet<CurveKey>,
    warned: BTreeSet<CurveKey>,
}

/// Whether the I/O thread goes on.
type Running = Result<(), Stop>;
struct Stop;

/// Why a dial failed: for whoever waits on it, and as a report's cause when nobody does.
struct DialFailed {
    error: Error,
    cause: &'static str,
}

impl Io {
    fn run(mut self) {
        while self.step().is_ok() {}
        self.drain_on_stop();
        // Give what is queued (goodbyes, withdrawals) a moment to reach the wire; dropping the
        // context below waits for it, bounded by the linger.
        let sockets = self
            .router
            .iter()
            .chain(self.remotes.values().map(|d| &d.socket));
        for socket in sockets {
            let _ = socket.set_linger(LINGER_ON_STOP_MS);
        }
        // As for a DEALER's (see `Dealer`'s Drop): stop the monitor while its reader listens.
        if let Some(router) = &self.router {
            let quiet = format!(
                "inproc://zgossip-monitor-off-{}",
                NEXT_MONITOR.fetch_add(1, Ordering::Relaxed)
            );
            let _ = router.monitor(&quiet, 0);
        }
        let Io {
            context,
            router,
            router_monitor,
            remotes,
            zap,
            ..
        } = self;
        drop(router);
        drop(router_monitor);
        drop(remotes);
        drop(zap);
        drop(context);
        debug!("zmq I/O thread stopped");
    }

    /// What still waits in our own queues when the node stops (goodbyes and withdrawals behind
    /// libzmq's small send limit) is offered to libzmq until it is taken, within the stop's
    /// linger; the rest is dropped. Nobody hears reports any more.
    fn drain_on_stop(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(LINGER_ON_STOP_MS as u64);
        loop {
            let _ = self.flush_clients();
            let ids: Vec<RemoteKey> = self.remotes.keys().copied().collect();
            for id in ids {
                let _ = self.flush(id);
            }
            let waiting = self.remotes.values().filter(|d| !d.pending.is_empty());
            let mut items: Vec<zmq::PollItem> = waiting
                .map(|d| d.socket.as_poll_item(zmq::POLLOUT))
                .collect();
            if (items.is_empty() && self.clients.is_empty()) || Instant::now() >= deadline {
                return;
            }
            // A ROUTER cannot say which client has room: a short wait, then all are tried again.
            let _ = zmq::poll(&mut items, STOP_RETRY_MS);
        }
    }

    fn step(&mut self) -> Running {
        let mut actor_gone = self.drain_wake().is_err();
        self.wake_pending.store(false, Ordering::SeqCst);
        loop {
            let command = self.commands.try_recv();
            if let Ok(command) = &command {
                self.in_channel.fetch_sub(command.bytes(), Ordering::SeqCst);
            }
            match command {
                // Once the actor is gone, still send what it queued last (goodbyes,
                // withdrawals); nobody is left to hear of failures.
                Ok(command) if actor_gone => {
                    let _ = self.on_command(command);
                }
                Ok(command) => self.on_command(command)?,
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    actor_gone = true;
                    break;
                }
            }
        }
        if actor_gone {
            return Err(Stop);
        }
        // Marks answered by the commands just taken go now, not after the poll below sleeps.
        self.tell_marks()?;

        let ids: Vec<RemoteKey> = self.remotes.keys().copied().collect();
        let (router_ready, zap_ready, dealer_ready) = {
            let mut items = vec![zmq::PollItem::from_fd(self.wake.as_raw_fd(), zmq::POLLIN)];
            if let Some(router) = &self.router {
                items.push(router.as_poll_item(zmq::POLLIN));
            }
            if let Some(zap) = &self.zap {
                items.push(zap.socket.as_poll_item(zmq::POLLIN));
            }
            if let Some(monitor) = &self.router_monitor {
                items.push(monitor.as_poll_item(zmq::POLLIN));
            }
            for dealer in self.remotes.values() {
                let out = if dealer.pending.is_empty() {
                    zmq::PollEvents::empty()
                } else {
                    zmq::POLLOUT
                };
                items.push(dealer.socket.as_poll_item(zmq::POLLIN | out));
                items.push(dealer.monitor.as_poll_item(zmq::POLLIN));
            }
            let timeout = if self.clients.values().any(|q| !q.pending.is_empty()) {
                CLIENT_RETRY.as_millis() as i64
            } else {
                -1
            };
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(self.poll_failed(e)),
            }
            let mut rest = items.iter().skip(1);
            let router_ready =
                self.router.is_some() && rest.next().is_some_and(zmq::PollItem::is_readable);
            let zap_ready =
                self.zap.is_some() && rest.next().is_some_and(zmq::PollItem::is_readable);
            let monitor_ready = self.router_monitor.is_some()
                && rest.next().is_some_and(zmq::PollItem::is_readable);
            let dealer_ready: Vec<(bool, bool, bool)> = ids
                .iter()
                .map(|_| {
                    let socket = rest.next();
                    let monitor = rest.next();
                    (
                        socket.is_some_and(zmq::PollItem::is_readable),
                        socket.is_some_and(zmq::PollItem::is_writable),
                        monitor.is_some_and(zmq::PollItem::is_readable),
                    )
                })
                .collect();
            (router_ready, zap_ready || monitor_ready, dealer_ready)
        };

        tracing::trace!(router_ready, zap_ready, ?dealer_ready, "poll");
        self.flush_clients()?;
        self.read_router_monitor();
        if zap_ready {
            self.answer_zap();
        }
        if router_ready {
            self.read_router()?;
        }
        for (id, (readable, writable, monitor)) in ids.into_iter().zip(dealer_ready) {
            if monitor {
                self.read_monitor(id)?;
            }
            if readable {
                self.read_dealer(id)?;
            }
            if writable {
                self.flush(id)?;
            }
        }
        self.tell_marks()
    }

    /// Tells the facade of the peers whose queues emptied with a mark waiting.
    fn tell_marks(&mut self) -> Running {
        for peer in std::mem::take(&mut self.marks) {
            self.emit(Report::Drained(peer))?;
        }
        Ok(())
    }

    /// The thread cannot go on: it says why, and stops.
    fn poll_failed(&self, error: impl std::fmt::Display) -> Stop {
        let why = format!("zmq poll failed: {error}");
        debug!(%why, "stopping the I/O thread");
        let _ = self.emit(Report::Stopped(why));
        Stop
    }

    fn drain_wake(&mut self) -> Running {
        let mut buf = [0u8; 64];
        loop {
            match self.wake.read(&mut buf) {
                Ok(0) => return Err(Stop),
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(Stop),
            }
        }
    }

    fn emit(&self, report: Report<Bytes>) -> Running {
        self.events.blocking_send(report).map_err(|_| Stop)
    }

    fn on_command(&mut self, command: Command) -> Running {
        match command {
            Command::Bind {
                endpoint,
                curve,
                reply,
            } => {
                let _ = reply.send(self.bind(&endpoint, curve));
            }
            Command::Connect {
                remote,
                dial,
                endpoint,
                curve,
                reply,
            } => {
                let result = self.dial(remote, dial, &endpoint, curve);
                match (reply, result) {
                    (Some(reply), result) => {
                        let _ = reply.send(result.map_err(|failed| failed.error));
                    }
                    (None, Ok(())) => {}
                    (None, Err(failed)) => {
                        warn!(error = %failed.error, "cannot dial");
                        self.emit(Report::RemoteUnreachable(remote, failed.cause))?;
                    }
                }
            }
            Command::Redial { remote, dial } => {
                self.drop_server_queue(remote);
                if let Some(old) = self.remotes.remove(&remote) {
                    let endpoint = old.endpoint.clone();
                    let curve = old.curve.clone();
                    drop(old);
                    if let Err(failed) = self.dial(remote, dial, &endpoint, curve) {
                        warn!(error = %failed.error, "redial failed");
                    }
                }
            }
            Command::Close { remote } => self.close(remote)?,
            Command::ToClient(routing_id, frame) => self.send_to_client(routing_id, frame)?,
            Command::ToServer(remote, frame) => self.send_to_server(remote, frame)?,
            Command::Mark(peer) => self.on_mark(peer),
            #[cfg(any(test, feature = "sim"))]
            Command::Fail => return Err(self.poll_failed("simulated failure")),
        }
        Ok(())
    }

    fn on_mark(&mut self, peer: Target<Bytes>) {
        let waiting = match &peer {
            Target::Client(routing_id) => match self.clients.get_mut(routing_id) {
                Some(queue) if !queue.pending.is_empty() => {
                    queue.marked = true;
                    true
                }
                _ => false,
            },
            Target::Remote(remote) => match self.remotes.get_mut(remote) {
                Some(dealer) if !dealer.pending.is_empty() => {
                    dealer.marked = true;
                    true
                }
                _ => false,
            },
        };
        if !waiting {
            self.marks.push(peer);
        }
    }

    fn socket(&self, kind: zmq::SocketType) -> Result<zmq::Socket, zmq::Error> {
        let socket = self.context.socket(kind)?;
        socket.set_linger(0)?;
        socket.set_sndhwm(SEND_HWM)?;
        socket.set_rcvhwm(self.limits.socket_hwm)?;
        socket.set_maxmsgsize(self.limits.max_message_bytes as i64)?;
        socket.set_handshake_ivl(self.limits.handshake_timeout_ms)?;
        Ok(socket)
    }

    fn bind(&mut self, endpoint: &str, curve: Option<CurveServer>) -> Result<String, Error> {
        let failed = |e: zmq::Error| Error::Bind {
            endpoint: endpoint.to_owned(),
            why: e.to_string().to_lowercase(),
        };
        if curve.is_some() && !curve_available() {
            return Err(Error::Bind {
                endpoint: endpoint.to_owned(),
                why: NO_CURVE.to_owned(),
            });
        }
        if self.router.is_none() {
            let router = self.socket(zmq::ROUTER).map_err(failed)?;
            router.set_router_mandatory(true).map_err(failed)?;
            // Handshakes that fail on our listeners (a plain client on a CURVE listener, a
            // wrong key) are otherwise invisible here: counted and logged from this monitor.
            let events = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
                | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
                | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32;
            let (monitor, _) = self.monitor(&router, events).map_err(failed)?;
            self.router = Some(router);
            self.router_monitor = Some(monitor);
        }
        if let Some(curve) = &curve {
            // Before the listener exists, so its first handshake already finds the handler.
            self.serve_zap(&curve.allow).map_err(failed)?;
        }
        let router = self.router.as_ref().ok_or(Error::Stopped)?;
        // Options as of each bind hold for that listener. libzmq refuses an empty ZAP domain, so
        // a domain stays for later plain listeners too; ZAP passes all but CURVE anyway.
        match &curve {
            Some(curve) => {
                if let Some(domain) = &curve.zap_domain {
                    router.set_zap_domain(domain).map_err(failed)?;
                }
                router
                    .set_curve_secretkey(curve.secret_key.as_bytes())
                    .map_err(failed)?;
                router.set_curve_server(true).map_err(failed)?;
                self.router_curve = true;
            }
            // Only undo an earlier CURVE bind: a plain listener needs no CURVE option.
            None if self.router_curve => {
                router.set_curve_server(false).map_err(failed)?;
                self.router_curve = false;
            }
            None => {}
        }
        // Port 0 means "any free port", as `*` does for libzmq.
        let spelled = match endpoint.strip_suffix(":0") {
            Some(host) if endpoint.starts_with("tcp://") => format!("{host}:*"),
            _ => endpoint.to_owned(),
        };
        router.bind(&spelled).map_err(failed)?;
        match router.get_last_endpoint() {
            Ok(Ok(bound)) => Ok(bound),
            _ => Ok(endpoint.to_owned()),
        }
    }

    fn dial(
        &mut self,
        remote: RemoteKey,
        dial: u64,
        endpoint: &str,
        curve: Option<CurveClient>,
    ) -> Result<(), DialFailed> {
        let failed = |e: zmq::Error| DialFailed {
            error: Error::Connect {
                endpoint: endpoint.to_owned(),
                why: e.to_string().to_lowercase(),
            },
            cause: match e {
                zmq::Error::EMFILE | zmq::Error::ENOMEM | zmq::Error::ENOBUFS => NO_SOCKET,
                _ => ADDRESS_REFUSED,
            },
        };
        if curve.is_some() && !curve_available() {
            return Err(DialFailed {
                error: Error::Connect {
                    endpoint: endpoint.to_owned(),
                    why: NO_CURVE.to_owned(),
                },
                cause: NO_CURVE,
            });
        }
        let socket = self.socket(zmq::DEALER).map_err(failed)?;
        if let Some(curve) = &curve {
            socket
                .set_curve_serverkey(curve.server_key.as_bytes())
                .map_err(failed)?;
            socket
                .set_curve_publickey(curve.keys.public.as_bytes())
                .map_err(failed)?;
            socket
                .set_curve_secretkey(curve.keys.secret.as_bytes())
                .map_err(failed)?;
        }
        // Not ZMQ_IMMEDIATE: with it, libzmq drops the frames a server sent that we had not
        // read yet when its connection closed (a stopping node's goodbye, lost 1 time in 8 in
        // the five-process test). Without it, a frame in libzmq when the connection drops goes
        // out after the reconnect, ahead of our HELLO; the server answers INVALID and we say
        // HELLO again (see `on_invalid`). Nothing is sent to a remote that is not connected.
        socket.set_immediate(false).map_err(failed)?;
        socket
            .set_reconnect_ivl_max(RECONNECT_IVL_MAX_MS)
            .map_err(failed)?;
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
            | zmq::SocketEvent::DISCONNECTED as i32
            | zmq::SocketEvent::CONNECT_RETRIED as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32;
        let (monitor, monitor_endpoint) = self.monitor(&socket, events).map_err(failed)?;
        // A Dealer before the connect: if libzmq refuses the address, its Drop stops the
        // monitor before the sockets close.
        let dealer = Dealer {
            endpoint: endpoint.to_owned(),
            dial,
            overflowed: false,
            curve,
            socket,
            monitor,
            pending: VecDeque::new(),
            pending_bytes: 0,
            marked: false,
        };
        dealer.socket.connect(endpoint).map_err(failed)?;
        tracing::trace!(endpoint, monitor_endpoint, "dialled");
        self.remotes.insert(remote, dealer);
        Ok(())
    }

    /// Drops a remote for good. What waits in our queue gets one last offer to libzmq (a
    /// goodbye sent just before the close is there), then goes; the DEALER closes with a short
    /// linger, so what libzmq holds may still reach the server. Its monitor stops with it, so
    /// nothing more is reported for the remote.
    fn close(&mut self, remote: RemoteKey) -> Running {
        let Some(dealer) = self.remotes.get_mut(&remote) else {
            return Ok(());
        };
        // Nobody is left to hear that the queue drained.
        dealer.marked = false;
        self.flush(remote)?;
        let Some(dealer) = self.remotes.remove(&remote) else {
            return Ok(());
        };
        self.queued -= dealer.pending_bytes;
        if let Err(error) = dealer.socket.set_linger(LINGER_ON_CLOSE_MS) {
            debug!(endpoint = %dealer.endpoint, %error, "cannot set the linger of a closed remote");
        }
        debug!(endpoint = %dealer.endpoint, "closed");
        Ok(())
    }

    /// A PAIR socket that receives `socket`'s monitor `events`, and its endpoint.
    fn monitor(
        &self,
        socket: &zmq::Socket,
        events: i32,
    ) -> Result<(zmq::Socket, String), zmq::Error> {
        let endpoint = format!(
            "inproc://zgossip-monitor-{}",
            NEXT_MONITOR.fetch_add(1, Ordering::Relaxed)
        );
        socket.monitor(&endpoint, events)?;
        let monitor = self.context.socket(zmq::PAIR)?;
        monitor.set_linger(0)?;
        monitor.connect(&endpoint)?;
        Ok((monitor, endpoint))
    }

    /// Starts the ZAP handler for a CURVE listener with an allow list (the first time), or
    /// updates its list.
    fn serve_zap(&mut self, allow: &BTreeSet<CurveKey>) -> Result<(), zmq::Error> {
        if let Some(zap) = &mut self.zap {
            zap.allow.clone_from(allow);
            return Ok(());
        }
        if allow.is_empty() {
            return Ok(());
        }
        let socket = self.context.socket(zmq::REP)?;
        socket.set_linger(0)?;
        socket.bind(ZAP_ENDPOINT)?;
        self.zap = Some(Zap {
            socket,
            allow: allow.clone(),
            warned: BTreeSet::new(),
        });
        Ok(())
    }

    /// Answers the ZAP requests libzmq has queued; counts and warns about refused clients.
    fn answer_zap(&mut self) {
        let Some(zap) = &mut self.zap else {
            return;
        };
        while let Ok(request) = zap.socket.recv_multipart(zmq::DONTWAIT) {
            let answer = zap_answer(&request, &zap.allow);
            if let Some(key) = answer.refused {
                self.curve_refused.fetch_add(1, Ordering::Relaxed);
                let address = request
                    .get(3)
                    .map(|a| String::from_utf8_lossy(a).into_owned());
                let first = zap.warned.len() < WARNED_KEYS_MAX && zap.warned.insert(key);
                if first || zap.warned.len() >= WARNED_KEYS_MAX {
                    warn!(%key, ?address, "refused a CURVE client not in the allow list");
                } else {
                    debug!(%key, ?address, "refused a CURVE client not in the allow list");
                }
            }
            // Slices are copied; zmq 0.9 hands a Vec to libzmq zero-copy and frees it later
            // with the wrong layout.
            if let Err(error) = zap
                .socket
                .send_multipart(answer.reply.iter().map(Vec::as_slice), 0)
            {
                warn!(%error, "cannot answer a ZAP request");
            }
        }
    }

    /// Sends a frame to a client, or queues it behind what already waits for that client.
    fn send_to_client(&mut self, routing_id: Bytes, frame: Bytes) -> Running {
        let Some(router) = &self.router else {
            return Ok(());
        };
        let waiting = self
            .clients
            .get(&routing_id)
            .is_some_and(|q| !q.pending.is_empty());
        if !waiting {
            match try_send(router, &routing_id, &frame) {
                Sent::Done | Sent::Failed => return Ok(()),
                Sent::Gone => return self.client_gone(routing_id),
                Sent::Full => {}
            }
        }
        let max = self.budget.peer_bytes;
        let queue = self.clients.entry(routing_id.clone()).or_default();
        if queue.bytes + frame.len() > max {
            debug!(client = %RoutingId(&routing_id), "client is not reading; dropping what waits for it");
            self.drop_client_queue(&routing_id);
            return self.emit(Report::ClientOverflow(routing_id));
        }
        queue.bytes += frame.len();
        queue.moved.get_or_insert_with(Instant::now);
        queue.pending.push_back(frame.clone());
        self.queued += frame.len();
        self.enforce_ceiling()
    }

    /// Offers libzmq what waits for clients; drops the queues of clients gone or stalled.
    fn flush_clients(&mut self) -> Running {
        let Some(router) = &self.router else {
            return Ok(());
        };
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut stalled = Vec::new();
        let mut sent = 0;
        for (routing_id, queue) in &mut self.clients {
            while let Some(frame) = queue.pending.front() {
                match try_send(router, routing_id, frame) {
                    Sent::Done | Sent::Failed => {
                        queue.bytes -= frame.len();
                        sent += frame.len();
                        queue.pending.pop_front();
                        queue.moved = Some(now);
                    }
                    Sent::Gone => {
                        gone.push(routing_id.clone());
                        break;
                    }
                    Sent::Full => {
                        if queue
                            .moved
                            .is_some_and(|at| now.duration_since(at) > CLIENT_STALL)
                        {
                            stalled.push(routing_id.clone());
                        }
                        break;
                    }
                }
            }
        }
        self.queued -= sent;
        let marks = &mut self.marks;
        self.clients.retain(|routing_id, queue| {
            let keep = !queue.pending.is_empty();
            if !keep && queue.marked {
                marks.push(Target::Client(routing_id.clone()));
            }
            keep
        });
        for routing_id in gone {
            self.client_gone(routing_id)?;
        }
        for routing_id in stalled {
            let client = RoutingId(&routing_id);
            if self.warnings.allow(now, "client stalled", &client) {
                warn!(%client, "client has not read for {CLIENT_STALL:?}; dropping its session");
            }
            self.drop_client_queue(&routing_id);
            self.emit(Report::ClientOverflow(routing_id))?;
        }
        Ok(())
    }

    fn client_gone(&mut self, routing_id: Bytes) -> Running {
        self.drop_client_queue(&routing_id);
        self.emit(Report::ClientGone(routing_id))
    }

    /// Forgets what waits for a client; a mark on it is answered (there is nothing to wait for).
    fn drop_client_queue(&mut self, routing_id: &Bytes) {
        if let Some(queue) = self.clients.remove(routing_id) {
            self.queued -= queue.bytes;
            if queue.marked {
                self.marks.push(Target::Client(routing_id.clone()));
            }
        }
    }

    /// Forgets what waits for a server, answering a mark on it.
    fn drop_server_queue(&mut self, remote: RemoteKey) {
        if let Some(dealer) = self.remotes.get_mut(&remote) {
            self.queued -= dealer.pending_bytes;
            dealer.pending.clear();
            dealer.pending_bytes = 0;
            if std::mem::take(&mut dealer.marked) {
                self.marks.push(Target::Remote(remote));
            }
        }
    }

    /// Keeps the bytes waiting in all queues under the node's ceiling: the peer with the most
    /// waiting is the one not reading, so its queue goes, and its session or connection.
    fn enforce_ceiling(&mut self) -> Running {
        while self.queued > self.budget.node_bytes {
            let client = self
                .clients
                .iter()
                .max_by_key(|(_, q)| q.bytes)
                .map(|(id, q)| (q.bytes, id.clone()));
            let server = self
                .remotes
                .iter()
                .max_by_key(|(_, d)| d.pending_bytes)
                .map(|(id, d)| (d.pending_bytes, *id));
            let client_first = match (&client, &server) {
                (Some((c, _)), Some((d, _))) => c >= d,
                (client, _) => client.is_some(),
            };
            match (client, server) {
                (Some((bytes, routing_id)), _) if client_first => {
                    let client = RoutingId(&routing_id);
                    if self.warnings.allow(Instant::now(), "queues full", &client) {
                        warn!(%client, bytes, "the node's queues are full; dropping the client with the most waiting");
                    }
                    self.drop_client_queue(&routing_id);
                    self.emit(Report::ClientOverflow(routing_id))?;
                }
                (_, Some((bytes, remote))) => {
                    warn!(
                        remote = remote.0,
                        bytes,
                        "the node's queues are full; dropping the server with the most waiting"
                    );
                    self.server_overflowed(remote)?;
                }
                // Nothing waits, so nothing is over (the count is of what waits).
                _ => break,
            }
        }
        Ok(())
    }

    fn send_to_server(&mut self, remote: RemoteKey, frame: Bytes) -> Running {
        let max = self.budget.peer_bytes;
        let Some(dealer) = self.remotes.get_mut(&remote) else {
            return Ok(());
        };
        if dealer.overflowed {
            return Ok(());
        }
        dealer.pending_bytes += frame.len();
        self.queued += frame.len();
        dealer.pending.push_back(frame);
        if dealer.pending_bytes > max {
            return self.server_overflowed(remote);
        }
        self.flush(remote)?;
        self.enforce_ceiling()
    }

    /// A server is not reading: what waits for it goes, and the facade hears once per
    /// connection (it redials; until then, what comes for the server is dropped).
    fn server_overflowed(&mut self, remote: RemoteKey) -> Running {
        self.drop_server_queue(remote);
        let Some(dealer) = self.remotes.get_mut(&remote) else {
            return Ok(());
        };
        if std::mem::replace(&mut dealer.overflowed, true) {
            return Ok(());
        }
        let dial = dealer.dial;
        self.emit(Report::RemoteOverflow { remote, dial })
    }

    /// Sends what is queued for a server until libzmq pushes back.
    fn flush(&mut self, remote: RemoteKey) -> Running {
        let Some(dealer) = self.remotes.get_mut(&remote) else {
            return Ok(());
        };
        while let Some(frame) = dealer.pending.front() {
            match dealer.socket.send(&frame[..], zmq::DONTWAIT) {
                Ok(()) => {
                    dealer.pending_bytes -= frame.len();
                    self.queued -= frame.len();
                    dealer.pending.pop_front();
                }
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    warn!(endpoint = %dealer.endpoint, error = %e, "send to a server failed");
                    self.drop_server_queue(remote);
                    return Ok(());
                }
            }
        }
        if dealer.pending.is_empty() && std::mem::take(&mut dealer.marked) {
            self.marks.push(Target::Remote(remote));
        }
        Ok(())
    }

    fn read_router(&mut self) -> Running {
        for _ in 0..READ_BATCH {
            let Some(router) = &self.router else {
                return Ok(());
            };
            let frames = match router.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(e) => {
                    warn!(error = %e, "receive on the listener failed");
                    return Ok(());
                }
            };
            let mut frames = frames.into_iter();
            let Some(routing_id) = frames.next() else {
                continue;
            };
            let frame = match (frames.next(), frames.len()) {
                (Some(frame), 0) => Ok(Bytes::from(frame)),
                (first, rest) => Err(FrameError::Multipart {
                    frames: usize::from(first.is_some()) + rest,
                }),
            };
            let client = Bytes::from(routing_id);
            self.emit(Report::ClientFrame { client, frame })?;
        }
        Ok(())
    }

    fn read_dealer(&mut self, remote: RemoteKey) -> Running {
        self.read_dealer_upto(remote, READ_BATCH)
    }

    fn read_dealer_upto(&mut self, remote: RemoteKey, most: usize) -> Running {
        for _ in 0..most {
            let Some(dealer) = self.remotes.get(&remote) else {
                return Ok(());
            };
            let frames = match dealer.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(e) => {
                    warn!(endpoint = %dealer.endpoint, error = %e, "receive from a server failed");
                    return Ok(());
                }
            };
            let count = frames.len();
            let frame = match frames.into_iter().next() {
                Some(frame) if count == 1 => Ok(Bytes::from(frame)),
                _ => Err(FrameError::Multipart { frames: count }),
            };
            self.emit(Report::RemoteFrame { remote, frame })?;
        }
        Ok(())
    }

    fn read_monitor(&mut self, remote: RemoteKey) -> Running {
        loop {
            let Some(dealer) = self.remotes.get_mut(&remote) else {
                return Ok(());
            };
            let frames = match dealer.monitor.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(_) => return Ok(()),
            };
            let Some([lo, hi, ..]) = frames.first().map(Vec::as_slice) else {
                continue;
            };
            match zmq::SocketEvent::from_raw(u16::from_le_bytes([*lo, *hi])) {
                zmq::SocketEvent::HANDSHAKE_SUCCEEDED => {
                    debug!(endpoint = %dealer.endpoint, "connected");
                    self.emit(Report::RemoteConnected(remote))?;
                }
                zmq::SocketEvent::DISCONNECTED => {
                    debug!(endpoint = %dealer.endpoint, "disconnected");
                    // What the server said before it went (a goodbye, a last DISCONNECT) is
                    // read first: the disconnect may make the actor close this remote, and
                    // what is unread would go with it. The receive limit bounds it.
                    self.read_dealer_upto(remote, usize::MAX)?;
                    // What was queued is moot: the reconnect resyncs everything.
                    self.drop_server_queue(remote);
                    self.emit(Report::RemoteDisconnected(remote))?;
                }
                zmq::SocketEvent::HANDSHAKE_FAILED_AUTH
                | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL
                | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL => {
                    // Most often CURVE: a wrong server key, a plain/CURVE mismatch, or our key
                    // not on the server's allow list.
                    let cause = if dealer.curve.is_some() {
                        "CURVE handshake failed (wrong server key, or our key not allowed?)"
                    } else {
                        "handshake failed (a CURVE server dialled without its key?)"
                    };
                    self.emit(Report::RemoteUnreachable(remote, cause))?;
                }
                zmq::SocketEvent::CONNECT_RETRIED => {
                    let cause = "connection refused, no route or unknown host (retrying)";
                    self.emit(Report::RemoteUnreachable(remote, cause))?;
                }
                _ => {}
            }
        }
    }
}

/// How offering one frame to libzmq went.
enum Sent {
    Done,
    /// No room for it now (the peer's pipe is at its high-water mark).
    Full,
    /// The peer is not connected any more.
    Gone,
    /// Some other failure, logged; the frame is dropped.
    Failed,
}

/// Offers a frame for one client to the ROUTER without waiting.
fn try_send(router: &zmq::Socket, routing_id: &[u8], frame: &[u8]) -> Sent {
    let sent = router
        .send(routing_id, zmq::SNDMORE | zmq::DONTWAIT)
        .and_then(|()| router.send(frame, zmq::DONTWAIT));
    match sent {
        Ok(()) => Sent::Done,
        Err(zmq::Error::EAGAIN) => Sent::Full,
        Err(zmq::Error::EHOSTUNREACH) => Sent::Gone,
        Err(error) => {
            debug!(%error, "send to a client failed");
            Sent::Failed
        }
    }
}

impl Io {
    /// Counts and logs (rate-limited) the failed handshakes on our listeners.
    fn read_router_monitor(&mut self) {
        let Some(monitor) = &self.router_monitor else {
            return;
        };
        while let Ok(frames) = monitor.recv_multipart(zmq::DONTWAIT) {
            self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            let address = frames
                .get(1)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default();
            if self
                .warnings
                .allow(Instant::now(), "handshake failed", &address)
            {
                warn!(%address, "a client's handshake failed on our listener (a plain client on a CURVE listener, or the wrong server key?)");
            }
        }
    }
}
