//! Node settings: a plain struct with units in the field names and a reason for every default.

use std::time::Duration;

use crate::engine::EngineConfig;
use crate::transport::Limits;
use crate::transport::inproc::Faults;

/// Everything a node can be told before it starts. `SET` changes some of it at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A name for logs and the I/O thread; defaults to none.
    pub name: Option<String>,
    /// This node's id in hails and stamps; `None` picks a random one at spawn (set it for
    /// reproducible simulations). Never 0.
    pub node_id: Option<u64>,
    /// Client sessions silent this long expire; remotes silent this long are redialled.
    /// 1 s is CZMQ's value, so mixed networks agree on it.
    pub server_timeout: Duration,
    /// How often remotes PING; `None` is a third of `server_timeout`, so a server with the same
    /// timeout hears from us three times per expiry window.
    pub ping_interval: Option<Duration>,
    /// Tuples held at most; a million endpoints is far beyond any LAN and a few hundred MB.
    pub max_tuples: usize,
    /// Largest value accepted; service names and endpoints are short, 16 KiB leaves room.
    pub max_value_bytes: usize,
    /// Client sessions held at most (expired ones included); enough for a large cluster while
    /// bounding what a flood of new connections can cost.
    pub max_sessions: usize,
    /// Remotes (CONNECTs) at most; a node dials a handful of seeds, 1024 bounds a mistake.
    pub max_remotes: usize,
    /// Largest ZGP frame accepted (libzmq MAXMSGSIZE); a PUBLISH with the largest key and value
    /// fits with room for extensions.
    pub max_message_bytes: usize,
    /// Connections that have not finished the ZeroMQ handshake by then are dropped (libzmq's
    /// default is 30 s, long enough for idle half-open connections to pile up).
    pub handshake_timeout: Duration,
    /// libzmq high-water marks in messages: a full resync of a large store fits.
    pub socket_hwm: i32,
    /// Bytes queued toward one peer before it counts as not reading and is dropped.
    pub max_queued_bytes: usize,
    /// Events kept for a slow subscriber before it starts missing them.
    pub event_capacity: usize,
    /// How long tombstones (withdrawals) and lease-expiry records are kept: a node away for
    /// less than this cannot bring a withdrawn tuple back. Ten minutes covers restarts and
    /// short partitions while bounding memory.
    pub tombstone_ttl: Duration,
    /// Withdraw our own tuples when stopping gracefully (`SET node/withdraw-on-stop 0` turns it
    /// off for configuration-style tuples that should outlive their publisher).
    pub withdraw_on_stop: bool,
    /// For simulations: faults the in-process transport injects into this node's frames
    /// (shared by all nodes of a simulation; each node needs a distinct `name`). `None`, the
    /// default, is a perfect in-process network.
    pub faults: Option<Faults>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: None,
            node_id: None,
            server_timeout: Duration::from_millis(1000),
            ping_interval: None,
            max_tuples: 1_000_000,
            max_value_bytes: 16 * 1024,
            max_sessions: 10_000,
            max_remotes: 1024,
            max_message_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(5),
            socket_hwm: 100_000,
            max_queued_bytes: 64 * 1024 * 1024,
            event_capacity: 4096,
            tombstone_ttl: Duration::from_secs(600),
            withdraw_on_stop: true,
            faults: None,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad setting {field}: {why}")]
pub struct ConfigError {
    /// The field or SET path.
    pub field: String,
    /// What is wrong.
    pub why: String,
}

impl Config {
    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| {
            Err(ConfigError {
                field: field.into(),
                why: why.into(),
            })
        };
        if self.server_timeout < Duration::from_millis(10)
            || self.server_timeout > crate::engine::MAX_SERVER_TIMEOUT
        {
            return bad("server_timeout", "must be between 10ms and a day");
        }
        if let Some(ping) = self.ping_interval
            && (ping.is_zero() || ping >= self.server_timeout)
        {
            return bad(
                "ping_interval",
                "must be above zero and below server_timeout",
            );
        }
        if self.max_message_bytes < 1024 {
            return bad("max_message_bytes", "must be at least 1024");
        }
        if self.max_value_bytes + 512 > self.max_message_bytes {
            return bad(
                "max_value_bytes",
                "must leave room for a key in max_message_bytes",
            );
        }
        if self.socket_hwm <= 0
            || self.event_capacity == 0
            || self.max_sessions == 0
            || self.max_tuples == 0
            || self.max_remotes == 0
        {
            return bad(
                "limits",
                "socket_hwm, event_capacity, max_sessions, max_remotes and max_tuples must be positive",
            );
        }
        if self.node_id == Some(0) {
            return bad("node_id", "0 is reserved for copies without a stamp");
        }
        if self.tombstone_ttl.is_zero() || u32::try_from(self.tombstone_ttl.as_millis()).is_err() {
            return bad("tombstone_ttl", "must be above zero and below 49 days");
        }
        if i32::try_from(self.handshake_timeout.as_millis()).is_err() {
            return bad("handshake_timeout", "too long");
        }
        Ok(())
    }

    pub(crate) fn engine(&self, node_id: u64) -> EngineConfig {
        EngineConfig {
            node_id,
            tombstone_ttl: self.tombstone_ttl,
            withdraw_on_stop: self.withdraw_on_stop,
            server_timeout: self.server_timeout,
            ping_interval: self.ping_interval,
            max_tuples: self.max_tuples,
            max_value_bytes: self.max_value_bytes,
            max_sessions: self.max_sessions,
            max_remotes: self.max_remotes,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            handshake_timeout_ms: i32::try_from(self.handshake_timeout.as_millis())
                .unwrap_or(i32::MAX),
            socket_hwm: self.socket_hwm,
            max_queued_bytes: self.max_queued_bytes,
        }
    }
}

/// A random node id, never 0: process-random hasher keys mixed with the time and a counter.
pub fn random_node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish().max(1)
}

/// Parses a duration as `SET` takes it: a bare number is milliseconds (as CZMQ takes
/// `server/timeout`), anything else is humantime (`250ms`, `2s`, `1m 30s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_milliseconds_or_humantime() {
        assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn default_config_is_valid_and_nonsense_is_refused() {
        assert_eq!(Config::default().validate(), Ok(()));
        let tight = Config {
            server_timeout: Duration::from_millis(1),
            ..Config::default()
        };
        assert_eq!(
            tight.validate().map_err(|e| e.field),
            Err("server_timeout".to_owned())
        );
    }
}
