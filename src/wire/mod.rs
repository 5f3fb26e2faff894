//! ZGP v1, the zgossip wire protocol: one ZeroMQ frame per message. This module owns the message
//! types and their byte encoding, and nothing else: no I/O, no clock, no runtime. Decoding takes
//! untrusted bytes and never panics; see `proto/zgp.md` for the spec and `proto/vectors/` for the
//! golden byte strings the tests check against.

mod ext;
mod member;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

pub use ext::{HAIL_DIGEST_LEN, HAIL_LEN, Hail, STAMP_LEN, Stamp, StampError};
pub use member::{Member, MemberState, Neighbor, Probe};

/// The two signature bytes every ZGP message starts with (`0xAA 0xA0`, network order).
pub const SIGNATURE: u16 = 0xAAA0;
/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Bytes before any message body: signature, id, version.
pub const HEADER_LEN: usize = 4;
/// The longest key the wire can carry (its length is one byte).
pub const MAX_KEY_LEN: usize = 255;

/// The message id, the third byte of every message.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageId {
    /// A client opens its session.
    Hello = 1,
    /// A tuple, sent either way.
    Publish = 2,
    /// A client's heartbeat.
    Ping = 3,
    /// The server's answer to a heartbeat.
    Pong = 4,
    /// The server refuses a message that does not fit the session's state.
    Invalid = 5,
    /// Several PUBLISH bodies in one frame (this project's extension, §7): only between our nodes.
    Batch = 6,
    /// Member records (§12).
    Members = 7,
    /// A newcomer joining (§12).
    Join = 8,
    /// Active-view requests and answers (§12).
    Neighbor = 9,
    /// An active link dropped (§12).
    Disconnect = 10,
    /// View samples (§12).
    Shuffle = 11,
    /// Indirect probes (§12).
    Probe = 12,
}

impl MessageId {
    /// The id for a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Hello),
            2 => Some(Self::Publish),
            3 => Some(Self::Ping),
            4 => Some(Self::Pong),
            5 => Some(Self::Invalid),
            6 => Some(Self::Batch),
            _ => None,
        }
    }

    /// The name used in the spec and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "HELLO",
            Self::Publish => "PUBLISH",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Invalid => "INVALID",
            Self::Batch => "BATCH",
        }
    }
}

/// A PUBLISH body. Key and value are shared (`Arc<str>`) so one tuple can be forwarded to many
/// peers without copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The tuple's key, in service discovery an endpoint; at most 255 bytes.
    pub key: Arc<str>,
    /// The tuple's value, in service discovery a service name.
    pub value: Arc<str>,
    /// Lifetime in milliseconds; 0 means none. CZMQ always sends 0.
    pub ttl_ms: u32,
    /// Bytes after `ttl`, which CZMQ ignores: the room this project extends the protocol in.
    /// Kept raw so every frame re-encodes byte for byte; [`Publish::stamp`] reads it.
    pub extension: Bytes,
}

impl Publish {
    /// A PUBLISH with no ttl and no extension, as CZMQ sends it.
    pub fn new(key: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ttl_ms: 0,
            extension: Bytes::new(),
        }
    }
}

/// One ZGP message. HELLO, PING and PONG may carry this project's [`Hail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → server: open the session; the server answers with every tuple it holds.
    Hello(Option<Hail>),
    /// Either way: one tuple.
    Publish(Publish),
    /// Client → server heartbeat.
    Ping(Option<Hail>),
    /// Server → client heartbeat answer.
    Pong(Option<Hail>),
    /// Server → client: that message did not fit the session; say HELLO again.
    Invalid,
    /// Either way, between nodes that hailed: tuples in order, as if each were a PUBLISH.
    Batch(Vec<Publish>),
    /// Between members: records to merge (§12).
    Members(Vec<Member>),
    /// Between members: a newcomer joining, with the random walk's time to live.
    Join {
        /// Hops left.
        ttl: u8,
        /// The newcomer.
        member: Box<Member>,
    },
    /// Between members: ask to be an active peer, or answer.
    Neighbor(Neighbor),
    /// Between members: the sender drops this link from its active view.
    Disconnect {
        /// The sender is stopping.
        stopping: bool,
    },
    /// Between members: a sample of the sender's views, or the answer with one.
    Shuffle {
        /// This is the answer.
        reply: bool,
        /// At most 16 records.
        members: Vec<Member>,
    },
    /// Between members: an indirect probe, or its answer.
    Probe(Probe),
}

