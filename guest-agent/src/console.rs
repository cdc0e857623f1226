//! The agent's end of the virtio console (/dev/hvc0): raw mode, framed messages out.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

use detvm_protocol::message::{encode_agent, AgentMessage};

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

    /// Sends one message as one frame.
    pub fn send(&mut self, message: &AgentMessage) -> io::Result<()> {
        let frame = encode_agent(message).map_err(io::Error::other)?;
        self.out.write_all(&frame)?;
        self.out.flush()
    }
}
