//! The membership messages (ids 7–12, `proto/zgp.md` §12) and the member record they carry:
//! their types and their bodies' encoding. Only our nodes send them, and only on sessions that
//! hailed. As everywhere in the codec, what encodes decodes back to itself, and what the decoder
//! refuses the encoder refuses too, so a frame we send is never one we would call malformed.

use std::borrow::Borrow;

use bytes::{BufMut, Bytes, BytesMut};

use super::{DecodeError, EncodeError, HEADER_LEN, Message, MessageId, Reader, put_header};

/// The most records a MEMBERS carries (its count is a u16).
pub const MAX_MEMBERS: usize = u16::MAX as usize;
/// The most records a SHUFFLE carries.
pub const MAX_SHUFFLE: usize = 16;
/// The most endpoints in a member record.
pub const MAX_ENDPOINTS: usize = 8;
/// The most tags in a member record.
pub const MAX_TAGS: usize = 32;
/// The longest name, endpoint or tag the wire can carry (its length is one byte).
pub const MAX_FIELD_LEN: usize = 255;
/// The smallest member record: id, incarnation, state, flags, joined, and three zero lengths
/// (name, endpoint count, tag count).
pub(super) const MIN_RECORD_LEN: usize = 8 + 8 + 1 + 1 + 8 + 3;
/// A PROBE's bytes after the header: flags, seq, target.
pub(super) const PROBE_BODY_LEN: usize = 1 + 4 + 8;

/// Member record flag: its tuples outlive it.
const DURABLE: u8 = 1;
/// NEIGHBOR flags.
const HIGH: u8 = 1;
const ANSWER: u8 = 2;
const ACCEPTED: u8 = 4;
/// DISCONNECT flag.
const STOPPING: u8 = 1;
/// SHUFFLE flag.
const REPLY: u8 = 1;
/// PROBE flags.
const PROBE_ANSWER: u8 = 1;
const PROBE_FAILED: u8 = 2;

/// How a member is doing, as its record says. Ordered: for one incarnation, a later state wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MemberState {
    /// Running, as far as anyone knows.
    Alive = 0,
    /// Some node could not reach it; it has the suspicion timeout to refute.
    Suspect = 1,
    /// Confirmed failed: its services are dropped (unless it is durable).
    Dead = 2,
    /// Stopped gracefully.
    Left = 3,
}

impl MemberState {
    /// The state for a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Alive),
            1 => Some(Self::Suspect),
            2 => Some(Self::Dead),
            3 => Some(Self::Left),
            _ => None,
        }
    }

    /// The word used on the pipe and in the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }
}

/// One member record (`proto/zgp.md` §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's node id, as in its hail; never 0.
    pub id: u64,
    /// Raised only by the member itself.
    pub incarnation: u64,
    /// Its state at this incarnation.
    pub state: MemberState,
    /// Its tuples outlive it (withdraw-on-stop is off).
    pub durable: bool,
    /// When it started, in ms since the Unix epoch by its own clock.
    pub joined_ms: u64,
    /// Its name (may be empty).
    pub name: String,
    /// The endpoints other nodes should dial; at most 8.
    pub endpoints: Vec<String>,
    /// `key=value` tags; at most 32.
    pub tags: Vec<String>,
}

impl Member {
    /// Whether this record beats `other` (a record of the same member): a greater incarnation,
    /// or the same one and a later state.
    pub fn supersedes(&self, other: &Member) -> bool {
        (self.incarnation, self.state) > (other.incarnation, other.state)
    }
}

/// NEIGHBOR: a request to be an active peer, or the answer to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Neighbor {
    /// The sender asks to be an active peer; `high` must be accepted (its active view is empty).
    Request {
        /// High priority.
        high: bool,
        /// The sender's own record.
        member: Box<Member>,
    },
    /// The answer.
    Answer {
        /// Whether the sender keeps the link in its active view.
        accepted: bool,
    },
}

/// PROBE: whether `target` is alive, asked of a third node, or its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// This is the answer.
    pub answer: bool,
    /// In an answer: the target did not answer the prober either.
    pub failed: bool,
    /// Matches an answer to its question.
    pub seq: u32,
    /// The member asked about.
    pub target: u64,
}

