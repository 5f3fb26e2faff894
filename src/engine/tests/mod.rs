//! Engine tests with explicit time: every input carries `now`, so these are exact. This file is
//! the shared fixture (engines, clients, messages as short strings); the tests are grouped by
//! role.

pub(super) use super::config::{MAX_DEFAULT_PING, MAX_VERSION, MAX_VERSION_LEAD};
pub(super) use super::remotes::NO_ANSWER;
pub(super) use super::*;
pub(super) use crate::wire::DecodeError;
pub(super) use bytes::Bytes;

mod cluster;
mod gossip;
mod leases;
mod members;
mod net;
mod remotes;
mod sessions;
mod views;

pub(super) fn t0() -> Instant {
    Instant::now()
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn client(n: u8) -> ClientId {
    ClientId(u64::from(n))
}

pub(super) fn engine(node_id: u64, timeout_ms: u64) -> Engine {
    Engine::new(EngineConfig {
        node_id,
        server_timeout: ms(timeout_ms),
        ..EngineConfig::default()
    })
}

pub(super) fn engine_with_timeout(timeout_ms: u64) -> Engine {
    engine(1, timeout_ms)
}

/// Connects remote `r` to a server of ours: it answers the PING after our HELLO with a hailed
/// PONG, which starts our resync to it (stamped, since it hailed).
pub(super) fn connect_ours(e: &mut Engine, now: Instant, r: RemoteId) {
    e.handle_remote_connected(now, r);
    e.handle_remote_message(now, r, Message::Pong(hail_of(2)));
}

/// Everything the engine asked for, resyncs sent whole (as the actor does for inproc peers).
pub(super) fn drain(engine: &mut Engine) -> Vec<Output> {
    engine.finish_resyncs();
    std::iter::from_fn(|| engine.poll_output().map(Output::decoded)).collect()
}

/// A message as a short string: `PUBLISH k=v`, `PUBLISH k=v ttl=100`, `PUBLISH k withdrawn`,
/// `HELLO`, `PING bye`...
pub(super) fn summary(message: &Message) -> String {
    let control = |name: &str, hail: &Option<Hail>| match hail {
        Some(Hail { goodbye: true, .. }) => format!("{name} bye"),
        _ => name.to_owned(),
    };
    match message {
        Message::Hello(hail) => control("HELLO", hail),
        Message::Ping(hail) => control("PING", hail),
        Message::Pong(hail) => control("PONG", hail),
        Message::Invalid => "INVALID".into(),
        Message::Batch(entries) => format!("BATCH of {}", entries.len()),
        Message::Publish(p) => {
            let stamp = p.stamp().unwrap().unwrap_or_default();
            let mut text = if stamp.withdrawn {
                format!("PUBLISH {} withdrawn", p.key)
            } else {
                format!("PUBLISH {}={}", p.key, p.value)
            };
            if p.ttl_ms > 0 && !stamp.withdrawn {
                text.push_str(&format!(" ttl={}", p.ttl_ms));
            }
            text
        }
        Message::Members(records) => {
            let records: Vec<String> = records
                .iter()
                .map(|r| format!("{}:{}@{}", r.id, r.state.name(), r.incarnation))
                .collect();
            format!("MEMBERS {}", records.join(" "))
        }
        Message::Probe(p) if p.answer => format!("PROBE {} answer failed={}", p.target, p.failed),
        Message::Probe(p) => format!("PROBE {}", p.target),
        other => other.id().name().to_owned(),
    }
}

pub(super) fn to_client(outputs: &[Output], who: &ClientId) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToClient(c, m) if c == who => Some(summary(m)),
            _ => None,
        })
        .collect()
}

pub(super) fn to_remote(outputs: &[Output], who: RemoteId) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToRemote(r, m) if *r == who => Some(summary(m)),
            _ => None,
        })
        .collect()
}

/// The application events, as pipe-like lines (peer events left out).
pub(super) fn told(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Deliver { key, value }) => Some(format!("DELIVER {key} {value}")),
            Output::Event(Event::Change { key, value }) => Some(format!("CHANGE {key} {value}")),
            Output::Event(Event::Remove { key }) => Some(format!("REMOVE {key}")),
            Output::Event(Event::Expire { key, .. }) => Some(format!("EXPIRE {key}")),
            _ => None,
        })
        .collect()
}

pub(super) fn peer_events(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Peer { peer, state, .. }) => Some(format!("{peer} {state}")),
            _ => None,
        })
        .collect()
}

pub(super) fn plain(key: &str, value: &str) -> Message {
    Message::Publish(Publish::new(key, value))
}

pub(super) fn stamped(
    key: &str,
    value: &str,
    ttl_ms: u32,
    version: u64,
    origin: u64,
    lease_seq: u32,
) -> Message {
    let stamp = Stamp {
        version,
        origin,
        lease_seq,
        withdrawn: false,
    };
    Message::Publish(Publish::stamped(key, value, ttl_ms, &stamp))
}

pub(super) fn hello() -> Message {
    Message::Hello(None)
}

/// What the engine queued, without finishing resyncs.
pub(super) fn drain_outputs(engine: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| engine.poll_output().map(Output::decoded)).collect()
}

pub(super) fn hail_of(node: u64) -> Option<Hail> {
    Some(Hail {
        node,
        ..Hail::default()
    })
}

/// How many HELLOs went to remote `r`.
pub(super) fn hellos(outputs: &[Output], r: RemoteId) -> usize {
    to_remote(outputs, r)
        .iter()
        .filter(|m| *m == "HELLO")
        .count()
}

pub(super) fn pong_with_digest(digest: u64) -> Message {
    Message::Pong(Some(Hail {
        digest: Some(digest),
        ..hail_of(2).unwrap()
    }))
}

// ---- BATCH (§7) ----

pub(super) fn batch(entries: &[Message]) -> Message {
    let entries = entries
        .iter()
        .map(|m| match m {
            Message::Publish(p) => p.clone(),
            other => panic!("not a PUBLISH: {other:?}"),
        })
        .collect();
    Message::Batch(entries)
}

/// Hands what `from` says to its remote 0 to `to` as client 1's messages.
pub(super) fn pass(from: &mut Engine, to: &mut Engine, now: Instant) {
    for output in drain(from) {
        if let Output::ToRemote(RemoteId(0), message) = output {
            to.handle_client_message(now, client(1), message);
        }
    }
}

/// The seed a harness scenario draws from: `ZGOSSIP_SIM_SEED` if set, else `default`. Printed,
/// so a failure can be replayed exactly.
fn sim_seed(default: u64) -> u64 {
    let seed = std::env::var("ZGOSSIP_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("seed {seed} (ZGOSSIP_SIM_SEED={seed} repeats it)");
    seed
}
