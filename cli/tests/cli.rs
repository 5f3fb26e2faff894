//! `zgossip node` driven by another program over stdin/stdout, as the CLI contract says:
//! one command per stdin line, one reply or event per stdout line and nothing else on stdout,
//! EOF on stdin leaves the node running, `$TERM`, SIGTERM and SIGINT stop it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use support::{LINE_TIMEOUT, LinePeer, TCP_ANY, tcp_endpoint};

/// Every line a node may print starts with one of these words.
const LINE_WORDS: [&str; 14] = [
    "PORT", "STATUS", "LOOKUP", "VALUE", "NOVALUE", "ERROR", "DELIVER", "CHANGE", "REMOVE",
    "EXPIRE", "PEER", "LAGGED", "MEMBER", "MEMBERS",
];

fn assert_only_protocol_lines(peer: &LinePeer) {
    for line in peer.history() {
        let word = line.split(' ').next().unwrap_or("");
        assert!(
            LINE_WORDS.contains(&word),
            "{}: unexpected stdout line {line:?}",
            peer.name()
        );
        assert!(
            !line.contains("  ") && !line.ends_with(' '),
            "words separated by single spaces: {line:?}"
        );
    }
}

#[test]
fn two_cli_nodes_exchange_tuples_over_tcp() {
    let mut server = LinePeer::zgossip_named(
        "server",
        &["--bind", TCP_ANY, "--publish", "tcp://10.0.0.1:9000=orders"],
    );
    let port = server.port();
    let mut client = LinePeer::zgossip_named("client", &["--connect", &tcp_endpoint(port)]);
    client.send("ANNOUNCE tcp://10.0.0.2:9000 billing");
    client.send("PUBLISH tcp://10.0.0.3:9000 orders service");
    client.wait_for_delivers(&[("tcp://10.0.0.1:9000", "orders")], LINE_TIMEOUT);
    server.wait_for_delivers(
        &[
            ("tcp://10.0.0.2:9000", "billing"),
            ("tcp://10.0.0.3:9000", "orders service"),
        ],
        LINE_TIMEOUT,
    );
    server.wait_status(3, LINE_TIMEOUT);
    client.wait_status(3, LINE_TIMEOUT);
    assert_only_protocol_lines(&server);
    assert_only_protocol_lines(&client);
}

#[test]
fn bad_commands_get_an_error_line_and_the_node_goes_on() {
    let mut node = LinePeer::zgossip(&[]);
    for (command, says) in [
        ("FROB", "ERROR unknown command FROB"),
        ("PUBLISH lonely", "ERROR usage: PUBLISH key value"),
        ("PUBLISH bad\u{7}key v", "ERROR key"),
        (
            "SET server/timeout soon",
            "ERROR bad setting server/timeout",
        ),
        (
            "SET no/such 1",
            "ERROR bad setting no/such: unknown SET path",
        ),
        (
            "BIND tcp://256.1.1.1:1",
            "ERROR cannot bind tcp://256.1.1.1:1",
        ),
        ("CONNECT nowhere", "ERROR bad endpoint \"nowhere\""),
        ("STATUS foo", "ERROR usage: STATUS [detail]"),
    ] {
        node.send(command);
        let line = node.expect(|l| l.starts_with("ERROR"), LINE_TIMEOUT);
        assert!(line.starts_with(says), "{command:?} answered {line:?}");
    }
    node.send("PUBLISH good value");
    node.wait_status(1, LINE_TIMEOUT);
    assert_only_protocol_lines(&node);
}

#[test]
fn eof_on_stdin_leaves_the_node_serving_until_sigterm() {
    let mut server =
        LinePeer::zgossip_named("server", &["--bind", TCP_ANY, "--publish", "kept=alive"]);
    let port = server.port();
    server.close_stdin();
    // Nothing to read any more, yet the node still serves a newcomer.
    std::thread::sleep(Duration::from_millis(300));
    let mut client = LinePeer::zgossip_named("client", &["--connect", &tcp_endpoint(port)]);
    client.wait_for_delivers(&[("kept", "alive")], LINE_TIMEOUT);
    assert!(
        server.wait_exit(Duration::from_millis(100)).is_none(),
        "still running after EOF"
    );

    server.signal("TERM");
    let status = server
        .wait_exit(LINE_TIMEOUT)
        .expect("SIGTERM stops the node");
    assert!(status.success(), "clean exit, got {status}");
}

#[test]
fn sigint_and_term_command_stop_the_node_cleanly() {
    let mut by_signal = LinePeer::zgossip_named("sigint", &[]);
    by_signal.send("STATUS");
    by_signal.expect_line("STATUS 0", LINE_TIMEOUT);
    by_signal.signal("INT");
    assert!(
        by_signal
            .wait_exit(LINE_TIMEOUT)
            .expect("SIGINT stops it")
            .success()
    );

    let mut by_command = LinePeer::zgossip_named("term", &[]);
    by_command.send("$TERM");
    assert!(
        by_command
            .wait_exit(LINE_TIMEOUT)
            .expect("$TERM stops it")
            .success()
    );
}

