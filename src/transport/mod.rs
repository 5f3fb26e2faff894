//! Bytes on and off the network, behind one seam: [`Transports`], which the actor owns.
//! `tcp://` and `ipc://` run on libzmq sockets (one ROUTER listener, one DEALER per remote)
//! driven by a dedicated I/O thread per node (`zmq`); `inproc://` is this project's own
//! in-process transport ([`inproc`]), so thousands of nodes can share one process. Both hand
//! over whole frames; decoding them is the actor's job, so every message crosses the codec
//! whatever the transport. tcp/ipc links may use CURVE ([`curve`]); inproc links never do.
//!
//! Each transport names its peers its own way (a libzmq routing id, an inproc connection
//! number) and knows nothing of the engine; the facade turns those names into the engine's
//! opaque [`ClientId`](crate::engine::ClientId)s (`ids`) and keeps which transport carries each
//! remote and client. Policy common to both lives in the facade: a peer that is not reading is
//! reported once as [`Incoming::Overflow`], and a remote is then redialled; a dying I/O thread
//! is [`Incoming::Stopped`], not silence.
//!
//! # Budgets
//! The byte bounds of [`Budget`] are set in one place (the facade is built with them) and
//! enforced where the bytes wait:
//!
//! | bound | tcp/ipc | inproc |
//! |---|---|---|
//! | `channel_bytes`: frames handed to the I/O thread, not yet taken | facade, at each send | no channel: a send is a push into the peer's inbox |
//! | `peer_bytes`: bytes queued toward one peer | I/O thread, on its queue for that client or server | [`inproc`], on the link's count at each send |
//! | `node_bytes`: bytes queued toward all peers | I/O thread: the peer with the most waiting is dropped | not enforced: the bytes sit in the peers' inboxes, where dropping a peer frees nothing; `peer_bytes` times the peers bounds them |

pub mod curve;
mod facade;
mod faults;
mod ids;
pub mod inproc;
mod zmq;

use std::fmt;

use bytes::Bytes;

pub use facade::{Incoming, Transports};

/// What a transport reports, naming a client connection its own way (`C`: a libzmq routing
/// id, an inproc connection number). The facade turns it into an [`Incoming`].
#[derive(Debug)]
pub(crate) enum Report<C> {
    ClientFrame {
        client: C,
        frame: Result<Bytes, FrameError>,
    },
    ClientGone(C),
    /// What waited for the client was dropped: it is not reading.
    ClientOverflow(C),
    RemoteConnected(RemoteKey),
    /// A connection attempt failed, and why; the transport keeps retrying, unless libzmq would
    /// not dial at all (a remote opened without waiting: the cause says "not retried").
    RemoteUnreachable(RemoteKey, &'static str),
    RemoteDisconnected(RemoteKey),
    /// What waited for the server was dropped: it is not reading. `dial` says which of the
    /// remote's connections it was, so a report about one already replaced is ignored.
    RemoteOverflow {
        remote: RemoteKey,
        dial: u64,
    },
    RemoteFrame {
        remote: RemoteKey,
        frame: Result<Bytes, FrameError>,
    },
    /// Everything queued for the peer before a mark is in libzmq.
    Drained(Target<C>),
    /// The transport is dead, and why.
    Stopped(String),
}

/// A peer as one transport knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target<C> {
    Client(C),
    Remote(RemoteKey),
}

/// A remote as the transports know it: the facade's number for it (the engine's remote id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RemoteKey(pub(crate) u32);

/// Why what a peer sent is not one usable frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// ZGP messages are single frames.
    #[error("multipart message of {frames} frames")]
    Multipart {
        /// How many frames came.
        frames: usize,
    },
    /// Larger than `max_message_bytes`.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The frame's size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Limits the transports enforce on what peers send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Frames larger than this are refused (libzmq's MAXMSGSIZE; checked on inproc too).
    pub max_message_bytes: usize,
    /// A connection that has not finished the ZeroMQ handshake by then is dropped.
    pub handshake_timeout_ms: i32,
    /// ZeroMQ send/receive high-water marks, in messages.
    pub socket_hwm: i32,
}

/// Bounds, in bytes, on what waits to be sent; the module doc says where each is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes queued toward one peer beyond which it counts as not reading and is dropped.
    pub peer_bytes: usize,
    /// Bytes queued toward all tcp/ipc peers together beyond which the peer with the most is
    /// dropped.
    pub node_bytes: usize,
    /// Frame bytes handed to the I/O thread and not yet taken by it; past it a send overflows
    /// its peer.
    pub channel_bytes: usize,
}

