//! Starting this crate's own `zgossip node` binary as a [`LinePeer`], and running its one-shot
//! commands.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::LinePeer;

/// How long [`run`] lets a one-shot command take before killing it: the client commands give
/// up on a silent network after their `--timeout` (5 s by default).
const RUN_LIMIT: Duration = Duration::from_secs(30);

impl LinePeer {
    /// Starts `zgossip node` with `args` (e.g. `["--bind", "tcp://127.0.0.1:*"]`), named
    /// `zgossip` in failure messages.
    pub fn zgossip(args: &[&str]) -> LinePeer {
        LinePeer::zgossip_named("zgossip", args)
    }

    /// Starts `zgossip node` with `args`, named `name` in failure messages.
    pub fn zgossip_named(name: &str, args: &[&str]) -> LinePeer {
        let mut all = vec!["node"];
        all.extend_from_slice(args);
        LinePeer::spawn(name, Path::new(env!("CARGO_BIN_EXE_zgossip")), &all)
    }
}

/// Runs `zgossip args` (e.g. `["members", "--connect", ep]`) to its end, stdin closed, and
/// returns what it printed and its exit status.
///
/// # Panics
/// When it cannot start, or is still running after 30 s (it is killed first).
pub fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zgossip"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run zgossip {args:?}: {e}"));
    let read_all = |stream: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read_all(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = read_all(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("zgossip {args:?} still running after {RUN_LIMIT:?}; killed it");
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cannot wait for zgossip {args:?}: {e}; killed it");
            }
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
