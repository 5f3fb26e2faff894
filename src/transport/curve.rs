//! CURVE keys and the ZAP verdict for tcp/ipc links. A key is 32 bytes, written as 40 characters
//! of Z85 in files, pipes and logs; [`CurveServer`] and [`CurveClient`] are what the libzmq I/O
//! thread (`zmq`) applies to a listener or a DEALER. `inproc://` never uses CURVE: it is
//! our own transport inside one process, which is trusted.
//!
//! Z85 is done here rather than with `zmq::z85_decode`, which accepts characters outside the
//! alphabet (so a typo becomes another key) and leaks its C string on every call.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The Z85 alphabet (ZeroMQ RFC 32), digit value = position.
const Z85: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Characters in a Z85-encoded key.
pub const KEY_Z85_LEN: usize = 40;

/// What CURVE calls say when the libzmq this process runs on was built without CURVE.
pub(crate) const NO_CURVE: &str = "the libzmq this program runs on was built without CURVE (no libsodium); plain tcp and ipc still work";

/// Whether the libzmq this process runs on can do CURVE (it was built with libsodium). When it
/// cannot, keypairs, CURVE listeners and CURVE connects are refused with an error saying so.
pub fn curve_available() -> bool {
    zmq::has("curve") == Some(true)
}

/// A CURVE public or secret key. `Display` and [`CurveKey::to_z85`] write it as Z85; `Debug`
/// does not show it, so a secret key in a logged `Config` stays secret.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CurveKey([u8; 32]);

/// Why text is not a CURVE key, or why no keypair could be made. It never quotes the text: it
/// may be a secret key with a typo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl KeyError {
    fn bad_key(why: String) -> Self {
        Self(format!("bad CURVE key: {why}"))
    }
}

impl CurveKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, as libzmq takes them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 40 characters of Z85, refusing anything else (other lengths, characters outside
    /// the alphabet, groups that overflow 32 bits).
    pub fn from_z85(text: &str) -> Result<Self, KeyError> {
        let len = text.chars().count();
        if len != KEY_Z85_LEN {
            return Err(KeyError::bad_key(format!(
                "expected {KEY_Z85_LEN} Z85 characters, got {len}"
            )));
        }
        let mut key = [0u8; 32];
        for (at, (group, out)) in text
            .as_bytes()
            .chunks_exact(5)
            .zip(key.chunks_exact_mut(4))
            .enumerate()
        {
            let mut value: u64 = 0;
            for (offset, c) in group.iter().enumerate() {
                let digit = Z85.iter().position(|z| z == c).ok_or_else(|| {
                    KeyError::bad_key(format!(
                        "character {} is not Z85",
                        at * 5 + offset + 1 // 1-based, as people count
                    ))
                })?;
                value = value * 85 + digit as u64;
            }
            let word = u32::try_from(value).map_err(|_| {
                KeyError::bad_key(format!("characters {}-{} overflow", at * 5 + 1, at * 5 + 5))
            })?;
            out.copy_from_slice(&word.to_be_bytes());
        }
        Ok(Self(key))
    }

    /// The key as 40 characters of Z85.
    pub fn to_z85(&self) -> String {
        let mut text = String::with_capacity(KEY_Z85_LEN);
        for word in self.0.chunks_exact(4) {
            let mut value = word.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b));
            let mut digits = [b'0'; 5];
            for digit in digits.iter_mut().rev() {
                *digit = Z85.get((value % 85) as usize).copied().unwrap_or(b'0');
                value /= 85;
            }
            text.extend(digits.iter().map(|d| char::from(*d)));
        }
        text
    }
}

impl FromStr for CurveKey {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<Self, KeyError> {
        Self::from_z85(text)
    }
}

impl TryFrom<String> for CurveKey {
    type Error = KeyError;
    fn try_from(text: String) -> Result<Self, KeyError> {
        Self::from_z85(&text)
    }
}

impl fmt::Display for CurveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for CurveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurveKey(..)")
    }
}

/// A CURVE keypair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurveKeys {
    /// The public key: give it to peers.
    pub public: CurveKey,
    /// The secret key: keep it.
    pub secret: CurveKey,
}

impl CurveKeys {
    /// A fresh keypair from libzmq (libsodium's random source).
    pub fn generate() -> Result<Self, KeyError> {
        if !curve_available() {
            return Err(KeyError(format!("cannot make a CURVE keypair: {NO_CURVE}")));
        }
        let pair = zmq::CurveKeyPair::new()
            .map_err(|e| KeyError(format!("libzmq cannot make a CURVE keypair: {e}")))?;
        Ok(Self {
            public: CurveKey(pair.public_key),
            secret: CurveKey(pair.secret_key),
        })
    }
}

/// What makes a listener a CURVE server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveServer {
    /// The node's secret key.
    pub secret_key: CurveKey,
    /// The ZAP domain libzmq passes to the handler (informational here).
    pub zap_domain: Option<String>,
    /// Client public keys admitted; empty admits any client that knows our public key. Applies
    /// to every CURVE listener of the node (there is one ZAP handler per libzmq context).
    pub allow: BTreeSet<CurveKey>,
}

