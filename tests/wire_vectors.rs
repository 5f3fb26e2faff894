#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Checks the codec against the golden frames in `proto/vectors/`: good frames decode to the
//! message written here and re-encode byte for byte; bad frames fail with the error written here.
//! Every file in those folders must have an expectation, and every expectation a file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use zgossip::wire::{
    DecodeError, Hail, Member, MemberState, Message, Neighbor, Probe, Publish, Stamp,
};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/vectors")
}

/// Parses the hex text format described in `proto/vectors/README.md`.
fn parse_hex(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read vector {}: {e}", path.display()));
    assert!(
        text.starts_with('#'),
        "{}: the first line must be a comment saying what the vector is",
        path.display()
    );
    let mut bytes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let data = line.split('#').next().unwrap_or("");
        for word in data.split_whitespace() {
            assert!(
                word.len() % 2 == 0,
                "{}:{}: odd number of hex digits in {word:?}",
                path.display(),
                n + 1
            );
            for pair in word.as_bytes().chunks(2) {
                let pair = std::str::from_utf8(pair).unwrap();
                let byte = u8::from_str_radix(pair, 16).unwrap_or_else(|_| {
                    panic!("{}:{}: {pair:?} is not hex", path.display(), n + 1)
                });
                bytes.push(byte);
            }
        }
    }
    bytes
}

fn publish(key: &str, value: &str, ttl_ms: u32, extension: &'static [u8]) -> Message {
    Message::Publish(Publish {
        key: key.into(),
        value: value.into(),
        ttl_ms,
        extension: Bytes::from_static(extension),
    })
}

/// "svc" = "orders", 2000 ms lease, version 3, origin 42, lease sequence 7.
fn svc_orders_stamped() -> Publish {
    let stamp = Stamp {
        version: 3,
        origin: 42,
        lease_seq: 7,
        withdrawn: false,
    };
    Publish::stamped("svc", "orders", 2000, &stamp)
}

/// 2023-11-14T22:13:20Z, when every member in these vectors joined (but node 7).
const JOINED_MS: u64 = 1_700_000_000_000;

