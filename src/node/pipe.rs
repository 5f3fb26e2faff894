//! The CZMQ-style string pipe: text commands in, reply and event lines out, as a CZMQ
//! application talks to its zgossip actor. One line is one command, words separated by
//! whitespace; each reply or event is one line whose first word names it. A bad command gets an
//! `ERROR <why>` line and changes nothing.
//!
//! Each direction queues `LINE_CAPACITY` lines. Commands are run one at a time and their
//! replies queued behind the events before them, so a program that writes many commands must
//! read from another task ([`Pipe::split`]), or both queues fill and each side waits for the
//! other.

use std::fmt;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{CurveKey, Error, Event, Events, EventsError, Member, Node};
use crate::engine::node_name;

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
    lines: mpsc::Sender<Input>,
}

/// One command line as written.
#[derive(Debug)]
enum Input {
    Line(String),
    /// Bytes that are not UTF-8, and why: answered with an `ERROR` in their turn.
    NotUtf8(String),
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
        self.push(Input::Line(line.to_owned())).await
    }

    /// Sends one command line as read from a file, a socket or stdin: bytes that are not UTF-8
    /// get an `ERROR` reply in their turn, and the pipe goes on.
    pub async fn send_bytes(&self, line: &[u8]) -> Result<(), Error> {
        let input = match std::str::from_utf8(line) {
            Ok(text) => Input::Line(text.to_owned()),
            Err(error) => Input::NotUtf8(format!("the line is not UTF-8 ({error})")),
        };
        self.push(input).await
    }

    async fn push(&self, input: Input) -> Result<(), Error> {
        self.lines.send(input).await.map_err(|_| Error::Stopped)
    }
}

impl PipeReader {
    /// The next reply or event line; `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<String> {
        self.lines.recv().await
    }

    /// The next line if one is waiting: lets a printer write a burst of lines before it
    /// flushes.
    pub fn try_recv(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }
}

