//! zgossip: a gossip service-discovery node that speaks CZMQ's ZGP v1 wire protocol.
//!
//! An application spawns a [`Node`] in-process; the node binds a ROUTER-style listener, dials its
//! peers with DEALER-style connections and spreads `key=value` tuples (in service discovery,
//! `endpoint=service`) to every node it can reach, with ping-pong heartbeats.
//!
//! # Layout
//! A message's path, outside in:
//! - [`transport`]: bytes on and off the network: tcp/ipc over libzmq sockets, and `inproc://`,
//!   this project's own in-process transport.
//! - [`wire`]: ZGP v1 frames ↔ [`wire::Message`]. No I/O.
//! - [`engine`]: the node as a sans-IO state machine: tuple store, server sessions, remotes,
//!   heartbeats. Inputs carry `now`; outputs say what to send where and what to tell the app.
//! - [`node`]: the actor (one tokio task owns the engine and the transports), the typed handle,
//!   and the CZMQ-style string pipe.

pub mod bench;
pub mod engine;
pub mod node;
pub mod rng;
pub mod transport;
pub mod wire;

pub use node::{Config, CurveKey, CurveKeys, Error, Event, Events, Node, Pipe, Status, TupleInfo};
