//! Node settings: a plain struct with units in the field names and a reason for every default.

use std::time::Duration;

use super::Error;
use crate::engine::{ClusterConfig, EngineConfig, MAX_NAME_BYTES, MAX_TAG_BYTES};
use crate::transport::curve::{CurveClient, CurveKey, CurveKeys, CurveServer};
#[cfg(feature = "sim")]
use crate::transport::inproc::Faults;
use crate::transport::{Budget, Endpoint, Limits};

/// Everything a node can be told before it starts. `SET` changes some of it at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// What the tuples held may weigh, counted as key + value + 160 bytes each: a byte bound
    /// on the store (an eighth is kept for this node's own publishes).
    pub max_store_bytes: usize,
    /// What the tuples of any one origin node may weigh (CZMQ's unstamped ones count as one
    /// origin), so one publisher cannot fill every node's store.
    pub max_origin_bytes: usize,
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
    /// libzmq's receive high-water mark in messages: how much a peer may have in flight to
    /// us before libzmq stops reading its connection. (Sends use a small fixed mark and
    /// queues of our own that count bytes.)
    pub socket_hwm: i32,
    /// Bytes queued toward one peer before it counts as not reading and is dropped: room for
    /// a burst of forwarded copies (resyncs go out a slice at a time, as the peer reads).
    pub max_queued_bytes: usize,
    /// Bytes queued toward all tcp/ipc peers together: past it, the peer with the most
    /// waiting is dropped, so slow or hostile readers cannot make the node grow.
    pub max_total_queued_bytes: usize,
    /// Events kept for a slow subscriber before it starts missing them.
    pub event_capacity: usize,
    /// How long tombstones (withdrawals) and lease-expiry records are kept: a node away for
    /// less than this cannot bring a withdrawn tuple back. Ten minutes covers restarts and
    /// short partitions while bounding memory.
    pub tombstone_ttl: Duration,
    /// Withdraw our own tuples when stopping gracefully (`SET node/withdraw-on-stop 0` turns it
    /// off for configuration-style tuples that should outlive their publisher).
    pub withdraw_on_stop: bool,
    /// This node's CURVE public key (`SET PUBLICKEY`); set together with the secret key.
    /// Off by default: CURVE needs keys handed out, which no default can do.
    pub curve_public_key: Option<CurveKey>,
    /// This node's CURVE secret key (`SET SECRETKEY`). With it, later tcp/ipc binds are CURVE
    /// servers, and CURVE connects present this keypair instead of a throwaway one.
    pub curve_secret_key: Option<CurveKey>,
    /// Client public keys a CURVE listener admits; empty (the default) admits any client that
    /// knows our public key. Needs the secret key.
    pub curve_allow: Vec<CurveKey>,
    /// The ZAP domain of later CURVE binds (`ZAP DOMAIN`); libzmq passes it to the handler,
    /// which does not judge by it. None by default, as libzmq.
    pub zap_domain: Option<String>,
    /// For simulations: faults the in-process transport injects into this node's frames
    /// (shared by all nodes of a simulation; each node needs a distinct `name`). `None`, the
    /// default, is a perfect in-process network. With the `sim` feature.
    #[cfg(feature = "sim")]
    pub faults: Option<Faults>,
    /// This node's part in the cluster (`proto/zgp.md` §12); a member by default.
    pub cluster: Membership,
    /// The endpoints other members should dial to reach this node (`tcp://10.0.0.5:5670`).
    /// Empty, the default: what it binds, except a tcp wildcard (`tcp://*:5670`,
    /// `tcp://0.0.0.0:5670`), which names no address another host can dial.
    pub advertise: Vec<String>,
    /// `key=value` tags other members see (`zone=eu1`, `role=api`); at most 512 bytes in all.
    pub tags: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: None,
            node_id: None,
            server_timeout: Duration::from_millis(1000),
            ping_interval: None,
            max_tuples: 1_000_000,
            max_store_bytes: 96 << 20,
            max_origin_bytes: 24 << 20,
            max_value_bytes: 16 * 1024,
            max_sessions: 10_000,
            max_remotes: 1024,
            max_message_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(5),
            socket_hwm: 1000,
            max_queued_bytes: 32 * 1024 * 1024,
            max_total_queued_bytes: 128 * 1024 * 1024,
            event_capacity: 4096,
            tombstone_ttl: Duration::from_secs(600),
            withdraw_on_stop: true,
            curve_public_key: None,
            curve_secret_key: None,
            curve_allow: Vec::new(),
            zap_domain: None,
            #[cfg(feature = "sim")]
            faults: None,
            cluster: Membership::Member,
            advertise: Vec::new(),
            tags: Vec::new(),
        }
    }
}