/// Why a byte string is not a ZGP v1 message. Every variant says what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than the four header bytes.
    #[error("message is {len} bytes, shorter than the 4-byte header")]
    TooShort {
        /// How many bytes there were.
        len: usize,
    },
    /// The first two bytes are not `0xAA 0xA0`.
    #[error("bad signature {found:#06x} (want 0xaaa0)")]
    BadSignature {
        /// The two bytes found, big-endian.
        found: u16,
    },
    /// The id byte names no message.
    #[error("unknown message id {id}")]
    UnknownId {
        /// The id byte.
        id: u8,
    },
    /// The version byte is not 1.
    #[error("{message}: unsupported version {version} (want 1)")]
    BadVersion {
        /// The message the id named.
        message: &'static str,
        /// The version byte.
        version: u8,
    },
    /// The body ended inside a field.
    #[error("{message}: truncated in field `{field}` at byte {offset}")]
    Truncated {
        /// The message being decoded.
        message: &'static str,
        /// The field that did not fit.
        field: &'static str,
        /// Where the read that fell short began.
        offset: usize,
    },
    /// A string field is not UTF-8.
    #[error("{message}: field `{field}` is not UTF-8")]
    NotUtf8 {
        /// The message being decoded.
        message: &'static str,
        /// The field.
        field: &'static str,
    },
    /// HELLO, PING or PONG carried bytes that are not a hail.
    #[error("{message}: {len} bytes after the header are not a hail")]
    BadExtension {
        /// The message being decoded.
        message: &'static str,
        /// How many bytes followed the header.
        len: usize,
    },
    /// INVALID carried extra bytes.
    #[error("{message}: {count} unexpected bytes after the header")]
    TrailingBytes {
        /// The message being decoded.
        message: &'static str,
        /// How many bytes followed.
        count: usize,
    },
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A key longer than the one-byte length field allows.
    #[error("key is {len} bytes; ZGP keys are at most 255")]
    KeyTooLong {
        /// The key's length.
        len: usize,
    },
    /// A value longer than the four-byte length field allows.
    #[error("value is {len} bytes; ZGP values are at most 4 GiB")]
    ValueTooLong {
        /// The value's length.
        len: usize,
    },
}

impl Message {
    /// This message's id.
    pub fn id(&self) -> MessageId {
        match self {
            Self::Hello(_) => MessageId::Hello,
            Self::Publish(_) => MessageId::Publish,
            Self::Ping(_) => MessageId::Ping,
            Self::Pong(_) => MessageId::Pong,
            Self::Invalid => MessageId::Invalid,
            Self::Batch(_) => MessageId::Batch,
        }
    }

