//! A ZGP client on a real libzmq DEALER, for playing both the well-behaved peer and the
//! misbehaving one: it sends any frames (ZGP or not, single or multipart) and reads replies with
//! a receive timeout. libzmq's API blocks, so every call runs on tokio's blocking pool; the
//! socket sits behind a mutex so a client can be cloned into those calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use zgossip::wire::{Message, Publish};

/// How long to wait for a reply that should come: the shared ceiling, never reached when the
/// node works.
pub const REPLY_TIMEOUT: Duration = crate::support::WAIT;
/// How long a client must hear nothing to count as ignored.
pub const SILENCE: Duration = Duration::from_millis(300);

/// One libzmq context for every test client in this process (the node has its own).
static CONTEXT: LazyLock<zmq::Context> = LazyLock::new(zmq::Context::new);

/// Runs blocking code on tokio's blocking pool; a panic in it is re-raised here, message intact.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task did not finish: {e}"),
    }
}

/// `message` as the one frame it travels in.
pub fn frame(message: &Message) -> Vec<u8> {
    message.to_bytes().expect("test messages encode").to_vec()
}

/// A PUBLISH frame for `key` = `value` (any strings: the codec does not judge them).
pub fn publish(key: &str, value: &str) -> Vec<u8> {
    frame(&Message::Publish(Publish::new(key, value)))
}

/// A DEALER connected to a node's listener.
#[derive(Clone)]
pub struct Client {
    socket: Arc<Mutex<zmq::Socket>>,
}

impl Client {
    /// Connects a DEALER to `endpoint`; libzmq queues what is sent until the connection is up.
    pub async fn connect(endpoint: &str) -> Client {
        Self::connect_with(endpoint, false).await.0
    }

    /// Connects a DEALER and a monitor that reports its handshakes and disconnects.
    pub async fn connect_monitored(endpoint: &str) -> (Client, Monitor) {
        let (client, monitor) = Self::connect_with(endpoint, true).await;
        (client, monitor.expect("asked for a monitor"))
    }

    async fn connect_with(endpoint: &str, monitored: bool) -> (Client, Option<Monitor>) {
        static NEXT_MONITOR: AtomicU64 = AtomicU64::new(1);
        let endpoint = endpoint.to_owned();
        blocking(move || {
            let socket = CONTEXT.socket(zmq::DEALER).unwrap();
            socket.set_linger(0).unwrap();
            let monitor = monitored.then(|| {
                let n = NEXT_MONITOR.fetch_add(1, Ordering::Relaxed);
                let monitor_endpoint = format!("inproc://bad-input-monitor-{n}");
                let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
                    | zmq::SocketEvent::DISCONNECTED as i32;
                socket.monitor(&monitor_endpoint, events).unwrap();
                // Listening before the DEALER connects, so no event is lost.
                let pair = CONTEXT.socket(zmq::PAIR).unwrap();
                pair.set_linger(0).unwrap();
                pair.connect(&monitor_endpoint).unwrap();
                Monitor {
                    socket: Mutex::new(pair),
                }
            });
            socket.connect(&endpoint).unwrap();
            let client = Client {
                socket: Arc::new(Mutex::new(socket)),
            };
            (client, monitor)
        })
        .await
    }

    /// Sends one frame.
    pub async fn send(&self, frame: Vec<u8>) {
        self.send_multipart(vec![frame]).await;
    }

    /// Sends one ZGP message.
    pub async fn send_message(&self, message: &Message) {
        self.send(frame(message)).await;
    }

    /// Sends the frames as one multipart message.
    pub async fn send_multipart(&self, frames: Vec<Vec<u8>>) {
        let socket = Arc::clone(&self.socket);
        // Slices are copied; zmq 0.9 hands a Vec to libzmq zero-copy and frees it with the
        // wrong layout.
        blocking(move || {
            let socket = socket.lock().unwrap();
            socket
                .send_multipart(frames.iter().map(Vec::as_slice), 0)
                .unwrap()
        })
        .await;
    }

    /// The next message (all its frames), or `None` if nothing comes within `timeout`.
    pub async fn recv(&self, timeout: Duration) -> Option<Vec<Vec<u8>>> {
        let socket = Arc::clone(&self.socket);
        blocking(move || {
            let socket = socket.lock().unwrap();
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            socket.set_rcvtimeo(ms).unwrap();
            match socket.recv_multipart(0) {
                Ok(frames) => Some(frames),
                Err(zmq::Error::EAGAIN) => None,
                Err(e) => panic!("receive failed: {e}"),
            }
        })
        .await
    }

