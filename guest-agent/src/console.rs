//! The agent's end of the virtio console (/dev/hvc0): raw mode, framed messages out.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

use detvm_protocol::message::{encode_agent, AgentMessage, MessageError};

pub const DEVICE: &str = "/dev/hvc0";

pub struct Console {
    out: File,
}

impl Console {
    /// Opens the console in raw mode; also returns a second handle for reading.
    pub fn open(path: &str) -> io::Result<(Console, File)> {
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)?;
        crate::sys::set_raw(&out)?;
        let input = out.try_clone()?;
        Ok((Console { out }, input))
    }

    /// Sends one message as one frame. A message over the frame limit (an SDK line
    /// full of escaped characters) is replaced by an `Error` that says so.
    pub fn send(&mut self, message: &AgentMessage) -> io::Result<()> {
        let frame = match encode_agent(message) {
            Ok(frame) => frame,
            Err(MessageError::TooLarge { len }) => {
                let kind = format!("{message:?}");
                let kind = kind.split([' ', '{', '(']).next().unwrap_or("");
                encode_agent(&AgentMessage::Error {
                    message: format!(
                        "a {kind} message of {len} bytes is over the 1 MiB frame limit and \
                         was dropped"
                    ),
                })
                .map_err(io::Error::other)?
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        self.out.write_all(&frame)?;
        self.out.flush()
    }
}
