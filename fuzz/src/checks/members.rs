//! The cluster half of the engine fuzz target: membership messages (`proto/zgp.md` §12) built
//! from parts that collide often, and what must hold of the member list, the views, the MEMBER
//! events and every record the engine sends. `checks.rs` feeds the steps; this file owns the
//! parts and the [`MemberModel`] the checks keep.
//!
//! Records are built within what the wire carries (8 endpoints, 32 tags, 255-byte fields), as
//! the encoder refuses the rest and no peer could send it; the raw-bytes steps and the decode
//! target cover the decoder's refusals. Within that, the pools hold what the engine must refuse:
//! names past 64 bytes or with a space or a line break, tags past 512 bytes in all, endpoints
//! that are not endpoints.

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use zgossip::engine::{Engine, Event, MAX_INCARNATION, MAX_NAME_BYTES, MAX_TAG_BYTES, validate};
use zgossip::wire::{
    MAX_ENDPOINTS, MAX_SHUFFLE, MAX_TAGS, Member, MemberState, Message, Neighbor, Probe, is_tag,
};

use super::{NODE_ID, Num, pick};

/// How many node ids the [`MemberId::Seen`] pool keeps: the first ones heard.
const SEEN_IDS: usize = 16;

/// A member record; see [`Record::build`].
#[derive(Debug, Arbitrary)]
pub struct Record {
    id: MemberId,
    incarnation: Num,
    state: State,
    durable: bool,
    name: Name,
    endpoints: Endpoints,
    tags: Tags,
}

/// A member's node id.
#[derive(Debug, Arbitrary)]
pub enum MemberId {
    /// This node: a claim about it must be refuted, never kept.
    Us,
    /// One of the ids heard so far (hails, records), by index; a few-pool id before any.
    Seen(u8),
    /// One of 2–5, so made-up members collide.
    Few(u8),
    /// 0 (which no record may carry), `u64::MAX` or anything.
    Num(Num),
}

impl MemberId {
    fn get(&self, seen: &[u64]) -> u64 {
        match self {
            Self::Us => NODE_ID,
            Self::Seen(n) => (seen.get(usize::from(*n) % seen.len().max(1)).copied())
                .unwrap_or_else(|| 2 + u64::from(*n % 4)),
            Self::Few(n) => 2 + u64::from(*n % 4),
            Self::Num(n) => n.get(),
        }
    }
}

/// A [`MemberState`].
#[derive(Debug, Arbitrary)]
pub enum State {
    /// Alive.
    Alive,
    /// Suspect.
    Suspect,
    /// Dead.
    Dead,
    /// Left.
    Left,
}

/// A record's name: from a pool, or around the 64-byte limit.
#[derive(Debug, Arbitrary)]
pub enum Name {
    /// One of [`NAMES`].
    Pool(u8),
    /// 61–68 bytes.
    Near(u8),
}

const NAMES: [&str; 8] = [
    "",
    "a",
    "orders-1",
    "with space",
    "line\nbreak",
    "tab\t",
    "ünï",
    // The most the wire carries, far past what a node keeps.
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\
     nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\
     nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
];

/// A record's endpoints.
#[derive(Debug, Arbitrary)]
pub enum Endpoints {
    /// None: a member nobody can dial.
    None,
    /// Picks from [`ENDPOINTS`], at most eight.
    Pool(Vec<u8>),
    /// Eight distinct good ones.
    Full,
}

const ENDPOINTS: [&str; 8] = [
    "tcp://10.0.0.1:5670",
    "tcp://10.0.0.2:5670",
    "ipc:///tmp/zgossip-3",
    // One of our own CONNECTs.
    "tcp://remote-0:5670",
    "",
    "tcp://with space:1",
    "tcp://line\nbreak:1",
    "ünï",
];

