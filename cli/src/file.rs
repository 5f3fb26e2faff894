//! The TOML configuration file: everything `SET` can change (keys follow the SET paths, so
//! `[server] timeout` is `SET server/timeout`), the endpoints to bind, the seed list of remotes,
//! and the services to announce. Durations are strings with a unit (`"250ms"`, `"30s"`, `"10m"`);
//! a bare number is refused. Unknown keys and bad values are errors naming the file and the key,
//! found before anything starts. `[curve]`
//! holds the node's CURVE keypair (`public-key`, `secret-key`, as `SET PUBLICKEY`/`SECRETKEY`),
//! the client keys it admits (`allow`), `zap-domain`, and `[[curve.connect]]` remotes dialled
//! with a server key (`CONNECT endpoint server-key`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use zgossip::{Config, CurveKey, Endpoint, validate_tuple};

use crate::duration::parse_duration_with_unit;

/// A configuration file, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    /// The node's settings.
    pub config: Config,
    /// Endpoints to bind.
    pub bind: Vec<String>,
    /// Remotes to dial (the seed list).
    pub connect: Vec<String>,
    /// Remotes to dial over CURVE.
    pub curve_connect: Vec<SecureConnect>,
    /// Services to announce.
    pub announce: Vec<Announcement>,
    /// Log every message in and out.
    pub verbose: bool,
    /// The lease for announcements that do not name their own.
    pub default_ttl: Option<Duration>,
}

/// One `[[announce]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// The key: in service discovery, the endpoint the service listens on.
    pub key: String,
    /// The value: the service's name.
    pub value: String,
    /// Its lease; the file's `[node] ttl` when absent; none when both are absent.
    #[serde(default, deserialize_with = "duration")]
    pub ttl: Option<Duration>,
}

/// One `[[curve.connect]]` entry: a remote dialled over CURVE.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecureConnect {
    /// The remote's tcp or ipc endpoint.
    pub endpoint: String,
    /// The remote's CURVE public key, in Z85.
    #[serde(deserialize_with = "z85")]
    pub server_key: CurveKey,
}

/// A CURVE key in the file, written in Z85.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
struct Z85(CurveKey);

impl TryFrom<String> for Z85 {
    type Error = zgossip::KeyError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse().map(Z85)
    }
}

fn z85<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CurveKey, D::Error> {
    Z85::deserialize(deserializer).map(|Z85(key)| key)
}

/// Why a configuration file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config file {file}: {message}")]
pub struct FileError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the key.
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    name: Option<String>,
    #[serde(default)]
    advertise: Vec<String>,
    node_id: Option<u64>,
    #[serde(default)]
    bind: Vec<String>,
    #[serde(default)]
    connect: Vec<String>,
    #[serde(default)]
    verbose: bool,
    #[serde(default)]
    server: Server,
    #[serde(default)]
    remote: Remote,
    #[serde(default)]
    node: NodeSection,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    announce: Vec<Announcement>,
    #[serde(default)]
    curve: Curve,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Curve {
    public_key: Option<Z85>,
    secret_key: Option<Z85>,
    #[serde(default)]
    allow: Vec<Z85>,
    zap_domain: Option<String>,
    #[serde(default)]
    connect: Vec<SecureConnect>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Server {
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Remote {
    #[serde(default, deserialize_with = "duration")]
    ping_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NodeSection {
    withdraw_on_stop: Option<bool>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "duration")]
    tombstone_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    ttl: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Limits {
    max_tuples: Option<usize>,
    max_store_bytes: Option<usize>,
    max_origin_bytes: Option<usize>,
    max_value_bytes: Option<usize>,
    max_sessions: Option<usize>,
    max_remotes: Option<usize>,
    max_message_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    handshake_timeout: Option<Duration>,
    socket_hwm: Option<i32>,
    max_queued_bytes: Option<usize>,
    max_total_queued_bytes: Option<usize>,
    event_capacity: Option<usize>,
}

/// Overrides a default with what the file says, if it says anything.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// A duration in the file: a string with a unit (`"30s"`). A bare number, quoted or not, is
/// refused with the units it could have meant, as on the command line.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration with a unit, such as \"30s\" or \"500ms\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration_with_unit(text).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit, e.g. \"{n}s\" or \"{n}ms\""
            )))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            self.visit_i64(n.try_into().unwrap_or(i64::MAX))
        }

        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit, e.g. \"{n}s\" or \"{n}ms\""
            )))
        }
    }
    deserializer.deserialize_any(Visitor).map(Some)
}

