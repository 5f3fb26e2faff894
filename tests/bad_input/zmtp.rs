//! ZMTP 3.0 written by hand over a raw stream (`std::net::TcpStream` or a Unix socket), for
//! sending what no ZeroMQ library would: garbage instead of a greeting, garbage instead of the
//! handshake, frame headers announcing terabytes. Everything here blocks; call it through
//! [`crate::client::blocking`].

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::client::REPLY_TIMEOUT;

/// Flag bit of a frame that is a command, not a message.
pub const COMMAND: u8 = 0x04;
/// Flag bit of a frame whose size is 8 bytes instead of 1.
pub const LONG: u8 = 0x02;

/// A raw connection to a node's listener, over tcp or ipc.
pub enum RawConn {
    /// `tcp://`.
    Tcp(TcpStream),
    /// `ipc://`.
    Ipc(UnixStream),
}

impl RawConn {
    /// Opens a raw connection to a `tcp://host:port` or `ipc://path` endpoint.
    pub fn open(endpoint: &str) -> RawConn {
        if let Some(addr) = endpoint.strip_prefix("tcp://") {
            RawConn::Tcp(TcpStream::connect(addr).unwrap())
        } else if let Some(path) = endpoint.strip_prefix("ipc://") {
            RawConn::Ipc(UnixStream::connect(path).unwrap())
        } else {
            panic!("no raw connection for {endpoint}")
        }
    }

    /// Limits how long one read may block.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            RawConn::Tcp(s) => s.set_read_timeout(timeout),
            RawConn::Ipc(s) => s.set_read_timeout(timeout),
        }
    }

    /// Limits how long one write may block.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            RawConn::Tcp(s) => s.set_write_timeout(timeout),
            RawConn::Ipc(s) => s.set_write_timeout(timeout),
        }
    }

    /// A second handle on the same connection, for reading while another thread writes.
    fn try_clone(&self) -> io::Result<RawConn> {
        match self {
            RawConn::Tcp(s) => s.try_clone().map(RawConn::Tcp),
            RawConn::Ipc(s) => s.try_clone().map(RawConn::Ipc),
        }
    }
}

impl Read for RawConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            RawConn::Tcp(s) => s.read(buf),
            RawConn::Ipc(s) => s.read(buf),
        }
    }
}

impl Write for RawConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            RawConn::Tcp(s) => s.write(buf),
            RawConn::Ipc(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            RawConn::Tcp(s) => s.flush(),
            RawConn::Ipc(s) => s.flush(),
        }
    }
}

/// Our 64-byte ZMTP 3.0 greeting: signature, version 3.0, mechanism NULL, as-server 0, filler.
pub fn greeting() -> Vec<u8> {
    let mut g = vec![0xFF];
    g.extend_from_slice(&[0; 8]);
    g.push(0x7F);
    g.extend_from_slice(&[3, 0]);
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    g.extend_from_slice(&mechanism);
    g.push(0);
    g.extend_from_slice(&[0; 31]);
    assert_eq!(g.len(), 64);
    g
}

/// A frame with a 1-byte size (`body` under 256 bytes).
pub fn short_frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![flags, u8::try_from(body.len()).expect("a short frame")];
    f.extend_from_slice(body);
    f
}

/// The header of a long frame announcing `size` bytes (none of which follow).
pub fn long_header(flags: u8, size: u64) -> Vec<u8> {
    let mut f = vec![flags | LONG];
    f.extend_from_slice(&size.to_be_bytes());
    f
}

/// The NULL mechanism's READY command, saying we are a DEALER.
pub fn ready() -> Vec<u8> {
    let mut body = b"\x05READY".to_vec();
    let (name, value) = (b"Socket-Type", b"DEALER");
    body.push(u8::try_from(name.len()).unwrap());
    body.extend_from_slice(name);
    body.extend_from_slice(&u32::try_from(value.len()).unwrap().to_be_bytes());
    body.extend_from_slice(value);
    short_frame(COMMAND, &body)
}

