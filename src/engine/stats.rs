//! Counters of what happened, for `STATUS detail` and tests.

/// Counters of what happened, for STATUS and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages from clients or servers that failed to decode.
    pub malformed: u64,
    /// INVALID replies sent.
    pub invalid_sent: u64,
    /// Client sessions expired for silence.
    pub sessions_expired: u64,
    /// New clients refused because `max_sessions` were held and none could be evicted.
    pub sessions_refused: u64,
    /// Sessions dropped to make room for a new client (silent, or never said HELLO).
    pub sessions_evicted: u64,
    /// Tuples from peers refused by the rules (key and value checks, `max_value_bytes`).
    pub tuples_refused: u64,
    /// New keys refused because `max_tuples` copies were held.
    pub store_full: u64,
    /// CONNECTs refused because `max_remotes` remotes existed.
    pub remotes_refused: u64,
    /// Peers dropped because they let more than `max_queued_bytes` pile up (not reading).
    pub overflows: u64,
    /// In-process frames refused for exceeding `max_message_bytes` (libzmq drops tcp/ipc
    /// connections that send one before we see it).
    pub frames_too_large: u64,
    /// Remotes redialled after a silence.
    pub redials: u64,
    /// PUBLISH messages sent.
    pub publish_sent: u64,
    /// PUBLISH messages received.
    pub publish_received: u64,
    /// Lease refreshes this node made for its own tuples.
    pub refreshes: u64,
    /// Tuples dropped because their lease ran out.
    pub expired: u64,
    /// Peers' new copies refused because their origin's share of the store was taken.
    pub origin_full: u64,
    /// Resyncs a remote asked for because its store and the server's stayed different.
    pub digest_resyncs: u64,
    /// Resyncs not sent because the peer's digest showed it held the same tuples (a HELLO's,
    /// or a server's PONG after it).
    pub resyncs_skipped: u64,
    /// BATCH frames received (their tuples count in `publish_received`).
    pub batches_received: u64,
    /// Peers' copies refused because their version was out of reach (see
    /// [`super::config::MAX_VERSION_LEAD`]); the sender's session goes on.
    pub versions_refused: u64,
    /// HELLOs that started no resync: one was under way for the session, or it had one less
    /// than a server timeout before.
    pub hellos_limited: u64,
    /// Member records refused: over the limits of §12, or past `MAX_MEMBERS` or
    /// `MAX_MEMBER_BYTES`.
    pub members_refused: u64,
    /// JOINs from a member we served as its contact less than a second before, ignored.
    pub joins_ignored: u64,
    /// Members this node suspected because no link of ours or of those asked heard them.
    pub suspicions: u64,
    /// Suspicions of this node that it refuted.
    pub refutations: u64,
    /// Members dialled to fill the active view.
    pub view_dials: u64,
    /// Active peers lost (their link failed, or they died or left) and replaced.
    pub view_repairs: u64,
}

impl Stats {
    /// Every counter by name, for `STATUS detail` and logs.
    pub fn pairs(&self) -> [(&'static str, u64); 27] {
        [
            ("malformed", self.malformed),
            ("invalid_sent", self.invalid_sent),
            ("sessions_expired", self.sessions_expired),
            ("sessions_refused", self.sessions_refused),
            ("sessions_evicted", self.sessions_evicted),
            ("tuples_refused", self.tuples_refused),
            ("store_full", self.store_full),
            ("origin_full", self.origin_full),
            ("remotes_refused", self.remotes_refused),
            ("overflows", self.overflows),
            ("redials", self.redials),
            ("publish_sent", self.publish_sent),
            ("publish_received", self.publish_received),
            ("refreshes", self.refreshes),
            ("expired", self.expired),
            ("frames_too_large", self.frames_too_large),
            ("digest_resyncs", self.digest_resyncs),
            ("resyncs_skipped", self.resyncs_skipped),
            ("batches_received", self.batches_received),
            ("versions_refused", self.versions_refused),
            ("hellos_limited", self.hellos_limited),
            ("members_refused", self.members_refused),
            ("joins_ignored", self.joins_ignored),
            ("suspicions", self.suspicions),
            ("refutations", self.refutations),
            ("view_dials", self.view_dials),
            ("view_repairs", self.view_repairs),
        ]
    }
}
