//! ZGP v1, the zgossip wire protocol: one ZeroMQ frame per message. This module owns the message
//! types and their byte encoding, and nothing else: no I/O, no clock, no runtime. Decoding takes
//! untrusted bytes and never panics; see `proto/zgp.md` for the spec and `proto/vectors/` for the
//! golden byte strings the tests check against.

mod ext;
mod member;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

pub use ext::{HAIL_DIGEST_LEN, HAIL_LEN, Hail, STAMP_LEN, Stamp, StampError};
pub use member::{
    MAX_ENDPOINTS, MAX_FIELD_LEN, MAX_MEMBERS, MAX_SHUFFLE, MAX_TAGS, Member, MemberState,
    Neighbor, Probe, is_tag, members_frame,
};

/// The two signature bytes every ZGP message starts with (`0xAA 0xA0`, network order).
pub const SIGNATURE: u16 = 0xAAA0;
/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Bytes before any message body: signature, id, version.
pub const HEADER_LEN: usize = 4;
/// Writes the signature, `id` and version.
fn put_header(id: MessageId, out: &mut BytesMut) {
    out.put_u16(SIGNATURE);
    out.put_u8(id as u8);
    out.put_u8(VERSION);
}

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
            7 => Some(Self::Members),
            8 => Some(Self::Join),
            9 => Some(Self::Neighbor),
            10 => Some(Self::Disconnect),
            11 => Some(Self::Shuffle),
            12 => Some(Self::Probe),
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
            Self::Members => "MEMBERS",
            Self::Join => "JOIN",
            Self::Neighbor => "NEIGHBOR",
            Self::Disconnect => "DISCONNECT",
            Self::Shuffle => "SHUFFLE",
            Self::Probe => "PROBE",
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
    /// INVALID carried bytes after the header, or a membership message (§12) bytes after its
    /// last field.
    #[error("{message}: {count} unexpected bytes after the last field")]
    TrailingBytes {
        /// The message being decoded.
        message: &'static str,
        /// How many bytes followed.
        count: usize,
    },
    /// A field holds a value the spec does not allow: unknown flag bits, a member state above
    /// 3, member id 0, a count over its limit, a tag that is not `key=value`.
    #[error("{message}: field `{field}` at byte {offset}: {why}")]
    BadField {
        /// The message being decoded.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// Where the field starts (for a string, its length byte), from the start of the frame.
        offset: usize,
        /// What is wrong with it.
        why: &'static str,
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
    /// A string in a member record (name, endpoint or tag) longer than its one-byte length
    /// allows.
    #[error("{message}: {field} is {len} bytes; at most 255")]
    FieldTooLong {
        /// The message being encoded.
        message: &'static str,
        /// `"name"`, `"endpoint"` or `"tag"`.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// More items than the message allows: records in MEMBERS (65,535) or SHUFFLE (16),
    /// endpoints (8) or tags (32) in a member record.
    #[error("{message}: {count} {field}; at most {max}")]
    TooMany {
        /// The message being encoded.
        message: &'static str,
        /// `"records"`, `"endpoints"` or `"tags"`.
        field: &'static str,
        /// How many there are.
        count: usize,
        /// How many fit.
        max: usize,
    },
    /// A value the decoder would refuse: member id 0, a tag that is not `key=value` with a
    /// non-empty key, an empty MEMBERS, a PROBE `failed` that is not an answer.
    #[error("{message}: field `{field}`: {why}")]
    BadField {
        /// The message being encoded.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl Message {
    /// Whether this is one of the membership messages (ids 7–12, §12), which only nodes that
    /// hailed each other exchange.
    pub fn is_membership(&self) -> bool {
        matches!(
            self,
            Self::Members(_)
                | Self::Join { .. }
                | Self::Neighbor(_)
                | Self::Disconnect { .. }
                | Self::Shuffle { .. }
                | Self::Probe(_)
        )
    }

    /// This message's id.
    pub fn id(&self) -> MessageId {
        match self {
            Self::Hello(_) => MessageId::Hello,
            Self::Publish(_) => MessageId::Publish,
            Self::Ping(_) => MessageId::Ping,
            Self::Pong(_) => MessageId::Pong,
            Self::Invalid => MessageId::Invalid,
            Self::Batch(_) => MessageId::Batch,
            Self::Members(_) => MessageId::Members,
            Self::Join { .. } => MessageId::Join,
            Self::Neighbor(_) => MessageId::Neighbor,
            Self::Disconnect { .. } => MessageId::Disconnect,
            Self::Shuffle { .. } => MessageId::Shuffle,
            Self::Probe(_) => MessageId::Probe,
        }
    }

    /// Exactly how many bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Self::Hello(hail) | Self::Ping(hail) | Self::Pong(hail) => {
                    hail.as_ref().map_or(0, Hail::len)
                }
                Self::Invalid => 0,
                Self::Publish(p) => publish_body_len(p),
                Self::Batch(entries) => entries
                    .iter()
                    .map(|p| BATCH_ENTRY_PREFIX + publish_body_len(p))
                    .sum(),
                Self::Members(members) => 2 + member::records_len(members),
                Self::Join { member, .. } => 1 + member.encoded_len(),
                Self::Neighbor(neighbor) => neighbor.body_len(),
                Self::Disconnect { .. } => 1,
                Self::Shuffle { members, .. } => 2 + member::records_len(members),
                Self::Probe(_) => member::PROBE_BODY_LEN,
            }
    }

    /// Appends this message's bytes to `out`. A message the wire cannot carry (§12's limits, a
    /// key over 255 bytes...) is refused before anything is written, so `out` is left as it was.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.check()?;
        out.reserve(self.encoded_len());
        put_header(self.id(), out);
        // Every count and length below was checked by `check` to fit its field.
        match self {
            Self::Hello(hail) | Self::Ping(hail) | Self::Pong(hail) => {
                if let Some(hail) = hail {
                    hail.encode(out);
                }
            }
            Self::Invalid => {}
            Self::Publish(p) => put_publish_body(p, out),
            Self::Batch(entries) => {
                for p in entries {
                    out.put_u32(publish_body_len(p) as u32);
                    put_publish_body(p, out);
                }
            }
            Self::Members(members) => {
                out.put_u16(members.len() as u16);
                member::put_records(members, out);
            }
            Self::Join { ttl, member } => {
                out.put_u8(*ttl);
                member.put(out);
            }
            Self::Neighbor(neighbor) => neighbor.put(out),
            Self::Disconnect { stopping } => out.put_u8(u8::from(*stopping)),
            Self::Shuffle { reply, members } => {
                out.put_u8(u8::from(*reply));
                out.put_u8(members.len() as u8);
                member::put_records(members, out);
            }
            Self::Probe(probe) => probe.put(out),
        }
        Ok(())
    }

    /// Whether this message can be encoded as one that decodes back to it.
    fn check(&self) -> Result<(), EncodeError> {
        let message = self.id().name();
        match self {
            Self::Hello(_) | Self::Ping(_) | Self::Pong(_) | Self::Invalid => Ok(()),
            Self::Disconnect { .. } | Self::Neighbor(Neighbor::Answer { .. }) => Ok(()),
            Self::Publish(p) => check_publish(p),
            Self::Batch(entries) => entries.iter().try_for_each(|p| {
                check_publish(p)?;
                u32::try_from(publish_body_len(p))
                    .map(drop)
                    .map_err(|_| EncodeError::ValueTooLong { len: p.value.len() })
            }),
            Self::Members(members) => member::check_members(members),
            Self::Shuffle { members, .. } => {
                member::check_records(message, members, member::MAX_SHUFFLE)
            }
            Self::Join { member, .. } | Self::Neighbor(Neighbor::Request { member, .. }) => {
                member.check(message)
            }
            Self::Probe(probe) => probe.check(),
        }
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
            MessageId::Members => whole(body, message, member::read_members),
            MessageId::Join => whole(body, message, member::read_join),
            MessageId::Neighbor => whole(body, message, member::read_neighbor),
            MessageId::Disconnect => whole(body, message, member::read_disconnect),
            MessageId::Shuffle => whole(body, message, member::read_shuffle),
            MessageId::Probe => whole(body, message, member::read_probe),
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

/// A cursor over a message body that reports which field fell short and where.
struct Reader<'a> {
    rest: &'a [u8],
    /// Where `rest` starts, counted from the start of the frame.
    offset: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over everything after the header of a `message`.
    fn new(body: &'a [u8], message: &'static str) -> Self {
        Reader {
            rest: body,
            offset: HEADER_LEN,
            message,
        }
    }

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

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let (taken, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated {
                message: self.message,
                field,
                offset: self.offset,
            })?;
        self.rest = rest;
        self.offset += N;
        Ok(*taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array(field).map(u8::from_be_bytes)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn str(&mut self, len: usize, field: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 {
            message: self.message,
            field,
        })
    }

    fn string(&mut self, len: usize, field: &'static str) -> Result<Arc<str>, DecodeError> {
        self.str(len, field).map(Arc::from)
    }

    /// A field whose value the spec does not allow; `offset` is where the field starts.
    fn bad(&self, field: &'static str, offset: usize, why: &'static str) -> DecodeError {
        DecodeError::BadField {
            message: self.message,
            field,
            offset,
            why,
        }
    }

    /// Nothing may follow the last field.
    fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.message,
                count: self.rest.len(),
            })
        }
    }
}

/// Reads a body that must be exactly one `read` of it, with nothing after.
fn whole(
    body: &[u8],
    message: &'static str,
    read: fn(&mut Reader<'_>) -> Result<Message, DecodeError>,
) -> Result<Message, DecodeError> {
    let mut r = Reader::new(body, message);
    let decoded = read(&mut r)?;
    r.finish()?;
    Ok(decoded)
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
    let mut r = Reader::new(body, "BATCH");
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