/// Whether a tcp endpoint's host is a wildcard, which no other host can dial.
pub(crate) fn is_wildcard(endpoint: &str) -> bool {
    let host = endpoint
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(host, _)| host);
    matches!(host, Some("*" | "0.0.0.0" | "[::]" | "::" | "[*]"))
}

/// A node's part in the cluster (`proto/zgp.md` §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Membership {
    /// Learns every node of ours, tells them of this one, and helps find failed members.
    #[default]
    Member,
    /// Learns the members but is not one: what short-lived tools (`zgossip lookup`, `members`)
    /// are, so they do not fill every member list with nodes that come and go.
    Observer,
    /// Spreads tuples along its links and nothing more.
    Off,
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
    /// The defaults, with a name for logs and the I/O thread. `Config` grows with the node: start
    /// from this or [`Config::default`] and set fields,
    ///
    /// ```
    /// let mut config = zgossip::Config::named("registry");
    /// config.server_timeout = std::time::Duration::from_secs(2);
    /// ```
    pub fn named(name: impl Into<String>) -> Self {
        Config {
            name: Some(name.into()),
            ..Config::default()
        }
    }

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
        if self.max_origin_bytes > self.max_store_bytes
            || self.max_store_bytes < 1 << 20
            || self.max_origin_bytes < 64 << 10
        {
            return bad(
                "max_store_bytes",
                "must be at least 1 MiB, and max_origin_bytes (at least 64 KiB) no more",
            );
        }
        if self.max_total_queued_bytes < self.max_queued_bytes {
            return bad(
                "max_total_queued_bytes",
                "must be at least max_queued_bytes",
            );
        }
        if self.node_id == Some(0) {
            return bad("node_id", "0 is reserved for copies without a stamp");
        }
        if self.cluster == Membership::Member
            && self.name.as_ref().is_some_and(|n| {
                n.len() > MAX_NAME_BYTES || n.chars().any(|c| c.is_whitespace() || c.is_control())
            })
        {
            return bad(
                "name",
                "a member's name is one word (no spaces) of at most 64 bytes",
            );
        }
        if self.advertise.len() > 8 {
            return bad("advertise", "at most 8 endpoints");
        }
        for endpoint in &self.advertise {
            if let Err(error) = Endpoint::parse(endpoint) {
                return bad("advertise", &error.to_string());
            }
            if is_wildcard(endpoint) {
                return bad("advertise", "a wildcard address is not one others can dial");
            }
        }
        let tag_bytes: usize = self.tags.iter().map(String::len).sum();
        let bad_tag = self.tags.iter().any(|tag| {
            let key = tag.split_once('=').map(|(key, _)| key);
            key.is_none_or(str::is_empty)
                || tag.len() > 255
                || tag.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        // A CURVE listener's key goes in the record as one more tag (`curve-key=`, 50 bytes).
        let (room, most) = if self.curve_secret_key.is_some() {
            (MAX_TAG_BYTES - 50, 31)
        } else {
            (MAX_TAG_BYTES, 32)
        };
        if bad_tag || tag_bytes > room || self.tags.len() > most {
            return bad(
                "tags",
                "each is key=value without spaces; at most 32, 512 bytes in all (31 and 462 with \
                 a CURVE key, whose tag takes the rest)",
            );
        }
        if self.tombstone_ttl.is_zero() || u32::try_from(self.tombstone_ttl.as_millis()).is_err() {
            return bad("tombstone_ttl", "must be above zero and below 49 days");
        }
        if i32::try_from(self.handshake_timeout.as_millis()).is_err() {
            return bad("handshake_timeout", "too long");
        }
        // Half a keypair is not checked here: the pipe sets the halves one SET at a time, and a
        // SET between them must not fail. Spawning and config files check it (`curve_keys`).
        if !self.curve_allow.is_empty() && self.curve_secret_key.is_none() {
            return bad(
                "curve_allow",
                "needs curve_secret_key: only a CURVE listener can check client keys",
            );
        }
        if self
            .zap_domain
            .as_ref()
            .is_some_and(|d| d.is_empty() || d.len() > 254)
        {
            return bad("zap_domain", "must be 1 to 254 bytes");
        }
        Ok(())
    }

    /// This node's CURVE keypair, if it has one; an error when only half of it is set.
    pub fn curve_keys(&self) -> Result<Option<CurveKeys>, ConfigError> {
        match (self.curve_public_key, self.curve_secret_key) {
            (Some(public), Some(secret)) => Ok(Some(CurveKeys { public, secret })),
            (None, None) => Ok(None),
            (public, _) => Err(ConfigError {
                field: if public.is_some() {
                    "curve_secret_key"
                } else {
                    "curve_public_key"
                }
                .into(),
                why: "CURVE needs both keys of the pair (SET PUBLICKEY and SET SECRETKEY)".into(),
            }),
        }
    }

    /// What a tcp/ipc bind made now uses: a CURVE server when the secret key is set.
    pub(crate) fn curve_server(&self) -> Option<CurveServer> {
        Some(CurveServer {
            secret_key: self.curve_secret_key?,
            zap_domain: self.zap_domain.clone(),
            allow: self.curve_allow.iter().copied().collect(),
        })
    }

    /// What a CONNECT to `endpoint` uses: none without a server key; with one, this node's
    /// keypair, or a fresh throwaway one when it has none (the link is encrypted and the server
    /// authenticated; the client stays anonymous, so an allow list refuses it). A server key on
    /// an `inproc://` endpoint is refused: that transport never leaves the process.
    pub(crate) fn curve_client(
        &self,
        endpoint: &Endpoint,
        server_key: Option<CurveKey>,
    ) -> Result<Option<CurveClient>, Error> {
        let Some(server_key) = server_key else {
            return Ok(None);
        };
        endpoint.check_curve()?;
        let keys = match self.curve_keys()? {
            Some(keys) => keys,
            None => CurveKeys::generate().map_err(|e| ConfigError {
                field: "curve".into(),
                why: e.to_string(),
            })?,
        };
        Ok(Some(CurveClient { keys, server_key }))
    }

    /// Applies a CURVE `SET` (`PUBLICKEY` and `SECRETKEY` as CZMQ spells them, or the file's
    /// `curve/public-key`, `curve/secret-key`, `curve/zap-domain`); `None` for other paths. It
    /// takes effect for later binds and connects, as in CZMQ.
    pub(crate) fn set_curve(&mut self, path: &str, value: &str) -> Option<Result<(), ConfigError>> {
        let key = || {
            CurveKey::from_z85(value).map_err(|e| ConfigError {
                field: path.to_owned(),
                why: e.to_string(),
            })
        };
        let result = match path {
            "PUBLICKEY" | "curve/public-key" => key().map(|k| self.curve_public_key = Some(k)),
            "SECRETKEY" | "curve/secret-key" => key().map(|k| self.curve_secret_key = Some(k)),
            "curve/zap-domain" if (1..=254).contains(&value.len()) => {
                self.zap_domain = Some(value.to_owned());
                Ok(())
            }
            "curve/zap-domain" => Err(ConfigError {
                field: path.to_owned(),
                why: "must be 1 to 254 bytes".into(),
            }),
            _ => return None,
        };
        Some(result)
    }

    pub(crate) fn engine(&self, node_id: u64) -> EngineConfig {
        EngineConfig {
            node_id,
            tombstone_ttl: self.tombstone_ttl,
            withdraw_on_stop: self.withdraw_on_stop,
            server_timeout: self.server_timeout,
            ping_interval: self.ping_interval,
            max_tuples: self.max_tuples,
            max_store_bytes: self.max_store_bytes,
            max_origin_bytes: self.max_origin_bytes,
            max_value_bytes: self.max_value_bytes,
            max_sessions: self.max_sessions,
            max_remotes: self.max_remotes,
            version_clock: Some(version_clock()),
            cluster: (self.cluster != Membership::Off).then(|| {
                let joined_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(0));
                Box::new(ClusterConfig {
                    name: self.name.clone().unwrap_or_default(),
                    endpoints: self.advertise.clone(),
                    tags: self.tags.clone(),
                    durable: !self.withdraw_on_stop,
                    joined_ms,
                    seed: node_id ^ joined_ms,
                    observer: self.cluster == Membership::Observer,
                    ..ClusterConfig::default()
                })
            }),
        }
    }

    /// The faults the in-process transport injects: none without the `sim` feature.
    pub(crate) fn faults(&self) -> Option<crate::transport::inproc::Faults> {
        #[cfg(feature = "sim")]
        return self.faults.clone();
        #[cfg(not(feature = "sim"))]
        None
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            handshake_timeout_ms: i32::try_from(self.handshake_timeout.as_millis())
                .unwrap_or(i32::MAX),
            socket_hwm: self.socket_hwm,
        }
    }

    /// The byte bounds on what waits to be sent, for both transports.
    pub(crate) fn budget(&self) -> Budget {
        Budget::new(self.max_queued_bytes, self.max_total_queued_bytes)
    }
}