/// Node 42, "orders-1": alive at incarnation 3, durable, one endpoint, the tags given.
fn orders(tags: &[&str]) -> Member {
    Member {
        id: 42,
        incarnation: 3,
        state: MemberState::Alive,
        durable: true,
        joined_ms: JOINED_MS,
        name: "orders-1".into(),
        endpoints: vec!["tcp://10.0.0.1:5670".into()],
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// A member with the given id, name, state, endpoints and tags; incarnation 1, not durable.
fn member(id: u64, name: &str, state: MemberState, endpoints: &[&str], tags: &[&str]) -> Member {
    Member {
        id,
        incarnation: 1,
        state,
        durable: false,
        joined_ms: JOINED_MS,
        name: name.into(),
        endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn membership_vectors() -> Vec<(&'static str, Message)> {
    let suspect_7 = Member {
        id: 7,
        incarnation: 0,
        state: MemberState::Suspect,
        durable: false,
        joined_ms: 0,
        name: String::new(),
        endpoints: vec![],
        tags: vec![],
    };
    let probe = |answer, failed| {
        Message::Probe(Probe {
            answer,
            failed,
            seq: 1,
            target: 42,
        })
    };
    vec![
        (
            "members_two.hex",
            Message::Members(vec![orders(&["zone=eu", "role=db"]), suspect_7]),
        ),
        (
            "join.hex",
            Message::Join {
                ttl: 6,
                member: Box::new(member(
                    0x0102_0304_0506_0708,
                    "web",
                    MemberState::Alive,
                    &["tcp://10.0.0.2:5670"],
                    &[],
                )),
            },
        ),
        (
            "neighbor_request_high.hex",
            Message::Neighbor(Neighbor::Request {
                high: true,
                member: Box::new(orders(&[])),
            }),
        ),
        (
            "neighbor_answer_accepted.hex",
            Message::Neighbor(Neighbor::Answer { accepted: true }),
        ),
        (
            "disconnect_stopping.hex",
            Message::Disconnect { stopping: true },
        ),
        (
            "shuffle_answer_one.hex",
            Message::Shuffle {
                reply: true,
                members: vec![Member {
                    incarnation: 2,
                    ..member(
                        9,
                        "cache",
                        MemberState::Left,
                        &["tcp://10.0.0.9:5670"],
                        &["zone=us"],
                    )
                }],
            },
        ),
        ("probe_question.hex", probe(false, false)),
        ("probe_answer_failed.hex", probe(true, true)),
    ]
}

fn good_vectors() -> Vec<(&'static str, Message)> {
    let max_key = "a".repeat(255);
    vec![
        ("hello.hex", Message::Hello(None)),
        ("ping.hex", Message::Ping(None)),
        ("pong.hex", Message::Pong(None)),
        ("invalid.hex", Message::Invalid),
        (
            "publish_svc_endpoint.hex",
            publish("svc", "endpoint", 0, b""),
        ),
        ("publish_empty_value.hex", publish("k", "", 0, b"")),
        (
            "publish_ttl_1000.hex",
            publish("svc", "endpoint", 1000, b""),
        ),
        (
            "publish_with_extension.hex",
            publish("svc", "endpoint", 0, b"\xde\xad\xbe\xef"),
        ),
        ("publish_max_key.hex", publish(&max_key, "v", 0, b"")),
        ("publish_utf8.hex", publish("svc", "café ✓", 0, b"")),
        (
            "hello_hail.hex",
            Message::Hello(Some(Hail {
                node: 0x0102_0304_0506_0708,
                goodbye: false,
                digest: None,
            })),
        ),
        (
            "ping_goodbye.hex",
            Message::Ping(Some(Hail {
                node: 42,
                goodbye: true,
                digest: None,
            })),
        ),
        (
            "pong_digest.hex",
            Message::Pong(Some(Hail {
                node: 42,
                goodbye: false,
                digest: Some(0x0123_4567_89ab_cdef),
            })),
        ),
        (
            "publish_stamped.hex",
            Message::Publish(svc_orders_stamped()),
        ),
        (
            "batch_two.hex",
            Message::Batch(vec![Publish::new("a", "x"), svc_orders_stamped()]),
        ),
        (
            "publish_tombstone.hex",
            Message::Publish(Publish::stamped(
                "svc",
                "",
                600_000,
                &Stamp {
                    version: 4,
                    origin: 42,
                    lease_seq: 0,
                    withdrawn: true,
                },
            )),
        ),
    ]
    .into_iter()
    .chain(membership_vectors())
    .collect()
}

fn bad_vectors() -> Vec<(&'static str, DecodeError)> {
    vec![
        (
            "bad_signature.hex",
            DecodeError::BadSignature { found: 0xaaa1 },
        ),
        (
            "bad_version.hex",
            DecodeError::BadVersion {
                message: "HELLO",
                version: 2,
            },
        ),
        ("unknown_id.hex", DecodeError::UnknownId { id: 13 }),
        (
            "batch_empty.hex",
            DecodeError::Truncated {
                message: "BATCH",
                field: "entry",
                offset: 4,
            },
        ),
        (
            "batch_entry_past_end.hex",
            DecodeError::Truncated {
                message: "BATCH",
                field: "entry",
                offset: 23,
            },
        ),
        (
            "batch_entry_truncated.hex",
            DecodeError::Truncated {
                message: "BATCH",
                field: "value",
                offset: 14,
            },
        ),
        ("truncated_header.hex", DecodeError::TooShort { len: 3 }),
        (
            "truncated_value.hex",
            DecodeError::Truncated {
                message: "PUBLISH",
                field: "value",
                offset: 12,
            },
        ),
        (
            "huge_value_length.hex",
            DecodeError::Truncated {
                message: "PUBLISH",
                field: "value",
                offset: 12,
            },
        ),
        (
            "not_utf8_key.hex",
            DecodeError::NotUtf8 {
                message: "PUBLISH",
                field: "key",
            },
        ),
        (
            "hello_trailing.hex",
            DecodeError::BadExtension {
                message: "HELLO",
                len: 1,
            },
        ),
        ("empty.hex", DecodeError::TooShort { len: 0 }),
    ]
    .into_iter()
    .chain(bad_membership_vectors())
    .collect()
}

fn truncated(message: &'static str, field: &'static str, offset: usize) -> DecodeError {
    DecodeError::Truncated {
        message,
        field,
        offset,
    }
}

fn bad_field(
    message: &'static str,
    field: &'static str,
    offset: usize,
    why: &'static str,
) -> DecodeError {
    DecodeError::BadField {
        message,
        field,
        offset,
        why,
    }
}

fn bad_membership_vectors() -> Vec<(&'static str, DecodeError)> {
    const UNKNOWN: &str = "unknown flag bits";
    const NOT_A_TAG: &str = "not key=value with a non-empty key";
    vec![
        (
            "members_count_zero.hex",
            bad_field("MEMBERS", "count", 4, "MEMBERS carries at least one record"),
        ),
        ("members_count_past_end.hex", truncated("MEMBERS", "id", 37)),
        ("members_count_huge.hex", truncated("MEMBERS", "id", 37)),
        (
            "members_record_truncated.hex",
            truncated("MEMBERS", "incarnation", 14),
        ),
        (
            "members_trailing.hex",
            DecodeError::TrailingBytes {
                message: "MEMBERS",
                count: 1,
            },
        ),
        ("join_empty.hex", truncated("JOIN", "ttl", 4)),
        (
            "join_member_id_zero.hex",
            bad_field("JOIN", "id", 5, "a member's id is never 0"),
        ),
        (
            "member_state_4.hex",
            bad_field("JOIN", "state", 21, "not 0-3 (alive, suspect, dead, left)"),
        ),
        (
            "member_unknown_flags.hex",
            bad_field("JOIN", "flags", 22, UNKNOWN),
        ),
        (
            "member_name_not_utf8.hex",
            DecodeError::NotUtf8 {
                message: "JOIN",
                field: "name",
            },
        ),
        (
            "member_nine_endpoints.hex",
            bad_field("JOIN", "endpoints", 34, "more than 8 endpoints"),
        ),
        (
            "member_33_tags.hex",
            bad_field("JOIN", "tags", 35, "more than 32 tags"),
        ),
        (
            "member_endpoint_past_end.hex",
            truncated("JOIN", "endpoint", 36),
        ),
        (
            "member_tag_without_equals.hex",
            bad_field("JOIN", "tag", 44, NOT_A_TAG),
        ),
        (
            "member_tag_empty_key.hex",
            bad_field("JOIN", "tag", 36, NOT_A_TAG),
        ),
        (
            "neighbor_request_accepted.hex",
            bad_field("NEIGHBOR", "flags", 4, "accepted is only said in an answer"),
        ),
        (
            "neighbor_answer_high.hex",
            bad_field(
                "NEIGHBOR",
                "flags",
                4,
                "high priority is only asked in a request",
            ),
        ),
        (
            "neighbor_answer_with_record.hex",
            DecodeError::TrailingBytes {
                message: "NEIGHBOR",
                count: 31,
            },
        ),
        (
            "neighbor_unknown_flags.hex",
            bad_field("NEIGHBOR", "flags", 4, UNKNOWN),
        ),
        ("disconnect_empty.hex", truncated("DISCONNECT", "flags", 4)),
        (
            "disconnect_unknown_flags.hex",
            bad_field("DISCONNECT", "flags", 4, UNKNOWN),
        ),
        (
            "shuffle_17_records.hex",
            bad_field("SHUFFLE", "count", 5, "more than 16 records"),
        ),
        (
            "shuffle_unknown_flags.hex",
            bad_field("SHUFFLE", "flags", 4, UNKNOWN),
        ),
        (
            "probe_failed_question.hex",
            bad_field("PROBE", "flags", 4, "failed is only said in an answer"),
        ),
        ("probe_truncated.hex", truncated("PROBE", "target", 9)),
        (
            "probe_trailing.hex",
            DecodeError::TrailingBytes {
                message: "PROBE",
                count: 2,
            },
        ),
    ]
}

/// Every file directly in `dir` except the README, so a misnamed vector is caught too.
fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.is_dir())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "README.md")
        .collect()
}

fn assert_same_names(dir: &Path, listed: BTreeSet<String>) {
    let on_disk = files_in(dir);
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    let unexpected: Vec<_> = on_disk.difference(&listed).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{}: files listed but missing: {missing:?}; files without an expectation: {unexpected:?}",
        dir.display()
    );
}

