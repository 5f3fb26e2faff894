//! Property tests for the ZGP codec: every message round-trips, `encoded_len` is exact, and
//! decoding untrusted bytes (random, mutated or cut short) never panics and, when it succeeds,
//! re-encodes to the very bytes it read. The membership messages (§12) also: any cut of a frame
//! is an error, and the encoder accepts exactly what decodes back to itself.

use std::sync::Arc;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Keeps whole characters from the front of `chars` while they fit in `max` bytes.
fn utf8_prefix(chars: Vec<char>, max: usize) -> String {
    let mut s = String::new();
    for c in chars {
        if s.len() + c.len_utf8() > max {
            break;
        }
        s.push(c);
    }
    s
}

/// Keys of any UTF-8 up to the 255-byte wire limit, with ASCII ones up to exactly the limit mixed
/// in (random chars are mostly multi-byte, so they would rarely reach it).
fn key() -> impl Strategy<Value = Arc<str>> {
    prop_oneof![
        vec(any::<char>(), 0..=MAX_KEY_LEN).prop_map(|c| utf8_prefix(c, MAX_KEY_LEN)),
        "[ -~]{0,255}",
    ]
    .prop_map(Arc::from)
}

fn value() -> impl Strategy<Value = Arc<str>> {
    vec(any::<char>(), 0..2048).prop_map(|c| Arc::from(c.into_iter().collect::<String>()))
}

fn publish() -> impl Strategy<Value = Publish> {
    (key(), value(), any::<u32>(), vec(any::<u8>(), 0..64)).prop_map(
        |(key, value, ttl_ms, extension)| Publish {
            key,
            value,
            ttl_ms,
            extension: Bytes::from(extension),
        },
    )
}

/// No hail, or one with any non-zero node id, either flag and any digest or none.
fn hail() -> impl Strategy<Value = Option<Hail>> {
    proptest::option::of(
        (1..=u64::MAX, any::<bool>(), any::<Option<u64>>()).prop_map(|(node, goodbye, digest)| {
            Hail {
                node,
                goodbye,
                digest,
            }
        }),
    )
}

/// A name or endpoint: mostly short text of any characters, sometimes ASCII up to the 255-byte
/// limit.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => vec(any::<char>(), 0..24).prop_map(|c| utf8_prefix(c, MAX_FIELD_LEN)),
        1 => "[ -~]{0,255}",
    ]
}

/// A `key=value` tag of at most 255 bytes with a non-empty key; the value may hold `=` too.
fn tag() -> impl Strategy<Value = String> {
    (
        vec(any::<char>(), 1..12),
        prop_oneof![vec(any::<char>(), 0..24), vec(Just('='), 0..3)],
        0usize..=MAX_FIELD_LEN,
    )
        .prop_map(|(key, value, room)| {
            let key: Vec<char> = key.into_iter().filter(|c| *c != '=').collect();
            let key = match utf8_prefix(key, 64) {
                key if key.is_empty() => "k".to_owned(),
                key => key,
            };
            let value = utf8_prefix(value, room.min(MAX_FIELD_LEN - key.len() - 1));
            format!("{key}={value}")
        })
}

fn member_state() -> impl Strategy<Value = MemberState> {
    prop_oneof![
        Just(MemberState::Alive),
        Just(MemberState::Suspect),
        Just(MemberState::Dead),
        Just(MemberState::Left),
    ]
}

/// Any record the wire can carry: id never 0, up to 8 endpoints and 32 tags.
fn member() -> impl Strategy<Value = Member> {
    (
        (1..=u64::MAX, any::<u64>(), member_state(), any::<bool>()),
        (any::<u64>(), field()),
        vec(field(), 0..=MAX_ENDPOINTS),
        prop_oneof![3 => vec(tag(), 0..4), 1 => vec(tag(), 0..=MAX_TAGS)],
    )
        .prop_map(
            |((id, incarnation, state, durable), (joined_ms, name), endpoints, tags)| Member {
                id,
                incarnation,
                state,
                durable,
                joined_ms,
                name,
                endpoints,
                tags,
            },
        )
}

/// Any probe the wire can carry: `failed` only in an answer.
fn probe() -> impl Strategy<Value = Probe> {
    (any::<bool>(), any::<bool>(), any::<u32>(), any::<u64>()).prop_map(
        |(answer, failed, seq, target)| Probe {
            answer,
            failed: failed && answer,
            seq,
            target,
        },
    )
}

/// Any valid message with id 7–12.
fn membership_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        vec(member(), 1..5).prop_map(Message::Members),
        (any::<u8>(), member()).prop_map(|(ttl, m)| Message::Join {
            ttl,
            member: Box::new(m)
        }),
        (any::<bool>(), member()).prop_map(|(high, m)| Message::Neighbor(Neighbor::Request {
            high,
            member: Box::new(m)
        })),
        any::<bool>().prop_map(|accepted| Message::Neighbor(Neighbor::Answer { accepted })),
        any::<bool>().prop_map(|stopping| Message::Disconnect { stopping }),
        (any::<bool>(), vec(member(), 0..=MAX_SHUFFLE))
            .prop_map(|(reply, members)| Message::Shuffle { reply, members }),
        probe().prop_map(Message::Probe),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hail().prop_map(Message::Hello),
        publish().prop_map(Message::Publish),
        hail().prop_map(Message::Ping),
        hail().prop_map(Message::Pong),
        Just(Message::Invalid),
        vec(publish(), 1..6).prop_map(Message::Batch),
        membership_message(),
    ]
}

