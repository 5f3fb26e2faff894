//! The overlay: the links this node keeps by its own choice, as HyParView does (`proto/zgp.md`
//! §12). The **active view** is a few members, each reached over one link (one we dialled, or
//! one a member dialled and asked us to keep); the **passive view** is a larger sample of other
//! alive members to replace them with. A newcomer joins through any member (JOIN, a random
//! walk), a lost active peer is replaced at once from the passive view, a node left alone
//! rejoins through any member it remembers, and now and then a node dials a member it holds
//! dead, so a partition that healed merges without anyone's help.
//!
//! CONNECTs the user wrote are pinned: they may carry an active peer, but only the user closes
//! them. Links to peers outside the cluster (CZMQ, observers) are never touched.

use indexmap::IndexSet;

use super::members::{Hearing, members_frames};
use super::*;
use crate::wire::{Member, MemberState, Neighbor};

/// HyParView's active random walk length: how far a JOIN travels.
const JOIN_TTL: u8 = 6;
/// Where on its walk a JOIN leaves the newcomer in the passive view.
const PASSIVE_TTL: u8 = 3;
/// The passive view holds this many times the active view's size.
const PASSIVE_FACTOR: usize = 6;
/// The least time between two fillings of the active view: a member that refuses at once,
/// or an address where another node answers now, must not make the node dial in a loop.
const FILL_SPACING: Duration = Duration::from_millis(100);

/// The least time between two JOINs a contact serves for one member: each costs the whole
/// member list and a walk per active peer, so a peer repeating JOIN must not make us pay that
/// without end. A node joins again only when its active view empties.
const JOIN_SPACING: Duration = Duration::from_secs(1);

/// Probes under way at once, at most: one a probe interval in the round, and one for each
/// member whose links went quiet.
const MAX_PROBES: usize = 8;

/// Records a shuffle carries: the sender, 3 active and 4 passive peers.
const SHUFFLE_ACTIVE: usize = 3;
const SHUFFLE_PASSIVE: usize = 4;

/// Whether `links` (the open links to members) hold `peer` as the link to `member`.
fn link_carries(links: &[(Peer, u64)], peer: &Peer, member: u64) -> bool {
    links.iter().any(|(p, node)| p == peer && *node == member)
}

/// Whether a periodic round whose next time is `next` is due; a due round is set `interval`
/// on, and the first look only sets the first time.
fn round_due(next: &mut Option<Instant>, now: Instant, interval: Duration) -> bool {
    match *next {
        Some(at) if at > now => false,
        at => {
            *next = Some(now + interval);
            at.is_some()
        }
    }
}

/// A member we are asking to be an active peer.
#[derive(Debug)]
pub(super) struct Pending {
    /// The remote we dialled for it, if we did (none: we asked on a link already open).
    pub(super) remote: Option<RemoteId>,
    /// Whether we asked: the request goes once the link has hailed.
    asked: bool,
    high: bool,
    pub(super) deadline: Instant,
}

/// Dials of one member that came to nothing.
#[derive(Debug, Clone, Copy)]
struct Failed {
    count: u32,
    /// The views' next dial of it waits until then (doubling with each failure).
    retry_at: Instant,
}

/// This node's views.
#[derive(Debug, Default)]
pub(super) struct Views {
    /// Member id → the link that carries it.
    pub(super) active: IndexMap<u64, Peer>,
    pub(super) passive: IndexSet<u64>,
    pub(super) pending: IndexMap<u64, Pending>,
    /// Dials to members that failed, per member: its next endpoint is tried next time, and
    /// the views do not ask it again before the time held here.
    failed_dials: IndexMap<u64, Failed>,
    /// When the views are looked at next (a link came or went), and the periodic rounds.
    next_check: Option<Instant>,
    next_shuffle: Option<Instant>,
    next_reconnect: Option<Instant>,
    /// Probes under way: remote → the member, and when it counts as unanswered.
    pub(super) probing: IndexMap<RemoteId, (u64, Instant)>,
    /// Members still to probe this round (SWIM's shuffled round robin), taken from the end.
    probe_order: Vec<u64>,
    next_probe: Option<Instant>,
    /// Members this node's probes made suspect since the last probe round: each adds a
    /// target to the next round (see [`Engine::probe_round`]).
    pub(super) found_since_round: u32,
    last_fill: Option<Instant>,
    /// Refusals in a row, and the active view's size at the last: while the view is no
    /// smaller, each refusal doubles the wait before the next filling (see
    /// [`Cluster::fill_spacing`]).
    refusals: u32,
    refused_at: usize,
    /// Members whose JOIN we served as their contact, and when (see [`JOIN_SPACING`]).
    joins_served: IndexMap<u64, Instant>,
    /// Members alone that we told the accusations, and when (see [`Engine::tell_the_lost`]).
    lost_told: IndexMap<u64, Instant>,
    /// Active peers asked to confirm this shuffle round that we are theirs too (see
    /// [`Engine::confirm_neighbors`]).
    confirming: IndexSet<u64>,
    /// Every active peer of ours was lost: the first new one gets our whole list (see
    /// [`Engine::make_active`]).
    cut_off: bool,
    /// Dials that failed since one last succeeded, and until when new dials wait after a
    /// round of them (see [`Cluster::neighbor_failed`]).
    fail_streak: u32,
    dials_paused_until: Option<Instant>,
}

