//! This project's extension blocks (`proto/zgp.md` §7): the hail after HELLO, PING and PONG, and
//! the stamp after a PUBLISH's `ttl`. CZMQ 4.2.1 ignores both, so they ride along harmlessly.

use bytes::{BufMut, Bytes, BytesMut};

use super::Publish;

/// The only extension format defined so far.
const FORMAT: u8 = 1;
/// Bytes in a hail without a digest.
pub const HAIL_LEN: usize = 10;
/// Bytes in a hail with a store digest.
pub const HAIL_DIGEST_LEN: usize = HAIL_LEN + 8;
/// Hail flag: the sender is stopping.
const GOODBYE: u8 = 1;
/// Hail flag: a store digest follows the node id.
const DIGEST: u8 = 2;
/// Bytes in a stamp.
pub const STAMP_LEN: usize = 22;

/// What our nodes say after HELLO, PING and PONG: who they are, whether they are leaving, and
/// (in a PONG) a digest of the tuples they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hail {
    /// The sender's node id; never 0.
    pub node: u64,
    /// The sender is stopping gracefully.
    pub goodbye: bool,
    /// A digest of the sender's tuples in force (`proto/zgp.md` §7): two nodes that hold the
    /// same tuples have the same digest.
    pub digest: Option<u64>,
}

impl Hail {
    /// How many bytes this hail takes.
    pub fn len(&self) -> usize {
        if self.digest.is_some() {
            HAIL_DIGEST_LEN
        } else {
            HAIL_LEN
        }
    }

    /// Never true: a hail always holds a node id. (Clippy pairs `len` with this.)
    pub fn is_empty(&self) -> bool {
        false
    }

    pub(super) fn encode(&self, out: &mut BytesMut) {
        let mut flags = 0;
        if self.goodbye {
            flags |= GOODBYE;
        }
        if self.digest.is_some() {
            flags |= DIGEST;
        }
        out.put_u8(FORMAT);
        out.put_u8(flags);
        out.put_u64(self.node);
        if let Some(digest) = self.digest {
            out.put_u64(digest);
        }
    }

    /// A hail from the bytes after a header, if they are exactly one.
    pub(super) fn decode(bytes: &[u8]) -> Option<Hail> {
        let [FORMAT, flags, rest @ ..] = bytes else {
            return None;
        };
        if flags & !(GOODBYE | DIGEST) != 0 {
            return None;
        }
        let (id, rest) = rest.split_first_chunk::<8>()?;
        let digest = match (flags & DIGEST != 0, rest) {
            (false, []) => None,
            (true, rest) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
            (false, _) => return None,
        };
        let node = u64::from_be_bytes(*id);
        (node != 0).then_some(Hail {
            node,
            goodbye: flags & GOODBYE != 0,
            digest,
        })
    }
}

/// Which copy of a key this is (`proto/zgp.md` §11). Copies are ordered by `(version, origin,
/// lease_seq)`; a PUBLISH without a stamp counts as all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Stamp {
    /// Bumped by every publish or withdrawal of the key.
    pub version: u64,
    /// The node that made this version; 0 for copies without a stamp.
    pub origin: u64,
    /// Bumped by every lease refresh of this version.
    pub lease_seq: u32,
    /// This copy is a tombstone: the key was withdrawn.
    pub withdrawn: bool,
}

/// Why a PUBLISH extension is not a stamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PUBLISH extension of {len} bytes is not a stamp (want {STAMP_LEN} bytes, format 1)")]
pub struct StampError {
    /// The extension's length.
    pub len: usize,
}

