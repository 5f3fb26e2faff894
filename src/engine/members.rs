//! The cluster: every node of ours this node has heard of, directly or by gossip (a member),
//! as `proto/zgp.md` §12 describes. Records spread in MEMBERS: the whole list both ways when a
//! link between two members opens, then each change once to every linked member but the one it
//! came from, gathered per gossip interval (the links are few and chosen, not a random sample
//! of the cluster, so a change floods along them: about two frames per link per change), and
//! the whole list to one linked member now and then to repair what was lost. A quiet cluster
//! sends nothing here.
//!
//! Failure detection leans on the links: each is probed by its PINGs already. When every link
//! to a member goes silent, the node asks up to three other linked members whether they still
//! hear it (PROBE); with no such answer in time it gossips the member as suspect. The member
//! refutes by raising its incarnation; a suspicion nobody refutes within the suspicion timeout
//! makes it dead, and its tuples are dropped everywhere unless it is durable. Timeouts stretch
//! with this node's own lateness (Lifeguard's local health), so a starved node stops accusing
//! healthy ones.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::known::Known;
use super::views::Views;
use super::*;
use crate::rng::XorShift;
use crate::wire::{Member, MemberState, Probe, is_tag, members_frame};

/// The most members a node keeps; records of new members past it are refused and counted.
pub const MAX_MEMBERS: usize = 100_000;
/// The most bytes of member records a node keeps (as [`weight`] counts them): a hostile peer's
/// records at the size limits would otherwise take 100,000 × 2.7 KB, and the whole list, which
/// a newcomer is sent, must fit well within a peer's queue (32 MiB by default). About 80,000
/// typical records (~100 bytes).
pub const MAX_MEMBER_BYTES: usize = 8 << 20;

/// Limits on what a member record may carry (§12).
pub const MAX_NAME_BYTES: usize = 64;
/// All of a record's tags together.
pub const MAX_TAG_BYTES: usize = 512;

/// The tag that carries a member's CURVE server key: members dial it over CURVE with that key.
pub const CURVE_KEY_TAG: &str = "curve-key=";

/// Bytes of records per MEMBERS frame: well under the default 64 KiB frame limit, as BATCH.
const MEMBERS_FRAME_BYTES: usize = 16 * 1024;

/// Gossip intervals between a member's death here and the drop of its tuples.
const DROP_GRACE_ROUNDS: u32 = 5;

/// The highest local health score: timeouts stretch to at most nine times their base.
const MAX_HEALTH: u32 = 8;

/// The highest incarnation taken from a peer. A member raises its own by one per refutation
/// or change of record, so none comes near; above it, refuting would overflow.
pub const MAX_INCARNATION: u64 = 1 << 62;

/// Refutations of one member within [`FLAP_WINDOW`] that make this node stop dialling it to
/// probe it, for [`FLAP_QUIET`]: a member that others cannot dial (behind NAT, in a container,
/// advertising the wrong address) is accused by every failed probe and refutes each time, for
/// ever. A partition that heals costs each member one refutation, far under the limit.
const FLAP_LIMIT: u32 = 3;
const FLAP_WINDOW: Duration = Duration::from_secs(600);
/// Long enough to outlast a probe round of a large cluster (one member a second).
const FLAP_QUIET: Duration = Duration::from_secs(3600);

/// Refutations counted in a window, and until when the member is not dialled to be probed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Flaps {
    count: u32,
    since: Instant,
    quiet_until: Option<Instant>,
}

impl Flaps {
    /// Counts one more refutation at `now`; true when it reaches the limit.
    fn count(flaps: &mut Option<Flaps>, now: Instant) -> bool {
        let f = flaps.get_or_insert(Flaps {
            count: 0,
            since: now,
            quiet_until: None,
        });
        if now.saturating_duration_since(f.since) >= FLAP_WINDOW {
            *f = Flaps {
                count: 0,
                since: now,
                quiet_until: f.quiet_until,
            };
        }
        f.count += 1;
        f.count == FLAP_LIMIT
    }
}

/// How often the links are looked over for members they stopped hearing: far under the probe
/// interval, and a timeout of a node with many links (a seed) does not scan its watch list.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Cluster settings. The defaults are memberlist's LAN values where they apply.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This member's name.
    pub name: String,
    /// The endpoints other nodes should dial (`advertise`).
    pub endpoints: Vec<String>,
    /// `key=value` tags.
    pub tags: Vec<String>,
    /// Its tuples outlive it (withdraw-on-stop is off).
    pub durable: bool,
    /// When it started, ms since the Unix epoch.
    pub joined_ms: u64,
    /// Seeds the choice of gossip targets.
    pub seed: u64,
    /// How often changes are gossiped: 200 ms.
    pub gossip_interval: Duration,
    /// How often the whole list goes to one linked member, before scaling with N: 30 s.
    pub push_pull_interval: Duration,
    /// How long an indirect probe waits for an answer: 500 ms.
    pub probe_timeout: Duration,
    /// The unit of the suspicion timeout: 1 s.
    pub probe_interval: Duration,
    /// How many other members an indirect probe asks: 3.
    pub indirect_checks: usize,
    /// A suspicion lasts this many times log10(N + 1) probe intervals (at least this many): 4.
    pub suspicion_mult: u32,
    /// How long a dead or departed member stays listed: an hour.
    pub forget_after: Duration,
    /// Learn the members without being one: never send our record, gossip or probe.
    pub observer: bool,
    /// The active view's size; `None`: log2(N) + 1, at least 3.
    pub active_view: Option<usize>,
    /// How often a sample of the views goes to a random active peer: 60 s.
    pub shuffle_interval: Duration,
    /// How often one member held dead is dialled, in case a partition healed: 10 s.
    pub reconnect_interval: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: String::new(),
            endpoints: Vec::new(),
            tags: Vec::new(),
            durable: false,
            joined_ms: 0,
            seed: 1,
            gossip_interval: Duration::from_millis(200),
            push_pull_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_secs(1),
            indirect_checks: 3,
            suspicion_mult: 4,
            forget_after: Duration::from_secs(3600),
            observer: false,
            active_view: None,
            shuffle_interval: Duration::from_secs(60),
            reconnect_interval: Duration::from_secs(10),
        }
    }
}

/// An indirect probe under way.
#[derive(Debug)]
pub(super) struct Check {
    target: u64,
    /// When our links last heard the target, if they ever did.
    heard: Option<Instant>,
    deadline: Instant,
    asked: usize,
    answered: usize,
}

