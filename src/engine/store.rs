//! The tuple store and the rules for which tuples a node accepts. Each key holds one copy: the
//! greatest seen by `(version, origin, lease sequence, value)` (`proto/zgp.md` §11), which may
//! be a tuple in force, a tombstone, or the record of a lease that ran out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::wire::{MAX_KEY_LEN, Stamp};

/// Why a tuple was refused. Refused tuples change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TupleError {
    /// Keys name something; an empty one cannot be looked up or printed.
    #[error("key is empty")]
    EmptyKey,
    /// The wire's key length is one byte.
    #[error("key is {len} bytes; at most 255")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// Keys are single words on the text pipe.
    #[error("key {key:?} contains whitespace or a control character")]
    BadKeyChar {
        /// The refused key.
        key: String,
    },
    /// A value is the rest of a pipe line, so it may hold spaces but not line breaks.
    #[error("value for key {key:?} contains a control character")]
    BadValueChar {
        /// The key whose value was refused.
        key: String,
    },
    /// The node's limit on value size.
    #[error("value for key {key:?} is {len} bytes; this node takes at most {max}")]
    ValueTooLong {
        /// The key whose value was refused.
        key: String,
        /// The value's length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// UNPUBLISH of a key not in force here.
    #[error("key {key:?} is not held")]
    NotHeld {
        /// The key.
        key: String,
    },
    /// A lease longer than the wire's 32-bit milliseconds (49 days).
    #[error("lease {lease:?} is longer than 49 days")]
    LeaseTooLong {
        /// The lease asked for.
        lease: Duration,
    },
    /// The key's version reached [`super::MAX_VERSION`] (a peer pushed it there): it can no
    /// longer be published here.
    #[error("key {key:?} cannot take a newer version")]
    VersionExhausted {
        /// The key.
        key: String,
    },
    /// The node's limit on what its copies weigh.
    #[error("store is full ({max} bytes)")]
    StoreBytesFull {
        /// The configured limit.
        max: usize,
    },
    /// The node's limit on how many tuples it holds.
    #[error("store is full ({max} tuples)")]
    StoreFull {
        /// The configured limit.
        max: usize,
    },
}

