//! The node under test of `zgossip bench load`: a `zgossip node` child process driven through
//! its pipe (stdin commands, stdout replies), or a node in this process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;

use super::{CHILD_WAIT, LoadArgs};
use crate::bench::Process;
use zgossip::Node;

/// The node under test.
pub(super) enum Server {
    /// A `zgossip node` child process, driven through its pipe on stdin and stdout.
    Child(ChildServer),
    /// A node in this process.
    InProcess(Node),
}

impl Server {
    /// Starts the node under test listening on a free loopback port; returns it and its
    /// endpoint.
    pub(super) async fn start(args: &LoadArgs) -> Result<(Server, String)> {
        if args.in_process {
            let node = Node::spawn(args.config("under-test"))?;
            let endpoint = node.bind("tcp://127.0.0.1:*").await?;
            return Ok((Server::InProcess(node), endpoint));
        }
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe().context("finding this executable")?,
        };
        let mut child = ChildServer::start(&bin, args.server_timeout)?;
        let port = child.ask("PORT").await?;
        Ok((Server::Child(child), format!("tcp://127.0.0.1:{port}")))
    }

    pub(super) fn process(&self) -> Process {
        match self {
            Server::Child(child) => Process::Pid(child.child.id()),
            Server::InProcess(_) => Process::Current,
        }
    }

    /// Its `STATUS detail` figures by name.
    async fn detail(&mut self) -> Result<HashMap<String, u64>> {
        let line = match self {
            Server::Child(child) => child.ask("STATUS detail").await?,
            Server::InProcess(node) => node.status().await?.detail(),
        };
        Ok(line
            .split_whitespace()
            .filter_map(|field| {
                let (name, value) = field.split_once('=')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// [`Server::detail`], or `None` (said on stderr) when it does not answer: an overloaded
    /// node's pipe lags behind its events.
    pub(super) async fn figures(&mut self) -> Option<HashMap<String, u64>> {
        self.detail()
            .await
            .inspect_err(|error| eprintln!("load: no figures from the node under test: {error:#}"))
            .ok()
    }

    pub(super) async fn stop(self) -> Result<()> {
        match self {
            Server::Child(child) => child.stop().await,
            Server::InProcess(node) => Ok(node.shutdown().await?),
        }
    }
}

/// `zgossip node` as a child: its stdin takes pipe commands; a thread reads its stdout,
/// passing replies on and dropping events, so the pipe never fills.
pub(super) struct ChildServer {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::UnboundedReceiver<String>,
}

impl ChildServer {
    fn start(bin: &Path, timeout: Option<Duration>) -> Result<Self> {
        let mut command = Command::new(bin);
        command.args([
            "node",
            "--bind",
            "tcp://127.0.0.1:*",
            "--name",
            "under-test",
        ]);
        if let Some(timeout) = timeout {
            command.arg(format!("--timeout={}ms", timeout.as_millis()));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} node", bin.display()))?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => (stdin, stdout),
            _ => bail!("no pipes to the node under test"),
        };
        let (replies_in, replies) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("load-server-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let reply = ["PORT ", "STATUS ", "ERROR "]
                        .iter()
                        .any(|word| line.starts_with(word));
                    if reply && replies_in.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("starting the stdout reader")?;
        Ok(Self {
            child,
            stdin,
            replies,
        })
    }

    /// Sends one command; returns its reply after the reply's first word.
    async fn ask(&mut self, command: &str) -> Result<String> {
        // A reply that came after an earlier ask gave up must not answer this one.
        while self.replies.try_recv().is_ok() {}
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("sending {command} to the node under test"))?;
        let line = tokio::time::timeout(CHILD_WAIT, self.replies.recv())
            .await
            .with_context(|| format!("no answer to {command} within {CHILD_WAIT:?}"))?
            .context("the node under test has exited")?;
        match line.split_once(' ') {
            Some(("ERROR", why)) => bail!("{command}: {why}"),
            Some((_, rest)) => Ok(rest.to_owned()),
            None => bail!("{command}: odd reply {line:?}"),
        }
    }

    async fn stop(mut self) -> Result<()> {
        // Dropping self kills the child if it is still running after this.
        writeln!(self.stdin, "$TERM").context("stopping the node under test")?;
        let deadline = Instant::now() + CHILD_WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the node under test exited with {status}");
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("the node under test did not stop within {CHILD_WAIT:?}")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