#[test]
fn set_takes_milliseconds_and_humantime_durations() {
    let mut node = LinePeer::zgossip(&[]);
    node.send("SET server/timeout 250");
    node.send("SET server/timeout 2s");
    node.send("SET remote/ping-interval 100ms");
    node.send("STATUS");
    node.expect_line("STATUS 0", LINE_TIMEOUT);
    assert!(
        !node.history().iter().any(|l| l.starts_with("ERROR")),
        "{:?}",
        node.history()
    );
}

#[test]
fn bad_flags_fail_before_the_node_starts() {
    let mut node = LinePeer::zgossip(&["--publish", "no-equals-sign"]);
    let status = node.wait_exit(LINE_TIMEOUT).expect("exits");
    assert!(!status.success());
    let mut node = LinePeer::zgossip(&["--bind", "nonsense"]);
    assert!(!node.wait_exit(LINE_TIMEOUT).expect("exits").success());
}

#[test]
fn lookup_get_unpublish_and_leases_on_the_pipe() {
    let mut server = LinePeer::zgossip_named("server", &["--bind", TCP_ANY]);
    let port = server.port();
    let mut client = LinePeer::zgossip_named("client", &["--connect", &tcp_endpoint(port)]);
    client.send("PUBLISH tcp://10.0.0.2:9000 orders");
    client.send("PUBLISH tcp://10.0.0.1:9000 orders 2s");
    client.send("PUBLISH tcp://10.0.0.3:9000 billing");
    server.wait_status(3, LINE_TIMEOUT);

    server.send("LOOKUP orders");
    server.expect_line(
        "LOOKUP orders tcp://10.0.0.1:9000 tcp://10.0.0.2:9000",
        LINE_TIMEOUT,
    );
    server.send("LOOKUP nothing");
    server.expect_line("LOOKUP nothing", LINE_TIMEOUT);
    server.send("GET tcp://10.0.0.3:9000");
    server.expect_line("VALUE tcp://10.0.0.3:9000 billing", LINE_TIMEOUT);
    server.send("GET tcp://10.9.9.9:1");
    server.expect_line("NOVALUE tcp://10.9.9.9:1", LINE_TIMEOUT);

    client.send("UNPUBLISH tcp://10.0.0.3:9000");
    server.expect_line("REMOVE tcp://10.0.0.3:9000", LINE_TIMEOUT);
    client.send("PUBLISH tcp://10.0.0.2:9000 payments");
    server.expect_line("CHANGE tcp://10.0.0.2:9000 payments", LINE_TIMEOUT);
    client.send("UNPUBLISH tcp://10.9.9.9:1");
    client.expect(|l| l.starts_with("ERROR key"), LINE_TIMEOUT);

    // kill -9: the leased tuple expires at the server, the plain one stays.
    client.signal("KILL");
    server.expect_line("EXPIRE tcp://10.0.0.1:9000", LINE_TIMEOUT);
    server.send("GET tcp://10.0.0.2:9000");
    server.expect_line("VALUE tcp://10.0.0.2:9000 payments", LINE_TIMEOUT);
    assert_only_protocol_lines(&server);
}

#[test]
fn sigterm_withdraws_what_the_node_published() {
    let mut server = LinePeer::zgossip_named("server", &["--bind", TCP_ANY]);
    let port = server.port();
    let mut client = LinePeer::zgossip_named(
        "client",
        &["--connect", &tcp_endpoint(port), "--publish", "svc=orders"],
    );
    server.wait_for_delivers(&[("svc", "orders")], LINE_TIMEOUT);
    client.signal("TERM");
    assert!(client.wait_exit(LINE_TIMEOUT).expect("stops").success());
    server.expect_line("REMOVE svc", LINE_TIMEOUT);
    server.expect(
        |l| l.starts_with("PEER ") && l.contains(" left "),
        LINE_TIMEOUT,
    );
}

/// A `zgossip node` whose stdin, stdout and stderr the test handles itself; killed on drop, so
/// a failing test leaves no process behind.
struct RawNode {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The thread writing stdin; it hands stdin back when done, so EOF never stops the node.
    feeder: Option<thread::JoinHandle<Option<ChildStdin>>>,
    stdout: Option<ChildStdout>,
    stderr: Receiver<String>,
}

