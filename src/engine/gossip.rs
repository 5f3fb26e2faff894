//! Gossip: our own publishes, withdrawals and lease refreshes, peers' copies judged against the
//! store's rules and limits, and every kept copy forwarded to every other peer (as ZGP v1 to
//! peers that never hailed).

use super::config::{MAX_VERSION, MAX_VERSION_LEAD};
use super::*;

/// The copy for a peer: as made for one that hailed, else its v1 form (if v1 can say it),
/// made once per forward.
fn copy_for<'a>(
    hailed: bool,
    message: &'a Message,
    plain: &'a std::cell::OnceCell<Option<Message>>,
) -> Option<&'a Message> {
    if hailed {
        Some(message)
    } else {
        plain.get_or_init(|| v1_copy(message)).as_ref()
    }
}

/// `message` as ZGP v1 defines it, for a peer that never hailed: a PUBLISH without the bytes
/// after its ttl, and no withdrawal at all (v1 would take one for an empty value). Other
/// messages are unchanged.
fn v1_copy(message: &Message) -> Option<Message> {
    let Message::Publish(publish) = message else {
        return Some(message.clone());
    };
    if matches!(publish.stamp(), Ok(Some(stamp)) if stamp.withdrawn) {
        return None;
    }
    Some(Message::Publish(Publish {
        extension: bytes::Bytes::new(),
        ..publish.clone()
    }))
}

impl Engine {
    /// The application publishes a tuple, with a lease or without (`None` or zero).
    pub fn publish(
        &mut self,
        now: Instant,
        key: &str,
        value: &str,
        lease: Option<Duration>,
    ) -> Result<(), TupleError> {
        validate(key, value, self.config.max_value_bytes)?;
        let lease = lease.filter(|l| !l.is_zero());
        if let Some(lease) = lease
            && u32::try_from(lease.as_millis()).is_err()
        {
            return Err(TupleError::LeaseTooLong { lease });
        }
        let held = self.store.entry(key);
        if let Some(held) = held
            && held.owned()
            && held.kind == Kind::Live
            && *held.value == *value
            && held.lease() == lease
        {
            // The same tuple again: a duplicate, as in CZMQ.
            return Ok(());
        }
        let held = held.map(|h| h.stamp.version);
        let stamp = self.config.own_stamp(now, key, held, false)?;
        let ttl_ms = lease.map_or(0, millis);
        self.apply(
            now,
            Arc::from(key),
            Arc::from(value),
            ttl_ms,
            stamp,
            Origin::App,
        )?;
        Ok(())
    }

    /// The application withdraws a key, everywhere.
    pub fn unpublish(&mut self, now: Instant, key: &str) -> Result<(), TupleError> {
        let Some(held) = self.store.entry(key).filter(|e| e.kind == Kind::Live) else {
            return Err(TupleError::NotHeld {
                key: key.to_owned(),
            });
        };
        let stamp = (self.config).own_stamp(now, key, Some(held.stamp.version), true)?;
        let ttl_ms = millis(self.config.tombstone_ttl).max(1);
        self.apply(
            now,
            Arc::from(key),
            Arc::from(""),
            ttl_ms,
            stamp,
            Origin::App,
        )?;
        Ok(())
    }

    /// A graceful stop: withdraw our own tuples (unless configured not to) and say goodbye to
    /// every peer that will understand it.
    pub fn goodbye(&mut self, now: Instant) {
        self.leave();
        if self.config.withdraw_on_stop {
            for key in self.store.owned() {
                let _ = self.unpublish(now, &key);
            }
        }
        self.views_leave();
        let bye = Some(Hail {
            goodbye: true,
            ..self.hail()
        });
        for (&id, remote) in &self.remotes {
            if remote.connected && remote.node.is_some() {
                self.outputs
                    .push_back(Output::ToRemote(id, Message::Ping(bye)));
            }
        }
        for (client, session) in &self.sessions {
            if session.state == SessionState::Connected && session.node.is_some() {
                self.outputs
                    .push_back(Output::ToClient(client.clone(), Message::Pong(bye)));
            }
        }
    }

