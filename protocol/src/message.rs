//! Typed, versioned messages carried as JSON payloads inside frames ([`crate::frame`]).
//! `AgentMessage` goes from the guest agent to the VMM, `HostMessage` the other way.
//!
//! Every message is bounded: the encoded payload never exceeds [`frame::MAX_PAYLOAD`];
//! an output line is cut at [`MAX_LINE`] bytes with [`TRUNCATED_MARKER`]; an SDK line over
//! [`MAX_SDK_LINE`] and a file over [`MAX_FILE`] are refused with an error, never cut
//! (a cut JSON object or file would be silently wrong).

use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError};
use crate::spec::ServiceSpec;

/// The message protocol version the agent announces in `Hello`. Version 2 added
/// `Start`, exec, read-file, restart and SDK events.
pub const PROTOCOL_VERSION: u32 = 2;
/// The longest output line forwarded whole; longer lines are truncated.
pub const MAX_LINE: usize = 64 * 1024;
/// Appended to a line that was cut at [`MAX_LINE`].
pub const TRUNCATED_MARKER: &str = "…[truncated]";
/// The longest Antithesis SDK JSON line forwarded; a longer one is dropped with an `Error`.
pub const MAX_SDK_LINE: usize = 256 * 1024;
/// The largest file `ReadFile` returns (base64 makes it 4/3 larger on the wire).
pub const MAX_FILE: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Guest agent → VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// First message after the agent opened the console; the host answers with `Start`.
    Hello {
        protocol_version: u32,
        agent_version: String,
    },
    /// The service's process is running (its pid in the guest).
    Started { pid: u32 },
    /// One line (without its newline) the service wrote.
    Output { stream: Stream, line: String },
    /// The service ended: `code` when it exited, `signal` when a signal killed it.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// One JSON line a program wrote to `$ANTITHESIS_SDK_LOCAL_OUTPUT`, unchanged
    /// (`antithesis_sdk`, `antithesis_assert`, `antithesis_setup`, custom events).
    /// `exec` names the `Exec` request whose process wrote it; absent for the service.
    Sdk {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec: Option<u64>,
        line: String,
    },
    /// One line of an `Exec` command's output.
    ExecOutput {
        id: u64,
        stream: Stream,
        line: String,
    },
    /// An `Exec` command ended; always the last message about `id` after it started.
    ExecExited {
        id: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// An `Exec` command could not start (the only message about `id`).
    ExecError { id: u64, message: String },
    /// The contents of the file a `ReadFile` asked for (base64 on the wire).
    File {
        id: u64,
        #[serde(with = "crate::base64")]
        data: Vec<u8>,
    },
    /// A `ReadFile` failed: missing, not a regular file, or over [`MAX_FILE`].
    FileError { id: u64, message: String },
    /// Something went wrong that is not tied to a request: the service could not start,
    /// a host frame was malformed, an SDK line was too long. The agent keeps running.
    Error { message: String },
}

/// What the host asks the agent to run in the container (`docker exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecRequest {
    /// Chosen by the host; the replies carry it.
    pub id: u64,
    /// `argv[0]` is looked up in the container's `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// `KEY=value` entries added to (and overriding) the service's environment.
    pub env: Vec<String>,
    /// Empty: the service's working directory.
    pub working_dir: String,
    /// `name`, `uid`, `name:group` or `uid:gid`; empty: the service's user.
    pub user: String,
}

/// VMM → guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// Run the service. Refused while it runs (use `RestartService`); after it ended or
    /// failed to start, a new `Start` replaces the spec.
    Start(ServiceSpec),
    /// Run a command in the container and report its output and status.
    Exec(ExecRequest),
    /// Read one regular file of the container (at most [`MAX_FILE`] bytes).
    ReadFile { id: u64, path: String },
    /// Kill the service (SIGKILL to its process group), report its `Exited`, and start
    /// it again with the same spec; starts it if it is not running.
    RestartService,
    /// Move the guest's wall clock (CLOCK_REALTIME) by `delta_ns`, forwards or back:
    /// the World's clock-step fault. Monotonic clocks are not touched.
    StepClock { delta_ns: i64 },
    /// Stop the service (SIGKILL) and power the machine off.
    PowerOff,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(
        "message payload of {len} bytes is over the {}-byte limit",
        frame::MAX_PAYLOAD
    )]
    TooLarge { len: usize },
    #[error("malformed message payload: {0}")]
    Malformed(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// `bytes` as a line for `Output`: lossy UTF-8, cut at [`MAX_LINE`] on a char boundary.
pub fn bounded_line(bytes: &[u8]) -> String {
    let cut = bytes.len() > MAX_LINE;
    let mut line = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LINE)]).into_owned();
    if cut {
        line.push_str(TRUNCATED_MARKER);
    }
    line
}

fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, MessageError> {
    let payload =
        serde_json::to_vec(message).map_err(|e| MessageError::Malformed(e.to_string()))?;
    if payload.len() > frame::MAX_PAYLOAD {
        return Err(MessageError::TooLarge { len: payload.len() });
    }
    Ok(frame::encode(&payload)?)
}

fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, MessageError> {
    if payload.len() > frame::MAX_PAYLOAD {
        return Err(MessageError::TooLarge { len: payload.len() });
    }
    serde_json::from_slice(payload).map_err(|e| MessageError::Malformed(e.to_string()))
}

/// One frame carrying `message`.
pub fn encode_agent(message: &AgentMessage) -> Result<Vec<u8>, MessageError> {
    encode(message)
}

