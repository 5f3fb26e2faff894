//! The client role: one remote per CONNECT. It says HELLO and resyncs on every connect, PINGs,
//! redials a silent server, backs off a server that keeps saying INVALID, and compares store
//! digests to repair lost copies.

use super::*;

/// The longest a remote holds back its HELLO after repeated INVALIDs.
const MAX_HELLO_BACKOFF: Duration = Duration::from_secs(30);

/// How long a HELLO is held back after `doublings` failures in a row: `base` doubled that many
/// times, at most [`MAX_HELLO_BACKOFF`]. Shared by INVALID streaks and silent redials.
fn hello_backoff(base: Duration, doublings: u32) -> Duration {
    base.saturating_mul(1 << doublings.min(16))
        .min(MAX_HELLO_BACKOFF)
}

/// PONGs in a row whose digest differs from ours, the same way each time, before a remote
/// resyncs: a difference that stays while neither store changes is a copy that went missing.
const DIGEST_PATIENCE: u32 = 3;

/// The longest wait between digest resyncs of one remote while the stores keep differing (as
/// they do for good when the nodes' limits differ).
const MAX_DIGEST_BACKOFF: Duration = Duration::from_secs(600);

/// A remote that has not connected for this long, while the transport reported no failure (an
/// address where nothing answers, so the connection attempt hangs), is told as dead, once.
pub const NO_ANSWER: Duration = Duration::from_secs(5);

/// A CONNECT past `max_remotes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many remotes (at most {max})")]
pub struct TooManyRemotes {
    /// The limit.
    pub max: usize,
}

impl Engine {
    /// How many remotes the user's CONNECTs made, and how many of them are connected. The
    /// views' own dials and probes come and go by the second, and are not counted: a STATUS
    /// that says `remotes=2` means the two CONNECTs.
    pub fn remotes(&self) -> (usize, usize) {
        let pinned = || self.remotes.values().filter(|r| r.pinned);
        (pinned().count(), pinned().filter(|r| r.connected).count())
    }

    /// How many of the CONNECTs' remotes are connected and have the server's resync in (a PONG
    /// came after our last HELLO).
    pub fn remotes_synced(&self) -> usize {
        (self.remotes.values())
            .filter(|r| r.pinned && r.connected && r.synced)
            .count()
    }

    /// The endpoint a remote was created for.
    pub fn remote_endpoint(&self, id: RemoteId) -> Option<&str> {
        self.remotes.get(&id).map(|r| r.endpoint.as_str())
    }

    /// Whether this remote's server hailed back, so is one of ours and reads BATCH (§7).
    pub fn remote_reads_batches(&self, id: RemoteId) -> bool {
        self.remotes.get(&id).is_some_and(|r| r.node.is_some())
    }

    /// A new outbound connection; the transport dials it and reports when it is connected.
    /// Refused past `max_remotes`.
    pub fn add_remote(&mut self, now: Instant, endpoint: &str) -> Result<RemoteId, TooManyRemotes> {
        let pinned = self.remotes.values().filter(|r| r.pinned).count();
        if pinned >= self.config.max_remotes {
            self.stats.remotes_refused += 1;
            warn!(
                max = self.config.max_remotes,
                endpoint, "too many remotes; refusing a CONNECT"
            );
            return Err(TooManyRemotes {
                max: self.config.max_remotes,
            });
        }
        let id = self.new_remote(now, endpoint, true);
        Ok(id)
    }

    /// A new remote: a CONNECT (`pinned`) or a dial of the views.
    pub(super) fn new_remote(&mut self, now: Instant, endpoint: &str, pinned: bool) -> RemoteId {
        let id = RemoteId(self.next_remote);
        self.next_remote = self.next_remote.wrapping_add(1);
        self.remotes.insert(id, Remote::new(now, endpoint, pinned));
        self.schedule_at(now + NO_ANSWER);
        id
    }