impl Views {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.deadline);
        pending
            .chain(self.probing.values().map(|(_, at)| *at))
            .chain(self.next_probe)
            .chain(self.next_check)
            .chain(self.next_shuffle)
            .chain(self.next_reconnect)
            .min()
    }

    /// Whether `peer` carries an active peer.
    pub(super) fn carries(&self, peer: &Peer) -> bool {
        self.active.values().any(|p| p == peer)
    }
}

impl Cluster {
    /// The active view's size: as configured, or log2(N) + 1 and at least 3.
    pub(super) fn active_target(&self) -> usize {
        if let Some(size) = self.config.active_view {
            return size.max(1);
        }
        let alive = 1 + self.alive_members;
        (alive.ilog2() as usize + 1).max(3)
    }

    /// The least time between two fillings of the active view: [`FILL_SPACING`], doubled by
    /// each refusal in a row up to the shuffle interval. Members whose views are full refuse
    /// a node that is short of peers, and asking them again and again only costs dials; it
    /// will most likely find a place through a shuffle or a failure elsewhere. Losing a peer
    /// since the last refusal (the view got smaller) ends the wait.
    fn fill_spacing(&mut self) -> Duration {
        let views = &mut self.views;
        if views.active.len() < views.refused_at {
            views.refusals = 0;
        }
        let doubled = FILL_SPACING.saturating_mul(1 << views.refusals.min(16));
        doubled.min(self.config.shuffle_interval.max(FILL_SPACING))
    }

    fn passive_target(&self) -> usize {
        self.active_target() * PASSIVE_FACTOR
    }

    fn alive(&self, id: u64) -> bool {
        self.members
            .get(&id)
            .is_some_and(|k| k.state == MemberState::Alive && k.dialable())
    }

    /// Adds members to the passive view, evicting at random past its size.
    fn add_passive(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            if id == self.me.id || self.views.active.contains_key(&id) || !self.alive(id) {
                continue;
            }
            self.views.passive.insert(id);
        }
        let target = self.passive_target();
        while self.views.passive.len() > target {
            let pick = (self.rng.next_u64() % self.views.passive.len() as u64) as usize;
            self.views.passive.swap_remove_index(pick);
        }
    }

    /// Where to dial `member`: its advertised endpoints in turn, the next one after each
    /// failed dial or probe.
    fn address(&self, member: u64) -> Option<String> {
        let known = self.members.get(&member)?;
        let tries = self.views.failed_dials.get(&member).map_or(0, |f| f.count) as usize;
        let count = known.endpoints().count().max(1);
        known.endpoints().nth(tries % count).map(str::to_owned)
    }

    /// A dial of `member` came to nothing (refused, unanswered, or its link was lost): its
    /// next endpoint is tried next time, and not at once. A member whose address refuses at
    /// once would otherwise be dialled every fill until it is suspected.
    fn dial_failed(&mut self, member: u64, now: Instant) {
        let count = self.views.failed_dials.get(&member).map_or(0, |f| f.count) + 1;
        let retry_at = now + self.backoff(count);
        self.views
            .failed_dials
            .insert(member, Failed { count, retry_at });
        super::members::bound_by_members(&mut self.views.failed_dials, &self.members);
    }

    /// A wait that doubles with each round of failures, from twice the fill spacing up to the
    /// reconnect interval.
    fn backoff(&self, rounds: u32) -> Duration {
        (FILL_SPACING * 2u32.saturating_pow(rounds.min(16))).min(self.config.reconnect_interval)
    }

    /// A member we asked to be an active peer did not become one. After each round of such
    /// failures as big as the active view, with none succeeding, every new dial waits (see
    /// [`Cluster::backoff`]): members that a peer made up (a JOIN or SHUFFLE flood naming
    /// addresses where nobody answers) must not keep us dialling.
    fn neighbor_failed(&mut self, member: u64, now: Instant) {
        self.dial_failed(member, now);
        let round = self.active_target() as u32;
        self.views.fail_streak += 1;
        if self.views.fail_streak.is_multiple_of(round) {
            let paused = now + self.backoff(self.views.fail_streak / round);
            self.views.dials_paused_until = Some(paused);
        }
    }

    /// A dial of `member` became an active peer: it forgives one round of failures, not all
    /// (a peer that makes members up can let one real member through now and then).
    fn dial_succeeded(&mut self, member: u64) {
        self.views.failed_dials.shift_remove(&member);
        let round = self.active_target() as u32;
        self.views.fail_streak = self.views.fail_streak.saturating_sub(round);
    }

    /// Whether the views may dial `member` now.
    fn may_dial(&self, member: u64, now: Instant) -> bool {
        self.views
            .failed_dials
            .get(&member)
            .is_none_or(|f| f.retry_at <= now)
    }

    /// When new dials may start again, if they wait now (see [`Cluster::neighbor_failed`]).
    fn dials_paused(&self, now: Instant) -> Option<Instant> {
        self.views.dials_paused_until.filter(|at| *at > now)
    }

    /// Up to `n` members of `from`, chosen at random by the seeded generator.
    fn sample(&mut self, from: &[u64], n: usize) -> Vec<u64> {
        let mut pool = from.to_vec();
        let mut picked = Vec::new();
        while picked.len() < n && !pool.is_empty() {
            let pick = (self.rng.next_u64() % pool.len() as u64) as usize;
            picked.push(pool.swap_remove(pick));
        }
        picked
    }

    /// The views want a look as soon as the engine next runs.
    pub(super) fn views_changed(&mut self, now: Instant) {
        if !self.config.observer {
            self.views.next_check = Some(now);
        }
    }

    /// A member changed state: dead and departed members leave the views.
    pub(super) fn views_member_changed(&mut self, id: u64, state: MemberState, now: Instant) {
        match state {
            MemberState::Dead | MemberState::Left => {
                self.views.passive.shift_remove(&id);
                if self.views.active.contains_key(&id) || self.views.pending.contains_key(&id) {
                    self.views_changed(now);
                }
            }
            MemberState::Alive => {
                if self.views.passive.len() < self.passive_target() {
                    self.add_passive([id]);
                }
                // Into this probe round at a random place, as SWIM adds a new member: at the
                // end, swapped with a random one (an insert would move the round, O(N) per
                // member). A member seen twice in a round is probed twice: cheaper than a search.
                let order = &mut self.views.probe_order;
                if order.len() <= 2 * self.members.len() {
                    let at = (self.rng.next_u64() % (order.len() as u64 + 1)) as usize;
                    order.push(id);
                    let last = order.len() - 1;
                    order.swap(at, last);
                }
            }
            MemberState::Suspect => {}
        }
    }
}