    /// Exactly how many bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Publish(p) => HEADER_LEN + publish_body_len(p),
            Self::Batch(entries) => {
                HEADER_LEN
                    + entries
                        .iter()
                        .map(|p| BATCH_ENTRY_PREFIX + publish_body_len(p))
                        .sum::<usize>()
            }
            Self::Hello(Some(hail)) | Self::Ping(Some(hail)) | Self::Pong(Some(hail)) => {
                HEADER_LEN + hail.len()
            }
            _ => HEADER_LEN,
        }
    }

    /// Appends this message's bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Publish(p) => check_publish(p)?,
            Self::Batch(entries) => {
                for p in entries {
                    check_publish(p)?;
                    u32::try_from(publish_body_len(p))
                        .map_err(|_| EncodeError::ValueTooLong { len: p.value.len() })?;
                }
            }
            _ => {}
        }
        out.reserve(self.encoded_len());
        out.put_u16(SIGNATURE);
        out.put_u8(self.id() as u8);
        out.put_u8(VERSION);
        if let Self::Publish(p) = self {
            put_publish_body(p, out);
        }
        if let Self::Batch(entries) = self {
            for p in entries {
                // Checked above: the entry's length fits in four bytes.
                out.put_u32(publish_body_len(p) as u32);
                put_publish_body(p, out);
            }
        }
        if let Self::Hello(Some(hail)) | Self::Ping(Some(hail)) | Self::Pong(Some(hail)) = self {
            hail.encode(out);
        }
        Ok(())
    }

    /// This message as one frame.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Decodes exactly one message from one frame. Never panics, whatever the bytes.
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        Self::decode_with(frame, &Bytes::copy_from_slice)
    }

    /// As [`Message::decode`], but PUBLISH extensions share `frame`'s memory instead of being
    /// copied: one allocation fewer per tuple, which a BATCH of hundreds notices.
    pub fn decode_frame(frame: &Bytes) -> Result<Message, DecodeError> {
        Self::decode_with(frame, &|part| frame.slice_ref(part))
    }

    /// `extension` turns a part of `frame` into the `Bytes` a PUBLISH keeps.
    fn decode_with(
        frame: &[u8],
        extension: &dyn Fn(&[u8]) -> Bytes,
    ) -> Result<Message, DecodeError> {
        let [s0, s1, code, version, body @ ..] = frame else {
            return Err(DecodeError::TooShort { len: frame.len() });
        };
        let signature = u16::from_be_bytes([*s0, *s1]);
        if signature != SIGNATURE {
            return Err(DecodeError::BadSignature { found: signature });
        }
        let id = MessageId::from_code(*code).ok_or(DecodeError::UnknownId { id: *code })?;
        let message = id.name();
        if *version != VERSION {
            return Err(DecodeError::BadVersion {
                message,
                version: *version,
            });
        }
        let hail = || {
            if body.is_empty() {
                return Ok(None);
            }
            Hail::decode(body)
                .map(Some)
                .ok_or(DecodeError::BadExtension {
                    message,
                    len: body.len(),
                })
        };
        match id {
            MessageId::Hello => hail().map(Message::Hello),
            MessageId::Ping => hail().map(Message::Ping),
            MessageId::Pong => hail().map(Message::Pong),
            MessageId::Invalid if body.is_empty() => Ok(Message::Invalid),
            MessageId::Invalid => Err(DecodeError::TrailingBytes {
                message,
                count: body.len(),
            }),
            MessageId::Publish => {
                decode_publish(body, message, HEADER_LEN, extension).map(Message::Publish)
            }
            MessageId::Batch => decode_batch(body, extension).map(Message::Batch),
        }
    }
}

/// Bytes before each entry of a BATCH: the entry's length (u32, big-endian).
pub const BATCH_ENTRY_PREFIX: usize = 4;

/// A PUBLISH's bytes after the header.
pub fn publish_body_len(p: &Publish) -> usize {
    1 + p.key.len() + 4 + p.value.len() + 4 + p.extension.len()
}

fn check_publish(p: &Publish) -> Result<(), EncodeError> {
    u8::try_from(p.key.len()).map_err(|_| EncodeError::KeyTooLong { len: p.key.len() })?;
    u32::try_from(p.value.len()).map_err(|_| EncodeError::ValueTooLong { len: p.value.len() })?;
    Ok(())
}

/// Writes a PUBLISH body whose lengths [`check_publish`] accepted.
fn put_publish_body(p: &Publish, out: &mut BytesMut) {
    out.put_u8(p.key.len() as u8);
    out.put_slice(p.key.as_bytes());
    out.put_u32(p.value.len() as u32);
    out.put_slice(p.value.as_bytes());
    out.put_u32(p.ttl_ms);
    out.put_slice(&p.extension);
}

