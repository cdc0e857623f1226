//! The host's end of the agent channel, free of I/O: feed it the bytes the console
//! device produced, get the agent's messages out; encode host messages to push in.
//! Garbage never panics: it becomes an error item and the stream resynchronises at the
//! next frame.

use crate::frame::Decoder;
use crate::message::{decode_agent, encode_host, AgentMessage, HostMessage, MessageError};

#[derive(Debug, Default)]
pub struct AgentChannel {
    decoder: Decoder,
}

impl AgentChannel {
    pub fn new() -> Self {
        AgentChannel::default()
    }

    /// Adds console output; returns every message (or error) now complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<AgentMessage, MessageError>> {
        self.decoder.push(bytes);
        let mut out = Vec::new();
        while let Some(frame) = self.decoder.next_frame() {
            out.push(
                frame
                    .map_err(MessageError::from)
                    .and_then(|p| decode_agent(&p)),
            );
        }
        out
    }

    /// The bytes that carry `message` to the agent (refused if over the frame limit).
    pub fn encode(message: &HostMessage) -> Result<Vec<u8>, MessageError> {
        encode_host(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{self, FrameError, MAX_PAYLOAD};
    use crate::message::{encode_agent, ExecRequest};

    fn error() -> AgentMessage {
        AgentMessage::Error {
            message: "e".into(),
        }
    }

    #[test]
    fn messages_come_out_whatever_the_chunking() {
        let mut bytes = encode_agent(&AgentMessage::Started { pid: 1 }).unwrap();
        bytes.extend(encode_agent(&error()).unwrap());
        for piece in [1, 5, 1000] {
            let mut ch = AgentChannel::new();
            let got: Vec<_> = bytes
                .chunks(piece)
                .flat_map(|c| ch.push(c))
                .map(Result::unwrap)
                .collect();
            assert_eq!(got, vec![AgentMessage::Started { pid: 1 }, error()]);
        }
    }

    #[test]
    fn garbage_becomes_errors_and_the_stream_recovers() {
        let mut ch = AgentChannel::new();
        let mut bytes = b"\x00garbage from a confused guest\xff".to_vec();
        bytes.extend(frame::encode(b"{not json").unwrap());
        bytes.extend(frame::encode(br#"{"type":"nope"}"#).unwrap());
        bytes.extend(b"dv\x01\x00\xff\xff\xff\x7f"); // a header claiming 2 GiB
        bytes.extend(encode_agent(&error()).unwrap());
        let got = ch.push(&bytes);
        assert_eq!(got.last(), Some(&Ok(error())));
        let errors: Vec<_> = got.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(errors
            .iter()
            .any(|e| matches!(e, MessageError::Frame(FrameError::BadMagic { .. }))));
        assert!(errors
            .iter()
            .any(|e| matches!(e, MessageError::Frame(FrameError::TooLarge { .. }))));
        assert_eq!(
            errors
                .iter()
                .filter(|e| matches!(e, MessageError::Malformed(_)))
                .count(),
            2
        );
        // Random bytes never panic.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _ = ch.push(&x.to_le_bytes());
        }
    }

    #[test]
    fn oversized_host_messages_are_refused() {
        let big = HostMessage::Exec(ExecRequest {
            argv: vec!["x".repeat(MAX_PAYLOAD)],
            ..ExecRequest::default()
        });
        assert!(matches!(
            AgentChannel::encode(&big),
            Err(MessageError::TooLarge { .. })
        ));
        assert!(AgentChannel::encode(&HostMessage::PowerOff).is_ok());
    }
}
