//! Support for tests that drive whole gossip nodes as child processes over a line protocol.
//!
//! Both kinds of node speak it: CZMQ 4.2.1's zgossip behind the C reference peer
//! (`tests/czmq/zgossip_peer.c`, built here with gcc on first use) and this crate's
//! `zgossip node`. Every stdin line is one command (`BIND ep`, `CONNECT ep`, `PUBLISH k v`,
//! `STATUS`, `PORT`, `SET path value`, `$TERM`, ...); every stdout line is one reply or event
//! (`STATUS n`, `PORT n`, `DELIVER k v`, `ERROR why`). [`LinePeer`] runs one such process and
//! keeps everything it has said.
//!
//! Endpoints: tcp tests bind [`TCP_ANY`] (`tcp://127.0.0.1:*`), ask the node for `PORT` with
//! [`LinePeer::port`] and connect others to [`tcp_endpoint`]`(port)`; ipc tests use
//! [`temp_ipc_endpoint`], whose socket file lives in a temporary directory.
//!
//! Set `ZGOSSIP_TEST_QUIET=1` to send the children's stderr (CZMQ's log, our node's tracing) to
//! files under the target directory instead of the terminal; a failing `expect` names the file.
//!
//! Tests that need libczmq and gcc ([`skip_without_czmq`]) or pyzmq ([`skip_without_pyzmq`])
//! skip with one line on stderr where those are missing, so a plain `cargo test` passes on a
//! bare machine; with `ZGOSSIP_REQUIRE_ALL=1` (`scripts/test`, so CI) a missing tool fails them.
//!
//! The constructor for this crate's own binary, and [`zgossip::run`] for its one-shot commands
//! (`members`, `lookup`, `status`), live in `zgossip.rs` beside this file.

#![allow(dead_code)]

pub mod zgossip;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// How long tests wait for a line that should come: a ceiling a working node never comes near,
/// even on a loaded 2-core CI box (waits end as soon as the line is there).
pub const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The endpoint tcp tests bind: loopback, with a port the OS picks (read back with `PORT`).
pub const TCP_ANY: &str = "tcp://127.0.0.1:*";

/// The environment variable that sends the children's stderr to files (any non-empty value).
pub const QUIET_ENV: &str = "ZGOSSIP_TEST_QUIET";

/// How often [`LinePeer::wait_status`] asks again: `STATUS` has no event to wait on.
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long `Drop` gives a peer to leave after `$TERM` before killing it.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// How many recent lines a failure message shows.
const HISTORY_SHOWN: usize = 30;

/// How many lines of a peer's stderr file a failure quotes.
const STDERR_SHOWN: usize = 60;

/// The C reference peer's source, relative to this (the cli) crate.
const PEER_SOURCE: &str = "../tests/czmq/zgossip_peer.c";

/// The environment variable that makes a missing libczmq, gcc or pyzmq a failure, not a skip.
pub const REQUIRE_ALL_ENV: &str = "ZGOSSIP_REQUIRE_ALL";

/// The Python with pyzmq: Debian's python3-zmq installs it for the system Python.
pub const PYTHON: &str = "/usr/bin/python3";

/// Whether a test that needs libczmq (through pkg-config) and gcc must skip: says so in one
/// line on stderr, or fails the test when [`REQUIRE_ALL_ENV`] is set.
pub fn skip_without_czmq() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        succeeds(Command::new("gcc").arg("--version"))
            && succeeds(Command::new("pkg-config").args(["--exists", "libczmq"]))
    });
    skip_unless(found, "libczmq-dev and gcc", "them")
}

/// Whether a test that needs pyzmq with CURVE at [`PYTHON`] must skip: says so in one line on
/// stderr, or fails the test when [`REQUIRE_ALL_ENV`] is set.
pub fn skip_without_pyzmq() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        succeeds(Command::new(PYTHON).args(["-c", "import zmq; assert zmq.has('curve')"]))
    });
    skip_unless(
        found,
        "python3-zmq (pyzmq with CURVE at /usr/bin/python3)",
        "it",
    )
}