/// Reads one frame: its flags and body.
pub fn read_frame(stream: &mut RawConn) -> io::Result<(u8, Vec<u8>)> {
    let mut flags = [0u8; 1];
    stream.read_exact(&mut flags)?;
    let size = if flags[0] & LONG != 0 {
        let mut size = [0u8; 8];
        stream.read_exact(&mut size)?;
        u64::from_be_bytes(size)
    } else {
        let mut size = [0u8; 1];
        stream.read_exact(&mut size)?;
        u64::from(size[0])
    };
    assert!(size <= 1 << 20, "the node announced a {size}-byte frame");
    let mut body = vec![0u8; usize::try_from(size).unwrap()];
    stream.read_exact(&mut body)?;
    Ok((flags[0], body))
}

/// Reads the 10-byte signature libzmq sends as soon as a connection is accepted.
pub fn read_signature(stream: &mut RawConn, timeout: Duration) -> [u8; 10] {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut signature = [0u8; 10];
    stream.read_exact(&mut signature).unwrap();
    assert_eq!(signature[0], 0xFF, "signature: {signature:02x?}");
    assert_eq!(signature[9] & 1, 1, "signature: {signature:02x?}");
    signature
}

/// Sends our greeting and reads the node's, which must be ZMTP 3.x with the NULL mechanism.
pub fn exchange_greetings(stream: &mut RawConn) {
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    stream.write_all(&greeting()).unwrap();
    let mut theirs = [0u8; 64];
    stream.read_exact(&mut theirs).unwrap();
    assert_eq!(theirs[0], 0xFF, "greeting signature: {theirs:02x?}");
    assert_eq!(theirs[9] & 1, 1, "greeting signature: {theirs:02x?}");
    assert_eq!(theirs[10], 3, "ZMTP major version: {theirs:02x?}");
    assert_eq!(&theirs[12..16], b"NULL", "mechanism: {theirs:02x?}");
}

/// Greetings, then READY both ways: afterwards the node's ROUTER takes our frames as messages.
pub fn handshake(stream: &mut RawConn) {
    exchange_greetings(stream);
    let (flags, body) = read_frame(stream).unwrap();
    assert_eq!(flags & COMMAND, COMMAND, "the node's READY is a command");
    assert!(body.starts_with(b"\x05READY"), "not READY: {body:02x?}");
    stream.write_all(&ready()).unwrap();
}

/// Reads (and drops) whatever comes until the node closes the connection; returns how long
/// that took from `since`, or `None` if it stayed open until `since + limit`. Both an orderly
/// close and a reset count as closed.
pub fn closed_within(stream: &mut RawConn, since: Instant, limit: Duration) -> Option<Duration> {
    let deadline = since + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(since.elapsed()),
        }
    }
}

/// Writes `bytes` in chunks until the node closes the connection or they run out, while another
/// thread reads (so the node is never blocked writing replies to us). Returns whether the node
/// closed the connection within `limit` of starting.
pub fn spray_until_closed(
    mut stream: RawConn,
    bytes: impl Iterator<Item = u8>,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    let mut reader = stream.try_clone().unwrap();
    let (done, closed) = mpsc::channel();
    let watcher = thread::spawn(move || {
        let result = closed_within(&mut reader, start, limit);
        let _ = done.send(());
        result
    });
    stream.set_write_timeout(Some(limit)).unwrap();
    let mut bytes = bytes.peekable();
    while bytes.peek().is_some() && closed.try_recv().is_err() {
        let chunk: Vec<u8> = bytes.by_ref().take(512).collect();
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    watcher.join().unwrap().is_some()
}

/// A seeded xorshift64* byte stream: "random" garbage that is the same on every run.
pub fn random_bytes(seed: u64) -> impl Iterator<Item = u8> {
    let mut state = seed.max(1);
    std::iter::repeat_with(move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    })
}