/// How a pipe writes its replies and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LineFormat {
    /// Words separated by single spaces, first word the name: `DELIVER key value`.
    #[default]
    Words,
    /// One JSON object per line: `{"event":"deliver","key":"...","value":"..."}`, replies as
    /// `{"reply":"PORT","args":["5670"]}`, errors as `{"error":"..."}`. With the `json` feature.
    #[cfg(feature = "json")]
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
    async fn run(mut self, mut commands: mpsc::Receiver<Input>) {
        let mut writer_open = true;
        loop {
            tokio::select! {
                biased;
                input = commands.recv(), if writer_open => match input {
                    Some(input) => {
                        if let Flow::Stop = self.execute(input).await {
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
    async fn execute(&mut self, input: Input) -> Flow {
        let result = match input {
            Input::Line(line) => run(&self.node, &line).await,
            Input::NotUtf8(why) => Err(CommandError::NotUtf8(why)),
        };
        let (reply, flow) = match result {
            Ok(Reply::Line(verb, args)) => (vec![self.reply_line(verb, &args)], Flow::Continue),
            Ok(Reply::Lines(lines)) => {
                let lines = lines.iter().map(|(verb, args)| self.reply_line(verb, args));
                (lines.collect(), Flow::Continue)
            }
            Ok(Reply::None) => (Vec::new(), Flow::Continue),
            // The node is gone: the pipe ends, after the events the node sent before it went,
            // rather than refuse every queued command.
            Ok(Reply::Stopped) | Err(CommandError::Node(Error::Stopped)) => {
                (Vec::new(), Flow::Stop)
            }
            Err(error) => {
                let line = match self.format {
                    LineFormat::Words => format!("ERROR {error}"),
                    #[cfg(feature = "json")]
                    LineFormat::Json => {
                        serde_json::json!({ "error": error.to_string() }).to_string()
                    }
                };
                (vec![line], Flow::Continue)
            }
        };
        while let Some(event) = self.events.try_recv() {
            let Some(line) = self.event_line(event) else {
                break;
            };
            if self.output.send(line).await.is_err() {
                return Flow::Stop;
            }
        }
        for line in reply {
            if self.output.send(line).await.is_err() {
                return Flow::Stop;
            }
        }
        flow
    }
}

impl Worker {
    /// An event (or a lag) as a line; `None` once the node is gone.
    fn event_line(&self, event: Result<Event, EventsError>) -> Option<String> {
        #[cfg(feature = "json")]
        if self.format == LineFormat::Json {
            return match event {
                Ok(event) => Some(event_json(&event).to_string()),
                Err(EventsError::Lagged(missed)) => {
                    Some(serde_json::json!({ "event": "lagged", "missed": missed }).to_string())
                }
                Err(EventsError::Closed) => None,
            };
        }
        match event {
            Ok(event) => Some(event.to_string()),
            Err(EventsError::Lagged(missed)) => Some(format!("LAGGED {missed}")),
            Err(EventsError::Closed) => None,
        }
    }

    /// A reply line in this pipe's format. Each argument stays whole in JSON, spaces and all.
    fn reply_line(&self, verb: &str, args: &[String]) -> String {
        match self.format {
            LineFormat::Words => {
                let mut line = verb.to_owned();
                for arg in args {
                    line.push(' ');
                    line.push_str(arg);
                }
                line
            }
            #[cfg(feature = "json")]
            LineFormat::Json => serde_json::json!({ "reply": verb, "args": args }).to_string(),
        }
    }
}

/// An event as a JSON object: `event` names it, the other fields are its parts. With the `json`
/// feature.
#[cfg(feature = "json")]
pub fn event_json(event: &Event) -> serde_json::Value {
    match event {
        Event::Deliver { key, value } => {
            serde_json::json!({ "event": "deliver", "key": &**key, "value": &**value })
        }
        Event::Change { key, value } => {
            serde_json::json!({ "event": "change", "key": &**key, "value": &**value })
        }
        Event::Remove { key } => serde_json::json!({ "event": "remove", "key": &**key }),
        Event::Expire { key, reason } => match reason.word() {
            Some(reason) => {
                serde_json::json!({ "event": "expire", "key": &**key, "reason": reason })
            }
            None => serde_json::json!({ "event": "expire", "key": &**key }),
        },
        Event::Member {
            id,
            name,
            state,
            reason,
        } => serde_json::json!({
            "event": "member",
            "id": node_name(*id),
            "name": name,
            "state": state.name(),
            "reason": reason
        }),
        Event::Peer {
            peer,
            state,
            reason,
        } => {
            serde_json::json!({ "event": "peer", "peer": peer, "state": state.name(), "reason": reason })
        }
    }
}

/// An event as its pipe line, the first word naming it: `DELIVER key value`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Deliver { key, value } => write!(f, "DELIVER {key} {value}"),
            Event::Change { key, value } => write!(f, "CHANGE {key} {value}"),
            Event::Remove { key } => write!(f, "REMOVE {key}"),
            Event::Expire { key, reason } => match reason.word() {
                Some(reason) => write!(f, "EXPIRE {key} {reason}"),
                None => write!(f, "EXPIRE {key}"),
            },
            Event::Member {
                id,
                name,
                state,
                reason,
            } => {
                let name = if name.is_empty() { "-" } else { name };
                write!(
                    f,
                    "MEMBER {} {name} {} {reason}",
                    node_name(*id),
                    state.name()
                )
            }
            Event::Peer {
                peer,
                state,
                reason,
            } => write!(f, "PEER {peer} {state} {reason}"),
        }
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
    /// A reply: its first word and its arguments (a value or service may hold spaces).
    Line(&'static str, Vec<String>),
    /// A reply of several lines, in order.
    Lines(Vec<(&'static str, Vec<String>)>),
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
    #[error("{0}")]
    NotUtf8(String),
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
        ("PORT", []) => Ok(Reply::Line("PORT", vec![node.port().await?.to_string()])),
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
        ("LOOKUP", [_, ..]) => {
            // The service is the rest of the line, as PUBLISH's value is.
            let service = rest.trim_end();
            let mut args = vec![service.to_owned()];
            args.extend(node.lookup(service).await?);
            Ok(Reply::Line("LOOKUP", args))
        }
        ("LOOKUP", _) => Err(CommandError::Usage("LOOKUP service")),
        ("GET", [key]) => Ok(match node.get(key).await? {
            Some(value) => Reply::Line("VALUE", vec![(*key).to_owned(), value]),
            None => Reply::Line("NOVALUE", vec![(*key).to_owned()]),
        }),
        ("GET", _) => Err(CommandError::Usage("GET key")),
        ("ANNOUNCE", _) => Err(CommandError::Usage("ANNOUNCE endpoint service")),
        ("MEMBERS", []) => {
            let members = node.members().await?;
            let count = members.len().to_string();
            let mut lines: Vec<_> = members
                .iter()
                .map(|m| ("MEMBERS", member_words(m)))
                .collect();
            lines.push(("MEMBERS", vec![count]));
            Ok(Reply::Lines(lines))
        }
        ("STATUS", []) => Ok(Reply::Line(
            "STATUS",
            vec![node.status().await?.tuples.to_string()],
        )),
        ("STATUS", ["detail"]) => {
            let detail = node.status().await?.detail();
            Ok(Reply::Line(
                "STATUS",
                detail.split(' ').map(str::to_owned).collect(),
            ))
        }
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

/// A member as the words of its `MEMBERS` line: id, name, state, incarnation, endpoints and
/// tags (comma-separated; `-` for none).
pub(crate) fn member_words(member: &Member) -> Vec<String> {
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(",")
        }
    };
    let name = if member.name.is_empty() {
        "-".to_owned()
    } else {
        member.name.clone()
    };
    vec![
        node_name(member.id),
        name,
        member.state.name().to_owned(),
        member.incarnation.to_string(),
        list(&member.endpoints),
        list(&member.tags),
    ]
}

fn is_known(verb: &str) -> bool {
    matches!(verb, "PORT" | "STATUS" | "VERBOSE" | "MEMBERS" | "$TERM")
}

fn usage(verb: &str) -> &'static str {
    match verb {
        "PORT" => "PORT",
        "STATUS" => "STATUS [detail]",
        "VERBOSE" => "VERBOSE",
        "MEMBERS" => "MEMBERS",
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

    #[tokio::test]
    async fn bytes_that_are_not_utf8_get_an_error_in_their_turn() {
        let node = Node::spawn(super::super::Config::default()).unwrap();
        let mut pipe = node.pipe().await.unwrap();
        pipe.writer
            .send_bytes(b"PUBLISH k caf\xe9\n")
            .await
            .unwrap();
        pipe.writer.send_bytes(b"STATUS\n").await.unwrap();
        let error = pipe.recv().await.unwrap();
        assert!(error.starts_with("ERROR the line is not UTF-8"), "{error}");
        assert_eq!(pipe.recv().await.as_deref(), Some("STATUS 0"));
    }

    #[test]
    fn first_word_keeps_the_rest_of_the_line() {
        assert_eq!(first_word("k  orders service"), ("k", "orders service"));
        assert_eq!(first_word("STATUS"), ("STATUS", ""));
    }
}
