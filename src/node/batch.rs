//! Coalescing PUBLISHes into BATCH frames (proto/zgp.md §7). During one pass over the engine's
//! outputs, the PUBLISH frames bound for a peer that reads BATCH are held back per peer and go
//! out as one frame each: a lease refresh or a resync of thousands of tuples costs a handful of
//! frames instead of one per tuple, which is most of what a frame costs on either side.

use indexmap::IndexMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{BATCH_ENTRY_PREFIX, HEADER_LEN, MessageId, SIGNATURE, VERSION};

/// The longest BATCH sent. Small enough for any receiver's `max_message_bytes` near the default
/// (64 KiB), large enough that a frame's fixed cost is spread over a hundred tuples or more.
pub const BATCH_MAX_BYTES: usize = 16 * 1024;

/// Earlier distinct frames a drained frame is compared with to share one: enough for the
/// few different exclusions a pass makes, bounded so many distinct frames cost linear time.
const SHARE_CANDIDATES: usize = 4;

/// Where a frame goes: a client of ours or one of our remotes.
pub use crate::engine::Peer as Dest;

/// What is held back for one peer.
struct Pending {
    /// A BATCH header and the entries so far.
    batch: BytesMut,
    /// The first PUBLISH frame as it was: sent as it is when nothing joins it.
    first: Bytes,
    count: usize,
}

impl Pending {
    fn frame(self) -> Bytes {
        if self.count == 1 {
            self.first
        } else if self.batch.capacity() > 2 * self.batch.len() {
            // Frames can wait in queues for a while: do not keep the slack of a grown buffer.
            Bytes::copy_from_slice(&self.batch)
        } else {
            self.batch.freeze()
        }
    }
}

/// PUBLISH frames held back per peer until the end of a pass, a full batch, or another message
/// for the same peer (which must not overtake them).
#[derive(Default)]
pub struct Batches {
    /// In the order peers were first written to, so passes flush in the same order every run.
    pending: IndexMap<Dest, Pending>,
    max_bytes: usize,
}

impl Batches {
    /// Batches no longer than `max_bytes` (and never longer than [`BATCH_MAX_BYTES`]).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            pending: IndexMap::new(),
            max_bytes: max_bytes.min(BATCH_MAX_BYTES),
        }
    }

    /// Holds back `publish` (a whole PUBLISH frame) for `dest`. Returns the frames to send now,
    /// in order: the batch so far when `publish` does not fit in it, and `publish` itself when
    /// it is too long to share a batch with anything.
    pub fn push(&mut self, dest: Dest, publish: Bytes) -> (Option<Bytes>, Option<Bytes>) {
        let body = publish.get(HEADER_LEN..).unwrap_or_default();
        let entry = BATCH_ENTRY_PREFIX + body.len();
        if HEADER_LEN + entry > self.max_bytes {
            return (self.take(&dest), Some(publish));
        }
        let full = self
            .pending
            .get(&dest)
            .is_some_and(|p| p.batch.len() + entry > self.max_bytes);
        let sent = if full { self.take(&dest) } else { None };
        let max_bytes = self.max_bytes;
        let pending = self.pending.entry(dest).or_insert_with(|| Pending {
            batch: batch_header(max_bytes),
            first: publish.clone(),
            count: 0,
        });
        // Fits in a u32: the entry is shorter than `max_bytes`.
        pending.batch.put_u32(body.len() as u32);
        pending.batch.put_slice(body);
        pending.count += 1;
        (sent, None)
    }

    /// What is held back for `dest`, as one frame.
    pub fn take(&mut self, dest: &Dest) -> Option<Bytes> {
        self.pending.shift_remove(dest).map(Pending::frame)
    }

    /// Everything held back, one frame per peer. Peers that are sent the same tuples (a copy
    /// forwarded to every peer but its sender) share one frame, as single PUBLISHes do: frames
    /// queued in process toward many peers would otherwise hold a copy each.
    pub fn drain(&mut self) -> Vec<(Dest, Bytes)> {
        let mut sent: Vec<(Dest, Bytes)> = Vec::with_capacity(self.pending.len());
        let mut distinct: Vec<Bytes> = Vec::new();
        for (dest, pending) in self.pending.drain(..) {
            let frame = pending.frame();
            let same = distinct
                .iter()
                .rev()
                .take(SHARE_CANDIDATES)
                .find(|seen| **seen == frame)
                .cloned();
            let frame = match same {
                Some(seen) => seen,
                None => {
                    distinct.push(frame.clone());
                    frame
                }
            };
            sent.push((dest, frame));
        }
        sent
    }

    /// Whether anything is held back.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// An empty BATCH with room for `max_bytes`: growing it step by step cost more (each large
