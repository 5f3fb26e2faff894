//! A member's record as a node holds it: packed small, because every node holds every member
//! of its cluster (10,000 members at 500 bytes each were 5 MB per node, and 50 GB for a
//! simulation of the whole cluster in one process). The strings share one allocation, and the
//! timestamps only a member that is not alive needs live in a box of their own.

use std::time::Instant;

use crate::wire::{Member, MemberState};

/// A member as this node knows it.
#[derive(Debug)]
pub(super) struct Known {
    pub(super) incarnation: u64,
    pub(super) joined_ms: u64,
    /// Name, endpoints and tags, each length-prefixed by a byte, the two lists by their count
    /// (see [`pack`]); the wire and [`super::members`]' limits keep every length under 256.
    text: Box<[u8]>,
    pub(super) state: MemberState,
    pub(super) durable: bool,
    /// Set while it is not alive.
    timers: Option<Box<Timers>>,
}

/// What a member that is not alive is waiting for.
#[derive(Debug, Clone, Copy)]
struct Timers {
    /// When its record last changed here: it is forgotten a while after.
    changed: Instant,
    /// While suspect: when it becomes dead unless refuted.
    suspect_until: Option<Instant>,
    /// When a link of ours that hears it last told it of its accusation.
    told: Option<Instant>,
    /// Dead, not durable: when its tuples are dropped, unless a refutation comes first.
    drop_at: Option<Instant>,
}

impl Known {
    /// `record` as held from `now`; `text` reuses the strings of the record it replaces when
    /// they did not change (a refutation, a new state), so most changes allocate nothing.
    pub(super) fn new(
        record: &Member,
        now: Instant,
        suspect_until: Option<Instant>,
        drop_at: Option<Instant>,
        held: Option<&mut Known>,
    ) -> Known {
        let text = match held {
            Some(held) if held.same_text(record) => std::mem::take(&mut held.text),
            _ => pack(record),
        };
        let timers = (record.state != MemberState::Alive).then(|| {
            Box::new(Timers {
                changed: now,
                suspect_until,
                told: None,
                drop_at,
            })
        });
        Known {
            incarnation: record.incarnation,
            joined_ms: record.joined_ms,
            text,
            state: record.state,
            durable: record.durable,
            timers,
        }
    }

    /// The record, unpacked.
    pub(super) fn record(&self, id: u64) -> Member {
        Member {
            id,
            incarnation: self.incarnation,
            state: self.state,
            durable: self.durable,
            joined_ms: self.joined_ms,
            name: self.name().to_owned(),
            endpoints: self.endpoints().map(str::to_owned).collect(),
            tags: self.tags().map(str::to_owned).collect(),
        }
    }

    /// Whether `record` beats this one (see [`Member::supersedes`]).
    pub(super) fn superseded_by(&self, record: &Member) -> bool {
        (record.incarnation, record.state) > (self.incarnation, self.state)
    }

    pub(super) fn name(&self) -> &str {
        field(&mut &self.text[..]).unwrap_or("")
    }

    /// Its advertised endpoints, in order.
    pub(super) fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.list(0)
    }

    /// Whether it advertises any endpoint at all (others can dial it).
    pub(super) fn dialable(&self) -> bool {
        self.endpoints().next().is_some()
    }

    pub(super) fn tags(&self) -> impl Iterator<Item = &str> {
        self.list(1)
    }

    /// What the record weighs (see [`super::members::weight`]): the same for a record and
    /// its packed form.
    pub(super) fn weight(&self) -> usize {
        29 + self.text.len()
    }

    pub(super) fn changed(&self) -> Option<Instant> {
        self.timers.as_ref().map(|t| t.changed)
    }

    pub(super) fn suspect_until(&self) -> Option<Instant> {
        self.timers.as_ref().and_then(|t| t.suspect_until)
    }

    pub(super) fn told(&self) -> Option<Instant> {
        self.timers.as_ref().and_then(|t| t.told)
    }

    /// Notes that it was told of its accusation (a member that is alive has none).
    pub(super) fn set_told(&mut self, at: Instant) {
        if let Some(t) = &mut self.timers {
            t.told = Some(at);
        }
    }

    pub(super) fn drop_at(&self) -> Option<Instant> {
        self.timers.as_ref().and_then(|t| t.drop_at)
    }

    /// Its tuples were dropped (or need not be): nothing more to wait for but forgetting it.
    pub(super) fn clear_drop(&mut self) {
        if let Some(t) = &mut self.timers {
            t.drop_at = None;
        }
    }

    fn same_text(&self, record: &Member) -> bool {
        self.name() == record.name
            && self
                .endpoints()
                .eq(record.endpoints.iter().map(String::as_str))
            && self.tags().eq(record.tags.iter().map(String::as_str))
    }

    /// The endpoints (`which` 0) or the tags (1).
    fn list(&self, which: usize) -> impl Iterator<Item = &str> {
        let mut rest: &[u8] = &self.text;
        field(&mut rest);
        for _ in 0..which {
            for _ in 0..count(&mut rest) {
                field(&mut rest);
            }
        }
        (0..count(&mut rest)).map_while(move |_| field(&mut rest))
    }
}