    /// Refreshes our lease on `key`: same version, next lease sequence, full lease.
    pub(super) fn refresh(&mut self, now: Instant, key: Arc<str>) {
        let Some(entry) = self.store.entry(&key) else {
            return;
        };
        let Some(lease) = entry.lease() else {
            return;
        };
        let mut refreshed = entry.clone();
        // A refresh must be greater than the copy it refreshes; past the last lease sequence,
        // the next version (same value, so no event anywhere) does it.
        match refreshed.stamp.lease_seq.checked_add(1) {
            Some(next) => refreshed.stamp.lease_seq = next,
            None => {
                refreshed.stamp.version = refreshed.stamp.version.saturating_add(1);
                refreshed.stamp.lease_seq = 0;
            }
        }
        if let Some(own) = refreshed.own.as_mut() {
            own.refresh_at = Some(now + lease / 3);
        }
        let message = Publish::stamped(
            Arc::clone(&key),
            Arc::clone(&refreshed.value),
            millis(lease),
            &refreshed.stamp,
        );
        self.store.put(Arc::clone(&key), refreshed);
        self.stats.refreshes += 1;
        self.forward(&Message::Publish(message), &Origin::App);
    }

    /// The copy of `key` reached its end here: a lease ran out, or a record is forgotten.
    pub(super) fn on_end(&mut self, now: Instant, key: Arc<str>) {
        let Some(entry) = self.store.entry(&key) else {
            return;
        };
        match entry.kind {
            Kind::Live => self.end_tuple(now, key, ExpireReason::LeaseRanOut),
            Kind::Withdrawn | Kind::Expired => {
                self.store.remove(&key);
            }
        }
    }

    /// A tuple in force ends here without a withdrawal: kept as an expiry record for the
    /// tombstone lifetime, so an old copy cannot bring it back, and the application is told.
    pub(super) fn end_tuple(&mut self, now: Instant, key: Arc<str>, reason: ExpireReason) {
        let Some(entry) = self.store.entry(&key).filter(|e| e.kind == Kind::Live) else {
            return;
        };
        let mut record = entry.clone();
        record.kind = Kind::Expired;
        record.ends = Some(now + self.config.tombstone_ttl);
        record.own = None;
        self.store.put(Arc::clone(&key), record);
        self.stats.expired += 1;
        debug!(%key, ?reason, "tuple ended");
        self.outputs
            .push_back(Output::Event(Event::Expire { key, reason }));
    }

    /// Publishes our copy of `key` again at a new version, same value and lease: after this
    /// node was taken for dead, its old versions are expiry records everywhere.
    pub(super) fn bump_own(&mut self, now: Instant, key: &str) {
        let Some(held) = self
            .store
            .entry(key)
            .filter(|e| e.owned() && e.kind == Kind::Live)
        else {
            return;
        };
        let (value, lease) = (Arc::clone(&held.value), held.lease());
        let Ok(stamp) = self
            .config
            .own_stamp(now, key, Some(held.stamp.version), false)
        else {
            return;
        };
        let ttl_ms = lease.map_or(0, millis);
        let _ = self.apply(now, Arc::from(key), value, ttl_ms, stamp, Origin::App);
    }