    /// Closes a remote the views dialled, for good: on purpose, so its member is no longer
    /// watched through it.
    pub(super) fn close_remote(&mut self, id: RemoteId, why: &str) {
        if let (Some(node), Some(cluster)) = (
            self.remotes.get(&id).and_then(|r| r.node),
            &mut self.cluster,
        ) {
            cluster.unwatch(node);
        }
        self.close_lost_remote(id, why);
    }

    /// Closes a remote whose link was lost (it went silent, or disconnected): its member stays
    /// watched, so it is probed once the grace for an unheard member runs out. Closed as if on
    /// purpose, a dead active peer would be left to the probe round: after a mass failure one
    /// dead member in ten waited seconds for it.
    pub(super) fn close_lost_remote(&mut self, id: RemoteId, why: &str) {
        let Some(remote) = self.remotes.shift_remove(&id) else {
            return;
        };
        debug!(endpoint = %remote.endpoint, why, "closing a link");
        self.cancel_resync(&Peer::Remote(id));
        if remote.liveness == PeerState::Alive || remote.liveness == PeerState::Suspect {
            self.peer_event(remote.endpoint, PeerState::Left, why);
        }
        self.outputs.push_back(Output::Close(id));
    }

    /// A link went away: the views look again at once.
    pub(super) fn links_changed(&mut self, now: Instant) {
        if let Some(cluster) = &mut self.cluster {
            cluster.views_changed(now);
            self.schedule_at(now);
        }
    }

    /// A remote's server was not reading and its connection was dropped (the transport
    /// redials it): counted, and the remote is disconnected.
    pub fn handle_remote_overflow(&mut self, now: Instant, id: RemoteId) {
        self.stats.overflows += 1;
        self.handle_remote_disconnected(now, id);
    }

    /// A remote completed its connection (first time or after a reconnect): say HELLO and
    /// republish everything, so a restarted peer has our tuples back at once.
    pub fn handle_remote_connected(&mut self, now: Instant, id: RemoteId) {
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        debug!(endpoint = %remote.endpoint, "remote connected");
        if remote.failures > 0 {
            info!(endpoint = %remote.endpoint, attempts = remote.failures, "reached the peer");
        }
        remote.failures = 0;
        remote.failure_told = None;
        remote.connected = true;
        if remote.probe.is_some() {
            // A probe asks for a PONG, which names the node, and no session: no resync.
            remote.last_sent = now;
            remote.last_heard = now;
            let ping = Message::Ping(Some(self.hail()));
            self.outputs.push_back(Output::ToRemote(id, ping));
            return;
        }
        remote.last_heard = now;
        remote.hello_due = None;
        // Whoever answers now may not be the node that hailed before: no BATCH until it hails.
        remote.node = None;
        // A server that went silent again right after a redial (one that accepts connections
        // but never answers, or one across a partition): each HELLO with our whole store goes
        // nowhere, so they come further apart.
        let held_back = match remote.silent_redials {
            0 | 1 => None,
            n => Some(hello_backoff(self.config.ping_interval(), n - 2)),
        };
        remote.hello_due = held_back.map(|wait| now + wait);
        // After a silence, a connection is not an answer: the server stays dead until it talks.
        let answer_pending = remote.silent_redials > 0;
        let endpoint = remote.endpoint.clone();
        if !answer_pending {
            self.set_remote_state(id, PeerState::Alive, &endpoint, "connected");
        }
        if held_back.is_none() {
            self.send_hello(now, id);
        }
    }