impl Stamp {
    /// The stamp as PUBLISH extension bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(STAMP_LEN);
        out.put_u8(FORMAT);
        out.put_u8(u8::from(self.withdrawn));
        out.put_u64(self.version);
        out.put_u64(self.origin);
        out.put_u32(self.lease_seq);
        out.freeze()
    }

    /// Reads a stamp from PUBLISH extension bytes; none there means a copy without a stamp.
    pub fn from_bytes(bytes: &[u8]) -> Result<Option<Stamp>, StampError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let bad = StampError { len: bytes.len() };
        let [FORMAT, flags, rest @ ..] = bytes else {
            return Err(bad);
        };
        let (version, rest) = rest.split_first_chunk::<8>().ok_or(bad.clone())?;
        let (origin, rest) = rest.split_first_chunk::<8>().ok_or(bad.clone())?;
        let lease_seq: [u8; 4] = rest.try_into().map_err(|_| bad.clone())?;
        if flags & !1 != 0 {
            return Err(bad);
        }
        Ok(Some(Stamp {
            version: u64::from_be_bytes(*version),
            origin: u64::from_be_bytes(*origin),
            lease_seq: u32::from_be_bytes(lease_seq),
            withdrawn: flags & 1 == 1,
        }))
    }
}

impl Publish {
    /// A stamped PUBLISH, as our nodes send them.
    pub fn stamped(
        key: impl Into<std::sync::Arc<str>>,
        value: impl Into<std::sync::Arc<str>>,
        ttl_ms: u32,
        stamp: &Stamp,
    ) -> Self {
        Publish {
            key: key.into(),
            value: value.into(),
            ttl_ms,
            extension: stamp.to_bytes(),
        }
    }

    /// The stamp in this PUBLISH's extension; `None` for a plain (CZMQ) PUBLISH.
    pub fn stamp(&self) -> Result<Option<Stamp>, StampError> {
        Stamp::from_bytes(&self.extension)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    #[test]
    fn hails_round_trip_on_hello_ping_and_pong_with_or_without_a_digest() {
        for (digest, len) in [(None, HAIL_LEN), (Some(0xfeed_f00d), HAIL_DIGEST_LEN)] {
            let hail = Some(Hail {
                node: 0x0102_0304_0506_0708,
                goodbye: true,
                digest,
            });
            for message in [
                Message::Hello(hail),
                Message::Ping(hail),
                Message::Pong(hail),
            ] {
                let bytes = message.to_bytes().unwrap();
                assert_eq!(bytes.len(), 4 + len);
                assert_eq!(message.encoded_len(), 4 + len);
                assert_eq!(Message::decode(&bytes), Ok(message));
            }
        }
    }

    #[test]
    fn a_hail_with_node_zero_or_unknown_flags_or_format_or_a_wrong_length_is_refused() {
        for body in [
            &[1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[1, 4, 0, 0, 0, 0, 0, 0, 0, 1],
            &[2, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[1, 0, 1],
            // The digest flag without a digest, and a digest without the flag.
            &[1, 2, 0, 0, 0, 0, 0, 0, 0, 1],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9],
            &[1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9],
        ] {
            let mut frame = vec![0xaa, 0xa0, 0x01, 0x01];
            frame.extend_from_slice(body);
            assert!(Message::decode(&frame).is_err(), "{body:?}");
        }
    }

    #[test]
    fn stamps_round_trip_and_order_by_version_origin_then_lease() {
        let stamp = Stamp {
            version: 7,
            origin: 42,
            lease_seq: 3,
            withdrawn: true,
        };
        let publish = Publish::stamped("k", "", 1000, &stamp);
        assert_eq!(publish.stamp(), Ok(Some(stamp)));
        assert_eq!(Publish::new("k", "v").stamp(), Ok(None));
        let base = Stamp {
            version: 2,
            origin: 5,
            lease_seq: 9,
            withdrawn: false,
        };
        assert!(
            Stamp {
                version: 3,
                origin: 1,
                lease_seq: 0,
                ..base
            } > base
        );
        assert!(
            Stamp {
                origin: 6,
                lease_seq: 0,
                ..base
            } > base
        );
        assert!(
            Stamp {
                lease_seq: 10,
                ..base
            } > base
        );
    }

    #[test]
    fn a_short_or_foreign_extension_is_not_a_stamp() {
        let mut publish = Publish::new("k", "v");
        publish.extension = Bytes::from_static(&[1, 0, 0]);
        assert_eq!(publish.stamp(), Err(StampError { len: 3 }));
        publish.extension = Bytes::from(vec![9; STAMP_LEN]);
        assert!(publish.stamp().is_err());
    }
}