/// Whether `tag` is `key=value` with a non-empty key (the value may be empty or hold `=`).
pub fn is_tag(tag: &str) -> bool {
    tag.split_once('=').is_some_and(|(key, _)| !key.is_empty())
}

impl Member {
    /// Bytes this record takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let strings = |list: &[String]| list.iter().map(|s| 1 + s.len()).sum::<usize>();
        MIN_RECORD_LEN + self.name.len() + strings(&self.endpoints) + strings(&self.tags)
    }

    /// Whether this record can go on the wire in a `message`, as one the decoder accepts.
    pub(super) fn check(&self, message: &'static str) -> Result<(), EncodeError> {
        if self.id == 0 {
            return Err(EncodeError::BadField {
                message,
                field: "id",
                why: "a member's id is never 0",
            });
        }
        let fits = |field, s: &String| {
            if s.len() > MAX_FIELD_LEN {
                Err(EncodeError::FieldTooLong {
                    message,
                    field,
                    len: s.len(),
                })
            } else {
                Ok(())
            }
        };
        let at_most = |field, count: usize, max| {
            if count > max {
                Err(EncodeError::TooMany {
                    message,
                    field,
                    count,
                    max,
                })
            } else {
                Ok(())
            }
        };
        fits("name", &self.name)?;
        at_most("endpoints", self.endpoints.len(), MAX_ENDPOINTS)?;
        self.endpoints
            .iter()
            .try_for_each(|e| fits("endpoint", e))?;
        at_most("tags", self.tags.len(), MAX_TAGS)?;
        for tag in &self.tags {
            fits("tag", tag)?;
            if !is_tag(tag) {
                return Err(EncodeError::BadField {
                    message,
                    field: "tag",
                    why: "a tag is key=value with a non-empty key",
                });
            }
        }
        Ok(())
    }

    /// Writes a record [`Member::check`] accepted.
    pub(super) fn put(&self, out: &mut BytesMut) {
        let put_str = |out: &mut BytesMut, s: &str| {
            out.put_u8(s.len() as u8);
            out.put_slice(s.as_bytes());
        };
        out.put_u64(self.id);
        out.put_u64(self.incarnation);
        out.put_u8(self.state as u8);
        out.put_u8(if self.durable { DURABLE } else { 0 });
        out.put_u64(self.joined_ms);
        put_str(out, &self.name);
        out.put_u8(self.endpoints.len() as u8);
        for endpoint in &self.endpoints {
            put_str(out, endpoint);
        }
        out.put_u8(self.tags.len() as u8);
        for tag in &self.tags {
            put_str(out, tag);
        }
    }

    /// Reads one record, checking each field as it comes.
    fn read(r: &mut Reader<'_>) -> Result<Member, DecodeError> {
        let at = r.offset;
        let id = r.u64("id")?;
        if id == 0 {
            return Err(r.bad("id", at, "a member's id is never 0"));
        }
        let incarnation = r.u64("incarnation")?;
        let at = r.offset;
        let state = MemberState::from_code(r.u8("state")?)
            .ok_or_else(|| r.bad("state", at, "not 0-3 (alive, suspect, dead, left)"))?;
        let at = r.offset;
        let flags = r.u8("flags")?;
        if flags & !DURABLE != 0 {
            return Err(r.bad("flags", at, "unknown flag bits"));
        }
        let joined_ms = r.u64("joined")?;
        let len = r.u8("name")?;
        let name = r.str(len.into(), "name")?.to_owned();
        let at = r.offset;
        let count = r.u8("endpoints")?;
        if usize::from(count) > MAX_ENDPOINTS {
            return Err(r.bad("endpoints", at, "more than 8 endpoints"));
        }
        let mut endpoints = Vec::with_capacity(count.into());
        for _ in 0..count {
            let len = r.u8("endpoint")?;
            endpoints.push(r.str(len.into(), "endpoint")?.to_owned());
        }
        let at = r.offset;
        let count = r.u8("tags")?;
        if usize::from(count) > MAX_TAGS {
            return Err(r.bad("tags", at, "more than 32 tags"));
        }
        let mut tags = Vec::with_capacity(count.into());
        for _ in 0..count {
            let at = r.offset;
            let len = r.u8("tag")?;
            let tag = r.str(len.into(), "tag")?;
            if !is_tag(tag) {
                return Err(r.bad("tag", at, "not key=value with a non-empty key"));
            }
            tags.push(tag.to_owned());
        }
        Ok(Member {
            id,
            incarnation,
            state,
            durable: flags & DURABLE != 0,
            joined_ms,
            name,
            endpoints,
            tags,
        })
    }
}