impl Engine {
    /// The members in our active view, and in our passive view.
    #[cfg(any(test, feature = "sim"))]
    pub fn views(&self) -> (Vec<u64>, Vec<u64>) {
        self.cluster.as_ref().map_or_else(Default::default, |c| {
            let active = c.views.active.keys().copied().collect();
            let passive = c.views.passive.iter().copied().collect();
            (active, passive)
        })
    }

    fn member_cluster(&mut self) -> Option<&mut Cluster> {
        self.cluster.as_deref_mut().filter(|c| !c.config.observer)
    }

    /// A link to a member hailed: a dial we made for the views asks its question now; a
    /// pinned CONNECT is the way in while this node has no active peer.
    pub(super) fn views_link_opened(&mut self, now: Instant, peer: &Peer, node: u64) {
        let timeout = self.config.server_timeout;
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        if cluster.views.next_check.is_none() {
            // The first link to a member: the views start looking (filling, probing,
            // shuffling) a moment from now. Waiting for a neighbour to ask first left a member
            // that nobody can dial (no address to advertise) without views for good.
            cluster.views.next_check = Some(now + FILL_SPACING);
        }
        let me = cluster.me.clone();
        if let Peer::Remote(id) = peer
            && let Some((&member, pending)) =
                (cluster.views.pending.iter_mut()).find(|(_, p)| p.remote == Some(*id))
        {
            if member != node {
                // Another node answers at that address now (the member's successor, say): it
                // is not the member we wanted, which is then asked about.
                cluster.views.pending.shift_remove(&member);
                let remote = *id;
                self.close_remote(remote, "another node answers there");
                let links = self.member_links();
                self.probe_failed(now, member, &links);
                return;
            }
            pending.asked = true;
            pending.deadline = now + timeout;
            let request = Neighbor::Request {
                high: pending.high,
                member: Box::new(me),
            };
            self.send_to_peer(peer, Message::Neighbor(request));
            return;
        }
        let pinned =
            matches!(peer, Peer::Remote(id) if self.remotes.get(id).is_some_and(|r| r.pinned));
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        if pinned && cluster.views.active.is_empty() {
            debug!(contact = node, "joining through a seed");
            let join = Message::Join {
                ttl: JOIN_TTL,
                member: Box::new(me),
            };
            self.send_to_peer(peer, join);
        }
    }

    /// A JOIN came on a link to `from`: HyParView's JOIN at the contact (the newcomer sent it
    /// itself) and FORWARDJOIN further along the walk.
    pub(super) fn on_join(
        &mut self,
        now: Instant,
        peer: Peer,
        from: u64,
        ttl: u8,
        newcomer: Member,
    ) {
        let id = newcomer.id;
        // A peer's ttl: a longer walk would make one JOIN cost the cluster that many hops.
        let ttl = ttl.min(JOIN_TTL);
        self.merge_member(now, newcomer, Some(&peer), "joined");
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        if id == cluster.me.id || cluster.views.active.contains_key(&id) || !cluster.alive(id) {
            return;
        }
        let others: Vec<(u64, Peer)> = (cluster.views.active.iter())
            .filter(|(member, _)| **member != from && **member != id)
            .map(|(member, peer)| (*member, peer.clone()))
            .collect();
        if from == id {
            let recent = |at: &Instant| now.saturating_duration_since(*at) < JOIN_SPACING;
            if cluster.views.joins_served.get(&id).is_some_and(recent) {
                self.stats.joins_ignored += 1;
                return;
            }
            cluster.views.joins_served.retain(|_, at| recent(at));
            cluster.views.joins_served.insert(id, now);
            // The contact: the newcomer gets the whole list unless its link opened with it (it
            // may know us from an earlier life and so not have had it then), the walk starts
            // at each of our active peers, and we keep the newcomer, on its own link, while
            // we have room.
            self.send_list_once(&peer);
            let Some(cluster) = self.member_cluster() else {
                return;
            };
            let room = cluster.views.active.len() < cluster.active_target();
            let Some(record) = cluster.record(id) else {
                return;
            };
            let walk = Message::Join {
                ttl: JOIN_TTL,
                member: Box::new(record),
            };
            for (_, next) in &others {
                self.send_to_peer(next, walk.clone());
            }
            if room || others.is_empty() {
                self.ask_neighbor(now, id, true);
            }
            return;
        }
        if ttl == 0 || cluster.views.active.len() <= 1 || others.is_empty() {
            self.ask_neighbor(now, id, true);
            return;
        }
        if ttl == PASSIVE_TTL {
            cluster.add_passive([id]);
        }
        let pick = (cluster.rng.next_u64() % others.len() as u64) as usize;
        let Some((_, next)) = others.get(pick).cloned() else {
            return;
        };
        let Some(record) = self.cluster.as_ref().and_then(|c| c.record(id)) else {
            return;
        };
        let walk = Message::Join {
            ttl: ttl - 1,
            member: Box::new(record),
        };
        self.send_to_peer(&next, walk);
    }