/// The version clock every node of this process reads (`EngineConfig::version_clock`): the
/// wall clock's milliseconds when first read, advanced by the runtime's clock from then on, so
/// it never steps back while the process runs and paused-time tests see it move. A node that
/// restarts, in this process or a new one, reads it later than its previous life did.
fn version_clock() -> (std::time::Instant, u64) {
    use std::time::{SystemTime, UNIX_EPOCH};
    static CLOCK: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    *CLOCK.get_or_init(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(0));
        (tokio::time::Instant::now().into_std(), ms)
    })
}

/// A random node id from the operating system's random source, never 0 (which no node uses).
///
/// # Panics
/// When the operating system has no random source to read, as `HashMap::new` would then too.
pub fn random_node_id() -> u64 {
    loop {
        match getrandom::u64() {
            Ok(0) => {}
            Ok(id) => return id,
            Err(error) => panic!("cannot read the operating system's random source: {error}"),
        }
    }
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
    fn random_node_ids_are_never_0_and_differ() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| random_node_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&0));
    }

    #[test]
    fn durations_are_milliseconds_or_humantime() {
        assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn curve_keys_come_in_pairs_and_an_allow_list_needs_them() {
        let keys = CurveKeys::generate().unwrap();
        let half = Config {
            curve_public_key: Some(keys.public),
            ..Config::default()
        };
        assert_eq!(
            half.curve_keys().map_err(|e| e.field),
            Err("curve_secret_key".to_owned())
        );
        let allow_only = Config {
            curve_allow: vec![keys.public],
            ..Config::default()
        };
        assert_eq!(
            allow_only.validate().map_err(|e| e.field),
            Err("curve_allow".to_owned())
        );
        let mut config = Config::default();
        for (path, key) in [("PUBLICKEY", keys.public), ("SECRETKEY", keys.secret)] {
            assert_eq!(config.set_curve(path, &key.to_z85()), Some(Ok(())));
        }
        assert_eq!(config.curve_keys(), Ok(Some(keys)));
        assert!(matches!(
            config.set_curve("PUBLICKEY", "short"),
            Some(Err(_))
        ));
        assert_eq!(config.set_curve("server/timeout", "1s"), None);
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
