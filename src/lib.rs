//! zgossip: a gossip service-discovery node that speaks CZMQ's ZGP v1 wire protocol.
//!
//! An application spawns a [`Node`] in-process; the node binds a ROUTER-style listener, dials its
//! peers with DEALER-style connections and spreads `key=value` tuples (in service discovery,
//! `endpoint=service`) to every node it can reach, with ping-pong heartbeats. Endpoints are
//! `tcp://`, `ipc://` or `inproc://`; tcp and ipc links may use CURVE.
//!
//! # Example
//!
//! With these in `Cargo.toml` (zgossip links the system's libzmq: on Debian,
//! `apt-get install libzmq3-dev pkg-config`):
//!
//! ```toml
//! [dependencies]
//! zgossip = { path = "../zgossip" }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! three nodes in one process: a registry, a service that announces itself, and a client that
//! finds it by name.
//!
//! ```
//! use std::time::Duration;
//! use zgossip::{Config, Node};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), zgossip::Error> {
//!     let registry = Node::spawn(Config::default())?;
//!     let endpoint = registry.bind("tcp://127.0.0.1:*").await?; // the real port comes back
//!
//!     let service = Node::spawn(Config::default())?;
//!     service.connect(&endpoint).await?;
//!     // Lives while this node does: refreshed every 10 s, gone 30 s after a crash.
//!     let lease = Some(Duration::from_secs(30));
//!     service.publish_for("tcp://10.0.0.2:6000", "orders", lease).await?;
//!
//!     let client = Node::spawn(Config::default())?;
//!     client.connect(&endpoint).await?;
//!     let found = client.wait_for_service("orders", Duration::from_secs(5)).await?;
//!     assert_eq!(found, ["tcp://10.0.0.2:6000"]);
//!
//!     for node in [client, service, registry] {
//!         node.shutdown().await?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! [`Node::events`] is a [`Stream`](futures_core::Stream) of [`Event`]s, and [`Node::pipe`]
//! speaks CZMQ's string protocol (`BIND`, `PUBLISH`, `LOOKUP`, ...) for tools and tests.
//!
//! # Features
//! - `json`: [`LineFormat::Json`] for the pipe, and [`event_json`].
//! - `sim`: the engine, the transports (with inproc fault injection) and the seeded RNG as public
//!   modules, for simulations, fuzzing and the benchmarks. They are internals: not covered by
//!   semver.
//!
//! # Layout
//! A message's path, outside in:
//! - `transport`: bytes on and off the network: tcp/ipc over libzmq sockets, and `inproc://`,
//!   this project's own in-process transport, behind one facade (`Transports`) that names
//!   peers for the engine and holds the policy and byte budgets common to both.
//! - [`wire`]: ZGP v1 frames ↔ [`wire::Message`]. No I/O.
//! - `engine`: the node as a sans-IO state machine: tuple store, server sessions, remotes,
//!   heartbeats, and resyncs streamed a slice at a time as the peer reads. Inputs carry `now`;
//!   outputs say what to send where and what to tell the app. Warnings a peer can cause are
//!   rate-limited (`warnings`, shared with the libzmq I/O thread).
//! - `node`: the actor (one tokio task owns the engine and the transports), the typed handle,
//!   and the CZMQ-style string pipe.

#[cfg(feature = "sim")]
pub mod engine;
#[cfg(not(feature = "sim"))]
mod engine;
mod node;
#[cfg(feature = "sim")]
pub mod rng;
#[cfg(not(feature = "sim"))]
mod rng;
#[cfg(feature = "sim")]
pub mod transport;
#[cfg(not(feature = "sim"))]
mod transport;
mod warnings;
pub mod wire;

pub use engine::{TooManyRemotes, TupleError, validate as validate_tuple};
#[cfg(feature = "json")]
pub use node::event_json;
pub use node::{
    Config, ConfigError, CurveKey, CurveKeys, Error, Event, Events, EventsError, ExpireReason,
    KeyError, Lagged, LineFormat, Member, MemberState, Membership, Node, PeerState, Pipe,
    PipeReader, PipeWriter, Stats, Status, TupleInfo, raise_open_file_limit,
};
pub use transport::{Endpoint, Error as TransportError};

/// Every Rust example in README.md runs as a doctest, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