    /// Asks `member` to be an active peer: on a link to it that is open already, or by dialling
    /// it. Dials are bounded: no more under way than the active view holds, and none while
    /// they wait after failed rounds (see [`Cluster::neighbor_failed`]). JOINs and SHUFFLEs are
    /// a peer's word, so a flood of them naming made-up members must not make us dial without
    /// end: past the bound the member only goes into the passive view.
    fn ask_neighbor(&mut self, now: Instant, member: u64, high: bool) {
        let timeout = self.config.server_timeout;
        let link = self
            .member_links()
            .into_iter()
            .find(|(_, node)| *node == member);
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        if cluster.views.pending.contains_key(&member) || cluster.views.active.contains_key(&member)
        {
            return;
        }
        cluster.views.passive.shift_remove(&member);
        if let Some((peer, _)) = link {
            let request = Neighbor::Request {
                high,
                member: Box::new(cluster.me.clone()),
            };
            cluster.views.pending.insert(
                member,
                Pending {
                    remote: None,
                    asked: true,
                    high,
                    deadline: now + timeout,
                },
            );
            self.send_to_peer(&peer, Message::Neighbor(request));
            return;
        }
        let dialling = (cluster.views.pending.values())
            .filter(|p| p.remote.is_some())
            .count();
        if dialling >= cluster.active_target() || cluster.dials_paused(now).is_some() {
            cluster.add_passive([member]);
            return;
        }
        if cluster.dial_quiet(member, now) {
            return;
        }
        let Some(endpoint) = cluster.address(member) else {
            return;
        };
        // A dial gets a server timeout to connect and hail, on top of the transport's own.
        let deadline = now + timeout * 2;
        let remote = self.new_remote(now, &endpoint, false);
        if let Some(cluster) = self.member_cluster() {
            cluster.views.pending.insert(
                member,
                Pending {
                    remote: Some(remote),
                    asked: false,
                    high,
                    deadline,
                },
            );
        }
        debug!(member, %endpoint, high, "dialling a member for the active view");
        self.stats.view_dials += 1;
        self.outputs.push_back(Output::Connect(remote, endpoint));
    }

