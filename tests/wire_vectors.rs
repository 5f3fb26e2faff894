#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Checks the codec against the golden frames in `proto/vectors/`: good frames decode to the
//! message written here and re-encode byte for byte; bad frames fail with the error written here.
//! Every file in those folders must have an expectation, and every expectation a file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use zgossip::wire::{DecodeError, Hail, Message, Publish, Stamp};

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
        ("unknown_id.hex", DecodeError::UnknownId { id: 7 }),
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
