//! Time: the next deadline, and what falls due at it (PINGs, HELLOs held back, lease refreshes
//! and ends, silent sessions and remotes).

use super::remotes::NO_ANSWER;
use super::sessions::EXPIRED_MEMORY_TIMEOUTS;
use super::*;

impl Engine {
    /// When [`Engine::handle_timeout`] next has work. It may be called earlier or later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_deadline,
            self.store.next_end(),
            self.store.next_refresh(),
            self.cluster.as_ref().and_then(|c| c.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When something we send on a clock (a PING, a held-back HELLO, a lease refresh) is next due: the part of
    /// [`Engine::poll_timeout`] that must not wait behind a backlog of input.
    pub fn poll_outbound_timeout(&self) -> Option<Instant> {
        let ping_interval = self.config.ping_interval();
        let pings = self
            .remotes
            .values()
            .filter(|r| r.connected)
            .map(|r| r.last_sent + ping_interval);
        let hellos = self.remotes.values().filter_map(|r| r.hello_due);
        pings.chain(hellos).chain(self.store.next_refresh()).min()
    }

    /// Sends the PINGs and lease refreshes that are due, and judges nothing: the actor calls
    /// this while input is still queued, since a peer whose messages we have not read yet is
    /// not silent. [`Engine::handle_timeout`] does this and the rest once the input is read.
    pub fn handle_outbound_timeout(&mut self, now: Instant) {
        let ping_interval = self.config.ping_interval();
        let hail = self.hail();
        for (&id, remote) in &mut self.remotes {
            if remote.connected && now.duration_since(remote.last_sent) >= ping_interval {
                remote.last_sent = now;
                // A server that answered without a hail is CZMQ's: plain v1 from then on.
                let cz = remote.synced && remote.node.is_none();
                let ping = Message::Ping((!cz).then_some(hail));
                self.outputs.push_back(Output::ToRemote(id, ping));
            }
        }
        while let Some(key) = self.store.pop_refresh(now) {
            self.refresh(now, key);
        }
        let ids: Vec<RemoteId> = self.remotes.keys().copied().collect();
        for id in ids {
            let Some(remote) = self.remotes.get_mut(&id) else {
                continue;
            };
            if remote.hello_due.is_some_and(|at| at <= now) {
                remote.hello_due = None;
                if remote.connected {
                    self.send_hello(now, id);
                }
            }
        }
    }

    /// Expires silent sessions and leases, forgets old tombstones, refreshes our leases,
    /// redials silent remotes and sends due PINGs.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(due) = self.poll_timeout() {
            self.note_lateness(now.saturating_duration_since(due));
        }
        self.handle_outbound_timeout(now);
        self.check_sessions(now);
        self.check_remotes(now);
        while let Some(key) = self.store.pop_ended(now) {
            self.on_end(now, key);
        }
        self.cluster_timeout(now);
        self.warnings.flush(now);
        self.schedule(now);
    }

    /// Recomputes the earliest session and remote deadline.
    pub(super) fn schedule(&mut self, now: Instant) {
        let timeout = self.config.server_timeout;
        let suspect_after = self.config.suspect_after();
        let forget_after = timeout * EXPIRED_MEMORY_TIMEOUTS;
        let ping_interval = self.config.ping_interval();
        let suspect = |last_heard: Instant, liveness: PeerState| {
            if liveness == PeerState::Alive {
                last_heard + suspect_after
            } else {
                last_heard + timeout
            }
        };
        let sessions = self.sessions.values().map(|s| match s.state {
            SessionState::Expired { since } => since + forget_after,
            SessionState::Start => s.last_heard + timeout,
            // A client that never hailed is never suspected (it may never PING): only expired.
            SessionState::Connected if s.node.is_none() => s.last_heard + timeout,
            SessionState::Connected => suspect(s.last_heard, s.liveness),
        });
        let remotes = self.remotes.values().filter(|r| r.connected).map(|r| {
            // Nothing is judged while our HELLO is held back (`check_remotes`): its due time
            // is the next look, not a silence that would fall due at once, for ever.
            let judged = r
                .hello_due
                .unwrap_or_else(|| suspect(r.last_heard, r.liveness));
            judged.min(r.last_sent + ping_interval)
        });
        let unanswered = (self.remotes.values())
            .filter(|r| !r.connected && r.failure_told.is_none())
            .map(|r| r.last_heard + NO_ANSWER);
        self.next_deadline = sessions
            .chain(remotes)
            .chain(unanswered)
            .min()
            .map(|at| at.max(now));
    }

    /// Moves the deadline earlier if `at` comes first.
    pub(super) fn schedule_at(&mut self, at: Instant) {
        self.next_deadline = Some(self.next_deadline.map_or(at, |d| d.min(at)));
    }
}