/// The next length-prefixed string of a packed record.
fn field<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let (&len, tail) = rest.split_first()?;
    let (field, tail) = tail.split_at_checked(usize::from(len))?;
    *rest = tail;
    Some(std::str::from_utf8(field).unwrap_or(""))
}

/// The next count of a packed record's list.
fn count(rest: &mut &[u8]) -> u8 {
    let Some((&n, tail)) = rest.split_first() else {
        return 0;
    };
    *rest = tail;
    n
}

/// Name, endpoints and tags in one allocation: each string after its length, each list after
/// its count. Strings longer than a byte can say are cut (a record we accepted has none).
fn pack(record: &Member) -> Box<[u8]> {
    let len = 3
        + record.name.len()
        + record.endpoints.iter().map(|e| e.len() + 1).sum::<usize>()
        + record.tags.iter().map(|t| t.len() + 1).sum::<usize>();
    let mut text = Vec::with_capacity(len);
    let put = |text: &mut Vec<u8>, s: &str| {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        text.push(end as u8);
        text.extend_from_slice(s.as_bytes().get(..end).unwrap_or_default());
    };
    put(&mut text, &record.name);
    for list in [&record.endpoints, &record.tags] {
        text.push(list.len().min(255) as u8);
        for s in list.iter().take(255) {
            put(&mut text, s);
        }
    }
    text.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, endpoints: &[&str], tags: &[&str], state: MemberState) -> Member {
        Member {
            id: 7,
            incarnation: 3,
            state,
            durable: true,
            joined_ms: 1234,
            name: name.into(),
            endpoints: endpoints.iter().map(|s| (*s).into()).collect(),
            tags: tags.iter().map(|s| (*s).into()).collect(),
        }
    }

    #[test]
    fn a_record_comes_back_as_it_went_in() {
        let now = Instant::now();
        for record in [
            member("", &[], &[], MemberState::Alive),
            member("n1", &["tcp://10.0.0.5:5670"], &[], MemberState::Suspect),
            member("api-ü", &[], &["zone=eu1", "role=api"], MemberState::Dead),
            member(
                "x",
                &["ipc:///tmp/a", "tcp://h:1"],
                &["a=1"],
                MemberState::Left,
            ),
        ] {
            let known = Known::new(&record, now, None, None, None);
            assert_eq!(known.record(7), record);
            assert_eq!(known.dialable(), !record.endpoints.is_empty());
            assert_eq!(known.weight(), super::super::members::weight(&record));
        }
    }

    #[test]
    fn only_a_member_that_is_not_alive_carries_timers() {
        let now = Instant::now();
        let mut alive = Known::new(
            &member("a", &[], &[], MemberState::Alive),
            now,
            None,
            None,
            None,
        );
        assert_eq!(alive.changed(), None);
        let mut dead = Known::new(
            &member("a", &[], &[], MemberState::Dead),
            now,
            None,
            Some(now),
            Some(&mut alive),
        );
        assert_eq!(dead.changed(), Some(now));
        assert_eq!(dead.drop_at(), Some(now));
        dead.clear_drop();
        dead.set_told(now);
        assert_eq!((dead.drop_at(), dead.told()), (None, Some(now)));
    }

    #[test]
    fn the_packed_form_stays_small() {
        // The member table holds one per member at every node: this is its cost.
        assert!(std::mem::size_of::<Known>() <= 48);
    }
}
