//! Faults for simulations: the in-process transport can lose, duplicate and delay frames, cut
//! links and partition nodes, from a seed. Nodes are named by their [`crate::Config::name`];
//! give every node in a simulation the same [`Faults`] and a distinct name.
//!
//! Faults act on frames only. Connecting, and a node going away, still reach the peer: a cut or
//! a partition looks like a network that silently carries nothing, which is the case heartbeats
//! exist for. Every frame that is delivered still goes through the codec at the receiver.

// Without the `sim` feature nobody outside can make a plan: the inproc transport keeps its
// hooks, and these stay unused.
#![cfg_attr(not(feature = "sim"), allow(dead_code))]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::rng::XorShift;

/// A fault plan shared by the nodes of one simulation; clones share it.
#[derive(Clone)]
pub struct Faults(Arc<Mutex<Plan>>);

/// What the plan has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Frames offered to the plan.
    pub frames: u64,
    /// Frames lost at random.
    pub lost: u64,
    /// Frames lost because their link was cut or crossed the partition.
    pub blocked: u64,
    /// Frames delivered twice.
    pub duplicated: u64,
    /// Frames held back before delivery.
    pub delayed: u64,
}

/// What happens to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Never arrives.
    Lost,
    /// Arrives `copies` times (1 or 2), after `delay`.
    Delivered { copies: u8, delay: Duration },
}

struct Plan {
    seed: u64,
    rng: XorShift,
    loss: f64,
    duplication: f64,
    delay: (Duration, Duration),
    /// Cut links, each pair with the smaller name first.
    cuts: HashSet<(Arc<str>, Arc<str>)>,
    /// Partition group of each listed node; unlisted nodes reach everyone.
    groups: HashMap<Arc<str>, usize>,
    stats: FaultStats,
}

impl Faults {
    /// A plan with no faults yet, drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(Plan {
            seed,
            rng: XorShift::new(seed),
            loss: 0.0,
            duplication: 0.0,
            delay: (Duration::ZERO, Duration::ZERO),
            cuts: HashSet::new(),
            groups: HashMap::new(),
            stats: FaultStats::default(),
        })))
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // A plan is a few numbers and sets; a panic elsewhere cannot leave it half-changed.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The seed this plan draws from.
    pub fn seed(&self) -> u64 {
        self.plan().seed
    }

    /// Loses each frame with probability `p` (clamped to `[0, 1]`).
    pub fn set_loss(&self, p: f64) {
        self.plan().loss = p.clamp(0.0, 1.0);
    }

    /// Delivers each frame twice with probability `p` (clamped to `[0, 1]`).
    pub fn set_duplication(&self, p: f64) {
        self.plan().duplication = p.clamp(0.0, 1.0);
    }

    /// Holds each frame back for a uniform time in `[min, max]`. Frames on one link keep their
    /// order, as on a stream connection: a frame waits for the ones sent before it.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.plan().delay = (min, max.max(min));
    }

    /// Cuts the link between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.plan().cuts.insert(pair(a, b));
    }

    /// Heals a cut made by [`Faults::cut`].
    pub fn heal(&self, a: &str, b: &str) {
        self.plan().cuts.remove(&pair(a, b));
    }

    /// Splits the named nodes into groups that cannot reach each other; nodes in no group
    /// still reach everyone. Replaces any earlier partition.
    pub fn partition<G, N>(&self, groups: G)
    where
        G: IntoIterator,
        G::Item: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut plan = self.plan();
        plan.groups.clear();
        for (index, group) in groups.into_iter().enumerate() {
            for name in group {
                plan.groups.insert(Arc::from(name.as_ref()), index);
            }
        }
    }

    /// Ends the partition and heals every cut; loss, duplication and delay stay.
    pub fn heal_all(&self) {
        let mut plan = self.plan();
        plan.groups.clear();
        plan.cuts.clear();
    }

    /// What the plan has done so far.
    pub fn stats(&self) -> FaultStats {
        self.plan().stats
    }

    /// Whether frames from `from` can reach `to` at all (no cut, same side of a partition).
    pub fn reachable(&self, from: &str, to: &str) -> bool {
        self.plan().reachable(from, to)
    }

    /// Decides the fate of one frame from `from` to `to`.
    pub(crate) fn judge(&self, from: &str, to: &str) -> Fate {
        let mut plan = self.plan();
        plan.stats.frames += 1;
        if !plan.reachable(from, to) {
            plan.stats.blocked += 1;
            return Fate::Lost;
        }
        if plan.loss > 0.0 && plan.rng.fraction() < plan.loss {
            plan.stats.lost += 1;
            return Fate::Lost;
        }
        let copies = if plan.duplication > 0.0 && plan.rng.fraction() < plan.duplication {
            plan.stats.duplicated += 1;
            2
        } else {
            1
        };
        let (min, max) = plan.delay;
        let delay = if max.is_zero() {
            Duration::ZERO
        } else {
            plan.stats.delayed += 1;
            min + (max - min).mul_f64(plan.rng.fraction())
        };
        Fate::Delivered { copies, delay }
    }
}

impl Plan {
    fn reachable(&self, from: &str, to: &str) -> bool {
        let split = matches!(
            (self.groups.get(from), self.groups.get(to)),
            (Some(a), Some(b)) if a != b
        );
        !split && !self.cuts.contains(&pair(from, to))
    }
}

fn pair(a: &str, b: &str) -> (Arc<str>, Arc<str>) {
    if a <= b {
        (Arc::from(a), Arc::from(b))
    } else {
        (Arc::from(b), Arc::from(a))
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("seed", &self.seed())
            .finish()
    }
}

/// Two handles are equal when they share a plan.
impl PartialEq for Faults {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Faults {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_fates_and_loss_is_near_its_rate() {
        let fates = |seed| {
            let faults = Faults::new(seed);
            faults.set_loss(0.1);
            faults.set_duplication(0.05);
            (0..10_000)
                .map(|_| faults.judge("a", "b"))
                .collect::<Vec<_>>()
        };
        let first = fates(7);
        assert_eq!(first, fates(7));
        assert_ne!(first, fates(8));
        let lost = first.iter().filter(|f| **f == Fate::Lost).count();
        assert!((800..1200).contains(&lost), "lost {lost} of 10000 at 10%");
    }

    #[test]
    fn cuts_and_partitions_block_both_ways_until_healed() {
        let faults = Faults::new(1);
        faults.cut("a", "b");
        assert!(!faults.reachable("b", "a"));
        assert!(faults.reachable("a", "c"));
        faults.heal("b", "a");
        assert!(faults.reachable("a", "b"));
        faults.partition([["a", "b"], ["c", "d"]]);
        assert!(!faults.reachable("a", "c"));
        assert!(faults.reachable("a", "b"));
        assert!(faults.reachable("a", "e"), "unlisted nodes reach everyone");
        assert_eq!(faults.judge("d", "b"), Fate::Lost);
        assert_eq!(faults.stats().blocked, 1);
        faults.heal_all();
        assert!(faults.reachable("a", "c"));
    }
}
