//! The load's clients as bare ZGP sessions: one thread, one DEALER per client, no store. Each
//! client says HELLO with a hail (so the node under test sends it BATCH frames), publishes its
//! S leased services stamped as our nodes stamp them, refreshes them all every third of the
//! lease in one BATCH, PINGs every third of the server timeout, gives its moving service a new
//! value on schedule, answers INVALID with HELLO and its services, and reads and drops
//! everything else. What a full node would do with the C×S tuples it receives (decode, store,
//! expire) is left out on purpose: 200 full nodes on the node under test's cores measured the
//! harness rather than the node (BENCHMARKS.md, "Load").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Shared, lock, moving_value, service_key, stable_value};
use zgossip::wire::{Hail, Message, MessageId, Publish, Stamp};

/// Node ids of the wire clients start here (any nonzero id would do).
const FIRST_NODE_ID: u64 = 0x1_0000;
/// How long one poll may sleep: the clock work (refreshes, PINGs, moves) is checked this often.
const TICK: Duration = Duration::from_millis(10);

/// What the clients are to do.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub endpoint: String,
    pub clients: usize,
    pub services: usize,
    pub ttl: Duration,
    pub ping_every: Duration,
}

/// When the moving services move: each client's first update, the interval, and the end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Moves {
    pub start: Instant,
    pub every: Duration,
    pub end: Instant,
}

/// The clients' thread.
pub(super) struct WireClients {
    stop: Arc<AtomicBool>,
    generations: Arc<Mutex<Vec<u64>>>,
    moves: Arc<Mutex<Option<Moves>>>,
    thread: Option<JoinHandle<Result<Outcome>>>,
}

/// What the clients did, for the report.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// HELLOs said after the first, answering INVALID.
    pub hellos_again: u64,
}

/// What the clients' thread writes to: the run's counters and the moving services' state.
struct Tally {
    shared: Arc<Shared>,
    generations: Arc<Mutex<Vec<u64>>>,
}

struct Client {
    socket: zmq::Socket,
    node: u64,
    /// Each service's (version, lease sequence); service 0 is the moving one.
    stamps: Vec<(u64, u32)>,
    generation: u64,
    next_refresh: Instant,
    next_ping: Instant,
    next_move: Option<Instant>,
}

impl WireClients {
    /// Connects the clients and publishes their services; they keep them alive until stopped.
    pub fn start(plan: Plan, shared: Arc<Shared>) -> Result<WireClients> {
        let context = zmq::Context::new();
        let now = Instant::now();
        let mut clients = Vec::with_capacity(plan.clients);
        for n in 0..plan.clients {
            let socket = context.socket(zmq::DEALER)?;
            socket.set_linger(0)?;
            socket.set_rcvhwm(100_000)?;
            socket.set_sndhwm(100_000)?;
            socket
                .connect(&plan.endpoint)
                .with_context(|| format!("client {n} connecting to {}", plan.endpoint))?;
            // Refreshes spread over the first third of the lease, as clients starting at
            // different times would be.
            let spread = (plan.ttl / 3).mul_f64(n as f64 / plan.clients as f64);
            clients.push(Client {
                socket,
                node: FIRST_NODE_ID + n as u64,
                stamps: vec![(1, 0); plan.services],
                generation: 0,
                next_refresh: now + plan.ttl / 3 + spread,
                next_ping: now + plan.ping_every,
                next_move: None,
            });
        }
        for (n, client) in clients.iter().enumerate() {
            client.hello(n, &plan)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let moves = Arc::new(Mutex::new(None));
        let generations = Arc::new(Mutex::new(vec![0; plan.clients]));
        let thread = std::thread::Builder::new()
            .name("load-clients".into())
            .spawn({
                let (stop, moves) = (Arc::clone(&stop), Arc::clone(&moves));
                let generations = Arc::clone(&generations);
                let shared = Tally {
                    shared,
                    generations,
                };
                move || run(clients, &plan, &stop, &moves, &shared)
            })?;
        Ok(WireClients {
            stop,
            generations,
            moves,
            thread: Some(thread),
        })
    }

    /// Starts moving the moving services.
    pub fn start_moving(&self, moves: Moves) {
        *lock(&self.moves) = Some(moves);
    }

    /// The last generation of each client's moving service so far.
    pub fn generations(&self) -> Vec<u64> {
        lock(&self.generations).clone()
    }

    /// Stops the clients (their sessions just go quiet) and says what they did.
    pub fn stop(mut self) -> Result<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => anyhow::bail!("the load clients' thread panicked"),
            None => Ok(Outcome::default()),
        }
    }
}

impl Drop for WireClients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Client {
    fn hail(&self) -> Option<Hail> {
        Some(Hail {
            node: self.node,
            goodbye: false,
            digest: None,
        })
    }