/// What makes a DEALER a CURVE client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveClient {
    /// The keypair this side presents.
    pub keys: CurveKeys,
    /// The server's public key: a server without its secret cannot finish the handshake.
    pub server_key: CurveKey,
}

/// A ZAP handler's answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ZapAnswer {
    /// The reply frames (RFC 27).
    pub reply: Vec<Vec<u8>>,
    /// The client key refused, when a CURVE client was not in the allow list.
    pub refused: Option<CurveKey>,
}

/// Answers one ZAP request (RFC 27: version, request id, domain, address, identity, mechanism,
/// credentials) from libzmq. CURVE clients pass when `allow` is empty or holds their key; other
/// mechanisms pass (only CURVE listeners are given a ZAP domain, so they do not ask).
pub(crate) fn zap_answer(request: &[Vec<u8>], allow: &BTreeSet<CurveKey>) -> ZapAnswer {
    let request_id = request.get(1).cloned().unwrap_or_default();
    let reply = |code: &str, text: &str, user: &str| {
        vec![
            b"1.0".to_vec(),
            request_id.clone(),
            code.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
            user.as_bytes().to_vec(),
            Vec::new(),
        ]
    };
    let frame = |at: usize| request.get(at).map(Vec::as_slice);
    if frame(0) != Some(b"1.0") {
        return ZapAnswer {
            reply: reply("500", "unsupported ZAP version", ""),
            refused: None,
        };
    }
    if frame(5) != Some(b"CURVE") {
        return ZapAnswer {
            reply: reply("200", "OK", ""),
            refused: None,
        };
    }
    let Some(key) = frame(6)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(CurveKey)
    else {
        return ZapAnswer {
            reply: reply("500", "no CURVE client key", ""),
            refused: None,
        };
    };
    if allow.is_empty() || allow.contains(&key) {
        ZapAnswer {
            reply: reply("200", "OK", &key.to_z85()),
            refused: None,
        }
    } else {
        ZapAnswer {
            reply: reply("400", "client key not allowed", ""),
            refused: Some(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ZeroMQ RFC 32's example.
    #[test]
    fn z85_matches_the_rfc_example_and_libzmq() {
        let hello = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&hello);
        let text = CurveKey(bytes).to_z85();
        assert!(text.starts_with("HelloWorld"), "{text}");
        assert_eq!(text, zmq::z85_encode(&bytes).unwrap());
        assert_eq!(CurveKey::from_z85(&text).unwrap(), CurveKey(bytes));
    }

    #[test]
    fn generated_keys_round_trip_through_z85() {
        let keys = CurveKeys::generate().unwrap();
        for key in [keys.public, keys.secret] {
            let text = key.to_z85();
            assert_eq!(text.len(), KEY_Z85_LEN);
            assert_eq!(text.parse::<CurveKey>().unwrap(), key);
        }
        assert_ne!(keys.public, keys.secret);
    }

    #[test]
    fn bad_keys_say_why_without_quoting_the_key() {
        let good = CurveKeys::generate().unwrap().secret.to_z85();
        let cases = [
            (good[..39].to_owned(), "got 39"),
            (format!("{good}0"), "got 41"),
            (format!("~{}", &good[1..]), "character 1 is not Z85"),
            (format!("{}é", &good[..39]), "character 40 is not Z85"),
            (format!("#####{}", &good[5..]), "characters 1-5 overflow"),
        ];
        for (text, says) in cases {
            let error = CurveKey::from_z85(&text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
            assert!(!error.contains(&good[5..]), "{error}");
        }
        assert_eq!(
            format!("{:?}", CurveKey::from_z85(&good).unwrap()),
            "CurveKey(..)"
        );
    }

    fn request(mechanism: &str, key: &[u8]) -> Vec<Vec<u8>> {
        [
            &b"1.0"[..],
            b"7",
            b"global",
            b"127.0.0.1",
            b"",
            mechanism.as_bytes(),
            key,
        ]
        .iter()
        .map(|f| f.to_vec())
        .collect()
    }

    #[test]
    fn zap_admits_listed_curve_clients_and_refuses_the_rest() {
        let listed = CurveKeys::generate().unwrap().public;
        let other = CurveKeys::generate().unwrap().public;
        let allow = BTreeSet::from([listed]);

        let yes = zap_answer(&request("CURVE", listed.as_bytes()), &allow);
        assert_eq!(yes.reply[1], b"7");
        assert_eq!(yes.reply[2], b"200");
        assert_eq!(yes.refused, None);

        let no = zap_answer(&request("CURVE", other.as_bytes()), &allow);
        assert_eq!(no.reply[2], b"400");
        assert_eq!(no.refused, Some(other));
        assert_eq!(no.reply.len(), 6);

        let anyone = zap_answer(&request("CURVE", other.as_bytes()), &BTreeSet::new());
        assert_eq!(anyone.reply[2], b"200");
        assert_eq!(zap_answer(&request("NULL", b""), &allow).reply[2], b"200");
        assert_eq!(
            zap_answer(&request("CURVE", b"short"), &allow).reply[2],
            b"500"
        );
        assert_eq!(zap_answer(&[b"2.0".to_vec()], &allow).reply[2], b"500");
    }
}
