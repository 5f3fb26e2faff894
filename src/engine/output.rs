//! What the engine asks of the actor ([`Output`]) and tells the application ([`Event`]).

use super::*;

/// What the application is told. Variants gain fields as the node learns more: match them
/// with `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A key new to this node (or back after a withdrawal or expiry), from anywhere, the
    /// application's own publishes included.
    #[non_exhaustive]
    Deliver {
        /// The tuple's key.
        key: Arc<str>,
        /// The tuple's value.
        value: Arc<str>,
    },
    /// A held key took a new value.
    #[non_exhaustive]
    Change {
        /// The key.
        key: Arc<str>,
        /// Its new value.
        value: Arc<str>,
    },
    /// The key was withdrawn (UNPUBLISH anywhere, or its owner stopped gracefully).
    #[non_exhaustive]
    Remove {
        /// The key.
        key: Arc<str>,
    },
    /// The key ended without a withdrawal: its lease ran out (its owner stopped refreshing
    /// it), or the member that published it died.
    #[non_exhaustive]
    Expire {
        /// The key.
        key: Arc<str>,
        /// Why.
        reason: ExpireReason,
    },
    /// A peer changed state.
    #[non_exhaustive]
    Peer {
        /// The remote's endpoint, or a client's node id (or transport id before it hails).
        peer: String,
        /// Its new state.
        state: PeerState,
        /// Why, in a few words.
        reason: String,
    },
    /// A member of the cluster changed state (`proto/zgp.md` §12).
    #[non_exhaustive]
    Member {
        /// Its node id.
        id: u64,
        /// Its name.
        name: String,
        /// Its new state.
        state: MemberState,
        /// Why, in a few words.
        reason: String,
    },
}

/// Why a tuple ended without a withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpireReason {
    /// Its lease ran out.
    LeaseRanOut,
    /// The member that published it was confirmed dead.
    OriginDied,
}

impl ExpireReason {
    /// The word on the pipe after `EXPIRE key`; none for a lease that ran out, as before.
    pub fn word(self) -> Option<&'static str> {
        match self {
            Self::LeaseRanOut => None,
            Self::OriginDied => Some("origin-died"),
        }
    }
}

/// What the engine asks the actor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a message to a client of our listener.
    ToClient(ClientId, Message),
    /// Send a message through one of our remotes.
    ToRemote(RemoteId, Message),
    /// Close this remote's connection and dial it afresh.
    Redial(RemoteId),
    /// Dial `endpoint` as a new remote (a member, for the active view); the transport redials
    /// it until [`Output::Close`].
    Connect(RemoteId, String),
    /// Close this remote for good: its id is never used again.
    Close(RemoteId),
    /// Tell the application.
    Event(Event),
    /// Send a frame encoded already: the same bytes go to many peers (the whole member list,
    /// encoded once for every newcomer while it does not change).
    Frame(Peer, Bytes),
}

impl Output {
    /// A [`Output::Frame`] as the message it carries (tests and simulations look at messages).
    #[cfg(any(test, feature = "sim"))]
    pub fn decoded(self) -> Output {
        let Output::Frame(peer, frame) = self else {
            return self;
        };
        let Ok(message) = Message::decode(&frame) else {
            panic!("the engine encoded a frame it cannot decode: {frame:?}");
        };
        match peer {
            Peer::Client(client) => Output::ToClient(client, message),
            Peer::Remote(remote) => Output::ToRemote(remote, message),
        }
    }
}

impl Engine {
    pub(super) fn peer_event(&mut self, peer: String, state: PeerState, reason: &str) {
        debug!(%peer, %state, reason, "peer");
        self.outputs.push_back(Output::Event(Event::Peer {
            peer,
            state,
            reason: reason.to_owned(),
        }));
    }
}