/// A string that may break the record's rules: over 255 bytes, or a tag without `=` or key.
fn wild_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => tag(),
        1 => "[ -~]{0,8}",
        1 => "=[ -~]{0,4}",
        1 => "[a-z]{250,260}",
    ]
}

/// Records that may break any of the encoder's rules, a few at a time.
fn wild_member() -> impl Strategy<Value = Member> {
    (
        member(),
        prop_oneof![4 => Just(None), 1 => Just(Some(0)), 1 => any::<u64>().prop_map(Some)],
        proptest::option::of(wild_text()),
        proptest::option::of(vec(wild_text(), 0..=MAX_ENDPOINTS + 2)),
        proptest::option::of(vec(wild_text(), 0..=MAX_TAGS + 2)),
    )
        .prop_map(|(mut m, id, name, endpoints, tags)| {
            m.id = id.unwrap_or(m.id);
            m.name = name.unwrap_or(m.name);
            m.endpoints = endpoints.unwrap_or(m.endpoints);
            m.tags = tags.unwrap_or(m.tags);
            m
        })
}

/// Membership messages that may or may not be encodable.
fn wild_membership_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        vec(wild_member(), 0..4).prop_map(Message::Members),
        (any::<u8>(), wild_member()).prop_map(|(ttl, m)| Message::Join {
            ttl,
            member: Box::new(m)
        }),
        (any::<bool>(), wild_member()).prop_map(|(high, m)| Message::Neighbor(Neighbor::Request {
            high,
            member: Box::new(m)
        })),
        (any::<bool>(), vec(wild_member(), 0..=MAX_SHUFFLE + 2))
            .prop_map(|(reply, members)| Message::Shuffle { reply, members }),
        (any::<bool>(), any::<bool>(), any::<u32>(), any::<u64>()).prop_map(
            |(answer, failed, seq, target)| Message::Probe(Probe {
                answer,
                failed,
                seq,
                target
            })
        ),
    ]
}

/// One change to a frame; positions are taken modulo the frame's length when applied.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(frame: &mut Vec<u8>, m: &Mutation) {
    let len = frame.len();
    match *m {
        Mutation::Set(i, b) if len > 0 => frame[i % len] = b,
        Mutation::Insert(i, b) => frame.insert(i % (len + 1), b),
        Mutation::Remove(i) if len > 0 => {
            frame.remove(i % len);
        }
        Mutation::Truncate(i) => frame.truncate(i % (len + 1)),
        _ => {}
    }
}

/// Frames with a valid header and an arbitrary body, so decoding gets past the header checks far
/// more often than with wholly random bytes.
fn frame_with_valid_header() -> impl Strategy<Value = Vec<u8>> {
    (1u8..=12, vec(any::<u8>(), 0..64)).prop_map(|(id, body)| {
        let mut frame = vec![0xaa, 0xa0, id, VERSION];
        frame.extend(body);
        frame
    })
}

/// Frames with a membership id (7–12) and a body of mostly small bytes, so counts, lengths,
/// states and flags are often in range and decoding gets deep into the records.
fn membership_frame_with_random_body() -> impl Strategy<Value = Vec<u8>> {
    (
        7u8..=12,
        vec(
            prop_oneof![3 => 0u8..4, 1 => Just(b'='), 2 => any::<u8>()],
            0..256,
        ),
    )
        .prop_map(|(id, body)| {
            let mut frame = vec![0xaa, 0xa0, id, VERSION];
            frame.extend(body);
            frame
        })
}

