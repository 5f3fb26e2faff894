//! Engine settings and the limits the rules rest on.

use super::*;

/// The highest version a copy may carry. Versions start from a millisecond clock (about 2^41
/// today) and grow by one per publish, so no honest copy comes near it; refusing more keeps
/// `version + 1` from overflowing.
pub const MAX_VERSION: u64 = 1 << 62;

/// How far a peer's copy may reach above both the version held for its key and this node's own
/// version clock: about 139 years of milliseconds, so nodes' clocks need only agree within a
/// century, while one hostile copy cannot put a key out of its owner's reach (it would take a
/// million copies in a row, each accepted, to climb to [`MAX_VERSION`]).
pub const MAX_VERSION_LEAD: u64 = 1 << 42;

/// The longest server timeout the engine takes (a day); longer ones are clamped.
pub const MAX_SERVER_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The longest default ping interval: a third of CZMQ's 1 s server timeout.
pub const MAX_DEFAULT_PING: Duration = Duration::from_millis(333);

/// Engine settings. See [`crate::Config`] for the reasons behind the defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id, sent in hails and stamps; never 0.
    pub node_id: u64,
    /// A client session that sends nothing for this long expires; a remote that hears nothing
    /// for this long is redialled.
    pub server_timeout: Duration,
    /// How often a remote PINGs; `None` is a third of the timeout, at most [`MAX_DEFAULT_PING`].
    pub ping_interval: Option<Duration>,
    /// At most this many copies (tuples, tombstones, expiry records) are held.
    pub max_tuples: usize,
    /// What the copies held may weigh in all ([`Store::weight`]); an eighth of it is kept for
    /// this node's own publishes, which peers' copies cannot take.
    pub max_store_bytes: usize,
    /// What the copies made by any one origin node may weigh (CZMQ's unstamped copies share
    /// origin 0): one publisher cannot fill every node's store.
    pub max_origin_bytes: usize,
    /// At most this many bytes in a value.
    pub max_value_bytes: usize,
    /// At most this many client sessions (expired ones included) are held.
    pub max_sessions: usize,
    /// At most this many remotes (CONNECTs).
    pub max_remotes: usize,
    /// How long tombstones and expiry records are kept.
    pub tombstone_ttl: Duration,
    /// Withdraw our own tuples when stopping gracefully.
    pub withdraw_on_stop: bool,
    /// Where versions start: at this instant the version clock read this many milliseconds
    /// (since the Unix epoch, for a real node). A publish takes at least the clock's reading,
    /// so a node restarted with a new id beats the copies its previous lives left. `None`
    /// counts versions from 1, for tests.
    pub version_clock: Option<(Instant, u64)>,
    /// The cluster layer (`proto/zgp.md` §12): members, their gossip and failure detection.
    /// `None` turns it off.
    pub cluster: Option<Box<ClusterConfig>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            server_timeout: Duration::from_millis(1000),
            ping_interval: None,
            max_tuples: 1_000_000,
            max_store_bytes: 96 << 20,
            max_origin_bytes: 24 << 20,
            max_value_bytes: 16 * 1024,
            max_sessions: 10_000,
            max_remotes: 1024,
            tombstone_ttl: Duration::from_secs(600),
            withdraw_on_stop: true,
            version_clock: None,
            cluster: None,
        }
    }
}

impl EngineConfig {
    /// How long a peer may be silent before it is reported suspect: two and a half PING
    /// intervals, so one late or lost answer on a lossy link is not a suspicion, but at least
    /// half the timeout and at most nine tenths of it.
    pub fn suspect_after(&self) -> Duration {
        let timeout = self.server_timeout;
        (self.ping_interval() * 5 / 2).clamp(timeout / 2, timeout * 9 / 10)
    }

    /// The version clock's reading at `now` (0 without a clock).
    pub fn version_clock(&self, now: Instant) -> u64 {
        self.version_clock.map_or(0, |(at, ms)| {
            let since = now.saturating_duration_since(at).as_millis();
            ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
        })
    }

    /// The stamp of our own new copy of `key` (a tuple, or a withdrawal), held at version
    /// `held`: a version past the held copy and no less than the clock; refused past
    /// [`MAX_VERSION`].
    pub(super) fn own_stamp(
        &self,
        now: Instant,
        key: &str,
        held: Option<u64>,
        withdrawn: bool,
    ) -> Result<Stamp, TupleError> {
        let version = held
            .map_or(1, |v| v.saturating_add(1))
            .max(self.version_clock(now));
        if version > MAX_VERSION {
            return Err(TupleError::VersionExhausted {
                key: key.to_owned(),
            });
        }
        Ok(Stamp {
            version,
            origin: self.node_id,
            lease_seq: 0,
            withdrawn,
        })
    }

    /// The interval remotes PING at: as set, or a third of our own timeout but never more
    /// than [`MAX_DEFAULT_PING`], since the server we dial may use CZMQ's 1 s timeout.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
            .unwrap_or_else(|| (self.server_timeout / 3).min(MAX_DEFAULT_PING))
    }
}