/// The cluster as this node sees it.
#[derive(Debug)]
pub(super) struct Cluster {
    pub(super) config: ClusterConfig,
    pub(super) me: Member,
    pub(super) members: IndexMap<u64, Known>,
    /// Changes still to gossip: member id (ours included), and the link it came on.
    news: IndexMap<u64, Option<Peer>>,
    /// Members a link of ours was hearing, and since when we last did: the ones we watch.
    watched: IndexMap<u64, Instant>,
    checks: IndexMap<u32, Check>,
    seq: u32,
    pub(super) rng: XorShift,
    next_gossip: Option<Instant>,
    /// When the links are next looked over (see [`WATCH_EVERY`]).
    next_watch: Option<Instant>,
    /// Set once the first link opens.
    next_push_pull: Option<Instant>,
    /// Lifeguard's local health: 0 is healthy.
    pub(super) health: u32,
    /// When members not alive next need a look (a suspicion runs out, tuples are dropped, a
    /// member is forgotten), soonest first, so a deadline never scans every member: after a
    /// mass failure each of thousands of deadlines did. Entries a later change made stale are
    /// passed over as they come up.
    dues: BinaryHeap<Reverse<(Instant, u64)>>,
    /// What the records in `members` weigh together (see [`weight`]).
    member_bytes: usize,
    /// How many of them are alive (the views' sizes follow it; counting costs O(N)).
    pub(super) alive_members: usize,
    /// Keys of copies without a lease dropped because their origin was held dead, by origin:
    /// in force again if it turns out alive (see [`Engine::revive_tuples_of`]).
    dropped: IndexMap<u64, Vec<Arc<str>>>,
    /// Members seen refuting suspicions (see [`FLAP_LIMIT`]), and our own refutations.
    flaps: IndexMap<u64, Flaps>,
    own_flaps: Option<Flaps>,
    /// The key of our CURVE listeners, advertised as a tag.
    curve_key: Option<String>,
    /// Raised whenever a record (ours included) changes, comes or goes.
    generation: u64,
    /// The whole list, encoded, and the generation it was encoded at: every newcomer gets the
    /// same bytes, so a burst of them (or a peer hailing again and again) costs one encoding.
    list_frames: Option<(u64, Vec<Bytes>)>,
    pub(super) views: Views,
}

impl Cluster {
    pub(super) fn new(node_id: u64, config: ClusterConfig) -> Self {
        let me = Member {
            id: node_id,
            incarnation: 1,
            state: MemberState::Alive,
            durable: config.durable,
            joined_ms: config.joined_ms,
            name: config.name.clone(),
            endpoints: config.endpoints.clone(),
            tags: config.tags.clone(),
        };
        let rng = XorShift::new(config.seed ^ node_id);
        Cluster {
            config,
            me,
            members: IndexMap::new(),
            news: IndexMap::new(),
            watched: IndexMap::new(),
            checks: IndexMap::new(),
            seq: 0,
            rng,
            next_gossip: None,
            next_watch: None,
            next_push_pull: None,
            health: 0,
            dues: BinaryHeap::new(),
            member_bytes: 0,
            alive_members: 0,
            dropped: IndexMap::new(),
            flaps: IndexMap::new(),
            own_flaps: None,
            curve_key: None,
            generation: 0,
            list_frames: None,
            views: Views::default(),
        }
    }

    /// `id` refuted a suspicion: past [`FLAP_LIMIT`] in a window it is no longer dialled to be
    /// probed or to join the views, only watched through the links it opens itself, as a
    /// member without an address is.
    fn count_refutation(&mut self, now: Instant, id: u64, endpoints: &[String]) {
        let mut flaps = self.flaps.get(&id).copied();
        if Flaps::count(&mut flaps, now)
            && let Some(f) = &mut flaps
        {
            f.quiet_until = Some(now + FLAP_QUIET);
            info!(
                member = id,
                endpoints = %endpoints.join(" "),
                "a member keeps refuting suspicions; watching it through its own links only"
            );
        }
        if let Some(f) = flaps {
            self.flaps.insert(id, f);
        }
        bound_by_members(&mut self.flaps, &self.members);
    }

    /// Whether `id` is not to be dialled to be probed or asked into the views (see
    /// [`FLAP_LIMIT`]).
    pub(super) fn dial_quiet(&self, id: u64, now: Instant) -> bool {
        (self.flaps.get(&id)).is_some_and(|f| f.quiet_until.is_some_and(|at| at > now))
    }

    /// Whether `id` is a member we hold alive (addressed or not).
    pub(super) fn holds_alive(&self, id: u64) -> bool {
        (self.members.get(&id)).is_some_and(|k| k.state == MemberState::Alive)
    }

    /// Members known, this one included.
    fn size(&self) -> usize {
        self.members.len() + 1
    }

    /// log10(N + 1), at least 1: how cluster size scales retransmits and suspicions.
    fn scale(&self) -> u32 {
        let mut scale = 0;
        let mut n = self.size() + 1;
        while n >= 10 {
            n /= 10;
            scale += 1;
        }
        scale.max(1)
    }

    /// How long a suspicion lasts here: longer in a bigger cluster and on a late node.
    fn suspicion_timeout(&self) -> Duration {
        self.config.probe_interval * (self.config.suspicion_mult * self.scale()) * (1 + self.health)
    }

    pub(super) fn probe_timeout(&self) -> Duration {
        self.config.probe_timeout * (1 + self.health)
    }

    /// How often the whole list goes out: memberlist's scaling, slower past 32 members.
    fn push_pull_interval(&self) -> Duration {
        let n = self.size() as f64;
        let factor = if n <= 32.0 {
            1.0
        } else {
            (n.log2() - 32f64.log2()).ceil() + 1.0
        };
        self.config.push_pull_interval.mul_f64(factor)
    }

    /// Our own record changed (endpoints, tags): a new incarnation, spread to every member.
    fn me_changed(&mut self, now: Instant) {
        self.generation += 1;
        self.me.incarnation += 1;
        let id = self.me.id;
        self.spread(id, None, now);
    }

    fn spread(&mut self, id: u64, from: Option<Peer>, now: Instant) {
        if self.config.observer {
            return;
        }
        self.news.insert(id, from);
        let due = now + self.config.gossip_interval;
        self.next_gossip = Some(self.next_gossip.map_or(due, |at| at.min(due)));
    }

    /// We let the link to `node` go on purpose, or a probe settled it: its silence from now on
    /// says nothing.
    pub(super) fn unwatch(&mut self, node: u64) {
        self.watched.shift_remove(&node);
    }

    /// Whether an indirect probe of `target` is under way.
    pub(super) fn checking(&self, target: u64) -> bool {
        self.checks.values().any(|c| c.target == target)
    }

