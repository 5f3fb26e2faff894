//! The CZMQ-style string pipe: text commands in, reply and event lines out, as a CZMQ
//! application talks to its zgossip actor. One line is one command, words separated by
//! whitespace; each reply or event is one line whose first word names it. A bad command gets an
//! `ERROR <why>` line and changes nothing.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{CurveKey, Error, Event, Events, EventsError, Node};

/// Lines queued each way before the other side waits.
const LINE_CAPACITY: usize = 1024;

/// A pipe on a node: write command lines, read reply and event lines.
#[derive(Debug)]
pub struct Pipe {
    writer: PipeWriter,
    reader: PipeReader,
}

/// The command half of a [`Pipe`].
#[derive(Debug, Clone)]
pub struct PipeWriter {
    lines: mpsc::Sender<String>,
}

/// The reply-and-event half of a [`Pipe`].
#[derive(Debug)]
pub struct PipeReader {
    lines: mpsc::Receiver<String>,
}

impl Pipe {
    pub(super) async fn open(node: Node, format: LineFormat) -> Result<Pipe, Error> {
        let events = node.events().await?;
        let (commands, command_rx) = mpsc::channel(LINE_CAPACITY);
        let (output, lines) = mpsc::channel(LINE_CAPACITY);
        let worker = Worker {
            node,
            events,
            output,
            format,
        };
        tokio::spawn(worker.run(command_rx));
        Ok(Pipe {
            writer: PipeWriter { lines: commands },
            reader: PipeReader { lines },
        })
    }

    /// Sends one command line.
    pub async fn send(&self, line: &str) -> Result<(), Error> {
        self.writer.send(line).await
    }

    /// The next reply or event line; `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<String> {
        self.reader.recv().await
    }

    /// The two halves, to write and read from different places.
    pub fn split(self) -> (PipeWriter, PipeReader) {
        (self.writer, self.reader)
    }
}

impl PipeWriter {
    /// Sends one command line.
    pub async fn send(&self, line: &str) -> Result<(), Error> {
        self.lines
            .send(line.to_owned())
            .await
            .map_err(|_| Error::Stopped)
    }
}

impl PipeReader {
    /// The next reply or event line; `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<String> {
        self.lines.recv().await
    }
}

/// How a pipe writes its replies and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineFormat {
    /// Words separated by single spaces, first word the name: `DELIVER key value`.
    #[default]
    Words,
    /// One JSON object per line: `{"event":"deliver","key":"...","value":"..."}`, replies as
    /// `{"reply":"PORT","args":["5670"]}`, errors as `{"error":"..."}`.
    Json,
}

/// The task behind a pipe: runs commands and turns events into lines.
struct Worker {
    node: Node,
    events: Events,
    output: mpsc::Sender<String>,
    format: LineFormat,
}