impl Neighbor {
    /// Bytes after the header: flags, and a request's record.
    pub(super) fn body_len(&self) -> usize {
        match self {
            Neighbor::Request { member, .. } => 1 + member.encoded_len(),
            Neighbor::Answer { .. } => 1,
        }
    }

    /// Writes the body; a request's record passed [`Member::check`].
    pub(super) fn put(&self, out: &mut BytesMut) {
        match self {
            Neighbor::Request { high, member } => {
                out.put_u8(if *high { HIGH } else { 0 });
                member.put(out);
            }
            Neighbor::Answer { accepted } => {
                out.put_u8(ANSWER | if *accepted { ACCEPTED } else { 0 });
            }
        }
    }
}

impl Probe {
    /// Whether this probe can go on the wire: `failed` only in an answer.
    pub(super) fn check(&self) -> Result<(), EncodeError> {
        if self.failed && !self.answer {
            return Err(EncodeError::BadField {
                message: "PROBE",
                field: "flags",
                why: "failed is only said in an answer",
            });
        }
        Ok(())
    }

    /// Writes the body of a probe [`Probe::check`] accepted.
    pub(super) fn put(&self, out: &mut BytesMut) {
        let mut flags = 0;
        if self.answer {
            flags |= PROBE_ANSWER;
        }
        if self.failed {
            flags |= PROBE_FAILED;
        }
        out.put_u8(flags);
        out.put_u32(self.seq);
        out.put_u64(self.target);
    }
}

/// Bytes `records` take on the wire, without their count.
pub(super) fn records_len<M: Borrow<Member>>(records: &[M]) -> usize {
    records.iter().map(|m| m.borrow().encoded_len()).sum()
}

/// Whether `records` fit a `message` that carries at most `max` of them.
pub(super) fn check_records<M: Borrow<Member>>(
    message: &'static str,
    records: &[M],
    max: usize,
) -> Result<(), EncodeError> {
    if records.len() > max {
        return Err(EncodeError::TooMany {
            message,
            field: "records",
            count: records.len(),
            max,
        });
    }
    records.iter().try_for_each(|m| m.borrow().check(message))
}

/// Whether `records` make a MEMBERS: at least one, and as many as its count can say.
pub(super) fn check_members<M: Borrow<Member>>(records: &[M]) -> Result<(), EncodeError> {
    let message = MessageId::Members.name();
    if records.is_empty() {
        return Err(EncodeError::BadField {
            message,
            field: "count",
            why: "MEMBERS carries at least one record",
        });
    }
    check_records(message, records, MAX_MEMBERS)
}

/// Writes records that [`check_records`] accepted, without their count.
pub(super) fn put_records<M: Borrow<Member>>(records: &[M], out: &mut BytesMut) {
    for member in records {
        member.borrow().put(out);
    }
}

/// A MEMBERS frame of borrowed records: the bytes `Message::Members` of copies of them would
/// encode to, without the copies (a change gossiped to ten links was cloned ten times).
pub fn members_frame<M: Borrow<Member>>(records: &[M]) -> Result<Bytes, EncodeError> {
    check_members(records)?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + 2 + records_len(records));
    put_header(MessageId::Members, &mut out);
    out.put_u16(records.len() as u16);
    put_records(records, &mut out);
    Ok(out.freeze())
}

