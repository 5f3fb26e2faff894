//! Client sessions and remotes, and the liveness state each reports to the application:
//! alive, suspect (silent for two and a half PING intervals, see `EngineConfig::suspect_after`),
//! dead (silent for the whole timeout, or its connection gone) or left (it said goodbye).

use std::fmt;
use std::time::{Duration, Instant};

/// A client of one of our listeners: an opaque number the transports give each connection
/// (they keep which socket it is), unique in the node's life and never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client:{}", self.0)
    }
}

/// One of our outbound connections, numbered in CONNECT order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteId(pub u32);

/// How a peer is doing, as the application is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PeerState {
    /// Heard from recently.
    Alive,
    /// Silent for two and a half PING intervals (half to nine tenths of the timeout).
    Suspect,
    /// Silent for the whole timeout, or its connection is gone.
    Dead,
    /// Said goodbye.
    Left,
    /// A client that never hailed (a CZMQ client, which never PINGs) was silent for the
    /// timeout: its session ended, which says nothing of whether it is alive. It gets copies
    /// again after its next HELLO.
    Expired,
}

impl PeerState {
    /// The word used on the pipe.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A node id as shown in peer names.
pub fn node_name(node: u64) -> String {
    format!("node:{node:016x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionState {
    /// Has not said HELLO.
    Start,
    /// Said HELLO; gets every new copy.
    Connected,
    /// Went silent (or could not keep up) and is no longer forwarded to.
    Expired { since: Instant },
}

/// PONGs a session can be owed during a resync: a client PINGing every 100 ms through a ten
/// second resync; PINGs past it go unanswered (a flood of them costs nothing).
pub(super) const MAX_PONGS_OWED: u16 = 128;

#[derive(Debug)]
pub(super) struct Session {
    pub(super) state: SessionState,
    pub(super) last_heard: Instant,
    /// The client's node id, once it hailed.
    pub(super) node: Option<u64>,
    /// Reported liveness while connected.
    pub(super) liveness: PeerState,
    /// Expired, and told so with an INVALID since.
    pub(super) reminded: bool,
    /// When its last resync started.
    pub(super) last_resync: Option<Instant>,
    /// PINGs that came during a resync, whose PONGs go after it (with a hail if the last PING
    /// had one), at most [`MAX_PONGS_OWED`].
    pub(super) pongs_owed: u16,
    pub(super) pong_hailed: bool,
    /// The client was sent every member record we hold (it then needs no more than changes).
    pub(super) members_sent: bool,
}

impl Session {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            state: SessionState::Start,
            last_heard: now,
            node: None,
            liveness: PeerState::Alive,
            reminded: false,
            last_resync: None,
            pongs_owed: 0,
            pong_hailed: false,
            members_sent: false,
        }
    }

    /// The name this session goes by in peer events.
    pub(super) fn name(&self, client: &ClientId) -> String {
        self.node.map_or_else(|| client.to_string(), node_name)
    }
}

#[derive(Debug)]
pub(super) struct Remote {
    pub(super) endpoint: String,
    /// A CONNECT the user wrote: only the user closes it. The others are the views' dials.
    pub(super) pinned: bool,
    /// A probe of this member (SWIM's ping): it says PING, not HELLO, and closes on the answer.
    pub(super) probe: Option<u64>,
    pub(super) connected: bool,
    pub(super) last_heard: Instant,
    pub(super) last_sent: Instant,
    /// The server's node id, once it hailed.
    pub(super) node: Option<u64>,
    pub(super) liveness: PeerState,
    /// A PONG came after our last HELLO: the server answers in order, so its resync is in.
    pub(super) synced: bool,
    /// INVALIDs that came within a timeout of the one before (reset after a quiet timeout).
    pub(super) invalid_streak: u32,
    /// When the last INVALID came.
    pub(super) last_invalid: Option<Instant>,
    /// A HELLO held back by the backoff, and when to send it.
    pub(super) hello_due: Option<Instant>,
    /// We reacted to an INVALID and the server has not answered a PING since our HELLO.
    pub(super) invalid_since_hello: bool,
    /// Redials for silence since we last heard from the server.
    pub(super) silent_redials: u32,
    /// Our digest and the server's when they last differed, and for how many PONGs in a row
    /// they have differed that way.
    pub(super) digest_mismatch: Option<(u64, u64, u32)>,
    /// No digest resync before then.
    pub(super) digest_quiet_until: Option<Instant>,
    /// The wait after the last digest resync (doubles while stores keep differing).
    pub(super) digest_backoff: Duration,
    /// We said HELLO: our resync starts when the server answers our PING after it.
    pub(super) resync_owed: bool,
    /// Failed connection attempts since the last success, and the last cause told.
    pub(super) failures: u32,
    pub(super) failure_told: Option<&'static str>,
}

impl Remote {
    pub(super) fn new(now: Instant, endpoint: &str, pinned: bool) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            pinned,
            probe: None,
            connected: false,
            last_heard: now,
            last_sent: now,
            node: None,
            liveness: PeerState::Dead,
            synced: false,
            invalid_streak: 0,
            last_invalid: None,
            hello_due: None,
            invalid_since_hello: false,
            silent_redials: 0,
            digest_mismatch: None,
            digest_quiet_until: None,
            digest_backoff: Duration::ZERO,
            resync_owed: false,
            failures: 0,
            failure_told: None,
        }
    }
}
