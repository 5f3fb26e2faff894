//! The node an application runs: [`Node::spawn`] starts an actor (one tokio task owning the
//! engine and the transports) and returns a handle with typed async methods; [`Pipe`] speaks
//! the CZMQ-style string commands over the same handle.

mod actor;
mod batch;
mod config;
mod events;
mod fds;
mod pipe;

use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::engine::TupleError;
pub use crate::engine::{Event, ExpireReason, PeerState, Stats};
pub use crate::transport::curve::{CurveKey, CurveKeys, KeyError};
pub use crate::wire::{Member, MemberState};
pub use config::{Config, ConfigError, Membership};
pub(crate) use config::{parse_duration, random_node_id};
pub use events::{Events, EventsError, Lagged};
pub use fds::raise_open_file_limit;
#[cfg(feature = "json")]
pub use pipe::event_json;
pub use pipe::{LineFormat, Pipe, PipeReader, PipeWriter};

/// Commands queued from handles to the actor before senders wait.
const COMMAND_CAPACITY: usize = 64;

/// What can go wrong when asking a node to do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding, connecting or an endpoint failed.
    #[error(transparent)]
    Transport(#[from] crate::transport::Error),
    /// The tuple was refused.
    #[error(transparent)]
    Tuple(#[from] TupleError),
    /// A setting was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Text that should be a CURVE key is not one.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A CONNECT past `max_remotes`.
    #[error(transparent)]
    TooManyRemotes(#[from] crate::engine::TooManyRemotes),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// `Node::spawn` was called outside a tokio runtime.
    #[error("Node::spawn needs a tokio runtime")]
    NoRuntime,
    /// A wait ran out.
    #[error("no {service} service within {waited:?}")]
    Timeout {
        /// The service waited for.
        service: String,
        /// How long.
        waited: Duration,
    },
}

/// What a node holds and has seen, as `STATUS` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Tuples held.
    pub tuples: usize,
    /// Copies held, tombstones and lease-expiry records included (what `max_tuples` bounds).
    pub held: usize,
    /// Client sessions that said HELLO and have not expired.
    pub sessions: usize,
    /// Remotes: one per CONNECT (the cluster's own dials are not counted).
    pub remotes: usize,
    /// Remotes currently connected.
    pub remotes_connected: usize,
    /// Connected remotes whose server's resync has arrived.
    pub remotes_synced: usize,
    /// This node's id, as peers see it in hails and stamps.
    pub node_id: u64,
    /// Counters of refused and malformed input, expiries and redials.
    pub stats: Stats,
    /// CURVE clients the allow list refused (each handshake attempt counts).
    pub curve_refused: u64,
    /// Connections to our tcp/ipc listeners whose handshake failed: a plain client on a CURVE
    /// listener, a wrong server key, a refused key (each attempt counts).
    pub handshakes_failed: u64,
    /// Why the tcp/ipc transport died, if it has (its I/O thread failed): every tcp and ipc
    /// peer is then gone, and tcp/ipc binds and connects fail until the node is restarted.
    /// inproc goes on.
    pub transport_failure: Option<String>,
}

#[derive(Debug)]
pub(crate) enum Command {
    Bind {
        endpoint: String,
        reply: oneshot::Sender<Result<String, Error>>,
    },
    Connect {
        endpoint: String,
        /// Set: a CURVE connection to the server with this public key.
        server_key: Option<CurveKey>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Publish {
        key: String,
        value: String,
        lease: Option<Duration>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Unpublish {
        key: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Lookup {
        service: String,
        reply: oneshot::Sender<Vec<String>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<(String, PeerState)>>,
    },
    Members {
        reply: oneshot::Sender<Vec<Member>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Port {
        reply: oneshot::Sender<i32>,
    },
    Get {
        key: String,
        reply: oneshot::Sender<Option<String>>,
    },
    Tuples {
        reply: oneshot::Sender<Vec<TupleInfo>>,
    },
    Set {
        path: String,
        value: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Verbose(bool),
    Subscribe {
        reply: oneshot::Sender<broadcast::Receiver<Event>>,
    },
    Terminate {
        /// Withdraw and say goodbye first (false: stop as if killed).
        graceful: bool,
        reply: oneshot::Sender<()>,
    },
    /// Make the I/O thread die as if `zmq_poll` had failed.
    #[cfg(any(test, feature = "sim"))]
    FailIoThread {
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// A handle on a running node. Clones share the node; it stops when the last handle is
/// dropped or [`Node::shutdown`] is called.
#[derive(Debug, Clone)]
pub struct Node {
    commands: mpsc::Sender<Command>,
    /// Whether the actor logs every message; changed only through handles, so they keep it.
    verbose: watch::Sender<bool>,
}

impl Node {
    /// Starts a node on the current tokio runtime; fails with [`Error::NoRuntime`] outside one,
    /// and with [`Error::Config`] for settings that do not fit together.
    ///
    /// ```
    /// use std::time::Duration;
    /// use zgossip::{Config, Node};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let mut config = Config::named("registry");
    /// config.server_timeout = Duration::from_secs(2);
    /// let node = Node::spawn(config)?;
    /// assert_eq!(node.status().await?.tuples, 0);
    /// node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn spawn(config: Config) -> Result<Node, Error> {
        config.validate()?;
        config.curve_keys()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let actor = actor::Actor::new(config, receiver);
        runtime.spawn(actor.run());
        Ok(Node {
            commands,
            verbose: watch::Sender::new(false),
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)
    }

    /// Binds a listener; returns the endpoint as bound (with the real port for `tcp://host:*`).
    /// A tcp bind takes an IP address, `*` or a network interface name, not a host name.
    ///
    /// One node may listen on several endpoints of any transports.
    ///
    /// ```
    /// # use zgossip::{Config, Node};
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let node = Node::spawn(Config::default())?;
    /// let tcp = node.bind("tcp://127.0.0.1:*").await?;
    /// assert!(tcp.starts_with("tcp://127.0.0.1:") && !tcp.ends_with(":*"));
    /// assert_eq!(node.bind("inproc://bind-example").await?, "inproc://bind-example");
    /// # node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn bind(&self, endpoint: &str) -> Result<String, Error> {
        let endpoint = endpoint.to_owned();
        self.ask(|reply| Command::Bind { endpoint, reply })
            .await?
            .map_err(explain_bind)
    }

    /// Dials a peer's listener; the node says HELLO and republishes on every (re)connect. It
    /// returns at once: the connection is made, and remade, in the background.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use zgossip::{Config, Node};
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let server = Node::spawn(Config::default())?;
    /// server.bind("inproc://connect-example").await?;
    /// let client = Node::spawn(Config::default())?;
    /// client.connect("inproc://connect-example").await?;
    /// client.publish("tcp://10.0.0.2:6000", "orders").await?;
    /// let found = server.wait_for_service("orders", Duration::from_secs(5)).await?;
    /// assert_eq!(found, ["tcp://10.0.0.2:6000"]);
    /// # client.shutdown().await?;
    /// # server.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, endpoint: &str) -> Result<(), Error> {
        self.dial(endpoint, None).await
    }

    /// Dials a peer's CURVE listener (tcp or ipc) whose public key is `server_key`. The link is
    /// encrypted, and only a server holding the matching secret key can answer. This node
    /// presents its own keypair (`curve_public_key`/`curve_secret_key`) or, without one, a
    /// throwaway keypair made for this connection. `inproc://` endpoints are refused: CURVE does
    /// not apply inside one process.
    ///
    /// ```
    /// use std::time::Duration;
    /// use zgossip::{Config, CurveKeys, Node};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let keys = CurveKeys::generate()?;
    /// let mut config = Config::named("server");
    /// config.curve_public_key = Some(keys.public);
    /// config.curve_secret_key = Some(keys.secret); // later tcp/ipc binds are CURVE listeners
    /// let server = Node::spawn(config)?;
    /// let endpoint = server.bind("tcp://127.0.0.1:*").await?;
    /// server.publish("tcp://10.0.0.2:6000", "orders").await?;
    ///
    /// let client = Node::spawn(Config::default())?;
    /// client.connect_secure(&endpoint, &keys.public).await?;
    /// let found = client.wait_for_service("orders", Duration::from_secs(5)).await?;
    /// assert_eq!(found, ["tcp://10.0.0.2:6000"]);
    /// # client.shutdown().await?;
    /// # server.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_secure(&self, endpoint: &str, server_key: &CurveKey) -> Result<(), Error> {
        self.dial(endpoint, Some(*server_key)).await
    }

    async fn dial(&self, endpoint: &str, server_key: Option<CurveKey>) -> Result<(), Error> {
        let endpoint = endpoint.to_owned();
        self.ask(|reply| Command::Connect {
            endpoint,
            server_key,
            reply,
        })
        .await?
    }

    /// Publishes a tuple to every node this one can reach, for as long as this node lives (and,
    /// unless `withdraw_on_stop` is off, until it stops gracefully). The node delivers it to
    /// itself too.
    ///
    /// ```
    /// # use zgossip::{Config, Node};
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let node = Node::spawn(Config::default())?;
    /// node.publish("tcp://10.0.0.2:6000", "orders").await?;
    /// node.publish("tcp://10.0.0.3:6000", "orders").await?;
    /// assert_eq!(
    ///     node.lookup("orders").await?,
    ///     ["tcp://10.0.0.2:6000", "tcp://10.0.0.3:6000"]
    /// );
    /// assert!(node.publish("bad key", "orders").await.is_err()); // keys have no spaces
    /// # node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(&self, key: &str, value: &str) -> Result<(), Error> {
        self.publish_for(key, value, None).await
    }

    /// Publishes a tuple with a lease: every other node drops it `lease` after it last heard a
    /// refresh, and this node refreshes it every third of the lease while it runs. `None` or
    /// zero: no lease.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use zgossip::{Config, Node};
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let node = Node::spawn(Config::default())?;
    /// let lease = Some(Duration::from_secs(30));
    /// node.publish_for("tcp://10.0.0.2:6000", "orders", lease).await?;
    /// let held = node.tuple_details().await?;
    /// assert!(held[0].owned); // ours: refreshed while we run, so no countdown here
    /// # node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_for(
        &self,
        key: &str,
        value: &str,
        lease: Option<Duration>,
    ) -> Result<(), Error> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.ask(|reply| Command::Publish {
            key,
            value,
            lease,
            reply,
        })
        .await?
    }

    /// Withdraws a key at every node.
    ///
    /// ```
    /// # use zgossip::{Config, Node};
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let node = Node::spawn(Config::default())?;
    /// node.publish("tcp://10.0.0.2:6000", "orders").await?;
    /// node.unpublish("tcp://10.0.0.2:6000").await?;
    /// assert!(node.lookup("orders").await?.is_empty());
    /// # node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn unpublish(&self, key: &str) -> Result<(), Error> {
        let key = key.to_owned();
        self.ask(|reply| Command::Unpublish { key, reply }).await?
    }

    /// The keys (endpoints) whose value is `service`, sorted.
    pub async fn lookup(&self, service: &str) -> Result<Vec<String>, Error> {
        let service = service.to_owned();
        self.ask(|reply| Command::Lookup { service, reply }).await
    }

    /// Waits until at least one endpoint offers `service`, for at most `timeout`; then
    /// [`Error::Timeout`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use zgossip::{Config, Error, Node};
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let server = Node::spawn(Config::default())?;
    /// server.bind("inproc://wait-example").await?;
    /// let client = Node::spawn(Config::default())?;
    /// client.connect("inproc://wait-example").await?;
    /// let absent = client.wait_for_service("billing", Duration::from_millis(50)).await;
    /// assert!(matches!(absent, Err(Error::Timeout { .. })));
    /// server.publish("tcp://10.0.0.2:6000", "billing").await?;
    /// let found = client.wait_for_service("billing", Duration::from_secs(5)).await?;
    /// assert_eq!(found, ["tcp://10.0.0.2:6000"]);
    /// # client.shutdown().await?;
    /// # server.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_service(
        &self,
        service: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, Error> {
        let mut events = self.events().await?;
        let wait = async {
            loop {
                let found = self.lookup(service).await?;
                if !found.is_empty() {
                    return Ok(found);
                }
                // Wait for anything that may have added an endpoint; on lag just look again.
                loop {
                    match events.recv().await {
                        Ok(Event::Deliver { value, .. } | Event::Change { value, .. })
                            if &*value == service =>
                        {
                            break;
                        }
                        Ok(_) => {}
                        Err(EventsError::Lagged(_)) => break,
                        Err(EventsError::Closed) => return Err(Error::Stopped),
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    service: service.to_owned(),
                    waited: timeout,
                })
            })
    }

    /// Every peer and its state: remotes by endpoint, clients by node id.
    pub async fn peers(&self) -> Result<Vec<(String, PeerState)>, Error> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Every member of the cluster as this node knows it (`proto/zgp.md` §12): this node
    /// first, then the others by name, dead and departed ones included for an hour. Empty when
    /// `Config::cluster` is off.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        self.ask(|reply| Command::Members { reply }).await
    }

    /// Makes the node's tcp/ipc I/O thread die as if `zmq_poll` had failed (starting it if need
    /// be), for tests of what the node does then.
    #[cfg(any(test, feature = "sim"))]
    #[doc(hidden)]
    pub async fn fail_io_thread(&self) -> Result<(), Error> {
        self.ask(|reply| Command::FailIoThread { reply }).await?
    }

    /// What the node holds and has seen.
    pub async fn status(&self) -> Result<Status, Error> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// The port of the last bind (0 for ipc and inproc; -1 if it failed), as CZMQ's PORT.
    pub async fn port(&self) -> Result<i32, Error> {
        self.ask(|reply| Command::Port { reply }).await
    }

    /// The value held for `key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, Error> {
        let key = key.to_owned();
        self.ask(|reply| Command::Get { key, reply }).await
    }

    /// Every tuple held, by key.
    pub async fn tuples(&self) -> Result<Vec<(String, String)>, Error> {
        let details = self.ask(|reply| Command::Tuples { reply }).await?;
        Ok(details.into_iter().map(|t| (t.key, t.value)).collect())
    }

    /// Every tuple held, by key, with its lease and origin.
    pub async fn tuple_details(&self) -> Result<Vec<TupleInfo>, Error> {
        self.ask(|reply| Command::Tuples { reply }).await
    }

    /// Waits until every remote is connected and has sent its resync (or `timeout` passes);
    /// returns whether it got there. True at once for a node with no remotes.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status().await?;
            if status.remotes_synced == status.remotes {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Changes a setting by its CZMQ-style path (`server/timeout`, `remote/ping-interval`,
    /// `server/animate`, `PUBLICKEY`, `SECRETKEY`, `curve/zap-domain`). CURVE keys apply to
    /// later binds and connects.
    pub async fn set(&self, path: &str, value: &str) -> Result<(), Error> {
        let animate = matches!(path, "server/animate" | "server/verbose");
        let on = matches!(value, "1" | "true" | "on");
        let (path, value) = (path.to_owned(), value.to_owned());
        self.ask(|reply| Command::Set { path, value, reply })
            .await??;
        // The actor took the value, so it was a flag: anything but an "on" word is off.
        if animate {
            self.verbose.send_replace(on);
        }
        Ok(())
    }

    /// Logs every message in and out at info level (or stops doing so).
    pub async fn verbose(&self, on: bool) -> Result<(), Error> {
        self.commands
            .send(Command::Verbose(on))
            .await
            .map_err(|_| Error::Stopped)?;
        self.verbose.send_replace(on);
        Ok(())
    }

    /// Whether the node logs every message ([`Node::verbose`], the pipe's `VERBOSE` or
    /// `SET server/animate 1`), and each change of it. Those logs are `tracing` events at info
    /// level: an application whose subscriber filters info out can watch this and raise its
    /// filter, as `zgossip node` does.
    pub fn verbosity(&self) -> watch::Receiver<bool> {
        self.verbose.subscribe()
    }

    /// Everything the node tells the application from now on, as a [`Stream`] or one event at a
    /// time ([`Events`] has an example).
    ///
    /// [`Stream`]: futures_core::Stream
    pub async fn events(&self) -> Result<Events, Error> {
        let receiver = self.ask(|reply| Command::Subscribe { reply }).await?;
        Ok(Events::new(receiver))
    }

    /// A CZMQ-style string pipe on this node. Each direction queues a bounded number of lines:
    /// to write many commands, read the replies from another task ([`Pipe::split`]).
    ///
    ///
    /// ```
    /// # use zgossip::{Config, Node};
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let node = Node::spawn(Config::default())?;
    /// let mut pipe = node.pipe().await?;
    /// pipe.send("PUBLISH tcp://10.0.0.2:6000 orders").await?;
    /// assert_eq!(pipe.recv().await.as_deref(), Some("DELIVER tcp://10.0.0.2:6000 orders"));
    /// pipe.send("LOOKUP orders").await?;
    /// assert_eq!(pipe.recv().await.as_deref(), Some("LOOKUP orders tcp://10.0.0.2:6000"));
    /// # node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn pipe(&self) -> Result<Pipe, Error> {
        Pipe::open(self.clone(), LineFormat::Words).await
    }

    /// A pipe that writes its replies and events in `format`.
    pub async fn pipe_with(&self, format: LineFormat) -> Result<Pipe, Error> {
        Pipe::open(self.clone(), format).await
    }

    /// Stops the node gracefully: withdraws its own tuples (unless `withdraw_on_stop` is off),
    /// says goodbye to its peers, and waits until its sockets are closed. Other handles on the
    /// node then get [`Error::Stopped`].
    ///
    /// ```
    /// # use zgossip::{Config, Error, Node};
    /// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
    /// let node = Node::spawn(Config::default())?;
    /// let other = node.clone();
    /// node.shutdown().await?;
    /// assert_eq!(other.lookup("orders").await, Err(Error::Stopped));
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.ask(|reply| Command::Terminate {
            graceful: true,
            reply,
        })
        .await
    }

    /// Stops the node as if its process were killed: no withdrawal, no goodbye; its peers see
    /// the connections drop and its leases run out.
    pub async fn kill(&self) -> Result<(), Error> {
        self.ask(|reply| Command::Terminate {
            graceful: false,
            reply,
        })
        .await
    }
}