/// Reads `count` records. The list is allocated for no more records than the bytes left could
/// hold, so a count of 65,535 in a short frame costs nothing.
fn read_records(r: &mut Reader<'_>, count: usize) -> Result<Vec<Member>, DecodeError> {
    let mut records = Vec::with_capacity(count.min(r.rest.len() / MIN_RECORD_LEN));
    for _ in 0..count {
        records.push(Member::read(r)?);
    }
    Ok(records)
}

/// Reads a flags byte, refusing bits outside `known`.
fn read_flags(r: &mut Reader<'_>, known: u8) -> Result<u8, DecodeError> {
    let at = r.offset;
    let flags = r.u8("flags")?;
    if flags & !known != 0 {
        return Err(r.bad("flags", at, "unknown flag bits"));
    }
    Ok(flags)
}

/// MEMBERS: count (u16, at least 1), then the records.
pub(super) fn read_members(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let at = r.offset;
    let count = r.u16("count")?;
    if count == 0 {
        return Err(r.bad("count", at, "MEMBERS carries at least one record"));
    }
    read_records(r, count.into()).map(Message::Members)
}

/// JOIN: ttl, then the newcomer's record.
pub(super) fn read_join(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let ttl = r.u8("ttl")?;
    let member = Box::new(Member::read(r)?);
    Ok(Message::Join { ttl, member })
}

/// NEIGHBOR: flags, then a request's record; an answer ends at its flags.
pub(super) fn read_neighbor(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let at = r.offset;
    let flags = read_flags(r, HIGH | ANSWER | ACCEPTED)?;
    let neighbor = if flags & ANSWER == 0 {
        if flags & ACCEPTED != 0 {
            return Err(r.bad("flags", at, "accepted is only said in an answer"));
        }
        Neighbor::Request {
            high: flags & HIGH != 0,
            member: Box::new(Member::read(r)?),
        }
    } else {
        if flags & HIGH != 0 {
            return Err(r.bad("flags", at, "high priority is only asked in a request"));
        }
        Neighbor::Answer {
            accepted: flags & ACCEPTED != 0,
        }
    };
    Ok(Message::Neighbor(neighbor))
}

/// DISCONNECT: flags.
pub(super) fn read_disconnect(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let flags = read_flags(r, STOPPING)?;
    Ok(Message::Disconnect {
        stopping: flags & STOPPING != 0,
    })
}

/// SHUFFLE: flags, count (u8, at most 16), then the records.
pub(super) fn read_shuffle(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let flags = read_flags(r, REPLY)?;
    let at = r.offset;
    let count = r.u8("count")?;
    if usize::from(count) > MAX_SHUFFLE {
        return Err(r.bad("count", at, "more than 16 records"));
    }
    Ok(Message::Shuffle {
        reply: flags & REPLY != 0,
        members: read_records(r, count.into())?,
    })
}