/// A record's tags.
#[derive(Debug, Arbitrary)]
pub enum Tags {
    /// None.
    None,
    /// Picks from [`TAGS`], at most 32.
    Pool(Vec<u8>),
    /// Three to five tags of 128 bytes: below, at and past the 512 bytes a node keeps.
    Heavy(u8),
    /// Thirty-two small tags.
    Full,
}

const TAGS: [&str; 8] = [
    "zone=eu",
    "role=api",
    "k=",
    "k==v",
    "zone=eu west",
    "k=line\nbreak",
    "curve-key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
    "curve-key=short",
];

impl Record {
    /// The record; one the wire refuses (id 0) makes the step a no-op, as no peer can send it.
    pub fn build(&self, seen: &[u64]) -> Member {
        let endpoints = match &self.endpoints {
            Endpoints::None => Vec::new(),
            Endpoints::Pool(picks) => (picks.iter().take(MAX_ENDPOINTS))
                .map(|n| pick(&ENDPOINTS, *n).to_owned())
                .collect(),
            Endpoints::Full => (0..MAX_ENDPOINTS)
                .map(|n| format!("tcp://10.0.1.{n}:5670"))
                .collect(),
        };
        let tags = match &self.tags {
            Tags::None => Vec::new(),
            Tags::Pool(picks) => (picks.iter().take(MAX_TAGS))
                .map(|n| pick(&TAGS, *n).to_owned())
                .collect(),
            Tags::Heavy(n) => (0..3 + usize::from(*n % 3))
                .map(|n| format!("k{n}={}", "v".repeat(125)))
                .collect(),
            Tags::Full => (0..MAX_TAGS).map(|n| format!("t{n}=v")).collect(),
        };
        Member {
            id: self.id.get(seen),
            incarnation: self.incarnation.get(),
            state: match self.state {
                State::Alive => MemberState::Alive,
                State::Suspect => MemberState::Suspect,
                State::Dead => MemberState::Dead,
                State::Left => MemberState::Left,
            },
            durable: self.durable,
            joined_ms: 1_700_000_000_000,
            name: match &self.name {
                Name::Pool(n) => pick(&NAMES, *n).to_owned(),
                Name::Near(n) => "n".repeat(MAX_NAME_BYTES - 3 + usize::from(*n % 8)),
            },
            endpoints,
            tags,
        }
    }
}

/// A JOIN's time to live: the walk's own values (the contact sends 6), or anything.
#[derive(Debug, Arbitrary)]
pub enum Ttl {
    /// 0–7.
    Walk(u8),
    /// Anything.
    Any(u8),
}

impl Ttl {
    /// The ttl.
    pub fn get(&self) -> u8 {
        match self {
            Self::Walk(n) => n % 8,
            Self::Any(n) => *n,
        }
    }
}

/// A PROBE's sequence number: one of ours (they count from 1), or anything.
#[derive(Debug, Arbitrary)]
pub enum Seq {
    /// 0–7.
    Ours(u8),
    /// Anything.
    Any(u32),
}

/// The first `max` records of `list`.
fn records(list: &[Record], seen: &[u64], max: usize) -> Vec<Member> {
    list.iter().take(max).map(|r| r.build(seen)).collect()
}

/// MEMBERS (with no record, one the encoder refuses).
pub fn members(list: &[Record], seen: &[u64]) -> Message {
    Message::Members(records(list, seen, usize::MAX))
}

/// SHUFFLE, with at most the 16 records the wire carries.
pub fn shuffle(reply: bool, list: &[Record], seen: &[u64]) -> Message {
    Message::Shuffle {
        reply,
        members: records(list, seen, MAX_SHUFFLE),
    }
}

/// NEIGHBOR, a request.
pub fn neighbor_request(high: bool, member: &Record, seen: &[u64]) -> Message {
    Message::Neighbor(Neighbor::Request {
        high,
        member: Box::new(member.build(seen)),
    })
}

