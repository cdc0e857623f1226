//! Typed, versioned messages carried as JSON payloads inside frames ([`crate::frame`]).
//! `AgentMessage` goes from the guest agent to the VMM, `HostMessage` the other way.
//! Every message is bounded: the encoded payload never exceeds [`frame::MAX_PAYLOAD`],
//! and a single output line is cut at [`MAX_LINE`] bytes with [`TRUNCATED_MARKER`].

use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError};

/// The message protocol version the agent announces in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest output line forwarded whole; longer lines are truncated.
pub const MAX_LINE: usize = 64 * 1024;
/// Appended to a line that was cut at [`MAX_LINE`].
pub const TRUNCATED_MARKER: &str = "…[truncated]";

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
    /// First message after the agent opened the console.
    Hello {
        protocol_version: u32,
        agent_version: String,
    },
    /// One line (without its newline) the service wrote.
    Output { stream: Stream, line: String },
    /// The service ended: `code` when it exited, `signal` when a signal killed it.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The agent could not do what it was asked; it powers off after sending this.
    Error { message: String },
}

/// VMM → guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// Stop the service and power the machine off.
    PowerOff,
    /// Move the guest's wall clock (CLOCK_REALTIME) by `delta_ns`, forwards or back:
    /// the World's clock-step fault. Monotonic clocks are not touched.
    StepClock { delta_ns: i64 },
}

#[derive(Debug, thiserror::Error)]
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

    fn payload_of(frame_bytes: Vec<u8>) -> Vec<u8> {
        let mut d = frame::Decoder::new();
        d.push(&frame_bytes);
        d.next_frame().unwrap().unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let all = [
            AgentMessage::Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "0.1.0".into(),
            },
            AgentMessage::Output {
                stream: Stream::Stderr,
                line: "err ünïcode".into(),
            },
            AgentMessage::Exited {
                code: Some(3),
                signal: None,
            },
            AgentMessage::Error {
                message: "no such file".into(),
            },
        ];
        for m in all {
            let p = payload_of(encode_agent(&m).unwrap());
            assert_eq!(decode_agent(&p).unwrap(), m);
        }
        let p = payload_of(encode_host(&HostMessage::PowerOff).unwrap());
        assert_eq!(p, br#"{"type":"power_off"}"#);
        assert_eq!(decode_host(&p).unwrap(), HostMessage::PowerOff);
    }

    #[test]
    fn garbage_payloads_are_errors() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"type":"reboot"}"#,
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
        assert!(matches!(
            decode_agent(&vec![b' '; frame::MAX_PAYLOAD + 1]),
            Err(MessageError::TooLarge { .. })
        ));
        let line = bounded_line(&vec![b'a'; MAX_LINE + 10]);
        assert!(line.ends_with(TRUNCATED_MARKER));
        assert_eq!(line.len(), MAX_LINE + TRUNCATED_MARKER.len());
        assert_eq!(bounded_line(b"short"), "short");
        // A truncated line always fits a frame.
        let m = AgentMessage::Output {
            stream: Stream::Stdout,
            line,
        };
        assert!(encode_agent(&m).is_ok());
    }
}