    /// Whether a direct probe of `target` is under way.
    pub(super) fn probing(&self, target: u64) -> bool {
        self.views.probing.values().any(|(t, _)| *t == target)
    }

    /// Our record (unless we only observe) and every record we hold.
    pub(super) fn all_records(&self) -> Vec<Member> {
        let me = (!self.config.observer).then(|| self.me.clone());
        me.into_iter()
            .chain(self.members.iter().map(|(id, k)| k.record(*id)))
            .collect()
    }

    pub(super) fn record(&self, id: u64) -> Option<Member> {
        if id == self.me.id {
            Some(self.me.clone())
        } else {
            self.members.get(&id).map(|k| k.record(id))
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let checks = self.checks.values().map(|c| c.deadline);
        checks
            .chain(self.dues.peek().map(|Reverse((at, _))| *at))
            .chain(self.next_gossip)
            .chain(self.next_watch.filter(|_| !self.watched.is_empty()))
            .chain(self.next_push_pull)
            .chain(self.views.next_deadline())
            .min()
    }

    /// When `known` next needs a look: its suspicion runs out, its tuples are dropped, or it
    /// is to be forgotten.
    fn due_of(&self, known: &Known) -> Option<Instant> {
        let forget = known.changed().map(|at| at + self.config.forget_after);
        match known.state {
            MemberState::Suspect => known.suspect_until(),
            MemberState::Dead => known.drop_at().into_iter().chain(forget).min(),
            MemberState::Left => forget,
            MemberState::Alive => None,
        }
    }

    fn note_due(&mut self, id: u64) {
        if let Some(at) = self.members.get(&id).and_then(|k| self.due_of(k)) {
            self.dues.push(Reverse((at, id)));
        }
        // Stale entries pile up as records change faster than they fall due (a peer flapping
        // members): past a bound the heap is built anew from the records.
        if self.dues.len() > 2 * self.members.len() + 64 {
            let dues: Vec<_> = (self.members.iter())
                .filter_map(|(&id, k)| Some(Reverse((self.due_of(k)?, id))))
                .collect();
            self.dues = BinaryHeap::from(dues);
        }
    }

    /// The members whose deadlines came, each once.
    fn take_due(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.dues.peek()
            && at <= now
        {
            self.dues.pop();
            due.push(id);
        }
        due.sort_unstable();
        due.dedup();
        due
    }
}

/// Keeps a map of per-member state no longer than the member list: past that, the entries of
/// members forgotten go with them.
pub(super) fn bound_by_members<V>(map: &mut IndexMap<u64, V>, members: &IndexMap<u64, Known>) {
    if map.len() > members.len() {
        map.retain(|id, _| members.contains_key(id));
    }
}

/// Whether a peer's record may be kept: a name, tags and endpoints within the limits, each
/// one word. They are printed as words on the pipe (`MEMBER`, `MEMBERS`): a space would shift
/// the fields, and a line break would let a peer write lines of its choosing there.
fn acceptable(record: &Member) -> bool {
    let word = |text: &str| !text.chars().any(|c| c.is_whitespace() || c.is_control());
    record.id != 0
        && record.name.len() <= MAX_NAME_BYTES
        && word(&record.name)
        && record.tags.iter().map(String::len).sum::<usize>() <= MAX_TAG_BYTES
        && record.tags.iter().all(|t| is_tag(t) && word(t))
        && record
            .endpoints
            .iter()
            .all(|e| validate(e, "", usize::MAX).is_ok())
}

/// What a record costs, about as encoded: its fixed fields and its strings.
pub(super) fn weight(record: &Member) -> usize {
    32 + record.name.len()
        + record.endpoints.iter().map(|e| e.len() + 1).sum::<usize>()
        + record.tags.iter().map(|t| t.len() + 1).sum::<usize>()
}

/// MEMBERS frames that carry `records`, each at most [`MEMBERS_FRAME_BYTES`] of them.
pub(super) fn members_frames<M: Borrow<Member>>(records: &[M]) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    let mut encode = |records: &[M]| match members_frame(records) {
        Ok(frame) => frames.push(frame),
        // Records are checked as they come, so this is a bug of ours.
        Err(error) => warn!(%error, "cannot encode member records"),
    };
    for (i, record) in records.iter().enumerate() {
        let weight = weight(record.borrow());
        if bytes + weight > MEMBERS_FRAME_BYTES && i > start {
            encode(records.get(start..i).unwrap_or_default());
            (start, bytes) = (i, 0);
        }
        bytes += weight;
    }
    if start < records.len() {
        encode(records.get(start..).unwrap_or_default());
    }
    frames
}