/// PROBE: flags, seq, target.
pub(super) fn read_probe(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let at = r.offset;
    let flags = read_flags(r, PROBE_ANSWER | PROBE_FAILED)?;
    if flags == PROBE_FAILED {
        return Err(r.bad("flags", at, "failed is only said in an answer"));
    }
    Ok(Message::Probe(Probe {
        answer: flags & PROBE_ANSWER != 0,
        failed: flags & PROBE_FAILED != 0,
        seq: r.u32("seq")?,
        target: r.u64("target")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        Member {
            id: 42,
            incarnation: 3,
            state: MemberState::Alive,
            durable: true,
            joined_ms: 1_700_000_000_000,
            name: "orders-1".into(),
            endpoints: vec!["tcp://10.0.0.1:5670".into()],
            tags: vec!["zone=eu".into()],
        }
    }

    fn join(member: Member) -> Message {
        Message::Join {
            ttl: 6,
            member: Box::new(member),
        }
    }

    #[test]
    fn tags_need_a_non_empty_key_before_the_first_equals_sign() {
        for tag in ["k=v", "k=", "k==", "zone=eu=west", "é=ü"] {
            assert!(is_tag(tag), "{tag}");
        }
        for tag in ["", "k", "=", "=v", "=k=v"] {
            assert!(!is_tag(tag), "{tag}");
        }
    }

    #[test]
    fn what_the_decoder_would_refuse_is_refused_at_encode_and_writes_nothing() {
        let long = "x".repeat(256);
        let cases = [
            (
                join(Member { id: 0, ..member() }),
                EncodeError::BadField {
                    message: "JOIN",
                    field: "id",
                    why: "a member's id is never 0",
                },
            ),
            (
                join(Member {
                    name: long.clone(),
                    ..member()
                }),
                EncodeError::FieldTooLong {
                    message: "JOIN",
                    field: "name",
                    len: 256,
                },
            ),
            (
                Message::Members(vec![Member {
                    endpoints: vec![long.clone()],
                    ..member()
                }]),
                EncodeError::FieldTooLong {
                    message: "MEMBERS",
                    field: "endpoint",
                    len: 256,
                },
            ),
            (
                join(Member {
                    tags: vec![format!("k={long}")],
                    ..member()
                }),
                EncodeError::FieldTooLong {
                    message: "JOIN",
                    field: "tag",
                    len: 258,
                },
            ),
            (
                join(Member {
                    endpoints: vec![String::new(); 9],
                    ..member()
                }),
                EncodeError::TooMany {
                    message: "JOIN",
                    field: "endpoints",
                    count: 9,
                    max: 8,
                },
            ),
            (
                Message::Neighbor(Neighbor::Request {
                    high: false,
                    member: Box::new(Member {
                        tags: vec!["k=v".into(); 33],
                        ..member()
                    }),
                }),
                EncodeError::TooMany {
                    message: "NEIGHBOR",
                    field: "tags",
                    count: 33,
                    max: 32,
                },
            ),
            (
                join(Member {
                    tags: vec!["zone".into()],
                    ..member()
                }),
                EncodeError::BadField {
                    message: "JOIN",
                    field: "tag",
                    why: "a tag is key=value with a non-empty key",
                },
            ),
            (
                Message::Members(vec![]),
                EncodeError::BadField {
                    message: "MEMBERS",
                    field: "count",
                    why: "MEMBERS carries at least one record",
                },
            ),
            (
                Message::Members(vec![member(); MAX_MEMBERS + 1]),
                EncodeError::TooMany {
                    message: "MEMBERS",
                    field: "records",
                    count: MAX_MEMBERS + 1,
                    max: MAX_MEMBERS,
                },
            ),
            (
                Message::Shuffle {
                    reply: false,
                    members: vec![member(); 17],
                },
                EncodeError::TooMany {
                    message: "SHUFFLE",
                    field: "records",
                    count: 17,
                    max: 16,
                },
            ),
            (
                Message::Probe(Probe {
                    answer: false,
                    failed: true,
                    seq: 1,
                    target: 42,
                }),
                EncodeError::BadField {
                    message: "PROBE",
                    field: "flags",
                    why: "failed is only said in an answer",
                },
            ),
        ];
        for (message, want) in cases {
            assert_eq!(message.to_bytes(), Err(want.clone()), "{message:?}");
            let mut out = BytesMut::from(&b"kept"[..]);
            assert_eq!(message.encode(&mut out), Err(want));
            assert_eq!(&out[..], b"kept");
        }
    }

    #[test]
    fn the_limits_themselves_encode_and_decode() {
        let full = Member {
            name: "n".repeat(MAX_FIELD_LEN),
            endpoints: vec!["e".repeat(MAX_FIELD_LEN); MAX_ENDPOINTS],
            tags: vec![format!("k={}", "v".repeat(MAX_FIELD_LEN - 2)); MAX_TAGS],
            ..member()
        };
        for message in [
            Message::Shuffle {
                reply: false,
                members: vec![full.clone(); MAX_SHUFFLE],
            },
            Message::Shuffle {
                reply: true,
                members: vec![],
            },
            Message::Members(vec![member(); MAX_MEMBERS]),
            join(full),
        ] {
            let bytes = message.to_bytes().unwrap();
            assert_eq!(bytes.len(), message.encoded_len());
            assert_eq!(Message::decode(&bytes), Ok(message));
        }
    }
}