/// PROBE; `failed` only in an answer, as the wire requires.
pub fn probe(answer: bool, failed: bool, seq: &Seq, target: &MemberId, seen: &[u64]) -> Message {
    Message::Probe(Probe {
        answer,
        failed: failed && answer,
        seq: match seq {
            Seq::Ours(n) => u32::from(n % 8),
            Seq::Any(n) => *n,
        },
        target: target.get(seen),
    })
}

/// The records a membership message carries.
fn carried_records(message: &Message) -> &[Member] {
    match message {
        Message::Members(records)
        | Message::Shuffle {
            members: records, ..
        } => records,
        Message::Join { member, .. } | Message::Neighbor(Neighbor::Request { member, .. }) => {
            std::slice::from_ref(&**member)
        }
        _ => &[],
    }
}

/// Whether a node keeps this record from a peer (`proto/zgp.md` §12): a name, tags and
/// endpoints within the limits, each one word, as the MEMBERS pipe command prints them.
fn acceptable(record: &Member) -> bool {
    let word = |text: &str| !text.chars().any(|c| c.is_whitespace() || c.is_control());
    record.id != 0
        && record.name.len() <= MAX_NAME_BYTES
        && word(&record.name)
        && record.tags.iter().map(String::len).sum::<usize>() <= MAX_TAG_BYTES
        && record.tags.iter().all(|t| is_tag(t) && word(t))
        && (record.endpoints.iter()).all(|e| validate(e, "", usize::MAX).is_ok())
}

/// What the checks know of the cluster layer.
#[derive(Debug, Default)]
pub struct MemberModel {
    /// Node ids heard (hails, records, probe targets), first ones first: [`MemberId::Seen`].
    pub seen: Vec<u64>,
    /// Endpoint → the member that last advertised it in a record a step sent: whom a dial of
    /// the views there expects to hail.
    pub advertised: BTreeMap<String, u64>,
    /// Our incarnation after the last step: it never goes down.
    incarnation: u64,
    /// The node said goodbye: our record is left from then on.
    pub left: bool,
    /// Each member's state as MEMBER events told the application.
    told: BTreeMap<u64, MemberState>,
}

impl MemberModel {
    /// A node that just started: at incarnation 1.
    pub fn new() -> Self {
        Self {
            incarnation: 1,
            ..Self::default()
        }
    }

    /// Notes the node ids and endpoints a message from a step names, for later steps to use.
    pub fn note(&mut self, message: &Message) {
        let mut ids: Vec<u64> = carried_records(message).iter().map(|r| r.id).collect();
        match message {
            Message::Hello(Some(hail)) | Message::Ping(Some(hail)) | Message::Pong(Some(hail)) => {
                ids.push(hail.node);
            }
            Message::Probe(probe) => ids.push(probe.target),
            _ => {}
        }
        for record in carried_records(message) {
            for endpoint in &record.endpoints {
                self.advertised.insert(endpoint.clone(), record.id);
            }
        }
        for id in ids {
            if id != 0 && self.seen.len() < SEEN_IDS && !self.seen.contains(&id) {
                self.seen.push(id);
            }
        }
    }

    /// The state our own record must be in.
    fn our_state(&self) -> MemberState {
        if self.left {
            MemberState::Left
        } else {
            MemberState::Alive
        }
    }

    /// The highest incarnation at which `message` says we are suspect, dead, or (while we
    /// have not) left: if the engine took the message in, our incarnation is above it after.
    pub fn accusation(&self, message: &Message) -> Option<u64> {
        (carried_records(message).iter())
            // Above this the engine refuses the record: refuting it could overflow.
            .filter(|r| r.id == NODE_ID && r.incarnation <= MAX_INCARNATION)
            .filter(|r| match r.state {
                MemberState::Suspect | MemberState::Dead => true,
                MemberState::Left => !self.left,
                MemberState::Alive => false,
            })
            .map(|r| r.incarnation)
            .max()
    }