/// libzmq binds tcp to an IP address, `*` or an interface name and resolves no host names: it
/// answers `tcp://localhost:5670` with "no such device". Say what it wants instead.
fn explain_bind(error: Error) -> Error {
    let Error::Transport(crate::transport::Error::Bind { endpoint, why }) = error else {
        return error;
    };
    let tcp = endpoint
        .strip_prefix("tcp://")
        .and_then(|a| a.rsplit_once(':'));
    let why = match tcp {
        Some((host, port))
            if why.contains("no such device")
                && host != "*"
                && host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_err() =>
        {
            format!(
                "{why}: {host} is neither an IP address nor a network interface, and libzmq \
                 binds need one of those or * (e.g. tcp://127.0.0.1:{port} or tcp://*:{port})"
            )
        }
        _ => why,
    };
    Error::Transport(crate::transport::Error::Bind { endpoint, why })
}

impl Status {
    /// Every figure as `name=value` pairs separated by spaces, for `STATUS detail`.
    pub fn detail(&self) -> String {
        let mut line = format!(
            "tuples={} held={} sessions={} remotes={} remotes_connected={} remotes_synced={} node_id={:016x}",
            self.tuples,
            self.held,
            self.sessions,
            self.remotes,
            self.remotes_connected,
            self.remotes_synced,
            self.node_id
        );
        for (name, value) in self.stats.pairs() {
            line.push_str(&format!(" {name}={value}"));
        }
        line.push_str(&format!(" curve_refused={}", self.curve_refused));
        line.push_str(&format!(" handshakes_failed={}", self.handshakes_failed));
        if self.transport_failure.is_some() {
            line.push_str(" transport_failed=1");
        }
        line
    }
}

/// One tuple as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TupleInfo {
    /// The key (in service discovery, an endpoint).
    pub key: String,
    /// The value (a service name).
    pub value: String,
    /// What is left of its lease here; `None` when it has none, or is ours (we refresh it).
    pub lease_remaining: Option<Duration>,
    /// This node published it and refreshes it.
    pub owned: bool,
    /// The node that made this version (0 when it came without a stamp, from CZMQ).
    pub origin: u64,
    /// Its version.
    pub version: u64,
}