    /// A connection attempt of a remote failed (`cause` says how); the transport retries. The
    /// application hears of it once per cause (a PEER event, dead); the log says so at the
    /// first failure and then at the 2nd, 4th, 8th... in a row, as retries go on for ever.
    pub fn handle_remote_unreachable(&mut self, now: Instant, id: RemoteId, cause: &'static str) {
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        remote.failures = remote.failures.saturating_add(1);
        let endpoint = remote.endpoint.clone();
        if !remote.pinned {
            // A dial of the views or a probe: no point waiting for it.
            let at = now;
            self.links_changed(at);
            if let Some(cluster) = &mut self.cluster
                && let Some(pending) =
                    (cluster.views.pending.values_mut()).find(|p| p.remote == Some(id))
            {
                pending.deadline = at;
            }
            if let Some(cluster) = &mut self.cluster
                && let Some(probe) = cluster.views.probing.get_mut(&id)
            {
                probe.1 = at;
            }
            // The views try elsewhere; the member's fate is the failure detector's to tell.
            if let Some(remote) = self.remotes.get_mut(&id) {
                remote.failure_told = Some(cause);
            }
            debug!(%endpoint, "cannot reach a member: {cause}");
            return;
        }
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        if remote.failures.is_power_of_two() {
            warn!(%endpoint, attempts = remote.failures, "cannot reach a peer: {cause}");
        }
        if remote.failure_told != Some(cause) {
            remote.failure_told = Some(cause);
            remote.liveness = PeerState::Dead;
            self.peer_event(endpoint, PeerState::Dead, cause);
        }
    }

    /// A remote lost its connection; the transport is reconnecting it.
    pub fn handle_remote_disconnected(&mut self, now: Instant, id: RemoteId) {
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        debug!(endpoint = %remote.endpoint, "remote disconnected");
        remote.connected = false;
        let left = remote.liveness == PeerState::Left;
        let endpoint = remote.endpoint.clone();
        let unanswered_at = (remote.last_heard + NO_ANSWER).max(now);
        self.schedule_at(unanswered_at);
        self.cancel_resync(&Peer::Remote(id));
        if !left {
            self.set_remote_state(id, PeerState::Dead, &endpoint, "disconnected");
        }
        self.links_changed(now);
    }

    /// A message arrived through one of our remotes.
    pub fn handle_remote_message(&mut self, now: Instant, id: RemoteId, message: Message) {
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        if let Some(target) = remote.probe {
            if let Message::Pong(Some(hail)) = message {
                self.on_probe_dial_answer(now, id, target, hail.node);
            }
            return;
        }
        remote.last_heard = now;
        if remote.silent_redials > 0 {
            // The server answers after all: no reason to hold back our HELLO any longer.
            remote.silent_redials = 0;
            if remote.hello_due.is_some() && remote.invalid_streak == 0 {
                remote.hello_due = Some(now);
            }
        }
        let endpoint = remote.endpoint.clone();
        if let Message::Pong(_) = &message {
            // Servers answer in order: INVALIDs from now on answer what we sent after HELLO.
            remote.synced = true;
            remote.invalid_since_hello = false;
        }
        if let Message::Pong(Some(hail)) = &message
            && hail.goodbye
        {
            // The server is leaving: this answer neither starts our resync nor makes the link
            // one of ours (a server that stays after all resyncs at its next PONG).
            self.set_remote_state(id, PeerState::Left, &endpoint, "goodbye");
            return;
        }
        let resync_due =
            matches!(message, Message::Pong(_)) && std::mem::take(&mut remote.resync_owed);
        let mut opened = None;
        if let Message::Pong(Some(hail)) = &message {
            if remote.node.is_none() {
                opened = Some(hail.node);
            }
            remote.node = Some(hail.node);
            if let Some(theirs) = hail.digest {
                self.compare_digests(now, id, theirs);
            }
        }
        if matches!(self.remotes.get(&id), Some(r) if r.liveness == PeerState::Suspect || (r.liveness == PeerState::Dead && r.connected))
        {
            self.set_remote_state(id, PeerState::Alive, &endpoint, "heard again");
        }
        if let Some(node) = opened {
            self.on_member_link(now, Peer::Remote(id), node);
        }
        match message {
            Message::Publish(publish) => self.on_publish(now, Origin::Remote(id), publish),
            Message::Batch(entries) => {
                self.stats.batches_received += 1;
                for publish in entries {
                    self.on_publish(now, Origin::Remote(id), publish);
                }
            }
            Message::Invalid => self.on_invalid(now, id),
            // The server's digest after its resync to us is ours: it holds all we hold.
            Message::Pong(Some(hail)) if resync_due && hail.digest == Some(self.store.digest()) => {
                self.stats.resyncs_skipped += 1;
            }
            Message::Pong(_) if resync_due => self.start_resync(now, Peer::Remote(id)),
            // A server that hails only now had our copies in plain v1, without the stamps and
            // withdrawals it reads: it gets them all again, once per connection.
            Message::Pong(_) if opened.is_some() => self.start_resync(now, Peer::Remote(id)),
            Message::Pong(_) => {}
            // Only servers of ours send these (to a client that hailed), and a server's first
            // list may come before the PONG that says it is ours.
            message if message.is_membership() => {
                self.on_member_message(now, Peer::Remote(id), message);
            }
            other => debug!(%endpoint, message = other.id().name(), "ignored from a server"),
        }
    }