    pub(super) fn on_publish(&mut self, now: Instant, origin: Origin, publish: Publish) {
        self.stats.publish_received += 1;
        let (stamp, ttl_ms) = match publish.stamp() {
            Ok(Some(stamp)) if self.version_in_reach(now, &publish.key, stamp.version) => {
                (stamp, publish.ttl_ms)
            }
            // A version out of reach is a well-formed message: refusing the copy is enough, and
            // ending the session would cut its sender off from everything else it publishes.
            Ok(Some(stamp)) => {
                self.stats.versions_refused += 1;
                if self.warnings.allow(now, "version out of reach", &origin) {
                    warn!(?origin, key = %publish.key, version = stamp.version, "copy's version is out of reach; refused");
                }
                return;
            }
            // CZMQ forwards our PUBLISH with its ttl but without the stamp, and swallows the
            // refreshes as duplicates: a lease cannot be kept through it, so it ends there.
            Ok(None) => (Stamp::default(), 0),
            Err(error) => {
                self.stats.malformed += 1;
                if self.warnings.allow(now, "bad stamp", &origin) {
                    warn!(?origin, %error, "bad stamp");
                }
                if let Origin::Client(client) = origin {
                    self.refuse(client, "bad stamp");
                }
                return;
            }
        };
        // A tombstone's value is empty, so the same rules cover both kinds of copy.
        if let Err(error) = validate(&publish.key, &publish.value, self.config.max_value_bytes) {
            self.stats.tuples_refused += 1;
            if self.warnings.allow(now, "tuple refused", &origin) {
                warn!(?origin, %error, "refused a tuple that breaks the rules");
            }
            return;
        }
        // A refusal (the store is full) was counted and logged where it was made.
        let _ = self.apply(now, publish.key, publish.value, ttl_ms, stamp, origin);
    }

    /// Whether the store has room for this copy (in place of the one held for `key`): room in
    /// all, less the eighth kept for our own publishes when it is a peer's, and room in its
    /// origin's share. Refusals are counted.
    pub(super) fn check_room(
        &mut self,
        key: &str,
        value: &str,
        stamp: &Stamp,
        origin: &Origin,
    ) -> Result<(), TupleError> {
        let weight = Store::weight(key, value);
        let held = self.store.entry(key);
        let freed = held.map_or(0, |h| Store::weight(key, &h.value));
        let freed_here = held
            .filter(|h| h.stamp.origin == stamp.origin)
            .map_or(0, |h| Store::weight(key, &h.value));
        let max = self.config.max_store_bytes;
        let room = if *origin == Origin::App {
            max
        } else {
            max - max / 8
        };
        if self.store.bytes() - freed + weight > room {
            self.stats.store_full += 1;
            return Err(TupleError::StoreBytesFull { max });
        }
        let share = self.config.max_origin_bytes;
        if *origin != Origin::App
            && self.store.origin_bytes(stamp.origin) - freed_here + weight > share
        {
            self.stats.origin_full += 1;
            return Err(TupleError::StoreBytesFull { max: share });
        }
        Ok(())
    }

    /// Whether a peer's copy of `key` may carry `version`: at most [`MAX_VERSION`], and at most
    /// [`MAX_VERSION_LEAD`] above both the held copy and our own version clock.
    pub(super) fn version_in_reach(&self, now: Instant, key: &str, version: u64) -> bool {
        let held = self.store.entry(key).map_or(0, |e| e.stamp.version);
        let known = held.max(self.config.version_clock(now));
        version <= MAX_VERSION && version <= known.saturating_add(MAX_VERSION_LEAD)
    }

    /// Keeps the copy if it is greater than the one held, tells the application what changed,
    /// and forwards it to every peer but the one it came from. Returns whether it was kept.
    /// Whether a copy equal to one we expired is taken again: a copy without a lease ends here
    /// only when its origin is held dead, and if the origin is alive now (the death was wrong,
    /// and its refutation came after its tuples were dropped) the copy is in force again. The
    /// origin republishes when it hears it was accused, but it may never hear of an accusation
    /// its refutation had already beaten elsewhere; the stores' digests differ until the copy
    /// is back, and it comes back in the resync that follows.
    fn revives(&self, held: &Entry, stamp: &Stamp, value: &str, ttl_ms: u32) -> bool {
        held.kind == Kind::Expired
            && ttl_ms == 0
            && !stamp.withdrawn
            && held.stamp == *stamp
            && &*held.value == value
            && (self.cluster.as_ref()).is_some_and(|c| c.holds_alive(stamp.origin))
    }