impl RawNode {
    /// Starts `zgossip node` with `args` and no `ZGOSSIP_LOG`, so its log level is its own.
    fn start(args: &[&str]) -> RawNode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zgossip"))
            .arg("node")
            .args(args)
            .env_remove("ZGOSSIP_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zgossip node");
        let stderr = lines_of(child.stderr.take().unwrap());
        RawNode {
            stdin: child.stdin.take(),
            feeder: None,
            stdout: child.stdout.take(),
            child,
            stderr,
        }
    }

    /// Writes `input` to stdin from a thread of its own, counting the bytes written in
    /// `progress`; the thread stops at the end or when the node stops reading for good.
    fn feed(&mut self, input: Vec<u8>, progress: Arc<AtomicUsize>) {
        let mut stdin = self.stdin.take().unwrap();
        self.feeder = Some(thread::spawn(move || {
            for chunk in input.chunks(4096) {
                stdin.write_all(chunk).ok()?;
                progress.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            Some(stdin)
        }));
    }

    /// Stdout, line by line, read on a thread.
    fn stdout_lines(&mut self) -> Receiver<String> {
        lines_of(self.stdout.take().unwrap())
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for RawNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `stream`, read on a thread (bytes that are not UTF-8 shown lossily).
fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, lines) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            if sender.send(line).is_err() {
                return;
            }
            buf.clear();
        }
    });
    lines
}

/// Whether a stdout line is an event rather than a reply to a command.
fn is_event(line: &str) -> bool {
    [
        "DELIVER ", "CHANGE ", "REMOVE ", "EXPIRE ", "PEER ", "LAGGED ", "MEMBER ",
    ]
    .iter()
    .any(|word| line.starts_with(word))
}

#[test]
fn a_hundred_thousand_commands_written_at_once_are_all_answered_in_order() {
    const PUBLISHES: usize = 100_000;
    let mut input = String::new();
    let mut replies = Vec::new();
    for i in 0..PUBLISHES {
        input.push_str(&format!("PUBLISH k{i} v{i}\n"));
        if i % 1000 == 999 {
            input.push_str(&format!("GET k{i}\nSTATUS\nLOOKUP v{i}\n"));
            replies.push(format!("VALUE k{i} v{i}"));
            replies.push(format!("STATUS {}", i + 1));
            replies.push(format!("LOOKUP v{i} k{i}"));
        }
        if i % 10_000 == 5_000 {
            input.push_str("FROB\n");
            replies.push("ERROR unknown command FROB".to_owned());
        }
    }
    input.push_str("STATUS\n$TERM\n");
    replies.push(format!("STATUS {PUBLISHES}"));

    let mut node = RawNode::start(&[]);
    let lines = node.stdout_lines();
    let started = Instant::now();
    let written = input.lines().count();
    node.feed(input.into_bytes(), Arc::default());
    let (mut got, mut delivered, mut missed) = (Vec::new(), 0, 0);
    let deadline = started + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            // Events after the last reply are the withdrawals of the stop.
            Ok(line) if is_event(&line) && got.len() == replies.len() => {}
            Ok(line) if line.starts_with("DELIVER ") => delivered += 1,
            Ok(line) if line.starts_with("LAGGED ") => {
                missed += line[7..].parse::<usize>().unwrap()
            }
            Ok(line) if is_event(&line) => {}
            Ok(line) => got.push(line),
            // $TERM was read and answered: stdout closed.
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!(
                "stuck after {} of {} replies and {delivered} DELIVERs; last reply {:?}",
                got.len(),
                replies.len(),
                got.last()
            ),
        }
    }
    println!(
        "{} lines in, {} replies and {delivered} DELIVERs out in {:?}",
        written,
        got.len(),
        started.elapsed()
    );
    assert_eq!(got.len(), replies.len(), "every reply, no more");
    for (got, wanted) in got.iter().zip(&replies) {
        assert_eq!(got, wanted, "replies in the order of their commands");
    }
    assert_eq!(
        delivered + missed,
        PUBLISHES,
        "a DELIVER (or a LAGGED count) per publish"
    );
    assert!(
        node.wait_exit(LINE_TIMEOUT)
            .expect("$TERM stops it")
            .success()
    );
}