    /// The transport vouches that the server is there (in-process: it says when a peer goes
    /// away), so its silence so far is a backlog, not a lost link.
    pub fn handle_remote_reachable(&mut self, now: Instant, id: RemoteId) {
        if let Some(remote) = self.remotes.get_mut(&id)
            && remote.connected
        {
            remote.last_heard = remote.last_heard.max(now);
        }
    }

    /// A PONG carried the server's digest. Stores that stay different while neither changes
    /// lack something (a lost frame, a tuple one side refused): after [`DIGEST_PATIENCE`] such
    /// PONGs, say HELLO again on the same session, which resyncs both ways. Repeats back off.
    pub(super) fn compare_digests(&mut self, now: Instant, id: RemoteId, theirs: u64) {
        // Our resync to the server is still on its way: the stores differ for now.
        if self.resyncing(&Peer::Remote(id)) {
            return;
        }
        let ours = self.store.digest();
        let first_wait = self.config.server_timeout;
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        if ours == theirs {
            remote.digest_mismatch = None;
            remote.digest_backoff = Duration::ZERO;
            return;
        }
        let streak = match remote.digest_mismatch {
            Some((o, t, streak)) if (o, t) == (ours, theirs) => streak.saturating_add(1),
            _ => 1,
        };
        remote.digest_mismatch = Some((ours, theirs, streak));
        if streak < DIGEST_PATIENCE || remote.digest_quiet_until.is_some_and(|at| now < at) {
            return;
        }
        let wait = if remote.digest_backoff.is_zero() {
            first_wait
        } else {
            remote
                .digest_backoff
                .saturating_mul(2)
                .min(MAX_DIGEST_BACKOFF)
        };
        remote.digest_mismatch = None;
        remote.digest_backoff = wait;
        remote.digest_quiet_until = Some(now + wait);
        debug!(endpoint = %remote.endpoint, ours, theirs, "stores differ at rest; resyncing");
        self.stats.digest_resyncs += 1;
        self.send_hello(now, id);
    }

    /// A server sent bytes that are not a ZGP message. Counted; the connection stays.
    pub fn handle_remote_malformed(
        &mut self,
        now: Instant,
        id: RemoteId,
        error: &dyn std::fmt::Display,
    ) {
        self.stats.malformed += 1;
        if self.warnings.allow(now, "malformed", &id.0) {
            warn!(endpoint = self.remote_endpoint(id), %error, "malformed message from a server; ignored");
        }
    }