/// reallocation makes glibc sweep its small free chunks) than copying a short batch off it.
fn batch_header(max_bytes: usize) -> BytesMut {
    let mut batch = BytesMut::with_capacity(max_bytes);
    batch.put_u16(SIGNATURE);
    batch.put_u8(MessageId::Batch as u8);
    batch.put_u8(VERSION);
    batch
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::engine::ClientId;
    use crate::wire::{Message, Publish};

    fn frame(key: &str, value: &str) -> Bytes {
        Message::Publish(Publish::new(key, value))
            .to_bytes()
            .unwrap()
    }

    fn client(n: u8) -> Dest {
        Dest::Client(ClientId(u64::from(n)))
    }

    #[test]
    fn one_publish_goes_out_as_it_was() {
        let mut batches = Batches::new(BATCH_MAX_BYTES);
        let publish = frame("k", "v");
        assert_eq!(batches.push(client(1), publish.clone()), (None, None));
        assert_eq!(batches.take(&client(1)), Some(publish));
        assert!(batches.is_empty());
    }

    #[test]
    fn publishes_for_one_peer_become_one_batch_in_order() {
        let mut batches = Batches::new(BATCH_MAX_BYTES);
        for n in 0..3 {
            let sent = batches.push(client(1), frame(&format!("k{n}"), "v"));
            assert_eq!(sent, (None, None));
        }
        batches.push(client(2), frame("other", "v"));
        let mut frames = batches.drain();
        frames.sort_by_key(|(dest, _)| format!("{dest:?}"));
        let Message::Batch(entries) = Message::decode(&frames[0].1).unwrap() else {
            panic!("not a batch")
        };
        let keys: Vec<_> = entries.iter().map(|p| p.key.to_string()).collect();
        assert_eq!(keys, ["k0", "k1", "k2"]);
        assert_eq!(
            Message::decode(&frames[1].1).unwrap(),
            Message::Publish(Publish::new("other", "v"))
        );
    }

    #[test]
    fn peers_sent_the_same_tuples_share_one_frame() {
        let mut batches = Batches::new(BATCH_MAX_BYTES);
        for peer in 1..=3 {
            for n in 0..3 {
                batches.push(client(peer), frame(&format!("k{n}"), "v"));
            }
        }
        batches.push(client(4), frame("k0", "v"));
        batches.push(client(4), frame("other", "v"));
        let frames = batches.drain();
        let pointers: BTreeSet<*const u8> = frames.iter().map(|(_, f)| f.as_ptr()).collect();
        assert_eq!(frames.len(), 4);
        assert_eq!(
            pointers.len(),
            2,
            "three peers share one batch, the fourth has its own"
        );
    }

    #[test]
    fn a_full_batch_is_handed_back_and_a_new_one_started() {
        let mut batches = Batches::new(1024);
        let value = "v".repeat(300);
        let mut sent = Vec::new();
        for n in 0..10 {
            let (batch, alone) = batches.push(client(1), frame(&format!("k{n}"), &value));
            sent.extend(batch);
            assert_eq!(alone, None);
        }
        sent.extend(batches.take(&client(1)));
        let mut keys = Vec::new();
        for frame in &sent {
            assert!(frame.len() <= 1024, "{} bytes", frame.len());
            match Message::decode(frame).unwrap() {
                Message::Batch(entries) => keys.extend(entries.into_iter().map(|p| p.key)),
                Message::Publish(p) => keys.push(p.key),
                other => panic!("{other:?}"),
            }
        }
        let want: Vec<String> = (0..10).map(|n| format!("k{n}")).collect();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(keys, want);
        assert!(sent.len() >= 4, "{} frames", sent.len());
    }

    #[test]
    fn a_publish_too_long_for_any_batch_goes_alone_after_what_was_held() {
        let mut batches = Batches::new(1024);
        let small = frame("k0", "v");
        batches.push(client(1), small.clone());
        let big = frame("k1", &"v".repeat(2000));
        assert_eq!(
            batches.push(client(1), big.clone()),
            (Some(small), Some(big))
        );
        assert!(batches.is_empty());
    }
}
