//! Acting on a session from outside its runner, as the notebook does at a moment: run
//! a command in a container ([`Session::exec`]) or read a file from one
//! ([`Session::read_file`]). The request goes to the node's agent like the runner's
//! own, the session steps until the agent answers (or a virtual-time limit passes),
//! and the caller's observer sees every event on the way, so the steps taken are part
//! of the session's timeline. Deterministic like everything else: the same session,
//! the same request, the same answer.

use detvm_protocol::message::{AgentMessage, ExecRequest, HostMessage, Stream};
use serde::{Deserialize, Serialize};
use vmm::world::EventKind;

use super::session::Session;
use super::Ending;
use crate::observer::Observer;
use crate::store::StoredEvent;

/// What a command run with [`Session::exec`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub node: String,
    pub argv: Vec<String>,
    /// Output lines in the order the agent sent them.
    pub output: Vec<OutputLine>,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Why it could not start (the agent's `ExecError`), or why the wait ended early.
    pub error: Option<String>,
    /// It was still running when the limit passed.
    pub timed_out: bool,
    pub started_ns: u64,
    pub ended_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    pub vtime_ns: u64,
    pub stream: String,
    pub line: String,
}

/// The agent's answer for one request id, if this event is one.
fn reply(event: &StoredEvent, id: u64) -> Option<AgentMessage> {
    let kind: EventKind = serde_json::from_value(event.body.clone()).ok()?;
    let EventKind::Agent { message } = kind else {
        return None;
    };
    let theirs = match &message {
        AgentMessage::ExecOutput { id, .. }
        | AgentMessage::ExecExited { id, .. }
        | AgentMessage::ExecError { id, .. }
        | AgentMessage::File { id, .. }
        | AgentMessage::FileError { id, .. } => *id,
        _ => return None,
    };
    (theirs == id).then_some(message)
}

/// Passes events on to the caller's observer and keeps the replies to one request.
struct Replies<'a> {
    node: String,
    id: u64,
    found: Vec<(u64, AgentMessage)>,
    outer: &'a mut dyn Observer,
}

impl Observer for Replies<'_> {
    fn events(&mut self, batch: &[StoredEvent]) -> Result<(), String> {
        for e in batch.iter().filter(|e| e.node == self.node) {
            if let Some(m) = reply(e, self.id) {
                self.found.push((e.vtime_ns, m));
            }
        }
        self.outer.events(batch)
    }
    fn progress(&mut self, vtime_ns: u64, phase: &str) {
        self.outer.progress(vtime_ns, phase)
    }
}

/// The agent's answers to one request (each with its virtual time), and how the run
/// ended if it ended while waiting.
type Answers = (Vec<(u64, AgentMessage)>, Option<Ending>);

fn is_final(m: &AgentMessage) -> bool {
    matches!(
        m,
        AgentMessage::ExecExited { .. }
            | AgentMessage::ExecError { .. }
            | AgentMessage::File { .. }
            | AgentMessage::FileError { .. }
    )
}

impl Session {
    /// Sends `message` (built with the fresh request id it is given) to `node` and steps
    /// until the agent's final answer or until `limit_ns` of virtual time passed.
    /// Returns the answers and whether the final one came.
    fn request(
        &mut self,
        node: &str,
        message: impl FnOnce(u64) -> HostMessage,
        limit_ns: u64,
        observer: &mut dyn Observer,
    ) -> Result<Answers, String> {
        if !self.world().node_names().iter().any(|n| n == node) {
            return Err(format!(
                "no node `{node}` (the world has: {})",
                self.world().node_names().join(", ")
            ));
        }
        let id = self.next_request_id();
        self.world_mut()
            .send(node, &message(id))
            .map_err(|e| e.to_string())?;
        let deadline = self.now().saturating_add(limit_ns);
        let mut replies = Replies {
            node: node.to_string(),
            id,
            found: Vec::new(),
            outer: observer,
        };
        let mut ending = None;
        while self.now() < deadline && !replies.found.iter().any(|(_, m)| is_final(m)) {
            if let Some(end) = self.step(&mut replies)? {
                ending = Some(end);
                break;
            }
        }
        Ok((replies.found, ending))
    }

    /// Runs `argv` in `node`'s container (`docker exec`) and steps the session until the
    /// command ends or `limit_ns` of virtual time passed. Other work goes on meanwhile:
    /// services, test commands and faults continue as they would.
    pub fn exec(
        &mut self,
        node: &str,
        argv: &[String],
        limit_ns: u64,
        observer: &mut dyn Observer,
    ) -> Result<ExecResult, String> {
        if argv.is_empty() {
            return Err("an exec needs a command".to_string());
        }
        let started_ns = self.now();
        let request = |id| {
            HostMessage::Exec(ExecRequest {
                id,
                argv: argv.to_vec(),
                ..ExecRequest::default()
            })
        };
        let (replies, ending) = self.request(node, request, limit_ns, observer)?;
        let mut result = ExecResult {
            node: node.to_string(),
            argv: argv.to_vec(),
            output: Vec::new(),
            code: None,
            signal: None,
            error: None,
            timed_out: true,
            started_ns,
            ended_ns: self.now(),
        };
        for (vtime_ns, message) in replies {
            match message {
                AgentMessage::ExecOutput { stream, line, .. } => result.output.push(OutputLine {
                    vtime_ns,
                    stream: match stream {
                        Stream::Stdout => "stdout",
                        Stream::Stderr => "stderr",
                    }
                    .to_string(),
                    line,
                }),
                AgentMessage::ExecExited { code, signal, .. } => {
                    result.code = code;
                    result.signal = signal;
                    result.timed_out = false;
                    result.ended_ns = vtime_ns;
                }
                AgentMessage::ExecError { message, .. } => {
                    result.error = Some(message);
                    result.timed_out = false;
                    result.ended_ns = vtime_ns;
                }
                _ => {}
            }
        }
        if result.timed_out {
            result.error = Some(match ending {
                Some(end) => format!("the run ended before the command did: {end:?}"),
                None => format!(
                    "still running after {} of virtual time",
                    crate::moment::format_vtime(limit_ns)
                ),
            });
        }
        Ok(result)
    }

    /// Reads one regular file from `node`'s container (at most the protocol's
    /// `MAX_FILE` bytes), stepping the session until the agent answers or `limit_ns`
    /// of virtual time passed.
    pub fn read_file(
        &mut self,
        node: &str,
        path: &str,
        limit_ns: u64,
        observer: &mut dyn Observer,
    ) -> Result<Vec<u8>, String> {
        let request = |id| HostMessage::ReadFile {
            id,
            path: path.to_string(),
        };
        let (replies, ending) = self.request(node, request, limit_ns, observer)?;
        for (_, message) in replies {
            match message {
                AgentMessage::File { data, .. } => return Ok(data),
                AgentMessage::FileError { message, .. } => {
                    return Err(format!("{node}:{path}: {message}"))
                }
                _ => {}
            }
        }
        Err(match ending {
            Some(end) => format!("{node}:{path}: the run ended before the agent answered: {end:?}"),
            None => format!(
                "{node}:{path}: no answer within {} of virtual time",
                crate::moment::format_vtime(limit_ns)
            ),
        })
    }
}
