//! Warnings that peers can cause, rate-limited. A fuzzer's malformed frames once wrote 118 MB of
//! log; now each kind of warning is logged at most a few times per peer and a few dozen times
//! in all per window, and the rest are counted and summed up in one line when the next window
//! opens. The counters in `STATUS detail` count everything whatever the log says.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::warn;

/// How long a window lasts.
const WINDOW: Duration = Duration::from_secs(10);
/// Lines of one kind about one peer in a window.
const PER_PEER: u32 = 3;
/// Lines of one kind in a window, all peers together.
const PER_KIND: u32 = 20;
/// Peers remembered per kind in a window; past that, new peers' warnings are only counted (a
/// flood of new connections cannot make the map grow).
const PEERS_REMEMBERED: usize = 256;

/// Rate limits for warnings, by kind and peer. Time comes from the caller, so the engine stays
/// free of clocks.
#[derive(Debug, Default)]
pub struct Warnings {
    kinds: HashMap<&'static str, Window>,
}

#[derive(Debug)]
struct Window {
    since: Instant,
    logged: u32,
    suppressed: u64,
    peers: HashMap<String, u32>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            logged: 0,
            suppressed: 0,
            peers: HashMap::new(),
        }
    }
}

impl Warnings {
    /// Whether a warning of `kind` about `peer` may be logged now; when not, it is counted.
    /// A window that has ended is summed up first, if anything in it was held back.
    pub fn allow(
        &mut self,
        now: Instant,
        kind: &'static str,
        peer: &dyn std::fmt::Display,
    ) -> bool {
        let window = self.kinds.entry(kind).or_insert_with(|| Window::new(now));
        if now.saturating_duration_since(window.since) >= WINDOW {
            summarise(kind, window);
            *window = Window::new(now);
        }
        let peer = peer.to_string();
        let known = window.peers.contains_key(&peer);
        if !known && window.peers.len() >= PEERS_REMEMBERED {
            window.suppressed += 1;
            return false;
        }
        let count = window.peers.entry(peer).or_insert(0);
        if *count >= PER_PEER || window.logged >= PER_KIND {
            window.suppressed += 1;
            return false;
        }
        *count += 1;
        window.logged += 1;
        true
    }

    /// Sums up every window that has ended with something held back (called on a timer, so a
    /// flood that stops is still summed up).
    pub fn flush(&mut self, now: Instant) {
        for (kind, window) in &mut self.kinds {
            if window.suppressed > 0 && now.saturating_duration_since(window.since) >= WINDOW {
                summarise(kind, window);
                *window = Window::new(now);
            }
        }
    }
}

fn summarise(kind: &str, window: &Window) {
    if window.suppressed > 0 {
        warn!(
            kind,
            held_back = window.suppressed,
            peers = window.peers.len(),
            "more warnings of this kind were not logged in the last {WINDOW:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_peer_logs_a_few_lines_and_then_a_summary() {
        let t0 = Instant::now();
        let mut warnings = Warnings::default();
        let allowed = (0..10_000)
            .filter(|_| warnings.allow(t0, "malformed", &"zmq:01"))
            .count();
        assert_eq!(allowed, PER_PEER as usize);
        let many = (0..10_000)
            .filter(|n| warnings.allow(t0, "malformed", &format!("zmq:{n}")))
            .count();
        assert_eq!(many, (PER_KIND - PER_PEER) as usize, "all peers together");
        assert!(
            warnings.allow(t0, "bad stamp", &"zmq:01"),
            "kinds count apart"
        );
        assert_eq!(warnings.kinds["malformed"].peers.len(), PEERS_REMEMBERED);
        assert!(
            warnings.allow(t0 + WINDOW, "malformed", &"zmq:01"),
            "a new window"
        );
        assert_eq!(warnings.kinds["malformed"].suppressed, 0);
    }
}