/// The file key for a [`Config`] field, for error messages.
fn key_of(field: &str) -> &str {
    match field {
        "server_timeout" => "server.timeout",
        "ping_interval" => "remote.ping-interval",
        "tombstone_ttl" => "node.tombstone-ttl",
        "tags" => "node.tags",
        "advertise" => "advertise",
        "node_id" => "node-id",
        "max_message_bytes" => "limits.max-message-bytes",
        "max_value_bytes" => "limits.max-value-bytes",
        "handshake_timeout" => "limits.handshake-timeout",
        "curve_public_key" => "curve.public-key",
        "curve_secret_key" => "curve.secret-key",
        "curve_allow" => "curve.allow",
        "zap_domain" => "curve.zap-domain",
        "limits" => "limits",
        other => other,
    }
}

/// A TOML error as the toml crate shows it (with the offending line), except on a `secret-key`
/// line, which is named but not shown: even a mistyped secret is nearly the secret.
fn describe(error: &toml::de::Error, text: &str) -> String {
    let line = error.span().and_then(|span| {
        let before = text.get(..span.start)?;
        let number = before.matches('\n').count() + 1;
        let line = text.lines().nth(number - 1)?;
        Some((number, line))
    });
    match line {
        Some((number, line)) if line.trim_start().starts_with("secret-key") => {
            format!("line {number}: secret-key: {}", error.message())
        }
        _ => error.to_string().trim_end().to_owned(),
    }
}