impl Engine {
    /// Every member, this node first (unless it only observes), then by name and id; empty
    /// unless the cluster layer is on.
    pub fn members(&self) -> Vec<Member> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut others: Vec<Member> = (cluster.members.iter())
            .map(|(id, k)| k.record(*id))
            .collect();
        others.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        if cluster.config.observer {
            return others;
        }
        let mut all = vec![cluster.me.clone()];
        all.extend(others);
        all
    }

    /// Each member's id and state, this node first (unless it only observes), unsorted and
    /// without copying records: for counting and checking lists of thousands (the harness).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub fn member_states(&self) -> impl Iterator<Item = (u64, MemberState)> + '_ {
        let cluster = self.cluster.as_ref();
        let me = cluster
            .filter(|c| !c.config.observer)
            .map(|c| (c.me.id, c.me.state));
        let others = cluster.into_iter().flat_map(|c| c.members.iter());
        me.into_iter().chain(others.map(|(id, k)| (*id, k.state)))
    }

    /// How many members are alive, this node included unless it only observes; kept as
    /// records change, so asking costs nothing.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub fn alive_count(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| {
            let me = !c.config.observer && c.me.state == MemberState::Alive;
            c.alive_members + usize::from(me)
        })
    }

    /// Our links to members: connected, hailed sessions and remotes, with the member's id.
    pub(super) fn member_links(&self) -> Vec<(Peer, u64)> {
        let remotes = self.remotes.iter().filter_map(|(&id, r)| {
            let node = r.node?;
            r.connected.then_some((Peer::Remote(id), node))
        });
        let sessions = self.sessions.iter().filter_map(|(client, s)| {
            let node = s.node?;
            (s.state == SessionState::Connected).then(|| (Peer::Client(client.clone()), node))
        });
        remotes.chain(sessions).collect()
    }

    /// The whole list, encoded; again only after a record changed (see `list_frames`).
    fn list_frames(&mut self) -> Vec<Bytes> {
        let Some(cluster) = &mut self.cluster else {
            return Vec::new();
        };
        if let Some((generation, frames)) = &cluster.list_frames
            && *generation == cluster.generation
        {
            return frames.clone();
        }
        let frames = members_frames(&cluster.all_records());
        cluster.list_frames = Some((cluster.generation, frames.clone()));
        frames
    }

    /// Every record we hold, to `peer`.
    pub(super) fn send_whole_list(&mut self, peer: &Peer) {
        if let Peer::Client(client) = peer
            && let Some(session) = self.sessions.get_mut(client)
        {
            session.members_sent = true;
        }
        for frame in self.list_frames() {
            self.outputs.push_back(Output::Frame(peer.clone(), frame));
        }
    }

    /// Every record we hold to `peer`, unless it is a client that had them all on this session.
    pub(super) fn send_list_once(&mut self, peer: &Peer) {
        let sent =
            matches!(peer, Peer::Client(c) if self.sessions.get(c).is_some_and(|s| s.members_sent));
        if !sent {
            self.send_whole_list(peer);
        }
    }

    /// Sends a membership message on a link to a member: only while the link is open and its
    /// peer hailed on it. The views learn that a link closed or reconnected at their next
    /// look; until then one of their links may be stale, and what they send on it goes
    /// nowhere rather than to a peer that may not read it (§12).
    pub(super) fn send_to_peer(&mut self, peer: &Peer, message: Message) {
        if !self.member_link_open(peer) {
            debug!(
                message = message.id().name(),
                "not sent: the link is not a member's now"
            );
            return;
        }
        let output = match peer {
            Peer::Client(client) => Output::ToClient(client.clone(), message),
            Peer::Remote(remote) => Output::ToRemote(*remote, message),
        };
        self.outputs.push_back(output);
    }

    /// Sends encoded member records on a link to a member, as [`Engine::send_to_peer`] does.
    pub(super) fn send_frame_to_peer(&mut self, peer: &Peer, frame: Bytes) {
        if self.member_link_open(peer) {
            self.outputs.push_back(Output::Frame(peer.clone(), frame));
        }
    }

    /// Whether the link is open and its peer hailed on it: a member's.
    fn member_link_open(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Client(client) => (self.sessions.get(client))
                .is_some_and(|s| s.state == SessionState::Connected && s.node.is_some()),
            Peer::Remote(remote) => {
                (self.remotes.get(remote)).is_some_and(|r| r.connected && r.node.is_some())
            }
        }
    }

    /// A link to a node that hailed opened. It gets our own record, and every record we hold
    /// when it is a client we do not know (a newcomer, or an observer such as `zgossip
    /// members`: it must learn the cluster once) or a member we know (see below). A newcomer
    /// dialling sends only itself: its contacts know the rest.
    pub(super) fn on_member_link(&mut self, now: Instant, peer: Peer, node: u64) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let newcomer = matches!(peer, Peer::Client(_)) && !cluster.members.contains_key(&node);
        // A link to a member we know came (back): what changed while it was down, accusations
        // and refutations, may have passed either side by (a partition that healed), so both
        // send everything. Only a dialler new to the cluster, knowing nobody, sends just itself.
        // Between members that hold each other alive (a link the views opened, say) the lists
        // agree but for what is still flooding: each sends only itself.
        let reconnect = cluster
            .members
            .get(&node)
            .is_some_and(|k| k.state != MemberState::Alive);
        if !cluster.config.observer {
            cluster.watched.insert(node, now);
            if cluster.next_push_pull.is_none() {
                cluster.next_push_pull = Some(now + cluster.push_pull_interval());
            }
        }
        // A member dialling a node it does not know (a seed that restarted under a new id)
        // tells it the cluster.
        let server_new = matches!(peer, Peer::Remote(_))
            && !cluster.members.contains_key(&node)
            && !cluster.members.is_empty();
        if newcomer || reconnect || server_new {
            self.send_whole_list(&peer);
        } else if !cluster.config.observer {
            let me = cluster.me.clone();
            self.send_to_peer(&peer, Message::Members(vec![me]));
        }
        self.views_link_opened(now, &peer, node);
    }

    /// The node at the other end of a link, once it hailed.
    fn link_node(&self, peer: &Peer) -> Option<u64> {
        match peer {
            Peer::Client(client) => self.sessions.get(client)?.node,
            Peer::Remote(remote) => self.remotes.get(remote)?.node,
        }
    }

    /// A member message came on a link to member `from`.
    pub(super) fn on_member_message(&mut self, now: Instant, peer: Peer, message: Message) {
        if self.cluster.is_none() {
            return;
        }
        match message {
            Message::Members(records) => {
                let corrections = self.corrections(&records);
                for record in records {
                    self.merge_member(now, record, Some(&peer), "gossip");
                }
                // Answered with what we hold worse: no more than it sent.
                for frame in members_frames(&corrections) {
                    self.send_frame_to_peer(&peer, frame);
                }
            }
            // Answered only on a link whose peer hailed: a peer that never did gets plain v1.
            Message::Probe(probe) if !probe.answer && self.hailed(&peer) => {
                let failed = !self.hears(now, probe.target, self.heard_window());
                let answer = Probe {
                    answer: true,
                    failed,
                    ..probe
                };
                self.send_to_peer(&peer, Message::Probe(answer));
            }
            Message::Probe(answer) => self.on_probe_answer(now, answer),
            // The views' messages mean something only from a node that hailed on this link.
            message => {
                let Some(from) = self.link_node(&peer) else {
                    return;
                };
                match message {
                    Message::Join { ttl, member } => self.on_join(now, peer, from, ttl, *member),
                    Message::Neighbor(neighbor) => self.on_neighbor(now, peer, from, neighbor),
                    Message::Disconnect { stopping } => {
                        self.on_disconnect(now, peer, from, stopping);
                    }
                    Message::Shuffle { reply, members } => {
                        self.on_shuffle(now, peer, reply, members);
                    }
                    other => debug!(message = other.id().name(), "not a membership message"),
                }
            }
        }
    }

    /// Our records of members the sender is behind on: those it says are alive that we hold
    /// suspect, dead or left at the same incarnation or later (it was cut off while they were
    /// accused), and those we hold at a later incarnation (it missed a refutation: after a
    /// partition heals, a node that took the other side's old accusations passes them on, and
    /// the refutations flooded past it). Gossip, long past, would not tell it again. Records
    /// at the same incarnation further on (suspect, then dead) are left to the flood, which
    /// carries them anyway. No more bytes than twice what came, so a peer's stale records buy
    /// it little.
    fn corrections(&self, records: &[Member]) -> Vec<Member> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut budget = 2 * records.iter().map(weight).sum::<usize>();
        (records.iter())
            .filter_map(|r| {
                let known = cluster.members.get(&r.id)?;
                let behind = known.incarnation > r.incarnation
                    || (r.state == MemberState::Alive
                        && known.state != MemberState::Alive
                        && known.incarnation >= r.incarnation);
                (behind && known.weight() <= budget).then(|| {
                    budget -= known.weight();
                    known.record(r.id)
                })
            })
            .collect()
    }

    /// Whether the peer on this link hailed, so is one of ours.
    fn hailed(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Client(client) => self.client_reads_batches(client),
            Peer::Remote(remote) => self.remote_reads_batches(*remote),
        }
    }

    /// How recently a link must have heard a member for us to answer a PROBE that it lives:
    /// two server timeouts, so a few heartbeats lost in a row do not make an accusation.
    fn heard_window(&self) -> Duration {
        self.config.server_timeout * 2
    }

    /// Whether a link of ours heard `node` within `within` (or it is us).
    pub(super) fn hears(&self, now: Instant, node: u64, within: Duration) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.me.id == node)
            || (self.link_hearings())
                .any(|(n, at)| n == node && now.saturating_duration_since(at) < within)
    }

    /// Each open link to a node that hailed: the node, and when the link last heard it.
    fn link_hearings(&self) -> impl Iterator<Item = (u64, Instant)> + '_ {
        let remotes = (self.remotes.values())
            .filter(|r| r.connected)
            .filter_map(|r| Some((r.node?, r.last_heard)));
        let sessions = (self.sessions.values())
            .filter(|s| s.state == SessionState::Connected)
            .filter_map(|s| Some((s.node?, s.last_heard)));
        remotes.chain(sessions)
    }

    /// When our open links last heard each node, in one pass over the links: asking about
    /// many members one by one would cost O(links) each (a seed holds a link from everyone).
    pub(super) fn hearing(&self) -> Hearing {
        let mut last = HashMap::new();
        for (node, heard) in self.link_hearings() {
            last.entry(node)
                .and_modify(|at: &mut Instant| *at = (*at).max(heard))
                .or_insert(heard);
        }
        Hearing {
            me: self.cluster.as_ref().map(|c| c.me.id),
            last,
        }
    }

    /// How long a member may go unheard on our links before we ask others about it: a link
    /// that is gone gets a probe interval to come back (a redial takes well under that); one
    /// still open but silent gets two server timeouts, so a few heartbeats lost in a row are
    /// not an accusation. Both stretch with local health.
    fn unheard_grace(&self, linked: bool) -> Duration {
        let health = self.cluster.as_ref().map_or(0, |c| c.health);
        let base = if linked {
            self.config.server_timeout * 2
        } else {
            self.cluster
                .as_ref()
                .map_or(Duration::ZERO, |c| c.config.probe_interval)
        };
        base * (1 + health)
    }

    /// Keeps `record` if it beats the one held; refutes an accusation against us.
    pub(super) fn merge_member(
        &mut self,
        now: Instant,
        record: Member,
        from: Option<&Peer>,
        reason: &str,
    ) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if record.incarnation > MAX_INCARNATION {
            // Refuting it would take an incarnation past any a member reaches, up to one that
            // cannot be beaten: a peer's way of making an accusation stand.
            self.stats.members_refused += 1;
            if self.warnings.allow(now, "member refused", &record.id) {
                warn!(
                    member = record.id,
                    "refused a member record: incarnation too high"
                );
            }
            return;
        }
        if record.id == cluster.me.id {
            // Said to have left while we have not (a restart under the same id): refuted too.
            let accused = matches!(record.state, MemberState::Suspect | MemberState::Dead)
                || (record.state == MemberState::Left && cluster.me.state != MemberState::Left);
            if accused && record.incarnation >= cluster.me.incarnation {
                cluster.me.incarnation = record.incarnation + 1;
                cluster.generation += 1;
                cluster.health = (cluster.health + 1).min(MAX_HEALTH);
                self.stats.refutations += 1;
                info!(
                    incarnation = cluster.me.incarnation,
                    "refuting a suspicion of this node"
                );
                if Flaps::count(&mut cluster.own_flaps, now)
                    && self.warnings.allow(now, "refuting often", &"")
                {
                    let advertised = cluster.me.endpoints.join(" ");
                    warn!(
                        refutations = FLAP_LIMIT,
                        within = ?FLAP_WINDOW,
                        %advertised,
                        "this node is suspected again and again: other members probably cannot \
                         dial the endpoints it advertises (NAT, a container, a wrong \
                         --advertise)"
                    );
                }
                // The refutation goes on every link at once, ahead of our republished tuples on
                // each: a node must not take the new copies and then drop them for an old
                // accusation that reaches it between the two.
                self.tell_links_about_me();
                // Wherever we were taken for dead our tuples were dropped, and a node that held
                // us suspect may have done so since: they come back with new versions.
                self.republish_own(now);
            }
            return;
        }
        if !acceptable(&record) {
            self.stats.members_refused += 1;
            if self.warnings.allow(now, "member refused", &record.id) {
                warn!(
                    member = record.id,
                    "refused a member record over the limits"
                );
            }
            return;
        }
        let held = cluster.members.get(&record.id);
        if held.is_some_and(|k| !k.superseded_by(&record)) {
            return;
        }
        let bytes = cluster.member_bytes - held.map_or(0, Known::weight) + weight(&record);
        if (held.is_none() && cluster.members.len() >= MAX_MEMBERS) || bytes > MAX_MEMBER_BYTES {
            self.stats.members_refused += 1;
            if self.warnings.allow(now, "members full", &0) {
                warn!(
                    members = cluster.members.len(),
                    bytes = cluster.member_bytes,
                    "refused a member record: the member list is full"
                );
            }
            return;
        }
        cluster.member_bytes = bytes;
        cluster.generation += 1;
        let alive = |state: Option<MemberState>| usize::from(state == Some(MemberState::Alive));
        let was = held.map(|k| k.state);
        cluster.alive_members = cluster.alive_members + alive(Some(record.state)) - alive(was);
        let suspect_until =
            (record.state == MemberState::Suspect).then(|| now + cluster.suspicion_timeout());
        let (id, state, name) = (record.id, record.state, record.name.clone());
        if held.is_some_and(|k| {
            !k.endpoints()
                .eq(record.endpoints.iter().map(String::as_str))
        }) {
            // New addresses: worth dialling again.
            cluster.flaps.shift_remove(&id);
        }
        if was == Some(MemberState::Suspect) && state == MemberState::Alive {
            cluster.count_refutation(now, id, &record.endpoints);
        }
        // A death is acted on a little later: its refutation may be on its way by another
        // path, behind the member's republished tuples, which a drop now would lose.
        let drop_at = (record.state == MemberState::Dead && was != Some(MemberState::Dead))
            .then(|| now + cluster.config.gossip_interval * DROP_GRACE_ROUNDS);
        // One lookup for the slot, the held record's strings reused when they did not change.
        match cluster.members.entry(id) {
            indexmap::map::Entry::Occupied(mut slot) => {
                let known = Known::new(&record, now, suspect_until, drop_at, Some(slot.get_mut()));
                *slot.get_mut() = known;
            }
            indexmap::map::Entry::Vacant(slot) => {
                slot.insert(Known::new(&record, now, suspect_until, drop_at, None));
            }
        }
        cluster.note_due(id);
        cluster.spread(id, from.cloned(), now);
        if was != Some(state) {
            cluster.views_member_changed(id, state, now);
        }
        if was != Some(state) {
            self.member_event(id, name, state, reason);
        }
        if was == Some(MemberState::Dead) && state == MemberState::Alive {
            self.revive_tuples_of(id);
        }
    }

    fn member_event(&mut self, id: u64, name: String, state: MemberState, reason: &str) {
        debug!(member = id, %name, state = state.name(), reason, "member");
        self.outputs.push_back(Output::Event(Event::Member {
            id,
            name,
            state,
            reason: reason.to_owned(),
        }));
    }

    /// A dead member's tuples end here, as if their leases ran out, and the application is
    /// told why.
    fn drop_tuples_of(&mut self, now: Instant, origin: u64) {
        let keys = self.store.live_from(origin);
        let lasting: Vec<Arc<str>> = (keys.iter())
            .filter(|k| self.store.entry(k).is_some_and(|e| e.ends.is_none()))
            .cloned()
            .collect();
        for key in keys {
            self.end_tuple(now, key, ExpireReason::OriginDied);
        }
        if let Some(cluster) = &mut self.cluster
            && !lasting.is_empty()
        {
            cluster.dropped.insert(origin, lasting);
            bound_by_members(&mut cluster.dropped, &cluster.members);
        }
    }

    /// A member held dead is alive after all (its refutation came after its tuples were
    /// dropped here): the copies without a lease that went with it are in force again, as
    /// long as nothing newer came meanwhile, and go on to our peers. The member republishes
    /// only when it hears it was accused, and it may never hear of an accusation its
    /// refutation had already beaten elsewhere. Leased copies come back with its refreshes.
    fn revive_tuples_of(&mut self, origin: u64) {
        let Some(keys) = self
            .cluster
            .as_mut()
            .and_then(|c| c.dropped.shift_remove(&origin))
        else {
            return;
        };
        for key in keys {
            let Some(mut entry) = (self.store.entry(&key))
                .filter(|e| e.kind == Kind::Expired && e.stamp.origin == origin)
                .cloned()
            else {
                continue;
            };
            entry.kind = Kind::Live;
            entry.ends = None;
            let (value, stamp) = (Arc::clone(&entry.value), entry.stamp);
            self.store.put(Arc::clone(&key), entry);
            debug!(%key, origin, "tuple back in force: its origin is alive");
            self.outputs.push_back(Output::Event(Event::Deliver {
                key: Arc::clone(&key),
                value: Arc::clone(&value),
            }));
            let copy = Message::Publish(Publish::stamped(key, value, 0, &stamp));
            self.forward(&copy, &Origin::App);
        }
    }

    /// Publishes our own tuples again at new versions (after being taken for dead).
    fn republish_own(&mut self, now: Instant) {
        for key in self.store.owned() {
            self.bump_own(now, &key);
        }
    }

    fn on_probe_answer(&mut self, now: Instant, answer: Probe) {
        let window = self.heard_window();
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let Some(check) = cluster.checks.get_mut(&answer.seq) else {
            return;
        };
        if check.target != answer.target {
            return;
        }
        check.answered += 1;
        if answer.failed {
            return;
        }
        // Someone hears it: no suspicion, and this node was not the slow one.
        let target = check.target;
        let lost_at = check.heard;
        cluster.checks.shift_remove(&answer.seq);
        cluster.health = cluster.health.saturating_sub(1);
        // A helper's hearing may be older news than our own loss: one whose link from a
        // member that just died has not timed out yet still hears it. Until our loss is two
        // helper windows old, the member stays watched, so it is probed again at once rather
        // than left to the probe round.
        let stale = lost_at.is_some_and(|at| now.saturating_duration_since(at) < window * 2);
        if !stale {
            cluster.watched.shift_remove(&target);
        }
    }

    /// The endpoints other members should dial: a change raises our incarnation and spreads.
    pub fn set_advertised(&mut self, now: Instant, endpoints: Vec<String>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.me.endpoints == endpoints {
            return;
        }
        cluster.me.endpoints = endpoints;
        cluster.me_changed(now);
    }

    /// This member's tags (`key=value`, each one word): a change raises our incarnation and
    /// spreads. A CURVE key set with [`Engine::set_curve_key`] stays.
    pub fn set_tags(&mut self, now: Instant, tags: Vec<String>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.config.tags = tags;
        self.retag(now);
    }

    /// The public key of our CURVE listeners (Z85), which members must dial us with: it goes
    /// in our record as the tag `curve-key=KEY`.
    pub fn set_curve_key(&mut self, now: Instant, key: Option<String>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.curve_key = key;
        self.retag(now);
    }

    /// Our record's tags from the configured ones and the CURVE key.
    fn retag(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let mut tags: Vec<String> = (cluster.config.tags.iter())
            .filter(|t| !t.starts_with(CURVE_KEY_TAG))
            .cloned()
            .collect();
        let key = cluster
            .curve_key
            .as_ref()
            .map(|k| format!("{CURVE_KEY_TAG}{k}"));
        let bytes: usize = tags.iter().chain(&key).map(String::len).sum();
        if bytes > MAX_TAG_BYTES {
            // Members would refuse the record: they dial us in plain ZGP instead, and fail.
            warn!("no room for the CURVE key among this member's tags (512 bytes in all)");
        } else {
            tags.extend(key);
        }
        if cluster.me.tags == tags {
            return;
        }
        cluster.me.tags = tags;
        cluster.me_changed(now);
    }

    /// The CURVE server key to dial `remote` with: the `curve-key` tag of the member the views
    /// or a probe dial there.
    pub fn dial_key(&self, remote: RemoteId) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        let member = (cluster.views.pending.iter())
            .find(|(_, p)| p.remote == Some(remote))
            .map(|(id, _)| *id)
            .or_else(|| cluster.views.probing.get(&remote).map(|(id, _)| *id))?;
        (cluster.members.get(&member)?.tags())
            .find_map(|t| t.strip_prefix(CURVE_KEY_TAG))
            .map(str::to_owned)
    }

    /// How many member deadlines are kept, stale ones included.
    #[cfg(test)]
    pub(super) fn member_deadlines(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.dues.len())
    }

    /// Whether the count of alive members kept as records change is the true one.
    #[cfg(test)]
    pub(super) fn alive_count_holds(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| {
            let counted = c.members.values().filter(|k| k.state == MemberState::Alive);
            counted.count() == c.alive_members
        })
    }

    /// The endpoints other members are told to dial.
    pub fn advertised(&self) -> Vec<String> {
        self.cluster
            .as_ref()
            .map(|c| c.me.endpoints.clone())
            .unwrap_or_default()
    }

    /// A timeout came `late` after it was due. A node that keeps running late (a starved
    /// process) raises its local health score, which stretches its own probe and suspicion
    /// timeouts; one on time lowers it again.
    pub(super) fn note_lateness(&mut self, late: Duration) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if late > cluster.config.probe_timeout / 2 {
            cluster.health = (cluster.health + 1).min(MAX_HEALTH);
        } else if late.is_zero() && cluster.checks.is_empty() {
            cluster.health = cluster.health.saturating_sub(1);
        }
    }

    /// The cluster's part of a timeout: gossip, the whole list now and then, probes of members
    /// no link hears any more, suspicions that ran out, and the dead forgotten.
    pub(super) fn cluster_timeout(&mut self, now: Instant) {
        if self.cluster.as_ref().is_none_or(|c| c.config.observer) {
            return;
        }
        // Deadlines of members first: a member a suspicion makes dead leaves the views, which
        // then look at once, in this timeout rather than at a deadline already due.
        let due = (self.cluster.as_mut()).map_or_else(Vec::new, |c| c.take_due(now));
        for id in due {
            self.member_due(now, id);
        }
        let links = self.member_links();
        self.views_timeout(now, &links);
        // Sending does not change which links are open (the views may have closed some): one
        // list serves the rest of the timeout.
        let links = self.member_links();
        self.watch_links(now, &links);
        self.end_checks(now);
        let overlay = self.overlay_links(&links);
        self.gossip_news(now, &overlay);
        self.push_pull(now, &overlay);
    }

    /// The links gossip goes on: those that carry active peers, the CONNECTs the user wrote,
    /// links from members nobody can dial (no advertised endpoint: their own links are all they
    /// have), and links to hailed nodes that are not members (observers, who follow the
    /// changes). Not the other sessions a seed holds from everyone who named it. Until the
    /// active view has anyone, every link to a member.
    fn overlay_links(&self, links: &[(Peer, u64)]) -> Vec<(Peer, u64)> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        if cluster.views.active.is_empty() {
            return links.to_vec();
        }
        let pinned = |peer: &Peer| match peer {
            Peer::Remote(id) => self.remotes.get(id).is_some_and(|r| r.pinned),
            Peer::Client(_) => false,
        };
        (links.iter())
            .filter(|(peer, node)| {
                cluster.views.carries(peer)
                    || pinned(peer)
                    || (cluster.members.get(node)).is_none_or(|k| !k.dialable())
            })
            .cloned()
            .collect()
    }

    /// Notes which members our links hear, and starts an indirect probe of one that every
    /// link of ours has stopped hearing.
    fn watch_links(&mut self, now: Instant, links: &[(Peer, u64)]) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.next_watch.is_some_and(|at| at > now) {
            return;
        }
        cluster.next_watch = Some(now + WATCH_EVERY);
        let fresh = self.config.suspect_after();
        let hearing = self.hearing();
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut heard = Vec::new();
        let mut lost = Vec::new();
        for (&node, &last) in &cluster.watched {
            // A member a link hears is noted below, with the links: only the others cost a
            // look at their records (a seed watches everyone, and most are heard).
            if hearing.hears(now, node, fresh) {
                continue;
            }
            let alive = cluster
                .members
                .get(&node)
                .is_some_and(|k| k.state == MemberState::Alive);
            if !alive || cluster.checking(node) || cluster.probing(node) {
                continue;
            }
            if now.saturating_duration_since(last) >= self.unheard_grace(hearing.linked(node)) {
                lost.push(node);
            }
        }
        // A link that hears a member we hold as suspect or dead (a partition that healed, a
        // pause that ended): it is told its record as we hold it, at most once a probe
        // interval, so it refutes; gossip of the accusation may have passed it by long ago.
        let mut accused = Vec::new();
        for (peer, node) in links {
            if hearing.hears(now, *node, fresh) {
                heard.push(*node);
                if let Some(known) = cluster.members.get(node)
                    && matches!(known.state, MemberState::Suspect | MemberState::Dead)
                    && known.told().is_none_or(|at| {
                        now.saturating_duration_since(at) >= cluster.config.probe_interval
                    })
                {
                    accused.push((peer.clone(), *node, known.record(*node)));
                }
            }
        }
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        for node in heard {
            if node != cluster.me.id {
                cluster.watched.insert(node, now);
            }
        }
        // A member handed to a probe stays watched until the probe (and the indirect probe
        // after it) decides: it answers, it is suspected, or others hear it.
        for node in lost {
            self.probe_now(now, node, links);
        }
        for (peer, node, record) in accused {
            if let Some(known) = self.cluster.as_mut().and_then(|c| c.members.get_mut(&node)) {
                known.set_told(now);
            }
            self.send_to_peer(&peer, Message::Members(vec![record]));
        }
    }

    pub(super) fn start_check(&mut self, now: Instant, target: u64, links: &[(Peer, u64)]) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.seq = cluster.seq.wrapping_add(1);
        let seq = cluster.seq;
        let mut helpers: Vec<&Peer> = links
            .iter()
            .filter(|(_, node)| *node != target)
            .map(|(peer, _)| peer)
            .collect();
        // A seeded shuffle: which members are asked repeats from the seed.
        for i in (1..helpers.len()).rev() {
            let j = (cluster.rng.next_u64() % (i as u64 + 1)) as usize;
            helpers.swap(i, j);
        }
        helpers.truncate(cluster.config.indirect_checks);
        let helpers: Vec<Peer> = helpers.into_iter().cloned().collect();
        let deadline = now + cluster.probe_timeout();
        cluster.checks.insert(
            seq,
            Check {
                target,
                heard: cluster.watched.get(&target).copied(),
                deadline,
                asked: helpers.len(),
                answered: 0,
            },
        );
        debug!(
            member = target,
            asked = helpers.len(),
            "no link hears a member; asking others"
        );
        let probe = Probe {
            answer: false,
            failed: false,
            seq,
            target,
        };
        for peer in helpers {
            self.send_to_peer(&peer, Message::Probe(probe));
        }
    }

    /// Probes whose time ran out without anyone hearing the target make it suspect.
    fn end_checks(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let due: Vec<u32> = (cluster.checks.iter())
            .filter(|(_, c)| c.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        let mut suspects = Vec::new();
        for seq in due {
            let Some(check) = cluster.checks.shift_remove(&seq) else {
                continue;
            };
            cluster.watched.shift_remove(&check.target);
            if check.asked > 0 && check.answered == 0 {
                // Nobody answered at all: perhaps this node is the slow one.
                cluster.health = (cluster.health + 1).min(MAX_HEALTH);
            }
            if let Some(known) = cluster.members.get(&check.target)
                && known.state == MemberState::Alive
            {
                let mut record = known.record(check.target);
                record.state = MemberState::Suspect;
                suspects.push(record);
                cluster.views.found_since_round += 1;
            }
        }
        for record in suspects {
            self.stats.suspicions += 1;
            self.merge_member(now, record, None, "no link hears it");
        }
    }

    /// A member's deadline came: a suspicion nobody refuted makes it dead; a death not refuted
    /// within the grace drops its tuples here (unless durable); the dead and departed are
    /// forgotten after `forget_after`.
    fn member_due(&mut self, now: Instant, id: u64) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let Some(known) = cluster.members.get_mut(&id) else {
            return;
        };
        if known.state == MemberState::Suspect && known.suspect_until().is_some_and(|at| at <= now)
        {
            let record = Member {
                state: MemberState::Dead,
                ..known.record(id)
            };
            self.merge_member(now, record, None, "suspicion not refuted");
            return;
        }
        let mut drop = false;
        if known.drop_at().is_some_and(|at| at <= now) {
            known.clear_drop();
            drop = known.state == MemberState::Dead && !known.durable;
        }
        let forget = matches!(known.state, MemberState::Dead | MemberState::Left)
            && (known.changed())
                .is_some_and(|at| now.saturating_duration_since(at) >= cluster.config.forget_after);
        if forget {
            let freed = known.weight();
            cluster.members.swap_remove(&id);
            cluster.member_bytes -= freed;
            cluster.generation += 1;
        } else {
            cluster.note_due(id);
        }
        if drop {
            self.drop_tuples_of(now, id);
        }
    }

    /// Sends the changes gathered since the last interval to every linked member but the one
    /// each came from (a suspect member included: it must hear the accusation to refute it).
    fn gossip_news(&mut self, now: Instant, links: &[(Peer, u64)]) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.next_gossip.is_none_or(|at| at > now) {
            return;
        }
        cluster.next_gossip = None;
        if links.is_empty() {
            // Kept, and tried again, until a link opens.
            if !cluster.news.is_empty() {
                cluster.next_gossip = Some(now + cluster.config.gossip_interval);
            }
            return;
        }
        let news = std::mem::take(&mut cluster.news);
        let records: Vec<(Member, Option<Peer>)> = (news.into_iter())
            .filter_map(|(id, from)| Some((cluster.record(id)?, from)))
            .collect();
        // Encoded once for all the links none of the news came from, and without copies of the
        // records for the others.
        let mut shared: Option<Vec<Bytes>> = None;
        let mut sends = Vec::with_capacity(links.len());
        for (peer, _) in links {
            let frames = if records.iter().any(|(_, from)| from.as_ref() == Some(peer)) {
                let theirs: Vec<&Member> = (records.iter())
                    .filter(|(_, from)| from.as_ref() != Some(peer))
                    .map(|(record, _)| record)
                    .collect();
                members_frames(&theirs)
            } else {
                (shared.get_or_insert_with(|| {
                    let all: Vec<&Member> = records.iter().map(|(record, _)| record).collect();
                    members_frames(&all)
                }))
                .clone()
            };
            sends.push((peer.clone(), frames));
        }
        for (peer, frames) in sends {
            for frame in frames {
                self.send_frame_to_peer(&peer, frame);
            }
        }
    }

    /// Now and then, the whole list to one linked member.
    fn push_pull(&mut self, now: Instant, links: &[(Peer, u64)]) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.next_push_pull.is_none_or(|at| at > now) {
            return;
        }
        cluster.next_push_pull = Some(now + cluster.push_pull_interval());
        if links.is_empty() {
            return;
        }
        let pick = (cluster.rng.next_u64() % links.len() as u64) as usize;
        let Some((peer, _)) = links.get(pick).cloned() else {
            return;
        };
        self.send_whole_list(&peer);
    }

    /// A graceful stop: every linked member hears at once that we left.
    pub(super) fn leave(&mut self) {
        let Some(cluster) = self.cluster.as_mut().filter(|c| !c.config.observer) else {
            return;
        };
        cluster.me.state = MemberState::Left;
        cluster.generation += 1;
        self.tell_links_about_me();
    }

    /// Our record, at once, on every link to a member.
    fn tell_links_about_me(&mut self) {
        let Some(me) = self.cluster.as_ref().map(|c| c.me.clone()) else {
            return;
        };
        for (peer, _) in self.member_links() {
            self.send_to_peer(&peer, Message::Members(vec![me.clone()]));
        }
    }
}

/// When our open links last heard each node (see [`Engine::hearing`]).
pub(super) struct Hearing {
    me: Option<u64>,
    last: HashMap<u64, Instant>,
}

impl Hearing {
    /// Whether a link heard `node` within `within` (or it is us).
    pub(super) fn hears(&self, now: Instant, node: u64, within: Duration) -> bool {
        self.me == Some(node)
            || (self.last.get(&node)).is_some_and(|&at| now.saturating_duration_since(at) < within)
    }

    /// Whether a link to `node` is open, heard lately or not.
    pub(super) fn linked(&self, node: u64) -> bool {
        self.last.contains_key(&node)
    }
}

/// Forgets that `origin`'s copies were dropped here, as the bound on those lists may: for the
/// test of the resync taking such a copy again. True if there was something to forget.
#[cfg(test)]
pub(super) fn tests_forget_dropped(engine: &mut Engine, origin: u64) -> bool {
    (engine.cluster.as_mut()).is_some_and(|c| c.dropped.shift_remove(&origin).is_some())
}