#[test]
fn every_good_vector_decodes_to_its_expected_message() {
    for (name, want) in good_vectors() {
        let bytes = parse_hex(&vectors_dir().join(name));
        assert_eq!(Message::decode(&bytes), Ok(want), "{name}");
    }
}

#[test]
fn every_good_vector_round_trips_byte_for_byte() {
    for (name, want) in good_vectors() {
        let bytes = parse_hex(&vectors_dir().join(name));
        let decoded = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&decoded.to_bytes().unwrap()[..], &bytes[..], "{name}");
        // Encoding the written-down expectation must give the same frame too.
        assert_eq!(&want.to_bytes().unwrap()[..], &bytes[..], "{name}");
        assert_eq!(want.encoded_len(), bytes.len(), "{name}");
    }
}

#[test]
fn every_bad_vector_fails_with_its_expected_error() {
    let dir = vectors_dir().join("bad");
    for (name, want) in bad_vectors() {
        let bytes = parse_hex(&dir.join(name));
        assert_eq!(Message::decode(&bytes), Err(want), "bad/{name}");
    }
}

#[test]
fn every_good_vector_file_has_an_expectation_and_every_expectation_a_file() {
    let good = good_vectors().into_iter().map(|(n, _)| n.to_owned());
    assert_same_names(&vectors_dir(), good.collect());
}

#[test]
fn every_bad_vector_file_has_an_expectation_and_every_expectation_a_file() {
    let bad = bad_vectors().into_iter().map(|(n, _)| n.to_owned());
    assert_same_names(&vectors_dir().join("bad"), bad.collect());
}