    /// A member asking with high priority is alone: what spread while it was cut off (deaths
    /// above all) passed it by, and gossip will not say it again. It is sent every record we
    /// hold that is not alive, at most once per [`JOIN_SPACING`] (after a mass failure that
    /// is thousands of records). After 80 % of 2,000 nodes died, a survivor cut off for two
    /// seconds held two of the dead alive until the next push-pull, 14 s on.
    fn tell_the_lost(&mut self, now: Instant, peer: &Peer, from: u64) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let recent = |at: &Instant| now.saturating_duration_since(*at) < JOIN_SPACING;
        if cluster.views.lost_told.get(&from).is_some_and(recent) {
            return;
        }
        cluster.views.lost_told.retain(|_, at| recent(at));
        cluster.views.lost_told.insert(from, now);
        let accused: Vec<Member> = (cluster.members.iter())
            .filter(|(_, k)| k.state != MemberState::Alive)
            .map(|(id, k)| k.record(*id))
            .collect();
        for frame in members_frames(&accused) {
            self.send_frame_to_peer(peer, frame);
        }
    }

    /// A NEIGHBOR came on a link to `from`.
    pub(super) fn on_neighbor(&mut self, now: Instant, peer: Peer, from: u64, neighbor: Neighbor) {
        match neighbor {
            Neighbor::Request { high, member } => {
                self.merge_member(now, *member, Some(&peer), "asked to be a neighbour");
                let Some(cluster) = self.member_cluster() else {
                    // An observer keeps no views: it refuses.
                    let answer = Neighbor::Answer { accepted: false };
                    self.send_to_peer(&peer, Message::Neighbor(answer));
                    return;
                };
                // One over the target is room enough for a member asking: a node short of
                // peers finds one among nodes whose own views are just full, and the views
                // let one go only past the target plus one.
                let room = cluster.views.active.len() <= cluster.active_target();
                let accepted = high || room || cluster.views.active.contains_key(&from);
                if accepted {
                    cluster.views.pending.shift_remove(&from);
                    self.make_active(now, from, peer.clone());
                }
                let answer = Neighbor::Answer { accepted };
                self.send_to_peer(&peer, Message::Neighbor(answer));
                if high {
                    self.tell_the_lost(now, &peer, from);
                }
            }
            Neighbor::Answer { accepted } => {
                let Some(cluster) = self.member_cluster() else {
                    return;
                };
                if cluster.views.confirming.shift_remove(&from)
                    && cluster.views.active.get(&from) == Some(&peer)
                {
                    if !accepted {
                        // It does not hold us: a neighbour in name only, let go untold.
                        debug!(
                            member = from,
                            "an active peer no longer holds us; letting it go"
                        );
                        self.forget_active(now, from);
                        self.close_if_ours(&peer, "the active peer no longer holds us");
                    }
                    return;
                }
                let asked = cluster.views.pending.shift_remove(&from).is_some();
                cluster.views_changed(now);
                if asked && !accepted {
                    cluster.views.refusals = cluster.views.refusals.saturating_add(1);
                    cluster.views.refused_at = cluster.views.active.len();
                }
                if accepted && (asked || cluster.views.active.len() < cluster.active_target()) {
                    cluster.views.refusals = 0;
                    cluster.dial_succeeded(from);
                    self.make_active(now, from, peer);
                    return;
                }
                if accepted {
                    // A late yes we no longer want.
                    self.send_to_peer(&peer, Message::Disconnect { stopping: false });
                } else if let Some(cluster) = self.member_cluster() {
                    cluster.add_passive([from]);
                }
                self.close_if_ours(&peer, "refused as a neighbour");
            }
        }
    }

    /// `member` is an active peer over `peer`; past the view's size plus one, a random other
    /// active peer is let go (HyParView drops one when a neighbour it must take arrives).
    fn make_active(&mut self, now: Instant, member: u64, peer: Peer) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        cluster.views.passive.shift_remove(&member);
        if cluster.views.active.is_empty() && std::mem::take(&mut cluster.views.cut_off) {
            // Back from being cut off: our list goes to the new peer, which answers every
            // record of it that it holds worse (see `corrections`), so what spread meanwhile
            // reaches us whichever side asked to be neighbours.
            self.send_whole_list(&peer);
        }
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        if let Some(old) = cluster.views.active.insert(member, peer.clone())
            && old != peer
        {
            self.close_if_ours(&old, "replaced by another link");
        }
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        if cluster.views.active.len() <= cluster.active_target() + 1 {
            return;
        }
        let others: Vec<u64> = (cluster.views.active.keys())
            .copied()
            .filter(|m| *m != member)
            .collect();
        if let Some(&drop) = cluster.sample(&others, 1).first() {
            self.let_go(now, drop, false);
        }
    }

    /// Drops `member` from the active view, telling it so (DISCONNECT), and closes the link if
    /// it is a dial of ours.
    fn let_go(&mut self, now: Instant, member: u64, stopping: bool) {
        let Some(peer) = self.forget_active(now, member) else {
            return;
        };
        self.send_to_peer(&peer, Message::Disconnect { stopping });
        self.close_if_ours(&peer, "no longer an active peer");
    }

    /// Moves `member` from the active view to the passive one; returns the link it had.
    fn forget_active(&mut self, now: Instant, member: u64) -> Option<Peer> {
        let cluster = self.member_cluster()?;
        let peer = cluster.views.active.shift_remove(&member)?;
        cluster.add_passive([member]);
        cluster.views_changed(now);
        Some(peer)
    }

    /// A DISCONNECT came on a link to `from`.
    pub(super) fn on_disconnect(&mut self, now: Instant, peer: Peer, from: u64, stopping: bool) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        if cluster.views.active.get(&from) == Some(&peer) {
            cluster.views.active.shift_remove(&from);
        }
        if let Some(pending) = cluster.views.pending.get(&from)
            && pending.remote.is_none_or(|r| Peer::Remote(r) == peer)
        {
            cluster.views.pending.shift_remove(&from);
        }
        if !stopping {
            cluster.add_passive([from]);
        }
        cluster.unwatch(from);
        cluster.views_changed(now);
        self.close_if_ours(&peer, "the peer let it go");
    }

    /// Closes `peer` if it is a remote we dialled for the views (never a pinned CONNECT, and
    /// never a link a member dialled: that one is the member's to close).
    fn close_if_ours(&mut self, peer: &Peer, why: &str) {
        if let Some(id) = self.our_dial(peer) {
            self.close_remote(id, why);
        }
    }

    /// The remote behind `peer` if it is a dial of the views' (not a pinned CONNECT, nor a
    /// link a member dialled).
    fn our_dial(&self, peer: &Peer) -> Option<RemoteId> {
        match peer {
            Peer::Remote(id) if self.remotes.get(id).is_some_and(|r| !r.pinned) => Some(*id),
            _ => None,
        }
    }

    /// Leaving gracefully: every active peer hears DISCONNECT (stopping), after our
    /// withdrawals on the same link; the links close when the node does.
    pub(super) fn views_leave(&mut self) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let peers: Vec<Peer> = cluster.views.active.values().cloned().collect();
        for peer in peers {
            self.send_to_peer(&peer, Message::Disconnect { stopping: true });
        }
    }

    /// The views' part of a timeout: links lost, dials that came to nothing, the active view
    /// filled from the passive one, shuffles, and a dial of a member held dead now and then.
    pub(super) fn views_timeout(&mut self, now: Instant, links: &[(Peer, u64)]) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let views = &cluster.views;
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        let pending_due = views.pending.values().any(|p| p.deadline <= now);
        let probe_due = views.probing.values().any(|(_, at)| *at <= now) || due(views.next_probe);
        if !(due(views.next_check)
            || pending_due
            || probe_due
            || due(views.next_shuffle)
            || due(views.next_reconnect))
        {
            return;
        }
        // Looked at every probe interval at least, and at once when a link comes or goes.
        cluster.views.next_check = Some(now + cluster.config.probe_interval);
        // Active peers whose link is gone, or who are dead or left.
        let lost: Vec<(u64, Peer)> = (cluster.views.active.iter())
            .filter(|(member, peer)| {
                !link_carries(links, peer, **member)
                    || !cluster.members.get(*member).is_some_and(|k| {
                        matches!(k.state, MemberState::Alive | MemberState::Suspect)
                    })
            })
            .map(|(member, peer)| (*member, peer.clone()))
            .collect();
        for (member, _) in &lost {
            cluster.views.active.shift_remove(member);
            cluster.dial_failed(*member, now);
        }
        if !lost.is_empty() && cluster.views.active.is_empty() {
            cluster.views.cut_off = true;
        }
        // Dials and questions that came to nothing in time.
        let failed: Vec<(u64, Option<RemoteId>)> = (cluster.views.pending.iter())
            .filter(|(member, p)| {
                let left =
                    (cluster.members.get(*member)).is_none_or(|k| k.state == MemberState::Left);
                p.deadline <= now || left
            })
            .map(|(member, p)| (*member, p.remote))
            .collect();
        for (member, _) in &failed {
            cluster.views.pending.shift_remove(member);
            cluster.neighbor_failed(*member, now);
            cluster.views.passive.shift_remove(member);
        }
        for (member, peer) in lost {
            debug!(member, "lost an active peer");
            self.stats.view_repairs += 1;
            // Dropped because we hold it dead or left, on a link still open: it hears so, or it
            // keeps us as an active peer that never passes it gossip. An accusation a partition
            // brought in is the usual case, and the member, alive, refutes it.
            if link_carries(links, &peer, member) {
                self.send_to_peer(&peer, Message::Disconnect { stopping: false });
            }
            // A link that went away while its member is held alive is a loss: the member stays
            // watched, and is probed.
            let alive = self.member_cluster().is_some_and(|c| c.alive(member));
            match self.our_dial(&peer) {
                Some(id) if alive => self.close_lost_remote(id, "the active peer is gone"),
                Some(id) => self.close_remote(id, "the active peer is gone"),
                None => {}
            }
        }
        let mut unreachable = Vec::new();
        for (member, remote) in failed {
            if let Some(remote) = remote {
                // A dial that never connected is a probe that went unanswered: after a mass
                // failure the views dial many dead members, and some have nobody else left to
                // find them.
                if self
                    .remotes
                    .get(&remote)
                    .is_some_and(|r| r.node.is_none() && !r.connected)
                {
                    unreachable.push(member);
                }
                self.close_remote(remote, "the member did not become a neighbour in time");
            }
        }
        for member in unreachable {
            if self
                .member_cluster()
                .is_some_and(|c| c.alive(member) && !c.checking(member))
            {
                debug!(
                    member,
                    "a member never answered a dial of the views; asking others"
                );
                self.start_check(now, member, links);
            }
        }
        self.fill_active(now);
        self.shuffle(now, links);
        self.reconnect_dead(now);
        self.probe_round(now, links);
    }

    /// SWIM's probe, for members no link of ours hears: every probe interval the next member
    /// of a shuffled round is dialled and sent a PING, which names the node that answers; no
    /// session opens and nothing is resynced. No answer in time starts an indirect probe (the
    /// others asked say whether a link of theirs hears it), and then suspicion, which the
    /// member refutes if it is alive. Members our links hear are watched through them.
    fn probe_round(&mut self, now: Instant, links: &[(Peer, u64)]) {
        let fresh = self.config.suspect_after();
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let unanswered: Vec<(RemoteId, u64)> = (cluster.views.probing.iter())
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(remote, (target, _))| (*remote, *target))
            .collect();
        for (remote, target) in unanswered {
            if let Some(cluster) = self.member_cluster() {
                cluster.views.probing.shift_remove(&remote);
            }
            self.close_remote(remote, "probe unanswered");
            self.probe_failed(now, target, links);
        }
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let interval = cluster.config.probe_interval;
        match cluster.views.next_probe {
            Some(at) if at > now => return,
            _ => cluster.views.next_probe = Some(now + interval),
        }
        // A round that found the dead looks at more members next time, up to MAX_PROBES:
        // after a mass failure, members none of whose neighbours survived are left to this
        // round, and one a second per survivor found the last of them late. Only on a
        // healthy node: one whose own links are in doubt accuses no faster.
        let found = std::mem::take(&mut cluster.views.found_since_round);
        let wanted = if cluster.health == 0 {
            1 + found.min(MAX_PROBES as u32 - 1) as usize
        } else {
            1
        };
        let hearing = self.hearing();
        for _ in 0..wanted {
            if self
                .member_cluster()
                .is_none_or(|c| c.views.probing.len() >= MAX_PROBES)
            {
                return;
            }
            let Some(target) = self.next_probe_target(now, &hearing, fresh) else {
                return;
            };
            self.probe(now, target);
        }
    }

    /// The next member of the probe round that no link hears, if one is left this interval.
    fn next_probe_target(
        &mut self,
        now: Instant,
        hearing: &Hearing,
        fresh: Duration,
    ) -> Option<u64> {
        loop {
            let cluster = self.member_cluster()?;
            let Some(id) = cluster.views.probe_order.pop() else {
                // A new round: every member with an address, in a fresh seeded order.
                let all: Vec<u64> = (cluster.members.iter())
                    .filter(|(_, k)| k.dialable())
                    .map(|(id, _)| *id)
                    .collect();
                if all.is_empty() {
                    return None;
                }
                let count = all.len();
                cluster.views.probe_order = cluster.sample(&all, count);
                if cluster.views.probe_order.is_empty() {
                    return None;
                }
                continue;
            };
            if cluster.alive(id) && !hearing.hears(now, id, fresh) && !cluster.dial_quiet(id, now) {
                return Some(id);
            }
            // One look per interval at most: a cluster whose members all sit on our links
            // costs a scan of the round, no more.
            if cluster.views.probe_order.is_empty() {
                return None;
            }
        }
    }

    /// Dials `target` and sends it a PING (see [`Engine::probe_round`]).
    fn probe(&mut self, now: Instant, target: u64) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        if cluster.probing(target) {
            return;
        }
        let Some(endpoint) = cluster.address(target) else {
            return;
        };
        let deadline = now + cluster.probe_timeout() * 2;
        let remote = self.new_remote(now, &endpoint, false);
        if let Some(r) = self.remotes.get_mut(&remote) {
            r.probe = Some(target);
        }
        if let Some(cluster) = self.member_cluster() {
            cluster.views.probing.insert(remote, (target, deadline));
        }
        self.outputs.push_back(Output::Connect(remote, endpoint));
    }

    /// A probe's PONG: the member answers (or another node does, at its address).
    pub(super) fn on_probe_dial_answer(
        &mut self,
        now: Instant,
        remote: RemoteId,
        target: u64,
        node: u64,
    ) {
        if let Some(cluster) = self.member_cluster() {
            cluster.views.probing.shift_remove(&remote);
        }
        self.close_remote(remote, "probe answered");
        if node != target {
            let links = self.member_links();
            self.probe_failed(now, target, &links);
        } else if let Some(cluster) = self.member_cluster() {
            // It answers where it said it would: nothing to watch it for.
            cluster.unwatch(target);
        }
    }

    /// A member whose links went quiet is probed directly before anyone is asked about it: a
    /// link closed on purpose (a view let go, on either side) says nothing of the member. One
    /// without an address is asked about at once. While too many probes are under way the
    /// member waits for the next look.
    pub(super) fn probe_now(&mut self, now: Instant, target: u64, links: &[(Peer, u64)]) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let has_address = cluster.members.get(&target).is_some_and(|k| k.dialable())
            && !cluster.dial_quiet(target, now);
        if !has_address {
            self.start_check(now, target, links);
        } else if cluster.views.probing.len() < MAX_PROBES {
            self.probe(now, target);
        }
    }

    fn probe_failed(&mut self, now: Instant, target: u64, links: &[(Peer, u64)]) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        cluster.dial_failed(target, now);
        if cluster.checking(target) {
            return;
        }
        if cluster.alive(target) {
            debug!(member = target, "a probe went unanswered; asking others");
            self.start_check(now, target, links);
        } else {
            // Already accused by others: gossip decides it now.
            cluster.unwatch(target);
        }
    }

    /// Asks passive members (then any member remembered) to fill the active view.
    fn fill_active(&mut self, now: Instant) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let spacing = cluster.fill_spacing();
        if let Some(last) = cluster.views.last_fill
            && now < last + spacing
        {
            let again = last + spacing;
            let check = cluster.views.next_check.map_or(again, |at| at.min(again));
            cluster.views.next_check = Some(check);
            return;
        }
        let wanted = cluster
            .active_target()
            .saturating_sub(cluster.views.active.len() + cluster.views.pending.len());
        if wanted == 0 {
            return;
        }
        if let Some(until) = cluster.dials_paused(now) {
            let check = cluster.views.next_check.map_or(until, |at| at.min(until));
            cluster.views.next_check = Some(check);
            return;
        }
        // Alone: high priority, which must be accepted.
        let high = cluster.views.active.is_empty();
        let busy = |c: &Cluster, id: &u64| {
            *id == c.me.id
                || c.views.active.contains_key(id)
                || c.views.pending.contains_key(id)
                || !c.may_dial(*id, now)
                || c.dial_quiet(*id, now)
        };
        let mut candidates: Vec<u64> = (cluster.views.passive.iter())
            .copied()
            .filter(|id| !busy(cluster, id) && cluster.alive(*id))
            .collect();
        if candidates.len() < wanted {
            // The passive view ran dry: any member remembered, alive ones first, then the
            // accused (a partition may have made them look dead).
            let more: Vec<u64> = (cluster.members.iter())
                .filter(|(id, k)| {
                    !busy(cluster, id)
                        && !candidates.contains(id)
                        && k.dialable()
                        && k.state == MemberState::Alive
                })
                .map(|(id, _)| *id)
                .collect();
            candidates.extend(more);
        }
        if candidates.is_empty() && high {
            let accused: Vec<u64> = (cluster.members.iter())
                .filter(|(id, k)| {
                    !busy(cluster, id)
                        && k.dialable()
                        && matches!(k.state, MemberState::Suspect | MemberState::Dead)
                })
                .map(|(id, _)| *id)
                .collect();
            candidates = accused;
        }
        let picked = cluster.sample(&candidates, wanted);
        if !picked.is_empty() {
            cluster.views.last_fill = Some(now);
        }
        if picked.len() < wanted {
            // Short of members to ask: look again when the first one held back may be dialled.
            let retry = (cluster.views.failed_dials.values())
                .map(|f| f.retry_at)
                .filter(|at| *at > now)
                .min();
            if let Some(retry) = retry {
                let check = cluster.views.next_check.map_or(retry, |at| at.min(retry));
                cluster.views.next_check = Some(check);
            }
        }
        for member in picked {
            self.ask_neighbor(now, member, high);
        }
    }

    /// Every shuffle interval: ourselves, 3 active and 4 passive members to a random active
    /// peer, which answers with as many of its passive view; both keep what they learn.
    fn shuffle(&mut self, now: Instant, links: &[(Peer, u64)]) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let interval = cluster.config.shuffle_interval;
        if !round_due(&mut cluster.views.next_shuffle, now, interval) {
            return;
        }
        self.confirm_neighbors(links);
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let active: Vec<u64> = cluster.views.active.keys().copied().collect();
        let Some(&target) = cluster.sample(&active, 1).first() else {
            return;
        };
        let Some(peer) = cluster.views.active.get(&target).cloned() else {
            return;
        };
        if !links.iter().any(|(p, _)| *p == peer) {
            return;
        }
        let others: Vec<u64> = active.into_iter().filter(|m| *m != target).collect();
        let passive: Vec<u64> = cluster.views.passive.iter().copied().collect();
        let mut ids = cluster.sample(&others, SHUFFLE_ACTIVE);
        ids.extend(cluster.sample(&passive, SHUFFLE_PASSIVE));
        let mut records = vec![cluster.me.clone()];
        records.extend(ids.iter().filter_map(|id| cluster.record(*id)));
        self.send_to_peer(
            &peer,
            Message::Shuffle {
                reply: false,
                members: records,
            },
        );
    }

    /// Every shuffle round, each active peer is asked again to be a neighbour (low priority).
    /// One that holds us answers yes; one that does not takes us if it has room, or refuses
    /// and we let it go. An answer or a DISCONNECT lost on a link that stays open (a bounded
    /// queue dropped it, or the network did) otherwise leaves a peer held one way only, which
    /// passes its holder no gossip, for good: after ten minutes of 5 % loss, 4 in 30 nodes
    /// held one.
    fn confirm_neighbors(&mut self, links: &[(Peer, u64)]) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        cluster.views.confirming.clear();
        let me = cluster.me.clone();
        let asks: Vec<(u64, Peer)> = (cluster.views.active.iter())
            .filter(|(member, peer)| link_carries(links, peer, **member))
            .map(|(member, peer)| (*member, peer.clone()))
            .collect();
        cluster
            .views
            .confirming
            .extend(asks.iter().map(|(member, _)| *member));
        for (_, peer) in asks {
            let request = Neighbor::Request {
                high: false,
                member: Box::new(me.clone()),
            };
            self.send_to_peer(&peer, Message::Neighbor(request));
        }
    }

    /// A SHUFFLE came on a link to `from`: keep what it names; answer a request with as many
    /// of our passive view.
    pub(super) fn on_shuffle(
        &mut self,
        now: Instant,
        peer: Peer,
        reply: bool,
        members: Vec<Member>,
    ) {
        let count = members.len();
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        for record in members {
            self.merge_member(now, record, Some(&peer), "shuffle");
        }
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let answer = if reply {
            Vec::new()
        } else {
            let passive: Vec<u64> = cluster.views.passive.iter().copied().collect();
            let picked = cluster.sample(&passive, count);
            picked.iter().filter_map(|id| cluster.record(*id)).collect()
        };
        cluster.add_passive(ids);
        if !reply && !answer.is_empty() {
            self.send_to_peer(
                &peer,
                Message::Shuffle {
                    reply: true,
                    members: answer,
                },
            );
        }
    }

    /// Every reconnect interval, a dial of one member held dead (not one that left): across a
    /// partition that healed, the two sides find each other this way and merge their lists.
    fn reconnect_dead(&mut self, now: Instant) {
        let Some(cluster) = self.member_cluster() else {
            return;
        };
        let interval = cluster.config.reconnect_interval;
        if !round_due(&mut cluster.views.next_reconnect, now, interval) {
            return;
        }
        let dead: Vec<u64> = (cluster.members.iter())
            .filter(|(id, k)| {
                k.state == MemberState::Dead
                    && k.dialable()
                    && !cluster.views.pending.contains_key(*id)
            })
            .map(|(id, _)| *id)
            .collect();
        if let Some(&member) = cluster.sample(&dead, 1).first() {
            debug!(member, "dialling a member held dead, in case it is not");
            self.ask_neighbor(now, member, false);
        }
    }
}