/// A cursor over a PUBLISH body that reports which field fell short and where.
struct Reader<'a> {
    rest: &'a [u8],
    offset: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated {
                message: self.message,
                field,
                offset: self.offset,
            })?;
        self.rest = rest;
        self.offset += n;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let [b] = self.take(1, field)? else {
            unreachable!("take(1) returns one byte")
        };
        Ok(*b)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let [a, b, c, d] = self.take(4, field)? else {
            unreachable!("take(4) returns four bytes")
        };
        Ok(u32::from_be_bytes([*a, *b, *c, *d]))
    }

    fn string(&mut self, len: usize, field: &'static str) -> Result<Arc<str>, DecodeError> {
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(Arc::from)
            .map_err(|_| DecodeError::NotUtf8 {
                message: self.message,
                field,
            })
    }
}

/// A PUBLISH body that starts `offset` bytes into the frame of a `message`.
fn decode_publish(
    body: &[u8],
    message: &'static str,
    offset: usize,
    extension: &dyn Fn(&[u8]) -> Bytes,
) -> Result<Publish, DecodeError> {
    let mut r = Reader {
        rest: body,
        offset,
        message,
    };
    let key_len = r.u8("key")? as usize;
    let key = r.string(key_len, "key")?;
    let value_len = r.u32("value")? as usize;
    let value = r.string(value_len, "value")?;
    let ttl_ms = r.u32("ttl")?;
    Ok(Publish {
        key,
        value,
        ttl_ms,
        extension: if r.rest.is_empty() {
            Bytes::new()
        } else {
            extension(r.rest)
        },
    })
}

/// BATCH: one or more entries, each a length and a PUBLISH body; nothing else.
fn decode_batch(
    body: &[u8],
    extension: &dyn Fn(&[u8]) -> Bytes,
) -> Result<Vec<Publish>, DecodeError> {
    let mut r = Reader {
        rest: body,
        offset: HEADER_LEN,
        message: "BATCH",
    };
    // Counted first so the list is allocated once: a batch holds up to hundreds of entries.
    let mut entries = Vec::with_capacity(count_entries(body));
    loop {
        let len = r.u32("entry")? as usize;
        let offset = r.offset;
        let entry = r.take(len, "entry")?;
        entries.push(decode_publish(entry, "BATCH", offset, extension)?);
        if r.rest.is_empty() {
            return Ok(entries);
        }
    }
}

/// How many whole entries `body` (a BATCH after its header) holds, by their length prefixes.
fn count_entries(mut body: &[u8]) -> usize {
    let mut count = 0;
    while let Some((prefix, rest)) = body.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*prefix) as usize;
        let Some(rest) = rest.get(len..) else { break };
        body = rest;
        count += 1;
    }
    count
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_encodes_as_the_facts_file_example() {
        let bytes = Message::Publish(Publish::new("svc", "endpoint"))
            .to_bytes()
            .unwrap();
        let want = b"\xaa\xa0\x02\x01\x03svc\x00\x00\x00\x08endpoint\x00\x00\x00\x00";
        assert_eq!(&bytes[..], &want[..]);
    }

    #[test]
    fn publish_keeps_bytes_after_ttl_as_extension() {
        let mut frame = Message::Publish(Publish::new("k", "v"))
            .to_bytes()
            .unwrap()
            .to_vec();
        frame.extend_from_slice(b"\x01\x02");
        let Message::Publish(p) = Message::decode(&frame).unwrap() else {
            panic!("not a PUBLISH")
        };
        assert_eq!(&p.extension[..], b"\x01\x02");
    }

    #[test]
    fn value_length_past_the_frame_is_truncated_not_a_panic() {
        let frame = b"\xaa\xa0\x02\x01\x01k\xff\xff\xff\xffv";
        assert!(matches!(
            Message::decode(frame),
            Err(DecodeError::Truncated { field: "value", .. })
        ));
    }

    #[test]
    fn overlong_key_is_refused_at_encode() {
        let key = "k".repeat(256);
        assert_eq!(
            Message::Publish(Publish::new(key, "v")).to_bytes(),
            Err(EncodeError::KeyTooLong { len: 256 })
        );
    }
}