impl Setup {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Setup, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            file: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        Setup::parse(&text, &path.display().to_string())
    }

    /// Parses and checks configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Setup, FileError> {
        let fail = |message: String| FileError {
            file: file.to_owned(),
            message,
        };
        let parsed: File = toml::from_str(text).map_err(|e| fail(describe(&e, text)))?;
        let limits = parsed.limits;
        let mut config = Config::default();
        config.name = parsed.name;
        config.node_id = parsed.node_id;
        config.ping_interval = parsed.remote.ping_interval;
        config.curve_public_key = parsed.curve.public_key.map(|Z85(key)| key);
        config.curve_secret_key = parsed.curve.secret_key.map(|Z85(key)| key);
        config.curve_allow = parsed.curve.allow.into_iter().map(|Z85(key)| key).collect();
        config.zap_domain = parsed.curve.zap_domain;
        set(&mut config.server_timeout, parsed.server.timeout);
        set(&mut config.withdraw_on_stop, parsed.node.withdraw_on_stop);
        config.tags = parsed.node.tags;
        config.advertise = parsed.advertise;
        set(&mut config.tombstone_ttl, parsed.node.tombstone_ttl);
        set(&mut config.max_tuples, limits.max_tuples);
        set(&mut config.max_value_bytes, limits.max_value_bytes);
        set(&mut config.max_store_bytes, limits.max_store_bytes);
        set(&mut config.max_origin_bytes, limits.max_origin_bytes);
        set(&mut config.max_sessions, limits.max_sessions);
        set(&mut config.max_remotes, limits.max_remotes);
        set(&mut config.max_message_bytes, limits.max_message_bytes);
        set(&mut config.handshake_timeout, limits.handshake_timeout);
        set(&mut config.socket_hwm, limits.socket_hwm);
        set(&mut config.max_queued_bytes, limits.max_queued_bytes);
        set(
            &mut config.max_total_queued_bytes,
            limits.max_total_queued_bytes,
        );
        set(&mut config.event_capacity, limits.event_capacity);
        config
            .validate()
            .and_then(|()| config.curve_keys().map(|_| ()))
            .map_err(|e| fail(format!("{}: {}", key_of(&e.field), e.why)))?;
        for (key, endpoints) in [("bind", &parsed.bind), ("connect", &parsed.connect)] {
            for endpoint in endpoints {
                Endpoint::parse(endpoint).map_err(|e| fail(format!("{key}: {e}")))?;
            }
        }
        for (index, remote) in parsed.curve.connect.iter().enumerate() {
            Endpoint::parse(&remote.endpoint)
                .and_then(|endpoint| endpoint.check_curve())
                .map_err(|e| fail(format!("curve.connect[{index}]: {e}")))?;
        }
        for (index, announce) in parsed.announce.iter().enumerate() {
            validate_tuple(&announce.key, &announce.value, config.max_value_bytes)
                .map_err(|e| fail(format!("announce[{index}]: {e}")))?;
        }
        Ok(Setup {
            config,
            bind: parsed.bind,
            connect: parsed.connect,
            curve_connect: parsed.curve.connect,
            announce: parsed.announce,
            verbose: parsed.verbose,
            default_ttl: parsed.node.ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        name = "registry-1"
        bind = ["tcp://*:5670", "inproc://registry"]
        connect = ["tcp://10.0.0.2:5670"]

        [server]
        timeout = "2s"

        [remote]
        ping-interval = "250ms"

        [node]
        withdraw-on-stop = false
        tombstone-ttl = "5m"
        ttl = "30s"

        [limits]
        max-sessions = 500
        handshake-timeout = "3s"

        [[announce]]
        key = "tcp://10.0.0.1:9000"
        value = "orders"

        [[announce]]
        key = "tcp://10.0.0.1:9001"
        value = "billing"
        ttl = "1m"
    "#;

    #[test]
    fn a_full_file_sets_everything_it_names_and_defaults_the_rest() {
        let setup = Setup::parse(FULL, "test.toml").unwrap();
        assert_eq!(setup.config.name.as_deref(), Some("registry-1"));
        assert_eq!(setup.config.server_timeout, Duration::from_secs(2));
        assert_eq!(setup.config.ping_interval, Some(Duration::from_millis(250)));
        assert!(!setup.config.withdraw_on_stop);
        assert_eq!(setup.config.tombstone_ttl, Duration::from_secs(300));
        assert_eq!(setup.config.max_sessions, 500);
        assert_eq!(setup.config.handshake_timeout, Duration::from_secs(3));
        assert_eq!(setup.config.max_tuples, Config::default().max_tuples);
        assert_eq!(setup.bind.len(), 2);
        assert_eq!(setup.default_ttl, Some(Duration::from_secs(30)));
        assert_eq!(setup.announce[1].ttl, Some(Duration::from_secs(60)));
        assert_eq!(setup.announce[0].ttl, None);
    }

    #[test]
    fn the_example_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/zgossip.toml");
        let setup = Setup::load(&path).unwrap();
        assert_eq!(setup.config.name.as_deref(), Some("registry-1"));
        assert_eq!(setup.announce.len(), 2);
        assert_eq!(setup.default_ttl, Some(Duration::from_secs(30)));
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(
            Setup::parse("", "empty.toml").unwrap().config,
            Config::default()
        );
    }

    #[test]
    fn the_curve_section_sets_keys_allow_list_and_secure_remotes() {
        use zgossip::CurveKeys;
        let (ours, client, server) = (
            CurveKeys::generate().unwrap(),
            CurveKeys::generate().unwrap(),
            CurveKeys::generate().unwrap(),
        );
        let text = format!(
            "[curve]\npublic-key = \"{}\"\nsecret-key = \"{}\"\nallow = [\"{}\"]\n\
             zap-domain = \"global\"\n\n[[curve.connect]]\nendpoint = \"tcp://10.0.0.2:5670\"\n\
             server-key = \"{}\"\n",
            ours.public, ours.secret, client.public, server.public
        );
        let setup = Setup::parse(&text, "curve.toml").unwrap();
        assert_eq!(setup.config.curve_keys(), Ok(Some(ours)));
        assert_eq!(setup.config.curve_allow, vec![client.public]);
        assert_eq!(setup.config.zap_domain.as_deref(), Some("global"));
        assert_eq!(
            setup.curve_connect,
            vec![SecureConnect {
                endpoint: "tcp://10.0.0.2:5670".into(),
                server_key: server.public,
            }]
        );
    }

    #[test]
    fn curve_errors_name_the_key_without_quoting_secrets() {
        let key = zgossip::CurveKeys::generate().unwrap().public.to_string();
        let cases = [
            (
                format!("[curve]\npublic-key = \"{key}\"\n"),
                "curve.secret-key",
            ),
            ("[curve]\nsecret-key = \"oops\"\n".to_owned(), "secret-key"),
            (format!("[curve]\nallow = [\"{key}\"]\n"), "curve.allow"),
            (
                "[curve]\nzap-domain = \"\"\n".to_owned(),
                "curve.zap-domain",
            ),
            (
                format!("[[curve.connect]]\nendpoint = \"inproc://x\"\nserver-key = \"{key}\"\n"),
                "curve.connect[0]",
            ),
            (
                "[[curve.connect]]\nendpoint = \"tcp://h:1\"\nserver-key = \"x\"\n".to_owned(),
                "server-key",
            ),
        ];
        for (text, names) in cases {
            let error = Setup::parse(&text, "bad.toml").unwrap_err().to_string();
            assert!(error.starts_with("config file bad.toml: "), "{error}");
            assert!(error.contains(names), "{text:?} gave {error}");
            assert!(!error.contains("oops"), "{error}");
        }
    }

    #[test]
    fn a_duration_without_a_unit_is_refused_naming_the_key_and_a_unit() {
        for (text, key, unit) in [
            ("[node]\nttl = 30\n", "ttl", "\"30s\""),
            ("[server]\ntimeout = \"250\"\n", "timeout", "250ms"),
            (
                "[limits]\nhandshake-timeout = 3\n",
                "handshake-timeout",
                "\"3s\"",
            ),
        ] {
            let error = Setup::parse(text, "bad.toml").unwrap_err().to_string();
            assert!(error.starts_with("config file bad.toml: "), "{error}");
            assert!(
                error.contains(key) && error.contains("needs a unit") && error.contains(unit),
                "{text:?} gave {error}"
            );
        }
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            ("[server]\ntimout = \"1s\"\n", "timout"),
            ("[server]\ntimeout = \"soon\"\n", "timeout"),
            ("[server]\ntimeout = \"1ms\"\n", "server.timeout"),
            ("bind = [\"udp://x:1\"]\n", "bind"),
            (
                "[[announce]]\nkey = \"two words\"\nvalue = \"v\"\n",
                "announce[0]",
            ),
            (
                "[limits]\nmax-value-bytes = 100000000\n",
                "limits.max-value-bytes",
            ),
            ("colour = \"blue\"\n", "colour"),
            ("[node]\nttl = 30\n", "ttl = 30"),
            ("[server]\ntimeout = \"30\"\n", "timeout"),
            (
                "[[announce]]\nkey = \"k\"\nvalue = \"v\"\nttl = 2.5\n",
                "ttl = 2.5",
            ),
        ];
        for (text, key) in cases {
            let error = Setup::parse(text, "bad.toml").unwrap_err().to_string();
            assert!(error.starts_with("config file bad.toml: "), "{error}");
            assert!(error.contains(key), "{text:?} gave {error}");
        }
    }
}