/// `installs` is what scripts/setup installs: "them" or "it".
fn skip_unless(found: bool, needs: &str, installs: &str) -> bool {
    if found {
        return false;
    }
    let required = std::env::var(REQUIRE_ALL_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "needs {needs}, and {REQUIRE_ALL_ENV} is set; scripts/setup installs {installs}"
    );
    // Past the test harness's capture (which takes eprintln!), so a passing run shows it.
    let test = thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "skipped: needs {needs}; scripts/setup installs {installs} ({test})"
    );
    true
}

/// Whether `command` runs and exits 0 (its output discarded).
fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The path of the C reference peer, compiled from `tests/czmq/zgossip_peer.c` against the
/// system's libczmq the first time a test process asks (and again whenever the source is newer
/// than the binary).
///
/// # Panics
/// When pkg-config cannot find libczmq or gcc fails: tests call [`skip_without_czmq`] first.
pub fn czmq_peer_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_czmq_peer).clone()
}

fn build_czmq_peer() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(PEER_SOURCE);
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("czmq-peer");
    let binary = out_dir.join("zgossip_peer");
    if modified(&binary).is_some_and(|built| Some(built) >= modified(&source)) {
        return binary;
    }
    fs::create_dir_all(&out_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_dir.display()));

    let flags = pkg_config_libczmq();
    // Several test binaries may build at once: each writes its own file, then renames it into
    // place, which is atomic.
    let partial = out_dir.join(format!("zgossip_peer.{}.partial", std::process::id()));
    let output = Command::new("gcc")
        .args(["-Wall", "-Wextra", "-O1", "-g", "-o"])
        .arg(&partial)
        .arg(&source)
        .args(flags.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc to build the CZMQ reference peer: {e}"));
    let diagnostics = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "gcc failed to build {} ({}):\n{diagnostics}",
        source.display(),
        output.status
    );
    if !diagnostics.trim().is_empty() {
        eprintln!("gcc warnings for {}:\n{diagnostics}", source.display());
    }
    fs::rename(&partial, &binary).unwrap_or_else(|e| {
        panic!(
            "cannot move {} to {}: {e}",
            partial.display(),
            binary.display()
        )
    });
    binary
}