    /// Our incarnation now.
    pub fn our_incarnation(engine: &Engine) -> u64 {
        engine.members().first().map_or(0, |me| me.incarnation)
    }

    /// A MEMBER event: never about us; kept to compare with the member list.
    pub fn on_event(&mut self, event: &Event, step: usize) {
        let Event::Member { id, state, .. } = event else {
            return;
        };
        assert_ne!(
            *id, NODE_ID,
            "step {step}: a MEMBER event about this node: {event:?}"
        );
        let before = self.told.insert(*id, *state);
        assert_ne!(
            before,
            Some(*state),
            "step {step}: a MEMBER event that changes nothing: {event:?}"
        );
    }

    /// What any membership message the engine sends must carry: records a node keeps, never
    /// a claim against us, and no probe of us.
    pub fn check_sent(&self, message: &Message, engine: &Engine, step: usize) {
        let incarnation = Self::our_incarnation(engine);
        for record in carried_records(message) {
            assert!(
                acceptable(record),
                "step {step}: the engine sent a record a node refuses: {record:?}"
            );
            if record.id == NODE_ID {
                assert!(
                    record.state == self.our_state() && record.incarnation <= incarnation,
                    "step {step}: the engine sent {record:?} about itself, at incarnation \
                     {incarnation}{}",
                    if self.left { ", having left" } else { "" }
                );
            }
        }
        if let Message::Probe(probe) = message {
            assert!(
                probe.answer || probe.target != NODE_ID,
                "step {step}: the engine asked others whether it is alive: {probe:?}"
            );
        }
    }

    /// What must hold between steps: our record first, alive (left after goodbye), its
    /// incarnation never lower, and every claim against us that the engine took in refuted;
    /// every other record one a node keeps, listed once, as the MEMBER events said; the passive
    /// view holds members not dead or gone, none in the active view, and not us.
    pub fn check_state(&mut self, engine: &Engine, refute: Option<u64>, step: usize) {
        let members = engine.members();
        let Some((me, others)) = members.split_first() else {
            panic!("step {step}: the member list lacks this node");
        };
        assert_eq!(
            (me.id, me.state),
            (NODE_ID, self.our_state()),
            "step {step}: this node's own record is {me:?}"
        );
        assert!(
            me.incarnation >= self.incarnation,
            "step {step}: our incarnation went down from {} to {}",
            self.incarnation,
            me.incarnation
        );
        self.incarnation = me.incarnation;
        if let Some(claim) = refute {
            assert!(
                me.incarnation > claim,
                "step {step}: a peer's claim at incarnation {claim} against this node was taken \
                 in, and our record stays at {}",
                me.incarnation
            );
        }
        let mut ids = BTreeSet::new();
        for record in others {
            assert!(
                record.id != NODE_ID && ids.insert(record.id),
                "step {step}: member {} listed twice",
                record.id
            );
            assert!(
                acceptable(record),
                "step {step}: the member list holds a record a node refuses: {record:?}"
            );
            assert_eq!(
                self.told.get(&record.id),
                Some(&record.state),
                "step {step}: member {} is {:?}, but the MEMBER events said otherwise",
                record.id,
                record.state
            );
        }
        // Members forgotten (an hour after they died or left) go without an event.
        self.told.retain(|id, state| {
            let kept = ids.contains(id);
            assert!(
                kept || matches!(state, MemberState::Dead | MemberState::Left),
                "step {step}: member {id}, last told {state:?}, is gone from the list"
            );
            kept
        });
        let (active, passive) = engine.views();
        let mut distinct = BTreeSet::new();
        for id in &passive {
            let state = others.iter().find(|r| r.id == *id).map(|r| r.state);
            assert!(
                distinct.insert(*id)
                    && !active.contains(id)
                    && matches!(state, Some(MemberState::Alive | MemberState::Suspect)),
                "step {step}: member {id} ({state:?}) in the passive view {passive:?} \
                 (active {active:?})"
            );
        }
    }
}
