//! Resyncs, streamed: a peer that says HELLO (or a server we say HELLO to) is owed every shared
//! copy, and a large store is megabytes of it. Building it all at once let a 16-byte HELLO put
//! a whole store in a queue, again for every HELLO; here a resync is a cursor into the store's
//! key order, and the actor asks for the next slice when the peer's queue has room
//! ([`Engine::resync_step`]). A slice is the copies as they are when it is sent, so copies
//! forwarded meanwhile and later slices agree: the receiver keeps the greatest of each.

use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::peers::SessionState;
use super::{ClientId, Engine, Kind, Output, RemoteId};
use crate::wire::{Hail, Message, Publish};

/// A peer of either role: a client of our listener or one of our remotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A client session.
    Client(ClientId),
    /// A remote.
    Remote(RemoteId),
}

/// Where a peer's resync has got to.
#[derive(Debug)]
pub(super) struct Resync {
    /// The last key sent; `None` before the first slice.
    after: Option<Arc<str>>,
    /// When it started: engine tests finish resyncs as of then.
    #[cfg_attr(not(test), allow(dead_code))]
    since: Instant,
}

/// Bytes a copy is counted as in a slice, beside its key and value: the PUBLISH header, the
/// stamp, and a BATCH entry's prefix.
const COPY_OVERHEAD: usize = 48;

impl Engine {
    /// Peers with a resync under way, in the order they started.
    pub fn resyncs(&self) -> Vec<Peer> {
        self.resyncs.keys().cloned().collect()
    }

    /// Whether any resync is under way.
    pub fn has_resyncs(&self) -> bool {
        !self.resyncs.is_empty()
    }

    /// Queues the next slice of `peer`'s resync, about `max_bytes` of copies (`usize::MAX`:
    /// the rest at once). Returns whether the resync is over (or was not under way); at its
    /// end, a session that PINGed meanwhile gets its PONG, which a client takes to mean the
    /// resync is in.
    pub fn resync_step(&mut self, now: Instant, peer: &Peer, max_bytes: usize) -> bool {
        let Some(resync) = self.resyncs.get(peer) else {
            return true;
        };
        let wanted = match peer {
            Peer::Client(client) => self
                .sessions
                .get(client)
                .is_some_and(|s| s.state == SessionState::Connected),
            Peer::Remote(id) => self.remotes.get(id).is_some_and(|r| r.connected),
        };
        if !wanted {
            self.resyncs.shift_remove(peer);
            return true;
        }
        // A peer that never hailed (CZMQ's) gets plain v1: no stamps, no withdrawals.
        let hailed = match peer {
            Peer::Client(client) => self.client_reads_batches(client),
            Peer::Remote(id) => self.remote_reads_batches(*id),
        };
        let mut bytes = 0;
        let mut slice = Vec::new();
        let mut done = true;
        let mut last = None;
        for (key, entry) in self.store.shared_after(resync.after.as_deref()) {
            last = Some(key);
            if !hailed && entry.kind == Kind::Withdrawn {
                continue;
            }
            bytes += key.len() + entry.value.len() + COPY_OVERHEAD;
            let ttl_ms = entry.ttl_ms(now);
            slice.push(if hailed {
                Publish::stamped(
                    Arc::clone(key),
                    Arc::clone(&entry.value),
                    ttl_ms,
                    &entry.stamp,
                )
            } else {
                Publish {
                    ttl_ms,
                    ..Publish::new(Arc::clone(key), Arc::clone(&entry.value))
                }
            });
            if bytes >= max_bytes {
                done = false;
                break;
            }
        }
        let last = last.map(Arc::clone);
        self.stats.publish_sent += slice.len() as u64;
        for publish in slice {
            let message = Message::Publish(publish);
            self.outputs.push_back(match peer {
                Peer::Client(client) => Output::ToClient(client.clone(), message),
                Peer::Remote(id) => Output::ToRemote(*id, message),
            });
        }
        if !done {
            if let Some(resync) = self.resyncs.get_mut(peer) {
                resync.after = last;
            }
            return false;
        }
        self.resyncs.shift_remove(peer);
        self.end_resync(peer);
        true
    }

    /// Starts (or starts over) a resync to `peer`.
    pub(super) fn start_resync(&mut self, now: Instant, peer: Peer) {
        self.resyncs.insert(
            peer,
            Resync {
                after: None,
                since: now,
            },
        );
    }

    /// Drops `peer`'s resync, if any: it went away, or no longer gets copies.
    pub(super) fn cancel_resync(&mut self, peer: &Peer) {
        self.resyncs.shift_remove(peer);
    }

    /// Whether a resync to `peer` is under way.
    pub(super) fn resyncing(&self, peer: &Peer) -> bool {
        self.resyncs.contains_key(peer)
    }

    fn end_resync(&mut self, peer: &Peer) {
        match peer {
            Peer::Client(client) => {
                let Some(session) = self.sessions.get_mut(client) else {
                    return;
                };
                let owed = std::mem::take(&mut session.pongs_owed);
                let hail = session.pong_hailed.then(|| Hail {
                    digest: Some(self.store.digest()),
                    ..self.hail()
                });
                for _ in 0..owed {
                    self.outputs
                        .push_back(Output::ToClient(client.clone(), Message::Pong(hail)));
                }
            }
            Peer::Remote(id) => debug!(remote = id.0, "resync sent"),
        }
    }

    /// Finishes every resync under way as of when each started (engine tests).
    #[cfg(test)]
    pub(super) fn finish_resyncs(&mut self) {
        while let Some((peer, resync)) = self.resyncs.first() {
            let (peer, since) = (peer.clone(), resync.since);
            self.resync_step(since, &peer, usize::MAX);
        }
    }
}