/// The agent message in a frame payload (as returned by [`frame::Decoder`]).
pub fn decode_agent(payload: &[u8]) -> Result<AgentMessage, MessageError> {
    decode(payload)
}

/// One frame carrying `message`.
pub fn encode_host(message: &HostMessage) -> Result<Vec<u8>, MessageError> {
    encode(message)
}

/// The host message in a frame payload.
pub fn decode_host(payload: &[u8]) -> Result<HostMessage, MessageError> {
    decode(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::HostEntry;

    fn payload_of(frame_bytes: Vec<u8>) -> Vec<u8> {
        let mut d = frame::Decoder::new();
        d.push(&frame_bytes);
        d.next_frame().unwrap().unwrap()
    }

    #[test]
    fn agent_messages_round_trip() {
        let all = [
            AgentMessage::Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "0.1.0".into(),
            },
            AgentMessage::Started { pid: 7 },
            AgentMessage::Output {
                stream: Stream::Stderr,
                line: "err ünïcode".into(),
            },
            AgentMessage::Exited {
                code: Some(3),
                signal: None,
            },
            AgentMessage::Sdk {
                exec: None,
                line: r#"{"antithesis_assert":{"hit":true}}"#.into(),
            },
            AgentMessage::Sdk {
                exec: Some(4),
                line: "{}".into(),
            },
            AgentMessage::ExecOutput {
                id: 1,
                stream: Stream::Stdout,
                line: "bin".into(),
            },
            AgentMessage::ExecExited {
                id: 1,
                code: Some(0),
                signal: None,
            },
            AgentMessage::ExecError {
                id: 2,
                message: "no".into(),
            },
            AgentMessage::File {
                id: 3,
                data: vec![0, 1, 2, 255, b'\n'],
            },
            AgentMessage::FileError {
                id: 3,
                message: "missing".into(),
            },
            AgentMessage::Error {
                message: "no such file".into(),
            },
        ];
        for m in all {
            let p = payload_of(encode_agent(&m).unwrap());
            assert_eq!(decode_agent(&p).unwrap(), m);
        }
    }

    #[test]
    fn host_messages_round_trip_and_have_stable_json() {
        let spec = ServiceSpec {
            argv: vec!["/bin/sh".into()],
            hosts: vec![HostEntry {
                name: "db".into(),
                ip: "10.0.0.3".into(),
            }],
            ..ServiceSpec::default()
        };
        let all = [
            HostMessage::Start(spec),
            HostMessage::Exec(ExecRequest {
                id: 9,
                argv: vec!["id".into()],
                ..ExecRequest::default()
            }),
            HostMessage::ReadFile {
                id: 1,
                path: "/etc/hosts".into(),
            },
            HostMessage::RestartService,
            HostMessage::StepClock { delta_ns: -5 },
            HostMessage::PowerOff,
        ];
        for m in all {
            let p = payload_of(encode_host(&m).unwrap());
            assert_eq!(decode_host(&p).unwrap(), m);
        }
        let p = payload_of(encode_host(&HostMessage::PowerOff).unwrap());
        assert_eq!(p, br#"{"type":"power_off"}"#);
        let start = br#"{"type":"start","argv":["/x"]}"#;
        assert!(matches!(decode_host(start), Ok(HostMessage::Start(s)) if s.argv == ["/x"]));
        let file = br#"{"type":"file","id":1,"data":"aGk="}"#;
        assert_eq!(
            decode_agent(file).unwrap(),
            AgentMessage::File {
                id: 1,
                data: b"hi".to_vec()
            }
        );
    }

    #[test]
    fn garbage_payloads_are_errors() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"type":"reboot"}"#,
            br#"{"type":"exec","id":"x"}"#,
            br#"{"type":"file","id":1,"data":"!!"}"#,
            b"\xff\xfe",
        ] {
            assert!(matches!(decode_agent(bad), Err(MessageError::Malformed(_))));
            assert!(matches!(decode_host(bad), Err(MessageError::Malformed(_))));
        }
    }

    #[test]
    fn oversized_messages_are_refused_and_lines_truncated() {
        let huge = AgentMessage::Error {
            message: "x".repeat(frame::MAX_PAYLOAD),
        };
        assert!(matches!(
            encode_agent(&huge),
            Err(MessageError::TooLarge { .. })
        ));
        let huge = HostMessage::ReadFile {
            id: 0,
            path: "x".repeat(frame::MAX_PAYLOAD),
        };
        assert!(matches!(
            encode_host(&huge),
            Err(MessageError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_agent(&vec![b' '; frame::MAX_PAYLOAD + 1]),
            Err(MessageError::TooLarge { .. })
        ));
        let line = bounded_line(&vec![b'a'; MAX_LINE + 10]);
        assert!(line.ends_with(TRUNCATED_MARKER));
        assert_eq!(line.len(), MAX_LINE + TRUNCATED_MARKER.len());
        assert_eq!(bounded_line(b"short"), "short");
        // A truncated line, a maximal SDK line and a maximal file always fit a frame.
        let m = AgentMessage::Output {
            stream: Stream::Stdout,
            line,
        };
        assert!(encode_agent(&m).is_ok());
        let m = AgentMessage::Sdk {
            exec: Some(u64::MAX),
            line: "\"".repeat(MAX_SDK_LINE),
        };
        assert!(encode_agent(&m).is_ok());
        let m = AgentMessage::File {
            id: u64::MAX,
            data: vec![0xff; MAX_FILE],
        };
        assert!(encode_agent(&m).is_ok());
    }
}
