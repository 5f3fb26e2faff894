//! Bytes on and off the network, behind a small seam. `tcp://` and `ipc://` run on libzmq
//! sockets (one ROUTER listener, one DEALER per remote) driven by a dedicated I/O thread per
//! node ([`zmq`]); `inproc://` is this project's own in-process transport ([`inproc`]), so
//! thousands of nodes can share one process. Both hand the actor whole frames; decoding them is
//! the actor's job, so every message crosses the codec whatever the transport. tcp/ipc links
//! may use CURVE ([`curve`]); inproc links never do.

pub mod curve;
mod faults;
pub mod inproc;
pub mod zmq;

use std::fmt;

use bytes::Bytes;

use crate::engine::{ClientId, Peer, RemoteId};

/// What a transport hands the actor.
#[derive(Debug)]
pub enum Incoming {
    /// A frame from a client of our listener; `Err` says why it is not a single ZGP frame.
    ClientFrame {
        /// Who sent it.
        client: ClientId,
        /// The frame, or why there is no usable one.
        frame: Result<Bytes, FrameError>,
    },
    /// The client's connection is gone.
    ClientGone(ClientId),
    /// The client is not reading; messages for it were dropped.
    ClientOverflow(ClientId),
    /// A remote finished connecting (also after a reconnect).
    RemoteConnected(RemoteId),
    /// A remote's connection attempt failed, and why; libzmq keeps retrying.
    RemoteUnreachable(RemoteId, &'static str),
    /// A remote lost its connection and is reconnecting.
    RemoteDisconnected(RemoteId),
    /// A remote's server was not reading; its connection was dropped and is being redialled.
    RemoteOverflow(RemoteId),
    /// Everything queued for the peer before a mark ([`zmq::ZmqIo::mark`]) is in libzmq.
    Drained(Peer),
    /// A frame from the server at the other end of a remote.
    RemoteFrame {
        /// Which remote.
        remote: RemoteId,
        /// The frame, or why there is no usable one.
        frame: Result<Bytes, FrameError>,
    },
}

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

/// Limits the transports enforce on what peers send and how much is queued for them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Frames larger than this are refused (libzmq's MAXMSGSIZE; checked on inproc too).
    pub max_message_bytes: usize,
    /// A connection that has not finished the ZeroMQ handshake by then is dropped.
    pub handshake_timeout_ms: i32,
    /// ZeroMQ send/receive high-water marks, in messages.
    pub socket_hwm: i32,
    /// Bytes queued toward one peer beyond which it counts as not reading and is dropped.
    pub max_queued_bytes: usize,
    /// Bytes queued toward all peers together beyond which the peer with the most is dropped.
    pub max_total_queued_bytes: usize,
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