    /// The next ZGP message within `timeout`. The node must only ever send single, valid frames.
    pub async fn next_message(&self, timeout: Duration) -> Option<Message> {
        let frames = self.recv(timeout).await?;
        let [frame] = frames.as_slice() else {
            panic!("the node sent a {}-frame message", frames.len());
        };
        Some(Message::decode(frame).unwrap_or_else(|e| panic!("the node sent a bad frame: {e}")))
    }

    /// Reads until `want` arrives and returns what came before it; fails after [`REPLY_TIMEOUT`].
    pub async fn expect(&self, want: &Message) -> Vec<Message> {
        self.expect_where(|m| m == want, &format!("{want:?}")).await
    }

    /// Reads until a message matching `wanted` arrives and returns what came before it.
    pub async fn expect_where(
        &self,
        wanted: impl Fn(&Message) -> bool,
        what: &str,
    ) -> Vec<Message> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_message(left).await {
                Some(message) if wanted(&message) => return before,
                Some(message) => before.push(message),
                None => panic!("no {what} within {REPLY_TIMEOUT:?}; got {before:?}"),
            }
        }
    }

    /// Reads until the PUBLISH of `key` = `value` arrives; fails if INVALID comes first.
    pub async fn expect_publish(&self, key: &str, value: &str) -> Vec<Message> {
        let before = self
            .expect_where(
                |m| matches!(m, Message::Publish(p) if &*p.key == key && &*p.value == value),
                &format!("PUBLISH {key}={value}"),
            )
            .await;
        assert!(
            !before.contains(&Message::Invalid),
            "INVALID before PUBLISH {key}={value}: {before:?}"
        );
        before
    }

    /// Says HELLO then PING, as a well-behaved client opens a session, and returns the tuples
    /// that came as PUBLISH before the PONG. Fails on anything else.
    pub async fn hello(&self) -> BTreeMap<String, String> {
        self.send_message(&Message::Hello(None)).await;
        self.send_message(&Message::Ping(None)).await;
        let mut tuples = BTreeMap::new();
        for message in self.expect(&Message::Pong(None)).await {
            match message {
                Message::Publish(p) => {
                    tuples.insert(p.key.to_string(), p.value.to_string());
                }
                other => panic!("a greeted client got {other:?} before its PONG"),
            }
        }
        tuples
    }

    /// PING, and the PONG back, with no INVALID on the way.
    pub async fn ping(&self) {
        self.send_message(&Message::Ping(None)).await;
        let before = self.expect(&Message::Pong(None)).await;
        assert!(
            !before.contains(&Message::Invalid),
            "INVALID before PONG: {before:?}"
        );
    }

    /// Fails if anything arrives within `wait`.
    pub async fn assert_silent(&self, wait: Duration) {
        if let Some(frames) = self.recv(wait).await {
            panic!("expected silence, got {frames:?}");
        }
    }
}

/// The receiving end of a DEALER's socket monitor.
pub struct Monitor {
    socket: Mutex<zmq::Socket>,
}

impl Monitor {
    /// Waits for `event`, skipping others; fails after [`REPLY_TIMEOUT`].
    pub async fn expect(self, event: zmq::SocketEvent) -> Monitor {
        blocking(move || {
            let deadline = Instant::now() + REPLY_TIMEOUT;
            let mut seen = Vec::new();
            {
                let socket = self.socket.lock().unwrap();
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
                    socket.set_rcvtimeo(ms).unwrap();
                    let frames = match socket.recv_multipart(0) {
                        Ok(frames) => frames,
                        Err(zmq::Error::EAGAIN) => {
                            panic!("no {event:?} within {REPLY_TIMEOUT:?}; saw {seen:?}")
                        }
                        Err(e) => panic!("monitor receive failed: {e}"),
                    };
                    let code = u16::from_le_bytes([frames[0][0], frames[0][1]]);
                    let got = zmq::SocketEvent::from_raw(code);
                    if got == event {
                        break;
                    }
                    seen.push(got);
                }
            }
            self
        })
        .await
    }
}