/// The property every successful decode must satisfy: it re-encodes to exactly its input.
fn assert_reencodes_exactly(frame: &[u8]) -> Result<(), TestCaseError> {
    // Sharing the frame's memory changes nothing about what decodes, or how.
    let shared = Message::decode_frame(&bytes::Bytes::copy_from_slice(frame));
    prop_assert_eq!(&shared, &Message::decode(frame));
    if let Ok(m) = Message::decode(frame) {
        prop_assert_eq!(&m.to_bytes().unwrap()[..], frame);
        prop_assert_eq!(m.encoded_len(), frame.len());
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_message_survives_encode_then_decode(m in message()) {
        let bytes = m.to_bytes().unwrap();
        prop_assert_eq!(Message::decode(&bytes), Ok(m));
    }

    #[test]
    fn encoded_len_is_exactly_what_encode_writes(m in message()) {
        let mut out = BytesMut::new();
        m.encode(&mut out).unwrap();
        prop_assert_eq!(m.encoded_len(), out.len());
    }

    #[test]
    fn encode_appends_without_touching_what_is_already_in_the_buffer(
        m in message(),
        prefix in vec(any::<u8>(), 0..16),
    ) {
        let mut out = BytesMut::from(&prefix[..]);
        m.encode(&mut out).unwrap();
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &m.to_bytes().unwrap()[..]);
    }

    #[test]
    fn random_bytes_never_panic_and_decode_only_to_what_reencodes_exactly(
        frame in vec(any::<u8>(), 0..512),
    ) {
        assert_reencodes_exactly(&frame)?;
    }

    #[test]
    fn random_bodies_after_a_valid_header_never_panic_and_reencode_exactly(
        frame in frame_with_valid_header(),
    ) {
        assert_reencodes_exactly(&frame)?;
    }

    #[test]
    fn mutated_valid_frames_never_panic_and_reencode_exactly(
        m in message(),
        mutations in vec(mutation(), 1..8),
    ) {
        let mut frame = m.to_bytes().unwrap().to_vec();
        for mutation in &mutations {
            apply(&mut frame, mutation);
        }
        assert_reencodes_exactly(&frame)?;
    }

    #[test]
    fn publish_cut_before_the_end_of_ttl_is_an_error(p in publish()) {
        let extension_len = p.extension.len();
        let bytes = Message::Publish(p).to_bytes().unwrap();
        let fixed_len = bytes.len() - extension_len;
        for cut in 0..fixed_len {
            prop_assert!(Message::decode(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
    }

    // The extension is "whatever follows ttl", so the frame cannot say where it should end: a cut
    // inside it still decodes, with the extension cut to match. One frame per message is what
    // keeps this safe; ZeroMQ delivers frames whole.
    #[test]
    fn publish_cut_inside_the_extension_keeps_the_prefix(p in publish()) {
        let bytes = Message::Publish(p.clone()).to_bytes().unwrap();
        let fixed_len = bytes.len() - p.extension.len();
        for cut in fixed_len..=bytes.len() {
            let Ok(Message::Publish(got)) = Message::decode(&bytes[..cut]) else {
                return Err(TestCaseError::fail(format!("cut at {cut} did not decode")));
            };
            prop_assert_eq!(&got.extension[..], &p.extension[..cut - fixed_len]);
            prop_assert_eq!((&got.key, &got.value, got.ttl_ms), (&p.key, &p.value, p.ttl_ms));
        }
    }

    #[test]
    fn control_messages_take_only_a_hail_after_the_header(
        id in prop_oneof![Just(1u8), Just(3), Just(4), Just(5)],
        tail in vec(any::<u8>(), 1..32),
    ) {
        let mut frame = vec![0xaa, 0xa0, id, VERSION];
        frame.extend(&tail);
        let digest = tail.get(1).is_some_and(|flags| flags & 2 != 0);
        let is_hail = id != 5
            && tail.len() == if digest { HAIL_DIGEST_LEN } else { HAIL_LEN }
            && tail[0] == 1
            && tail[1] <= 3
            && tail[2..10].iter().any(|b| *b != 0);
        match Message::decode(&frame) {
            Ok(message) => {
                prop_assert!(is_hail, "accepted {:?}", tail);
                prop_assert_eq!(message.to_bytes().unwrap().to_vec(), frame);
            }
            Err(DecodeError::TrailingBytes { count, .. }) => prop_assert!(id == 5 && count == tail.len()),
            Err(DecodeError::BadExtension { len, .. }) => prop_assert!(!is_hail && len == tail.len()),
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn membership_messages_round_trip_byte_for_byte(m in membership_message()) {
        let bytes = m.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), m.encoded_len());
        let decoded = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &m);
        prop_assert_eq!(decoded.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn a_members_frame_of_borrowed_records_is_the_frame_of_the_records(
        records in vec(wild_member(), 0..5)
    ) {
        let borrowed: Vec<&Member> = records.iter().collect();
        let owned = Message::Members(records.clone()).to_bytes();
        prop_assert_eq!(super::members_frame(&borrowed).ok(), owned.ok());
    }

    #[test]
    fn random_bodies_after_a_membership_header_never_panic_and_reencode_exactly(
        frame in membership_frame_with_random_body(),
    ) {
        assert_reencodes_exactly(&frame)?;
    }

    // Every membership message ends with a field whose length the frame states, so no prefix of
    // a valid frame is a message: a cut is always an error, never a shorter message.
    #[test]
    fn a_membership_frame_cut_anywhere_is_an_error(m in membership_message()) {
        let bytes = m.to_bytes().unwrap();
        for cut in 0..bytes.len() {
            let decoded = Message::decode(&bytes[..cut]);
            prop_assert!(decoded.is_err(), "cut at {} decoded as {:?}", cut, decoded);
        }
    }

    #[test]
    fn the_encoder_accepts_exactly_what_decodes_back_and_refuses_the_rest_without_writing(
        m in wild_membership_message(),
        prefix in vec(any::<u8>(), 0..8),
    ) {
        let mut out = BytesMut::from(&prefix[..]);
        match m.encode(&mut out) {
            Ok(()) => {
                prop_assert_eq!(out.len() - prefix.len(), m.encoded_len());
                prop_assert_eq!(Message::decode(&out[prefix.len()..]), Ok(m));
            }
            Err(_) => prop_assert_eq!(&out[..], &prefix[..]),
        }
    }
}