    fn publish(&self, n: usize, service: usize, plan: &Plan) -> Publish {
        let (version, lease_seq) = self.stamps.get(service).copied().unwrap_or((1, 0));
        let value = if service == 0 {
            moving_value(n, self.generation)
        } else {
            stable_value(service)
        };
        let stamp = Stamp {
            version,
            origin: self.node,
            lease_seq,
            withdrawn: false,
        };
        let ttl = u32::try_from(plan.ttl.as_millis()).unwrap_or(u32::MAX);
        Publish::stamped(service_key(n, service), value, ttl, &stamp)
    }

    fn send(&self, message: &Message) -> Result<()> {
        let frame = message.to_bytes()?;
        // A full queue toward a server that is not reading: the message is lost, as it would
        // be on a network; the lease refreshes that follow make up for it.
        match self.socket.send(&frame[..], zmq::DONTWAIT) {
            Ok(()) | Err(zmq::Error::EAGAIN) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// HELLO, every service in one BATCH, and a PING whose PONG ends the resync.
    fn hello(&self, n: usize, plan: &Plan) -> Result<()> {
        self.send(&Message::Hello(self.hail()))?;
        let all = (0..plan.services).map(|s| self.publish(n, s, plan));
        self.send(&Message::Batch(all.collect()))?;
        self.send(&Message::Ping(self.hail()))
    }

    fn refresh(&mut self, n: usize, plan: &Plan) -> Result<()> {
        for stamp in &mut self.stamps {
            stamp.1 = stamp.1.wrapping_add(1);
        }
        let all = (0..plan.services).map(|s| self.publish(n, s, plan));
        self.send(&Message::Batch(all.collect()))
    }

    fn move_service(&mut self, n: usize, plan: &Plan, shared: &Tally) -> Result<()> {
        self.generation += 1;
        if let Some(generation) = lock(&shared.generations).get_mut(n) {
            *generation = self.generation;
        }
        let shared = &shared.shared;
        if let Some(stamp) = self.stamps.first_mut() {
            *stamp = (stamp.0 + 1, 0);
        }
        let publish = self.publish(n, 0, plan);
        let sent = (publish.key.to_string(), publish.value.to_string());
        lock(&shared.sent).insert(sent, Instant::now());
        shared.updates.fetch_add(1, Ordering::Relaxed);
        self.send(&Message::Publish(publish))
    }

    /// Reads what is queued; true if the server said INVALID.
    fn drain(&self) -> Result<bool> {
        let mut invalid = false;
        loop {
            match self.socket.recv_bytes(zmq::DONTWAIT) {
                Ok(frame) => invalid |= frame.get(2) == Some(&(MessageId::Invalid as u8)),
                Err(zmq::Error::EAGAIN) => return Ok(invalid),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

fn run(
    mut clients: Vec<Client>,
    plan: &Plan,
    stop: &AtomicBool,
    moves: &Mutex<Option<Moves>>,
    shared: &Tally,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut moving = None;
    while !stop.load(Ordering::Relaxed) {
        let mut items: Vec<zmq::PollItem> = clients
            .iter()
            .map(|c| c.socket.as_poll_item(zmq::POLLIN))
            .collect();
        zmq::poll(&mut items, TICK.as_millis() as i64)?;
        let readable: Vec<bool> = items.iter().map(zmq::PollItem::is_readable).collect();
        drop(items);
        for (n, client) in clients.iter().enumerate() {
            if readable.get(n) == Some(&true) && client.drain()? {
                outcome.hellos_again += 1;
                client.hello(n, plan)?;
            }
        }
        if moving.is_none()
            && let Some(m) = *lock(moves)
        {
            moving = Some(m);
            for (n, client) in clients.iter_mut().enumerate() {
                let offset = m.every.mul_f64(n as f64 / plan.clients as f64);
                client.next_move = Some(m.start + offset);
            }
        }
        let now = Instant::now();
        for (n, client) in clients.iter_mut().enumerate() {
            if now >= client.next_refresh {
                client.refresh(n, plan)?;
                client.next_refresh += plan.ttl / 3;
            }
            if now >= client.next_ping {
                client.send(&Message::Ping(client.hail()))?;
                client.next_ping = now + plan.ping_every;
            }
            if let (Some(at), Some(m)) = (client.next_move, moving)
                && now >= at
            {
                if at < m.end {
                    client.move_service(n, plan, shared)?;
                }
                // Late: skip the missed updates rather than send them in a burst.
                let mut next = at + m.every;
                while next < now {
                    next += m.every;
                }
                client.next_move = (next < m.end).then_some(next);
            }
        }
    }
    Ok(outcome)
}