/// The compiler and linker flags for libczmq, or a panic that says how to install it.
fn pkg_config_libczmq() -> String {
    const INSTALL: &str = "install libczmq-dev (apt-get install -y libczmq-dev)";
    let output = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libczmq"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run pkg-config ({e}); the CZMQ interop tests need it: {INSTALL}")
        });
    assert!(
        output.status.success(),
        "pkg-config cannot find libczmq ({}); the CZMQ interop tests need it: {INSTALL}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A temporary `ipc://` endpoint: a socket path inside a fresh temporary directory, which is
/// removed when the returned [`TempDir`] drops (keep it alive as long as the endpoint is used).
/// The path stays well under the 107-byte limit of a unix socket address.
pub fn temp_ipc_endpoint(tag: &str) -> (TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("zgossip-")
        .tempdir()
        .expect("create a temporary directory for an ipc endpoint");
    let endpoint = format!("ipc://{}", dir.path().join(format!("{tag}.ipc")).display());
    (dir, endpoint)
}

/// The endpoint to connect to a node that bound [`TCP_ANY`] and reported `port`.
pub fn tcp_endpoint(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// One node running as a child process, driven line by line.
///
/// Lines are read on a thread and handed over through a channel, so waiting for one never blocks
/// the test beyond its timeout. Every line read is kept in [`history`](Self::history), and every
/// `DELIVER k v` among them in [`delivered`](Self::delivered), whichever call read it.
pub struct LinePeer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    history: Vec<String>,
    delivered: BTreeSet<(String, String)>,
    stderr_file: Option<PathBuf>,
}

impl LinePeer {
    /// Starts `program` with `args`, its stdin and stdout piped; `name` appears in every failure
    /// message about this peer.
    pub fn spawn(name: &str, program: &Path, args: &[&str]) -> LinePeer {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let stderr_file = quiet_stderr_file(name);
        match &stderr_file {
            Some(path) => {
                let file = File::create(path)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
                command.stderr(file);
                // A file costs the test nothing to read, and a failure in CI is read only there.
                if std::env::var_os("ZGOSSIP_LOG").is_none() {
                    command.env("ZGOSSIP_LOG", "zgossip=debug");
                }
            }
            None => {
                command.stderr(Stdio::inherit());
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start peer {name} ({}): {e}", program.display()));
        let stdout = child.stdout.take().expect("child stdout is piped");
        let stdin = child.stdin.take();

        let (sender, lines) = mpsc::channel();
        thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf);
                            let line = line.trim_end_matches(['\n', '\r']).to_owned();
                            if sender.send(line).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
            .expect("start a stdout reader thread");

        LinePeer {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            history: Vec::new(),
            delivered: BTreeSet::new(),
            stderr_file,
        }
    }

    /// Starts the CZMQ reference peer, its actor named `name`.
    pub fn czmq(name: &str) -> LinePeer {
        LinePeer::czmq_with_args(name, &[])
    }

    /// Starts the CZMQ reference peer with extra options (`--bind EP`, `--connect EP`,
    /// `--publish K=V`, `--verbose`), applied in order before any stdin command.
    pub fn czmq_with_args(name: &str, args: &[&str]) -> LinePeer {
        let mut all = vec!["--name", name];
        all.extend_from_slice(args);
        LinePeer::spawn(name, &czmq_peer_binary(), &all)
    }

    /// Sends the child a signal by name (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill for {}: {e}", self.name));
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every line read from the peer so far, oldest first.
    pub fn history(&self) -> &[String] {
        &self.history
    }

    /// Every `(key, value)` the peer has reported with `DELIVER key value` so far.
    pub fn delivered(&self) -> &BTreeSet<(String, String)> {
        &self.delivered
    }

    /// Whether `DELIVER key value` has been read from the peer.
    pub fn has_delivered(&self, key: &str, value: &str) -> bool {
        self.delivered.contains(&(key.to_owned(), value.to_owned()))
    }

    /// Sends one command line (the newline is added here).
    ///
    /// # Panics
    /// When the peer's stdin is closed or gone.
    #[track_caller]
    pub fn send(&mut self, line: &str) {
        let Some(stdin) = self.stdin.as_mut() else {
            panic!("peer {}: cannot send {line:?}, stdin is closed", self.name);
        };
        let written = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush());
        if let Err(e) = written {
            let report = self.report();
            panic!("peer {}: cannot send {line:?}: {e}\n{report}", self.name);
        }
    }

    /// Closes the peer's stdin (EOF). The CZMQ peer stops on EOF; our node does not.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next line the peer writes, or `None` if none comes within `timeout` or the peer has
    /// closed its stdout.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.record(&line);
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Reads lines until one satisfies `pred` and returns it. The lines skipped on the way stay
    /// in the history (and their `DELIVER`s in [`delivered`](Self::delivered)).
    ///
    /// # Panics
    /// When no such line comes within `timeout`, with the peer's recent lines in the message.
    #[track_caller]
    pub fn expect(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.record(&line);
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let report = self.report();
                    panic!(
                        "peer {}: no matching line within {timeout:?}\n{report}",
                        self.name
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let report = self.report();
                    panic!(
                        "peer {}: stdout closed before a matching line\n{report}",
                        self.name
                    );
                }
            }
        }
    }

    /// Reads lines until one equals `wanted` exactly.
    #[track_caller]
    pub fn expect_line(&mut self, wanted: &str, timeout: Duration) -> String {
        self.expect(|line| line == wanted, timeout)
    }

    /// Reads lines until the peer has delivered every `(key, value)` in `wanted` (counting those
    /// delivered before the call).
    ///
    /// # Panics
    /// When some are still missing after `timeout`, naming them.
    #[track_caller]
    pub fn wait_for_delivers(&mut self, wanted: &[(&str, &str)], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let missing: Vec<_> = wanted
                .iter()
                .filter(|(key, value)| !self.has_delivered(key, value))
                .collect();
            if missing.is_empty() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.next_line(left).is_none() {
                let report = self.report();
                panic!(
                    "peer {}: still waiting for DELIVER of {missing:?} after {timeout:?}\n{report}",
                    self.name
                );
            }
        }
    }

    /// Asks `STATUS` and returns the number of tuples the peer holds.
    #[track_caller]
    pub fn status(&mut self, timeout: Duration) -> usize {
        self.send("STATUS");
        let line = self.expect(|line| line.starts_with("STATUS "), timeout);
        let count = line.strip_prefix("STATUS ").and_then(|n| n.parse().ok());
        match count {
            Some(count) => count,
            None => {
                let report = self.report();
                panic!("peer {}: bad STATUS reply {line:?}\n{report}", self.name)
            }
        }
    }

    /// Asks `STATUS` again and again until it says `count`.
    ///
    /// # Panics
    /// When it still says something else after `timeout`.
    #[track_caller]
    pub fn wait_status(&mut self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let now = self.status(left.max(Duration::from_secs(1)));
            if now == count {
                return;
            }
            if Instant::now() >= deadline {
                let report = self.report();
                panic!(
                    "peer {}: STATUS still {now}, not {count}, after {timeout:?}\n{report}",
                    self.name
                );
            }
            thread::sleep(STATUS_POLL_INTERVAL);
        }
    }

    /// Asks `PORT` and returns the tcp port of the peer's latest `BIND`.
    ///
    /// # Panics
    /// When the answer is not a usable port (CZMQ says `PORT 0` with no tcp bind and `PORT -1`
    /// after a failed one).
    #[track_caller]
    pub fn port(&mut self) -> u16 {
        self.send("PORT");
        let line = self.expect(|line| line.starts_with("PORT "), LINE_TIMEOUT);
        match line
            .strip_prefix("PORT ")
            .and_then(|n| n.parse::<u16>().ok())
        {
            Some(port) if port != 0 => port,
            _ => {
                let report = self.report();
                panic!(
                    "peer {}: {line:?} names no bound tcp port\n{report}",
                    self.name
                )
            }
        }
    }

    /// Waits for the peer to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    fn record(&mut self, line: &str) {
        let mut words = line.splitn(3, ' ');
        if let (Some("DELIVER"), Some(key), Some(value)) =
            (words.next(), words.next(), words.next())
        {
            self.delivered.insert((key.to_owned(), value.to_owned()));
        }
        self.history.push(line.to_owned());
    }

    /// The tail of the history, the child's state and where its stderr went (with its last
    /// lines), for failure messages.
    pub fn report(&mut self) -> String {
        let skip = self.history.len().saturating_sub(HISTORY_SHOWN);
        let mut report = format!(
            "last {} of {} lines from {}:\n",
            self.history.len() - skip,
            self.history.len(),
            self.name
        );
        for line in self.history.iter().skip(skip) {
            report.push_str("    ");
            report.push_str(line);
            report.push('\n');
        }
        match self.child.try_wait() {
            Ok(Some(status)) => report.push_str(&format!("the process has exited: {status}\n")),
            Ok(None) => report.push_str("the process is still running\n"),
            Err(e) => report.push_str(&format!("the process state is unknown: {e}\n")),
        }
        if let Some(path) = &self.stderr_file {
            report.push_str(&format!("its stderr is in {}", path.display()));
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let shown = &lines[lines.len().saturating_sub(STDERR_SHOWN)..];
            report.push_str(&format!(", its last {} lines:\n", shown.len()));
            for line in shown {
                report.push_str("    ");
                report.push_str(line);
                report.push('\n');
            }
        }
        report
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"$TERM\n").and_then(|()| stdin.flush());
        }
        if self.wait_exit(TERM_GRACE).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where a peer's stderr goes when [`QUIET_ENV`] is set: a fresh file under the target dir.
fn quiet_stderr_file(name: &str) -> Option<PathBuf> {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    if std::env::var_os(QUIET_ENV).is_none_or(|v| v.is_empty()) {
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("peer-logs");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let file = format!("{name}.{}.{sequence}.stderr", std::process::id());
    Some(dir.join(file))
}
