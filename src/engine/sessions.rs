//! The server role: one session per client of our listeners. HELLO starts a session and its
//! resync, PING gets PONG, silence expires a session, and a full house makes room for a client
//! that talks.

use super::*;

/// How long an expired session is remembered, in server timeouts. A client we expired that
/// later PINGs is told INVALID (so it says HELLO and resyncs) instead of getting a PONG that
/// would hide the tuples it missed.
pub(super) const EXPIRED_MEMORY_TIMEOUTS: u32 = 30;

impl Engine {
    /// How many client sessions are connected (said HELLO and not expired).
    pub fn connected_sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.state == SessionState::Connected)
            .count()
    }

    /// Whether this client hailed, so is one of ours and reads BATCH (§7).
    pub fn client_reads_batches(&self, client: &ClientId) -> bool {
        self.sessions.get(client).is_some_and(|s| s.node.is_some())
    }

    /// A message arrived from a client of our listener.
    pub fn handle_client_message(&mut self, now: Instant, client: ClientId, message: Message) {
        let state = match self.sessions.get_mut(&client) {
            Some(session) => {
                session.last_heard = now;
                session.state
            }
            None => {
                if !self.open_session(now, &client) {
                    return;
                }
                SessionState::Start
            }
        };
        if let Message::Hello(Some(hail)) | Message::Ping(Some(hail)) = &message
            && let Some(session) = self.sessions.get_mut(&client)
        {
            session.node = Some(hail.node);
        }
        if state == SessionState::Connected {
            self.heard_from_client(&client);
        }
        match (state, message) {
            (SessionState::Connected, Message::Ping(Some(Hail { goodbye: true, .. }))) => {
                // A goodbye ends the session it came on and nothing else: when another session
                // claims the same node, this one is named by its connection, not the node.
                if let Some(session) = self.sessions.swap_remove(&client) {
                    let claimed = session.node.is_some_and(|node| {
                        self.sessions
                            .values()
                            .any(|s| s.node == Some(node) && s.state == SessionState::Connected)
                    });
                    let name = if claimed {
                        client.to_string()
                    } else {
                        session.name(&client)
                    };
                    self.peer_event(name, PeerState::Left, "goodbye");
                }
            }
            (SessionState::Expired { .. }, Message::Ping(_)) => {
                // The client thinks it is still connected; make it say HELLO and resync.
                self.remind(client, true);
            }
            // The PONG answers after the resync: a client takes it as "the resync is in".
            (_, Message::Ping(hail)) if self.resyncing(&Peer::Client(client.clone())) => {
                if let Some(session) = self.sessions.get_mut(&client) {
                    session.pongs_owed = (session.pongs_owed + 1).min(peers::MAX_PONGS_OWED);
                    session.pong_hailed = hail.is_some();
                }
            }
            (_, Message::Ping(hail)) => {
                let hail = hail.map(|_| Hail {
                    digest: Some(self.store.digest()),
                    ..self.hail()
                });
                self.send_to_client(client, Message::Pong(hail));
            }
            // HELLO again on a connected session: our client found our stores differ (§7).
            (_, Message::Hello(hail)) => {
                let digest = hail.and_then(|h| h.digest);
                self.on_hello(now, client, digest);
            }
            (SessionState::Connected, Message::Publish(publish)) => {
                self.on_publish(now, Origin::Client(client), publish)
            }
            (SessionState::Expired { .. }, Message::Publish(publish)) => {
                // A client we expired (CZMQ's never PINGs) publishing: it said HELLO before, so
                // keep the tuple rather than lose it, then make it resync.
                self.on_publish(now, Origin::Client(client.clone()), publish);
                self.remind(client, false);
            }
            (SessionState::Connected | SessionState::Expired { .. }, Message::Batch(entries)) => {
                self.stats.batches_received += 1;
                let expired = state != SessionState::Connected;
                for publish in entries {
                    // A bad entry ends the session: the rest of the batch goes with it.
                    if !self.sessions.contains_key(&client) {
                        break;
                    }
                    self.on_publish(now, Origin::Client(client.clone()), publish);
                }
                if expired {
                    self.remind(client, false);
                }
            }
            (SessionState::Connected, message) if message.is_membership() => {
                match self.sessions.get(&client).and_then(|s| s.node) {
                    Some(_) => self.on_member_message(now, Peer::Client(client), message),
                    None => {
                        self.refuse(client, "membership message on a session that never hailed")
                    }
                }
            }
            (_, other) => {
                let why = format!("{} does not fit the session", other.id().name());
                self.refuse(client, &why);
            }
        }
    }

    /// A client sent bytes that are not a ZGP message: that session ends, nothing else changes.
    pub fn handle_client_malformed(
        &mut self,
        now: Instant,
        client: ClientId,
        error: &dyn std::fmt::Display,
    ) {
        self.stats.malformed += 1;
        if self.warnings.allow(now, "malformed", &client) {
            warn!(%client, %error, "malformed message from a client; ending its session");
        }
        self.refuse(client, "malformed message");
    }

    /// The transport saw this client go away.
    pub fn handle_client_gone(&mut self, now: Instant, client: &ClientId) {
        self.cancel_resync(&Peer::Client(client.clone()));
        if let Some(session) = self.sessions.swap_remove(client)
            && session.state == SessionState::Connected
        {
            self.peer_event(session.name(client), PeerState::Dead, "connection closed");
            self.links_changed(now);
        }
    }

    /// The transport could not queue a message for this client: it missed tuples, so it stops
    /// being forwarded to until it resyncs.
    pub fn handle_client_overflow(&mut self, now: Instant, client: &ClientId) {
        if let Some(session) = self.sessions.get_mut(client)
            && session.state == SessionState::Connected
        {
            if self.warnings.allow(now, "not reading", client) {
                warn!(%client, "client is not reading; dropping its session until it resyncs");
            }
            self.stats.overflows += 1;
            session.state = SessionState::Expired { since: now };
            session.pongs_owed = 0;
            let name = session.name(client);
            self.peer_event(name, PeerState::Dead, "not reading");
            self.cancel_resync(&Peer::Client(client.clone()));
            self.links_changed(now);
        }
    }

    /// The transport vouches that the client is there; see
    /// [`Engine::handle_remote_reachable`].
    pub fn handle_client_reachable(&mut self, now: Instant, client: &ClientId) {
        if let Some(session) = self.sessions.get_mut(client)
            && session.state == SessionState::Connected
        {
            session.last_heard = session.last_heard.max(now);
        }
    }

    pub(super) fn check_sessions(&mut self, now: Instant) {
        let timeout = self.config.server_timeout;
        let suspect_after = self.config.suspect_after();
        let forget_after = timeout * EXPIRED_MEMORY_TIMEOUTS;
        let mut events = Vec::new();
        let mut expired = 0;
        let mut ended = Vec::new();
        self.sessions.retain(|client, session| {
            let silent = now.duration_since(session.last_heard);
            match session.state {
                SessionState::Expired { since } => now.duration_since(since) < forget_after,
                SessionState::Start => silent < timeout,
                SessionState::Connected if silent >= timeout => {
                    debug!(%client, "client session expired");
                    session.state = SessionState::Expired { since: now };
                    session.pongs_owed = 0;
                    expired += 1;
                    ended.push(client.clone());
                    // A client that never hailed (CZMQ's) never PINGs: its silence says
                    // nothing about whether it is alive, only that its session ended.
                    let state = if session.node.is_some() {
                        PeerState::Dead
                    } else {
                        PeerState::Expired
                    };
                    events.push((session.name(client), state, "session expired".to_owned()));
                    true
                }
                SessionState::Connected => {
                    if silent >= suspect_after
                        && session.liveness == PeerState::Alive
                        && session.node.is_some()
                    {
                        session.liveness = PeerState::Suspect;
                        let reason = format!("silent for {}ms", silent.as_millis());
                        events.push((session.name(client), PeerState::Suspect, reason));
                    }
                    true
                }
            }
        });
        self.stats.sessions_expired += expired;
        if !ended.is_empty() {
            self.links_changed(now);
        }
        for client in ended {
            self.cancel_resync(&Peer::Client(client));
        }
        for (peer, state, reason) in events {
            self.peer_event(peer, state, &reason);
        }
    }

    pub(super) fn open_session(&mut self, now: Instant, client: &ClientId) -> bool {
        if self.sessions.len() >= self.config.max_sessions {
            // An expired session is only remembered to give a better answer; make room from those.
            let expired = self
                .sessions
                .iter()
                .find(|(_, s)| matches!(s.state, SessionState::Expired { .. }));
            if let Some(old) = expired.map(|(c, _)| c.clone()) {
                self.sessions.swap_remove(&old);
            }
        }
        if self.sessions.len() >= self.config.max_sessions {
            self.evict_for_a_newcomer(now);
        }
        if self.sessions.len() >= self.config.max_sessions {
            self.stats.sessions_refused += 1;
            if self.warnings.allow(now, "too many sessions", client) {
                warn!(%client, max = self.config.max_sessions, "too many client sessions; ignoring a new client");
            }
            return false;
        }
        self.sessions.insert(client.clone(), Session::new(now));
        self.schedule_at(now + self.config.server_timeout);
        true
    }

    /// Makes room for a new client when every session is taken: the one that has waited
    /// longest without saying HELLO, else the connected one silent longest, if it has been
    /// silent long enough to be suspect. A flood of connections that never talk cannot keep
    /// out a client that does; clients that keep talking are never evicted.
    pub(super) fn evict_for_a_newcomer(&mut self, now: Instant) {
        let suspect_after = self.config.suspect_after();
        let mute = self
            .sessions
            .iter()
            .filter(|(_, s)| s.state == SessionState::Start)
            .min_by_key(|(_, s)| s.last_heard);
        let silent = || {
            self.sessions
                .iter()
                .filter(|(_, s)| s.state == SessionState::Connected)
                .filter(|(_, s)| now.saturating_duration_since(s.last_heard) >= suspect_after)
                .min_by_key(|(_, s)| s.last_heard)
        };
        let Some(victim) = mute.or_else(silent).map(|(c, _)| c.clone()) else {
            return;
        };
        self.stats.sessions_evicted += 1;
        self.cancel_resync(&Peer::Client(victim.clone()));
        if let Some(session) = self.sessions.swap_remove(&victim)
            && session.state == SessionState::Connected
        {
            self.peer_event(
                session.name(&victim),
                PeerState::Dead,
                "evicted for a new client",
            );
        }
    }

    pub(super) fn heard_from_client(&mut self, client: &ClientId) {
        if let Some(session) = self.sessions.get_mut(client)
            && session.liveness == PeerState::Suspect
        {
            session.liveness = PeerState::Alive;
            let name = session.name(client);
            self.peer_event(name, PeerState::Alive, "heard again");
        }
    }

    /// A HELLO: the client is owed our store, unless its `digest` says it holds the same.
    pub(super) fn on_hello(&mut self, now: Instant, client: ClientId, digest: Option<u64>) {
        let peer = Peer::Client(client.clone());
        let resyncing = self.resyncs.contains_key(&peer);
        let gap = self.config.server_timeout;
        let Some(session) = self.sessions.get_mut(&client) else {
            return;
        };
        // One resync at a time per session, and none sooner than a server timeout after the
        // last: an honest client says HELLO again only after a digest mismatch that lasted
        // longer than that, while each HELLO costs us the whole store.
        let recent = session.last_resync.is_some_and(|at| now < at + gap);
        if session.state == SessionState::Connected && (resyncing || recent) {
            self.stats.hellos_limited += 1;
            debug!(%client, resyncing, "HELLO again too soon; no new resync");
            return;
        }
        session.last_resync = Some(now);
        let known =
            session.state == SessionState::Connected && session.liveness == PeerState::Alive;
        session.reminded = false;
        session.state = SessionState::Connected;
        session.last_heard = now;
        session.liveness = PeerState::Alive;
        let name = session.name(&client);
        if !known {
            self.peer_event(name, PeerState::Alive, "hello");
        }
        self.schedule_at(now + self.config.suspect_after());
        if digest.is_some_and(|d| d == self.store.digest()) {
            // The same tuples on both sides (a view's dial between members in step): what
            // changes from now on comes as gossip.
            self.stats.resyncs_skipped += 1;
        } else {
            self.start_resync(now, peer);
        }
        if !known && let Some(node) = self.sessions.get(&client).and_then(|s| s.node) {
            self.on_member_link(now, Peer::Client(client), node);
        }
    }

    pub(super) fn send_to_client(&mut self, client: ClientId, message: Message) {
        self.outputs.push_back(Output::ToClient(client, message));
    }

    /// Replies INVALID and ends the session.
    /// A session we expired talks as if it were connected: INVALID tells it to say HELLO. The
    /// session stays (expired), so what it publishes until then is kept; after the first
    /// INVALID only its PINGs get another. A busy client's every refresh answered with INVALID
    /// would be a storm, and a fresh session in its place would drop those refreshes.
    pub(super) fn remind(&mut self, client: ClientId, ping: bool) {
        let Some(session) = self.sessions.get_mut(&client) else {
            return;
        };
        if session.reminded && !ping {
            return;
        }
        session.reminded = true;
        debug!(%client, "INVALID to an expired session");
        self.stats.invalid_sent += 1;
        self.outputs
            .push_back(Output::ToClient(client, Message::Invalid));
    }

    pub(super) fn refuse(&mut self, client: ClientId, why: &str) {
        debug!(%client, why, "INVALID");
        self.cancel_resync(&Peer::Client(client.clone()));
        self.stats.invalid_sent += 1;
        if let Some(session) = self.sessions.swap_remove(&client)
            && session.state == SessionState::Connected
        {
            self.peer_event(session.name(&client), PeerState::Dead, why);
        }
        self.outputs
            .push_back(Output::ToClient(client, Message::Invalid));
    }
}