/// Whether the pipe goes on.
enum Flow {
    Continue,
    Stop,
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::Receiver<String>) {
        let mut writer_open = true;
        loop {
            tokio::select! {
                biased;
                line = commands.recv(), if writer_open => match line {
                    Some(line) => {
                        if let Flow::Stop = self.execute(&line).await {
                            return;
                        }
                    }
                    // Nobody writes any more; keep reporting events.
                    None => writer_open = false,
                },
                event = self.events.recv() => {
                    let Some(line) = self.event_line(event) else { return };
                    if self.output.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Runs one command line and writes its reply, after any events that came before it.
    async fn execute(&mut self, line: &str) -> Flow {
        let reply = match run(&self.node, line).await {
            Ok(Reply::Line(reply)) => Some(self.reply_line(&reply)),
            Ok(Reply::None) => None,
            Ok(Reply::Stopped) => return Flow::Stop,
            Err(error) => Some(match self.format {
                LineFormat::Words => format!("ERROR {error}"),
                LineFormat::Json => serde_json::json!({ "error": error.to_string() }).to_string(),
            }),
        };
        while let Some(event) = self.events.try_recv() {
            let Some(line) = self.event_line(event) else {
                break;
            };
            if self.output.send(line).await.is_err() {
                return Flow::Stop;
            }
        }
        if let Some(reply) = reply
            && self.output.send(reply).await.is_err()
        {
            return Flow::Stop;
        }
        Flow::Continue
    }
}

impl Worker {
    /// An event (or a lag) as a line; `None` once the node is gone.
    fn event_line(&self, event: Result<Event, EventsError>) -> Option<String> {
        let json = self.format == LineFormat::Json;
        match event {
            Ok(event) if json => Some(event_json(&event).to_string()),
            Ok(event) => Some(format_event(&event)),
            Err(EventsError::Lagged(missed)) if json => {
                Some(serde_json::json!({ "event": "lagged", "missed": missed }).to_string())
            }
            Err(EventsError::Lagged(missed)) => Some(format!("LAGGED {missed}")),
            Err(EventsError::Closed) => None,
        }
    }

    /// A reply line in this pipe's format.
    fn reply_line(&self, reply: &str) -> String {
        match self.format {
            LineFormat::Words => reply.to_owned(),
            LineFormat::Json => {
                let mut words = reply.split(' ');
                let verb = words.next().unwrap_or_default();
                let args: Vec<&str> = words.collect();
                serde_json::json!({ "reply": verb, "args": args }).to_string()
            }
        }
    }
}

/// An event as a JSON object: `event` names it, the other fields are its parts.
pub fn event_json(event: &Event) -> serde_json::Value {
    match event {
        Event::Deliver { key, value } => {
            serde_json::json!({ "event": "deliver", "key": &**key, "value": &**value })
        }
        Event::Change { key, value } => {
            serde_json::json!({ "event": "change", "key": &**key, "value": &**value })
        }
        Event::Remove { key } => serde_json::json!({ "event": "remove", "key": &**key }),
        Event::Expire { key } => serde_json::json!({ "event": "expire", "key": &**key }),
        Event::Peer {
            peer,
            state,
            reason,
        } => {
            serde_json::json!({ "event": "peer", "peer": peer, "state": state.name(), "reason": reason })
        }
    }
}

/// An event as one pipe line, its first word naming it.
pub fn format_event(event: &Event) -> String {
    match event {
        Event::Deliver { key, value } => format!("DELIVER {key} {value}"),
        Event::Change { key, value } => format!("CHANGE {key} {value}"),
        Event::Remove { key } => format!("REMOVE {key}"),
        Event::Expire { key } => format!("EXPIRE {key}"),
        Event::Peer {
            peer,
            state,
            reason,
        } => format!("PEER {peer} {state} {reason}"),
    }
}

/// Splits `value [lease]`: a last word that reads as a duration with a unit (`2s`, `500ms`) is
/// the lease, the rest is the value.
fn value_and_lease(text: &str) -> (&str, Option<Duration>) {
    let text = text.trim_end();
    if let Some((value, last)) = text.rsplit_once(char::is_whitespace)
        && let Ok(lease) = humantime::parse_duration(last)
    {
        return (value.trim_end(), Some(lease));
    }
    (text, None)
}

enum Reply {
    Line(String),
    None,
    Stopped,
}

/// Why a command line was refused.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("{0}")]
    Node(#[from] Error),
    #[error("unknown command {0}")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
}

/// Splits off the first word and the rest of the line.
fn first_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

async fn run(node: &Node, line: &str) -> Result<Reply, CommandError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (verb, rest) = first_word(line);
    let words: Vec<&str> = rest.split_whitespace().collect();
    let done = |_| Reply::None;
    match (verb, words.as_slice()) {
        ("", _) => Ok(Reply::None),
        ("BIND", [endpoint]) => node
            .bind(endpoint)
            .await
            .map(|_| Reply::None)
            .map_err(Into::into),
        ("BIND", _) => Err(CommandError::Usage("BIND endpoint")),
        ("PORT", []) => Ok(Reply::Line(format!("PORT {}", node.port().await?))),
        ("CONNECT", [endpoint]) => node.connect(endpoint).await.map(done).map_err(Into::into),
        ("CONNECT", [endpoint, server_key]) => {
            let server_key = CurveKey::from_z85(server_key).map_err(Error::from)?;
            node.connect_secure(endpoint, &server_key)
                .await
                .map(done)
                .map_err(Into::into)
        }
        ("CONNECT", _) => Err(CommandError::Usage("CONNECT endpoint [server-public-key]")),
        ("ZAP", ["DOMAIN", domain]) => node
            .set("curve/zap-domain", domain)
            .await
            .map(done)
            .map_err(Into::into),
        ("ZAP", _) => Err(CommandError::Usage("ZAP DOMAIN domain")),
        ("PUBLISH" | "ANNOUNCE", [_, _, ..]) => {
            // The value is the rest of the line, so it may hold spaces; a last word that is a
            // duration is the lease.
            let (key, rest) = first_word(rest);
            let (value, lease) = value_and_lease(rest);
            node.publish_for(key, value, lease)
                .await
                .map(done)
                .map_err(Into::into)
        }
        ("PUBLISH", _) => Err(CommandError::Usage("PUBLISH key value [ttl]")),
        ("UNPUBLISH", [key]) => node.unpublish(key).await.map(done).map_err(Into::into),
        ("UNPUBLISH", _) => Err(CommandError::Usage("UNPUBLISH key")),
        ("LOOKUP", [service]) => {
            let mut line = format!("LOOKUP {service}");
            for endpoint in node.lookup(service).await? {
                line.push(' ');
                line.push_str(&endpoint);
            }
            Ok(Reply::Line(line))
        }
        ("LOOKUP", _) => Err(CommandError::Usage("LOOKUP service")),
        ("GET", [key]) => Ok(Reply::Line(match node.get(key).await? {
            Some(value) => format!("VALUE {key} {value}"),
            None => format!("NOVALUE {key}"),
        })),
        ("GET", _) => Err(CommandError::Usage("GET key")),
        ("ANNOUNCE", _) => Err(CommandError::Usage("ANNOUNCE endpoint service")),
        ("STATUS", []) => Ok(Reply::Line(format!(
            "STATUS {}",
            node.status().await?.tuples
        ))),
        ("STATUS", ["detail"]) => Ok(Reply::Line(format!(
            "STATUS {}",
            node.status().await?.detail()
        ))),
        ("SET", [path, value]) => node.set(path, value).await.map(done).map_err(Into::into),
        ("SET", _) => Err(CommandError::Usage("SET path value")),
        ("VERBOSE", []) => node.verbose(true).await.map(done).map_err(Into::into),
        ("$TERM", []) => {
            node.shutdown().await?;
            Ok(Reply::Stopped)
        }
        (verb, _) if is_known(verb) => Err(CommandError::Usage(usage(verb))),
        (verb, _) => Err(CommandError::Unknown(verb.to_owned())),
    }
}

fn is_known(verb: &str) -> bool {
    matches!(verb, "PORT" | "STATUS" | "VERBOSE" | "$TERM")
}

fn usage(verb: &str) -> &'static str {
    match verb {
        "PORT" => "PORT",
        "STATUS" => "STATUS",
        "VERBOSE" => "VERBOSE",
        _ => "$TERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_word_with_a_unit_is_the_lease() {
        assert_eq!(
            value_and_lease("orders 2s"),
            ("orders", Some(Duration::from_secs(2)))
        );
        assert_eq!(
            value_and_lease("orders service 500ms"),
            ("orders service", Some(Duration::from_millis(500)))
        );
        assert_eq!(value_and_lease("orders 5"), ("orders 5", None));
        assert_eq!(value_and_lease("orders"), ("orders", None));
    }

    #[test]
    fn first_word_keeps_the_rest_of_the_line() {
        assert_eq!(first_word("k  orders service"), ("k", "orders service"));
        assert_eq!(first_word("STATUS"), ("STATUS", ""));
    }
}