impl Budget {
    /// The budget for `max_queued_bytes` per peer and `max_total_queued_bytes` per node. The
    /// channel to the I/O thread may hold the node's whole share: what waits there is waiting
    /// to be queued, so it is bounded like the queues.
    pub fn new(max_queued_bytes: usize, max_total_queued_bytes: usize) -> Self {
        Self {
            peer_bytes: max_queued_bytes,
            node_bytes: max_total_queued_bytes,
            channel_bytes: max_total_queued_bytes,
        }
    }
}

/// A transport-level failure, naming the endpoint and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint is not something this node can bind or connect.
    #[error("bad endpoint {endpoint:?}: {why}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        why: String,
    },
    /// Binding failed.
    #[error("cannot bind {endpoint}: {why}")]
    Bind {
        /// The endpoint as given.
        endpoint: String,
        /// The cause.
        why: String,
    },
    /// Connecting failed.
    #[error("cannot connect {endpoint}: {why}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The cause.
        why: String,
    },
    /// The I/O thread is gone (the node is stopping).
    #[error("the transport has stopped")]
    Stopped,
    /// The tcp/ipc I/O thread died while the node ran, and why; tcp and ipc endpoints are
    /// unusable for the rest of the node's life (inproc still works).
    #[error("the tcp/ipc transport failed: {why}")]
    Failed {
        /// What the I/O thread said, or that it ended.
        why: String,
    },
}

/// Which transport an endpoint uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `tcp://host:port` or `ipc://path`, spoken by libzmq; holds the full endpoint.
    Zmq(String),
    /// `inproc://name`; holds the name.
    Inproc(String),
}

impl Endpoint {
    /// Parses and checks an endpoint string.
    pub fn parse(endpoint: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadEndpoint {
            endpoint: endpoint.to_owned(),
            why: why.to_owned(),
        };
        let (scheme, rest) = endpoint
            .split_once("://")
            .ok_or_else(|| bad("expected tcp://, ipc:// or inproc://"))?;
        if rest.is_empty() {
            return Err(bad("nothing after the scheme"));
        }
        match scheme {
            "inproc" => Ok(Self::Inproc(rest.to_owned())),
            "ipc" => Ok(Self::Zmq(endpoint.to_owned())),
            "tcp" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| bad("tcp endpoints need host:port"))?;
                if host.is_empty() {
                    return Err(bad("tcp endpoint has no host"));
                }
                if port != "*" && port.parse::<u16>().is_err() {
                    return Err(bad("tcp port must be a number or *"));
                }
                Ok(Self::Zmq(endpoint.to_owned()))
            }
            _ => Err(bad("expected tcp://, ipc:// or inproc://")),
        }
    }
}

impl Endpoint {
    /// Whether this is an `inproc://` endpoint, reachable only from inside this process.
    pub fn is_inproc(&self) -> bool {
        matches!(self, Endpoint::Inproc(_))
    }

    /// Refuses CURVE on an `inproc://` endpoint: that transport never leaves the process.
    pub fn check_curve(&self) -> Result<(), Error> {
        match self {
            Endpoint::Zmq(_) => Ok(()),
            Endpoint::Inproc(_) => Err(Error::BadEndpoint {
                endpoint: self.to_string(),
                why: "CURVE does not apply to inproc:// (same process, trusted); \
                      connect without a server key"
                    .into(),
            }),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zmq(endpoint) => f.write_str(endpoint),
            Self::Inproc(name) => write!(f, "inproc://{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_each_transport_parse() {
        assert_eq!(
            Endpoint::parse("inproc://base"),
            Ok(Endpoint::Inproc("base".into()))
        );
        assert_eq!(
            Endpoint::parse("ipc:///tmp/x"),
            Ok(Endpoint::Zmq("ipc:///tmp/x".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://*:*"),
            Ok(Endpoint::Zmq("tcp://*:*".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:0"),
            Ok(Endpoint::Zmq("tcp://127.0.0.1:0".into()))
        );
    }

    #[test]
    fn malformed_endpoints_say_why() {
        for bad in [
            "",
            "base",
            "udp://x:1",
            "inproc://",
            "tcp://host",
            "tcp://:1",
            "tcp://h:port",
            "tcp://h:70000",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(Error::BadEndpoint { .. })),
                "{bad}"
            );
        }
    }
}
