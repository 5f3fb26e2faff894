//! The membership messages (ids 7–12, `proto/zgp.md` §12) and the member record they carry.
//! Only our nodes send them, and only on sessions that hailed.

/// How a member is doing, as its record says. Ordered: for one incarnation, a later state wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MemberState {
    /// Running, as far as anyone knows.
    Alive = 0,
    /// Some node could not reach it; it has the suspicion timeout to refute.
    Suspect = 1,
    /// Confirmed failed: its services are dropped (unless it is durable).
    Dead = 2,
    /// Stopped gracefully.
    Left = 3,
}

impl MemberState {
    /// The state for a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Alive),
            1 => Some(Self::Suspect),
            2 => Some(Self::Dead),
            3 => Some(Self::Left),
            _ => None,
        }
    }

    /// The word used on the pipe and in the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }
}

/// One member record (`proto/zgp.md` §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's node id, as in its hail; never 0.
    pub id: u64,
    /// Raised only by the member itself.
    pub incarnation: u64,
    /// Its state at this incarnation.
    pub state: MemberState,
    /// Its tuples outlive it (withdraw-on-stop is off).
    pub durable: bool,
    /// When it started, in ms since the Unix epoch by its own clock.
    pub joined_ms: u64,
    /// Its name (may be empty).
    pub name: String,
    /// The endpoints other nodes should dial; at most 8.
    pub endpoints: Vec<String>,
    /// `key=value` tags; at most 32.
    pub tags: Vec<String>,
}

impl Member {
    /// Whether this record beats `other` (a record of the same member): a greater incarnation,
    /// or the same one and a later state.
    pub fn supersedes(&self, other: &Member) -> bool {
        (self.incarnation, self.state) > (other.incarnation, other.state)
    }
}

/// NEIGHBOR: a request to be an active peer, or the answer to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Neighbor {
    /// The sender asks to be an active peer; `high` must be accepted (its active view is empty).
    Request {
        /// High priority.
        high: bool,
        /// The sender's own record.
        member: Box<Member>,
    },
    /// The answer.
    Answer {
        /// Whether the sender keeps the link in its active view.
        accepted: bool,
    },
}

/// PROBE: whether `target` is alive, asked of a third node, or its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// This is the answer.
    pub answer: bool,
    /// In an answer: the target did not answer the prober either.
    pub failed: bool,
    /// Matches an answer to its question.
    pub seq: u32,
    /// The member asked about.
    pub target: u64,
}