#[test]
fn sigterm_stops_a_flooded_node_whose_stdout_nobody_reads_and_it_withdraws() {
    let mut server = LinePeer::zgossip_named("server", &["--bind", TCP_ANY]);
    let endpoint = tcp_endpoint(server.port());
    let mut node = RawNode::start(&["--connect", &endpoint, "--publish", "svc=flooded"]);
    server.wait_for_delivers(&[("svc", "flooded")], LINE_TIMEOUT);

    // Far more than every buffer between stdin and stdout holds; stdout is never read.
    let input: String = (0..1_000_000)
        .map(|i| format!("PUBLISH k{i} v\n"))
        .collect();
    let total = input.len();
    let progress = Arc::new(AtomicUsize::new(0));
    node.feed(input.into_bytes(), Arc::clone(&progress));
    // Signal once the writer is held up: every queue on the way is then full.
    let (mut last, mut since) = (0, Instant::now());
    let give_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < give_up && since.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(50));
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    assert!(last < total, "stdin was never held up: stdout must be full");

    let signalled = Instant::now();
    node.signal("TERM");
    let status = node.wait_exit(LINE_TIMEOUT);
    let took = signalled.elapsed();
    println!("{last} bytes of stdin taken; SIGTERM to exit took {took:?}");
    let status = status.expect("SIGTERM stops the node whatever its pipe is doing");
    assert!(status.success(), "a clean stop, got {status}");
    // A graceful stop: the node withdrew what it announced.
    server.expect_line("REMOVE svc", LINE_TIMEOUT);
}

#[test]
fn a_line_that_is_not_utf8_gets_an_error_and_the_pipe_goes_on() {
    let mut node = RawNode::start(&[]);
    let lines = node.stdout_lines();
    node.feed(
        b"PUBLISH k caf\xe9\nSTATUS\nPUBLISH k2 ok\nSTATUS\n".to_vec(),
        Arc::default(),
    );
    let mut got = Vec::new();
    while got.len() < 4 {
        match lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => got.push(line),
            Err(_) => panic!("stuck after {got:?}"),
        }
    }
    assert!(
        got[0].starts_with("ERROR ") && got[0].contains("UTF-8"),
        "{got:?}"
    );
    assert_eq!(got[1..], ["STATUS 0", "DELIVER k2 ok", "STATUS 1"]);
}

#[test]
fn verbose_logs_every_message_on_stderr_without_dash_v() {
    let mut node = RawNode::start(&[]);
    let _stdout = node.stdout_lines();
    let mut stdin = node.stdin.take().unwrap();
    // A node dialling itself: HELLO, PINGs and PONGs to log.
    stdin
        .write_all(b"VERBOSE\nBIND inproc://self\nCONNECT inproc://self\n")
        .unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + LINE_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = node
            .stderr
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no message log on stderr; it said {seen:#?}"));
        if line.contains(" send to=") || line.contains(" recv from=") {
            break;
        }
        seen.push(line);
    }
    drop(stdin);
}

#[test]
fn set_server_animate_logs_messages_too() {
    let mut node = RawNode::start(&[]);
    let _stdout = node.stdout_lines();
    let mut stdin = node.stdin.take().unwrap();
    stdin
        .write_all(b"SET server/animate 1\nBIND inproc://self\nCONNECT inproc://self\n")
        .unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + LINE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = node
            .stderr
            .recv_timeout(left)
            .expect("a message log on stderr");
        if line.contains(" send to=") || line.contains(" recv from=") {
            break;
        }
    }
    drop(stdin);
}

#[test]
fn a_node_reports_its_own_announcements_as_a_pipe_publish_does() {
    let mut node = LinePeer::zgossip(&["--publish", "svc=orders"]);
    node.expect_line("DELIVER svc orders", LINE_TIMEOUT);
    node.send("PUBLISH k v");
    node.expect_line("DELIVER k v", LINE_TIMEOUT);
}

#[test]
fn lookup_takes_the_rest_of_the_line_as_the_service() {
    let mut node = LinePeer::zgossip(&[]);
    node.send("PUBLISH tcp://10.0.0.1:1 orders service");
    node.send("PUBLISH tcp://10.0.0.2:1 orders");
    node.send("LOOKUP orders service");
    node.expect_line("LOOKUP orders service tcp://10.0.0.1:1", LINE_TIMEOUT);
    node.send("LOOKUP orders");
    node.expect_line("LOOKUP orders tcp://10.0.0.2:1", LINE_TIMEOUT);
    assert_only_protocol_lines(&node);
}

#[test]
fn json_replies_keep_values_and_services_with_spaces_whole() {
    let mut node = LinePeer::zgossip(&["--json"]);
    node.send("PUBLISH tcp://10.0.0.1:1 orders service");
    node.send("LOOKUP orders service");
    node.send("GET tcp://10.0.0.1:1");
    let lookup: serde_json::Value =
        serde_json::from_str(&node.expect(|l| l.contains("\"LOOKUP\""), LINE_TIMEOUT)).unwrap();
    assert_eq!(
        lookup["args"],
        serde_json::json!(["orders service", "tcp://10.0.0.1:1"])
    );
    let value: serde_json::Value =
        serde_json::from_str(&node.expect(|l| l.contains("\"VALUE\""), LINE_TIMEOUT)).unwrap();
    assert_eq!(
        value["args"],
        serde_json::json!(["tcp://10.0.0.1:1", "orders service"])
    );
}