    pub(super) fn apply(
        &mut self,
        now: Instant,
        key: Arc<str>,
        value: Arc<str>,
        ttl_ms: u32,
        stamp: Stamp,
        origin: Origin,
    ) -> Result<bool, TupleError> {
        if let Some(held) = self.store.entry(&key)
            && !held.is_older_than(&stamp, &value)
            && !self.revives(held, &stamp, &value, ttl_ms)
        {
            return Ok(false);
        }
        if let Err(error) = self.check_room(&key, &value, &stamp, &origin) {
            if self.warnings.allow(now, "store full", &origin) {
                warn!(%key, %error, "refusing a copy");
            }
            return Err(error);
        }
        let held = self.store.entry(&key);
        if held.is_none() && self.store.held() >= self.config.max_tuples {
            self.stats.store_full += 1;
            if self.warnings.allow(now, "store full", &origin) {
                warn!(max = self.config.max_tuples, %key, "store full; refusing a new key");
            }
            return Err(TupleError::StoreFull {
                max: self.config.max_tuples,
            });
        }
        let held_kind = held.map(|h| (h.kind, Arc::clone(&h.value)));
        let ours = origin == Origin::App;
        let kind = if stamp.withdrawn {
            Kind::Withdrawn
        } else {
            Kind::Live
        };
        let lifetime = (ttl_ms > 0).then(|| Duration::from_millis(u64::from(ttl_ms)));
        let lease = lifetime.filter(|_| ours && kind == Kind::Live);
        let ends = match kind {
            _ if lease.is_some() => None,
            // The sender says how long it keeps the tombstone; we keep it no longer than we
            // would our own, whatever a peer asks for.
            Kind::Withdrawn => Some(
                now + lifetime.map_or(self.config.tombstone_ttl, |l| {
                    l.min(self.config.tombstone_ttl)
                }),
            ),
            _ => lifetime.map(|l| now + l),
        };
        let entry = Entry {
            value: Arc::clone(&value),
            stamp,
            kind,
            ends,
            own: (ours && kind == Kind::Live).then(|| {
                Box::new(Own {
                    lease,
                    refresh_at: lease.map(|l| now + l / 3),
                })
            }),
        };
        self.store.put(Arc::clone(&key), entry);

        let event = match (held_kind, kind) {
            (Some((Kind::Live, old)), Kind::Live) if old != value => Some(Event::Change {
                key: Arc::clone(&key),
                value: Arc::clone(&value),
            }),
            (Some((Kind::Live, _)), Kind::Live) => None,
            (Some((Kind::Live, _)), _) => Some(Event::Remove {
                key: Arc::clone(&key),
            }),
            (_, Kind::Live) => Some(Event::Deliver {
                key: Arc::clone(&key),
                value: Arc::clone(&value),
            }),
            _ => None,
        };
        if let Some(event) = event {
            self.outputs.push_back(Output::Event(event));
        }
        let message = Message::Publish(Publish::stamped(key, value, ttl_ms, &stamp));
        self.forward(&message, &origin);
        Ok(true)
    }

    /// Sends a copy to every connected remote and session except where it came from.
    /// A peer that never hailed (CZMQ's) is sent the copy as ZGP v1 defines it, or nothing
    /// for a withdrawal, which v1 cannot say.
    pub(super) fn forward(&mut self, message: &Message, origin: &Origin) {
        // Made only if some peer never hailed: most forwards go to our own nodes alone.
        let plain = std::cell::OnceCell::new();
        for (&id, remote) in &self.remotes {
            if !remote.connected || *origin == Origin::Remote(id) {
                continue;
            }
            let Some(copy) = copy_for(remote.node.is_some(), message, &plain) else {
                continue;
            };
            self.stats.publish_sent += 1;
            self.outputs.push_back(Output::ToRemote(id, copy.clone()));
        }
        for (client, session) in &self.sessions {
            if session.state != SessionState::Connected
                || matches!(origin, Origin::Client(c) if c == client)
            {
                continue;
            }
            let Some(copy) = copy_for(session.node.is_some(), message, &plain) else {
                continue;
            };
            self.stats.publish_sent += 1;
            self.outputs
                .push_back(Output::ToClient(client.clone(), copy.clone()));
        }
    }
}