    pub(super) fn check_remotes(&mut self, now: Instant) {
        let timeout = self.config.server_timeout;
        let suspect_after = self.config.suspect_after();
        let ids: Vec<RemoteId> = self.remotes.keys().copied().collect();
        for id in ids {
            let Some(remote) = self.remotes.get_mut(&id) else {
                continue;
            };
            // Nothing is judged while our HELLO is held back: we have not asked for anything.
            if !remote.connected || remote.hello_due.is_some() {
                continue;
            }
            let silent = now.duration_since(remote.last_heard);
            if silent < suspect_after.min(timeout) {
                continue;
            }
            let endpoint = remote.endpoint.clone();
            if silent >= timeout && !remote.pinned {
                // A dial of the views: the views replace it rather than wait for it.
                debug!(%endpoint, "active peer silent for {timeout:?}; closing");
                self.stats.redials += 1;
                self.close_lost_remote(id, "silent");
                self.links_changed(now);
                continue;
            }
            if silent >= timeout {
                warn!(%endpoint, "remote silent for {timeout:?}; redialling");
                remote.connected = false;
                remote.silent_redials = remote.silent_redials.saturating_add(1);
                self.stats.redials += 1;
                self.outputs.push_back(Output::Redial(id));
                let reason = format!("silent for {}ms", silent.as_millis());
                self.set_remote_state(id, PeerState::Dead, &endpoint, &reason);
                self.links_changed(now);
                continue;
            }
            if silent >= suspect_after && remote.liveness == PeerState::Alive {
                let reason = format!("silent for {}ms", silent.as_millis());
                self.set_remote_state(id, PeerState::Suspect, &endpoint, &reason);
            }
        }
        // After the loop, which may have just found a remote silent and redialled it.
        let unanswered: Vec<RemoteId> = (self.remotes.iter())
            .filter(|(_, r)| !r.connected && r.failure_told.is_none())
            .filter(|(_, r)| now.saturating_duration_since(r.last_heard) >= NO_ANSWER)
            .map(|(id, _)| *id)
            .collect();
        for id in unanswered {
            self.handle_remote_unreachable(now, id, "no answer within 5 s");
        }
    }

    /// The server forgot our session (or refused what we sent): say HELLO again. If INVALIDs
    /// keep coming — a server that refuses something in every resync, say a value over its
    /// frame limit — hold the HELLO back, doubling the wait each time, instead of looping.
    pub(super) fn on_invalid(&mut self, now: Instant, id: RemoteId) {
        let timeout = self.config.server_timeout;
        let base = self.config.ping_interval();
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        // INVALIDs while a HELLO is held back, or before the server has seen the HELLO we
        // sent for an earlier one, answer what we sent before it: one refusal, not many.
        if remote.hello_due.is_some() || remote.invalid_since_hello {
            return;
        }
        remote.invalid_since_hello = true;
        let recent = remote
            .last_invalid
            .is_some_and(|at| now.duration_since(at) < timeout);
        remote.invalid_streak = if recent {
            remote.invalid_streak.saturating_add(1)
        } else {
            0
        };
        remote.last_invalid = Some(now);
        if remote.invalid_streak == 0 {
            debug!(endpoint = %remote.endpoint, "server said INVALID; saying HELLO again");
            self.send_hello(now, id);
            return;
        }
        let wait = hello_backoff(base, remote.invalid_streak);
        warn!(endpoint = %remote.endpoint, ?wait, "server keeps saying INVALID; holding back the next HELLO");
        remote.hello_due = Some(now + wait);
    }

    pub(super) fn send_hello(&mut self, now: Instant, id: RemoteId) {
        if let Some(remote) = self.remotes.get_mut(&id) {
            remote.last_sent = now;
            remote.synced = false;
        }
        let hail = Some(self.hail());
        // With our digest: a server of ours holding the same tuples need not send them.
        let hello = Some(Hail {
            digest: Some(self.store.digest()),
            ..self.hail()
        });
        self.outputs
            .push_back(Output::ToRemote(id, Message::Hello(hello)));
        // The server answers in order: the PONG to this PING comes after its resync to us, and
        // says whether it is one of ours. Our copies follow it, stamped or as plain v1.
        self.outputs
            .push_back(Output::ToRemote(id, Message::Ping(hail)));
        self.cancel_resync(&Peer::Remote(id));
        if let Some(remote) = self.remotes.get_mut(&id) {
            remote.resync_owed = true;
        }
        let ping_interval = self.config.ping_interval();
        self.schedule_at(now + ping_interval);
    }

    pub(super) fn set_remote_state(
        &mut self,
        id: RemoteId,
        state: PeerState,
        endpoint: &str,
        reason: &str,
    ) {
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        if remote.liveness != state {
            remote.liveness = state;
            self.peer_event(endpoint.to_owned(), state, reason);
        }
    }
}