/// Checks a tuple against this node's rules (see `proto/zgp.md`).
pub fn validate(key: &str, value: &str, max_value_bytes: usize) -> Result<(), TupleError> {
    if key.is_empty() {
        return Err(TupleError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TupleError::KeyTooLong { len: key.len() });
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TupleError::BadKeyChar {
            key: key.to_owned(),
        });
    }
    if value.len() > max_value_bytes {
        return Err(TupleError::ValueTooLong {
            key: key.to_owned(),
            len: value.len(),
            max: max_value_bytes,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(TupleError::BadValueChar {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// What a held copy of a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tuple in force.
    Live,
    /// A tombstone: the key was withdrawn. Travels to peers until it ends.
    Withdrawn,
    /// A lease ran out here. A local record only, so a stale copy cannot resurrect the tuple.
    Expired,
}

/// One key's copy as this node holds it. Every node holds a copy of every tuple, so this is
/// kept small: what only our own tuples need sits behind `own`.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value (empty for a tombstone); equal values share one allocation within a store.
    pub value: Arc<str>,
    /// Which copy this is.
    pub stamp: Stamp,
    /// Live, withdrawn or expired.
    pub kind: Kind,
    /// When this copy ends here: a lease running out, or a tombstone or expiry record being
    /// forgotten. `None`: never (a permanent tuple, or one we own).
    pub ends: Option<Instant>,
    /// Set when our application published this copy and it still wins.
    pub own: Option<Box<Own>>,
}

/// What a copy our application published carries besides the tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    /// The lease we refresh, if any.
    pub lease: Option<Duration>,
    /// When we next refresh it.
    pub refresh_at: Option<Instant>,
}

impl Entry {
    /// Whether our application published this copy (and it still wins): we refresh its lease.
    pub fn owned(&self) -> bool {
        self.own.is_some()
    }

    /// The lease we refresh, when owned with one.
    pub fn lease(&self) -> Option<Duration> {
        self.own.as_ref().and_then(|own| own.lease)
    }

    /// When we next refresh our lease, when owned with one.
    pub fn refresh_at(&self) -> Option<Instant> {
        self.own.as_ref().and_then(|own| own.refresh_at)
    }

    /// Whether `stamp` and `value` make a copy greater than this one (`proto/zgp.md` §11).
    pub fn is_older_than(&self, stamp: &Stamp, value: &str) -> bool {
        (&self.stamp, &*self.value) < (stamp, value)
    }

    /// The `ttl` to send with this copy: what is left of its lifetime here, in ms (at least 1,
    /// since 0 means "no lease"), or the full lease for a copy we own.
    pub fn ttl_ms(&self, now: Instant) -> u32 {
        if let Some(lease) = self.lease() {
            return millis(lease);
        }
        match self.ends {
            Some(ends) => millis(ends.saturating_duration_since(now)).max(1),
            None => 0,
        }
    }
}

/// A duration as the wire's u32 milliseconds, saturating.
pub fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// Every copy a node holds, with the times at which some of them end or are due for a refresh.
/// Copies are hashed by key, since every PUBLISH that arrives looks its key up (and most are
/// duplicates that stop there); listings and resyncs sort by key, so they stay deterministic.
/// An `IndexMap` keeps the copies in one dense vector with a small index of positions beside
/// it, where a hash table of the copies themselves was half empty buckets of a hundred bytes
/// each: with a copy of every tuple on every node, that was most of a large process's memory.
#[derive(Debug, Default)]
pub struct Store {
    entries: IndexMap<Arc<str>, Entry>,
    /// Every value held, once: a service name is the value of all its endpoints' keys.
    values: HashSet<Arc<str>>,
    /// Sweep `values` only once they pass this many, as well as twice the copies held.
    sweep_values_above: usize,
    live: usize,
    /// The XOR of the fingerprints of the tuples in force.
    digest: u64,
    /// The copy of a key may end then. Stale items are skipped when popped.
    ends: BinaryHeap<Reverse<Due>>,
    /// Our own lease on a key may be due for a refresh then.
    refreshes: BinaryHeap<Reverse<Due>>,
    /// Orders the heaps' items that fall due at the same instant (a batch's all do).
    pushed: u64,
    /// Every key held, sorted; rebuilt after a key comes or goes, so that resyncs, which
    /// list the store in key order, do not sort it each time.
    sorted_keys: Option<Vec<Arc<str>>>,
    /// What the copies held weigh ([`Store::weight`]), in all and by origin node.
    bytes: usize,
    origin_bytes: HashMap<u64, usize>,
}

/// What a copy is counted as weighing beside its key and value: the entry, its place in the
/// index and the sorted keys, and its heap items, measured at about this.
const COPY_WEIGHT: usize = 160;

/// A heap item: `key` may be due at `at`. Ordered by time, then by when it was pushed, never by
/// key: comparing keys on every sift cost more than the rest of storing a tuple.
#[derive(Debug)]
struct Due {
    at: Instant,
    seq: u64,
    key: Arc<str>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Store {
    /// What a copy of `key` with `value` is counted as weighing, in bytes.
    pub fn weight(key: &str, value: &str) -> usize {
        key.len() + value.len() + COPY_WEIGHT
    }

    /// What every copy held weighs, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the copies made by `origin` weigh, in bytes.
    pub fn origin_bytes(&self, origin: u64) -> usize {
        self.origin_bytes.get(&origin).copied().unwrap_or(0)
    }

    fn weigh(&mut self, key: &str, entry: &Entry, add: bool) {
        let weight = Self::weight(key, &entry.value);
        let origin = self.origin_bytes.entry(entry.stamp.origin).or_insert(0);
        if add {
            *origin += weight;
            self.bytes += weight;
        } else {
            *origin = origin.saturating_sub(weight);
            self.bytes = self.bytes.saturating_sub(weight);
            if *origin == 0 {
                self.origin_bytes.remove(&entry.stamp.origin);
            }
        }
    }

    /// The copy held for `key`, whatever its kind.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The value in force for `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<str>> {
        self.entries
            .get(key)
            .filter(|e| e.kind == Kind::Live)
            .map(|e| &e.value)
    }

    /// How many tuples are in force.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no tuple is in force.
    #[cfg(any(test, feature = "sim"))]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// How many copies are held, tombstones and expiry records included.
    pub fn held(&self) -> usize {
        self.entries.len()
    }

    /// Every tuple in force, by key.
    #[cfg(any(test, feature = "sim"))]
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.sorted(|e| e.kind == Kind::Live)
            .into_iter()
            .map(|(k, e)| (k, &e.value))
    }

    /// Every tuple in force with its entry, by key.
    pub fn details(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        self.sorted(|e| e.kind == Kind::Live).into_iter()
    }

    /// Every copy that travels on a resync (tuples in force and tombstones), by key.
    #[cfg(any(test, feature = "sim"))]
    pub fn shared(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        self.sorted(|e| e.kind != Kind::Expired).into_iter()
    }

    /// The same as [`Store::shared`], from the sorted keys kept between calls: a node that
    /// resyncs a large store often (a lookup a second) sorts it once per change of keys.
    #[cfg(any(test, feature = "sim"))]
    pub fn shared_kept_sorted(&mut self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        let entries = &self.entries;
        let keys = self.sorted_keys.get_or_insert_with(|| {
            let mut keys: Vec<Arc<str>> = entries.keys().cloned().collect();
            keys.sort_unstable();
            keys
        });
        keys.iter()
            .filter_map(|key| Some((key, entries.get(key)?)))
            .filter(|(_, e)| e.kind != Kind::Expired)
    }

    /// The copies [`Store::shared_kept_sorted`] lists, from the first key after `after`: where
    /// a streamed resync left off, whatever came or went since.
    pub fn shared_after(
        &mut self,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        let entries = &self.entries;
        let keys = self.sorted_keys.get_or_insert_with(|| {
            let mut keys: Vec<Arc<str>> = entries.keys().cloned().collect();
            keys.sort_unstable();
            keys
        });
        let start = after.map_or(0, |after| keys.partition_point(|k| &**k <= after));
        keys.get(start..)
            .unwrap_or_default()
            .iter()
            .filter_map(|key| Some((key, entries.get(key)?)))
            .filter(|(_, e)| e.kind != Kind::Expired)
    }

    /// The keys whose value is `service`, sorted.
    pub fn lookup(&self, service: &str) -> Vec<Arc<str>> {
        let found = self.sorted(|e| e.kind == Kind::Live && &*e.value == service);
        found.into_iter().map(|(k, _)| Arc::clone(k)).collect()
    }

    /// The keys we own, sorted.
    pub fn owned(&self) -> Vec<Arc<str>> {
        let mine = self.sorted(|e| e.owned() && e.kind == Kind::Live);
        mine.into_iter().map(|(k, _)| Arc::clone(k)).collect()
    }

    /// The keys of the tuples in force that `origin` published, sorted.
    pub fn live_from(&self, origin: u64) -> Vec<Arc<str>> {
        let theirs = self.sorted(|e| e.kind == Kind::Live && e.stamp.origin == origin);
        theirs.into_iter().map(|(k, _)| Arc::clone(k)).collect()
    }

    /// The copies that pass `keep`, sorted by key.
    fn sorted(&self, keep: impl Fn(&Entry) -> bool) -> Vec<(&Arc<str>, &Entry)> {
        let mut copies: Vec<_> = self.entries.iter().filter(|(_, e)| keep(e)).collect();
        copies.sort_unstable_by_key(|(a, _)| *a);
        copies
    }

    /// A heap item for `key` at `at`, after every item pushed so far.
    fn due(&mut self, at: Instant, key: &Arc<str>) -> Reverse<Due> {
        self.pushed += 1;
        Reverse(Due {
            at,
            seq: self.pushed,
            key: Arc::clone(key),
        })
    }

    /// Holds `entry` for `key`, replacing any copy; returns the copy it replaced.
    pub fn put(&mut self, key: Arc<str>, mut entry: Entry) -> Option<Entry> {
        entry.value = self.intern(&entry.value);
        if let Some(at) = entry.ends {
            let due = self.due(at, &key);
            self.ends.push(due);
        }
        if let Some(at) = entry.refresh_at() {
            let due = self.due(at, &key);
            self.refreshes.push(due);
        }
        let new = (entry.kind == Kind::Live).then(|| Tuple::of(&entry));
        self.weigh(&key, &entry, true);
        let old = self.entries.insert(Arc::clone(&key), entry);
        if let Some(old) = &old {
            self.weigh(&key, old, false);
        }
        if old.is_none() {
            self.sorted_keys = None;
        }
        let old_tuple = old.as_ref().filter(|e| e.kind == Kind::Live).map(Tuple::of);
        if new.is_some() {
            self.live += 1;
        }
        if old_tuple.is_some() {
            self.live -= 1;
        }
        // Most puts are lease refreshes of the same tuple: its share of the digest stays.
        if new != old_tuple {
            for tuple in [new, old_tuple].into_iter().flatten() {
                self.digest ^= tuple.fingerprint(&key);
            }
        }
        self.prune();
        self.forget_values();
        old
    }

    /// The held copy of `value`, which equal values then share.
    fn intern(&mut self, value: &Arc<str>) -> Arc<str> {
        if let Some(held) = self.values.get(value) {
            return Arc::clone(held);
        }
        self.values.insert(Arc::clone(value));
        Arc::clone(value)
    }

    /// Lets go of values no copy holds any more, once they may be half of those kept: a sweep
    /// per that many puts or removals keeps this O(1) each.
    fn forget_values(&mut self) {
        if self.values.len() > 2 * self.entries.len() + 16
            && self.values.len() > self.sweep_values_above
        {
            self.values.retain(|value| Arc::strong_count(value) > 1);
            // Values still held elsewhere (an event on its way) must not make every put sweep.
            self.sweep_values_above = self.values.len() + self.values.len() / 2;
        }
    }

    /// Drops heap items at the top that no longer match their entry (a refresh moved the end
    /// on), so the next deadline the actor sleeps to is a real one: with thousands of leased
    /// tuples refreshed every few seconds, stale tops would wake the node for nothing each time.
    fn prune(&mut self) {
        let entries = &self.entries;
        let stale = |key: &str, at: Instant, field: fn(&Entry) -> Option<Instant>| {
            entries.get(key).and_then(field) != Some(at)
        };
        while let Some(Reverse(Due { at, key, .. })) = self.ends.peek()
            && stale(key, *at, |e| e.ends)
        {
            self.ends.pop();
        }
        while let Some(Reverse(Due { at, key, .. })) = self.refreshes.peek()
            && stale(key, *at, Entry::refresh_at)
        {
            self.refreshes.pop();
        }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let old = self.entries.swap_remove(key);
        if let Some(old) = &old {
            self.sorted_keys = None;
            self.weigh(key, old, false);
        }
        if let Some(old) = old.as_ref().filter(|e| e.kind == Kind::Live) {
            self.live -= 1;
            self.digest ^= Tuple::of(old).fingerprint(key);
        }
        self.prune();
        self.forget_values();
        old
    }

    /// A digest of the tuples in force: nodes that hold the same tuples (same keys, values,
    /// versions and origins; lease refreshes aside) have the same digest.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The earliest time a copy may end.
    pub fn next_end(&self) -> Option<Instant> {
        self.ends.peek().map(|Reverse(due)| due.at)
    }

    /// The earliest time one of our leases may need a refresh.
    pub fn next_refresh(&self) -> Option<Instant> {
        self.refreshes.peek().map(|Reverse(due)| due.at)
    }

    /// The next key whose copy ends by `now`, if any.
    pub fn pop_ended(&mut self, now: Instant) -> Option<Arc<str>> {
        let entries = &self.entries;
        pop_due(&mut self.ends, now, |key, at| {
            entries.get(key).and_then(|e| e.ends) == Some(at)
        })
    }

    /// The next key whose lease we must refresh by `now`, if any.
    pub fn pop_refresh(&mut self, now: Instant) -> Option<Arc<str>> {
        let entries = &self.entries;
        pop_due(&mut self.refreshes, now, |key, at| {
            entries.get(key).is_some_and(|e| e.refresh_at() == Some(at))
        })
    }
}

/// What of a copy in force counts in the store digest.
#[derive(PartialEq, Eq)]
struct Tuple {
    value: Arc<str>,
    version: u64,
    origin: u64,
}

impl Tuple {
    fn of(entry: &Entry) -> Self {
        Self {
            value: Arc::clone(&entry.value),
            version: entry.stamp.version,
            origin: entry.stamp.origin,
        }
    }

    /// This tuple's share of the store digest. FNV-1a with a final mix, written out so every
    /// build of every node computes the same number (std's hashers promise no stable output).
    /// 0xff never occurs in UTF-8, so it separates key and value unambiguously.
    fn fingerprint(&self, key: &str) -> u64 {
        let bytes = key
            .bytes()
            .chain([0xff])
            .chain(self.value.bytes())
            .chain([0xff])
            .chain(self.version.to_be_bytes())
            .chain(self.origin.to_be_bytes());
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        // splitmix64's finaliser, so XOR-ing nearby fingerprints does not cancel structure.
        hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^ (hash >> 31)
    }
}

/// Pops items due by `now` until one is still `current` (the entry has not moved on since).
fn pop_due(
    heap: &mut BinaryHeap<Reverse<Due>>,
    now: Instant,
    current: impl Fn(&str, Instant) -> bool,
) -> Option<Arc<str>> {
    loop {
        let Reverse(due) = heap.peek()?;
        if due.at > now {
            return None;
        }
        let Reverse(Due { at, key, .. }) = heap.pop()?;
        if current(&key, at) {
            return Some(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str, version: u64, kind: Kind) -> Entry {
        Entry {
            value: Arc::from(value),
            stamp: Stamp {
                version,
                origin: 1,
                lease_seq: 0,
                withdrawn: kind == Kind::Withdrawn,
            },
            kind,
            ends: None,
            own: None,
        }
    }

    #[test]
    fn the_digest_follows_the_tuples_in_force_whatever_the_order() {
        let mut one = Store::default();
        let mut two = Store::default();
        assert_eq!(one.digest(), 0);
        one.put(Arc::from("a"), entry("x", 1, Kind::Live));
        one.put(Arc::from("b"), entry("y", 1, Kind::Live));
        two.put(Arc::from("b"), entry("y", 1, Kind::Live));
        assert_ne!(one.digest(), two.digest());
        two.put(Arc::from("a"), entry("x", 1, Kind::Live));
        assert_eq!(one.digest(), two.digest(), "same tuples, other order");
        let mut refreshed = entry("x", 1, Kind::Live);
        refreshed.stamp.lease_seq = 5;
        two.put(Arc::from("a"), refreshed);
        assert_eq!(
            one.digest(),
            two.digest(),
            "a lease refresh is the same tuple"
        );
        two.put(Arc::from("a"), entry("x", 2, Kind::Live));
        assert_ne!(one.digest(), two.digest(), "a newer version is not");
        two.put(Arc::from("a"), entry("", 3, Kind::Withdrawn));
        one.remove("a");
        assert_eq!(one.digest(), two.digest(), "tombstones do not count");
        one.remove("b");
        assert_eq!(one.digest(), 0);
    }

    #[test]
    fn the_kept_sorted_listing_follows_keys_coming_and_going() {
        let mut store = Store::default();
        let keys = |store: &mut Store| -> Vec<String> {
            let kept: Vec<String> = store
                .shared_kept_sorted()
                .map(|(k, _)| k.to_string())
                .collect();
            let fresh: Vec<String> = store.shared().map(|(k, _)| k.to_string()).collect();
            assert_eq!(kept, fresh);
            kept
        };
        store.put(Arc::from("b"), entry("x", 1, Kind::Live));
        store.put(Arc::from("a"), entry("x", 1, Kind::Live));
        assert_eq!(keys(&mut store), ["a", "b"]);
        store.put(Arc::from("c"), entry("x", 1, Kind::Live));
        store.put(Arc::from("a"), entry("y", 2, Kind::Live));
        assert_eq!(keys(&mut store), ["a", "b", "c"]);
        store.remove("b");
        store.put(Arc::from("c"), entry("x", 1, Kind::Expired));
        assert_eq!(keys(&mut store), ["a"]);
    }

    #[test]
    fn equal_values_share_one_allocation_until_no_copy_holds_them() {
        let mut store = Store::default();
        for n in 0..100 {
            store.put(Arc::from(format!("k{n}")), entry("svc", 1, Kind::Live));
        }
        let (a, b) = (store.get("k0").unwrap(), store.get("k99").unwrap());
        assert!(Arc::ptr_eq(a, b), "two copies of one value");
        assert_eq!(store.values.len(), 1);
        for n in 0..100 {
            store.put(
                Arc::from(format!("k{n}")),
                entry(&format!("v{n}"), 2, Kind::Live),
            );
        }
        assert_eq!(store.get("k7").map(|v| &**v), Some("v7"));
        for n in 0..100 {
            store.remove(&format!("k{n}"));
        }
        store.put(Arc::from("last"), entry("svc", 1, Kind::Live));
        // 101 values were held; sweeps are spaced out, so some may linger, but not most.
        assert!(
            store.values.len() < 50,
            "values no copy holds are let go: {} kept",
            store.values.len()
        );
    }

    #[test]
    fn only_tuples_in_force_count_and_show() {
        let mut store = Store::default();
        store.put(Arc::from("a"), entry("x", 1, Kind::Live));
        store.put(Arc::from("b"), entry("", 2, Kind::Withdrawn));
        store.put(Arc::from("c"), entry("x", 1, Kind::Expired));
        assert_eq!(store.len(), 1);
        assert_eq!(store.held(), 3);
        assert_eq!(store.get("b"), None);
        assert_eq!(store.lookup("x"), vec![Arc::from("a")]);
        assert_eq!(store.shared().count(), 2, "expiry records stay local");
        store.put(Arc::from("a"), entry("", 2, Kind::Withdrawn));
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn greater_copies_win_by_stamp_then_value() {
        let held = entry("b", 2, Kind::Live);
        let at = |version, lease_seq| Stamp {
            version,
            origin: 1,
            lease_seq,
            withdrawn: false,
        };
        assert!(held.is_older_than(&at(3, 0), "a"));
        assert!(held.is_older_than(&at(2, 1), "b"));
        assert!(held.is_older_than(&at(2, 0), "c"));
        assert!(!held.is_older_than(&at(2, 0), "b"));
        assert!(!held.is_older_than(&at(1, 9), "z"));
    }

    #[test]
    fn timers_fire_once_and_stale_ones_are_skipped() {
        let t0 = Instant::now();
        let mut store = Store::default();
        let mut leased = entry("x", 1, Kind::Live);
        leased.ends = Some(t0 + Duration::from_secs(1));
        store.put(Arc::from("k"), leased.clone());
        leased.ends = Some(t0 + Duration::from_secs(2));
        store.put(Arc::from("k"), leased);
        assert_eq!(
            store.pop_ended(t0 + Duration::from_millis(1500)),
            None,
            "the first deadline is stale"
        );
        assert_eq!(
            store.pop_ended(t0 + Duration::from_secs(2)).as_deref(),
            Some("k")
        );
    }

    #[test]
    fn keys_that_cannot_be_a_pipe_word_are_refused() {
        assert_eq!(validate("", "v", 100), Err(TupleError::EmptyKey));
        assert!(matches!(
            validate("a b", "v", 100),
            Err(TupleError::BadKeyChar { .. })
        ));
        assert!(matches!(
            validate("a\nb", "v", 100),
            Err(TupleError::BadKeyChar { .. })
        ));
        assert!(matches!(
            validate(&"k".repeat(256), "v", 100),
            Err(TupleError::KeyTooLong { len: 256 })
        ));
        assert!(matches!(
            validate("k", "line\nbreak", 100),
            Err(TupleError::BadValueChar { .. })
        ));
        assert!(matches!(
            validate("k", "toolong", 3),
            Err(TupleError::ValueTooLong { .. })
        ));
        assert_eq!(
            validate("tcp://10.0.0.1:9000", "orders service", 100),
            Ok(())
        );
    }
}
