//! Runs the service: spawns it with stdin closed and stdout/stderr piped, forwards each
//! line as an `Output` message, reaps it and every orphan, and listens for host messages.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

use detvm_protocol::frame::Decoder;
use detvm_protocol::message::{
    bounded_line, decode_host, AgentMessage, HostMessage, Stream, MAX_LINE,
};

use crate::console::Console;
use crate::sys;

/// How the service run ended.
pub enum End {
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    PowerOffRequested,
}

/// Splits one pipe's bytes into lines, each bounded by `MAX_LINE`.
struct Lines {
    stream: Stream,
    buf: Vec<u8>,
    /// Dropping the rest of an over-long line until its newline.
    skipping: bool,
    eof: bool,
}

impl Lines {
    fn new(stream: Stream) -> Self {
        Lines {
            stream,
            buf: Vec::new(),
            skipping: false,
            eof: false,
        }
    }

    /// Feeds `bytes`, returning the complete lines.
    fn feed(&mut self, bytes: &[u8]) -> Vec<AgentMessage> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !self.skipping {
                    out.push(self.line());
                }
                self.skipping = false;
                self.buf.clear();
            } else if !self.skipping {
                self.buf.push(b);
                if self.buf.len() > MAX_LINE {
                    out.push(self.line());
                    self.buf.clear();
                    self.skipping = true;
                }
            }
        }
        out
    }

    /// The last, unterminated line at end of stream.
    fn finish(&mut self) -> Option<AgentMessage> {
        self.eof = true;
        (!self.buf.is_empty() && !self.skipping).then(|| {
            let m = self.line();
            self.buf.clear();
            m
        })
    }

    fn line(&self) -> AgentMessage {
        AgentMessage::Output {
            stream: self.stream,
            line: bounded_line(&self.buf),
        }
    }
}

/// Spawns `argv`; the error message names the program.
fn spawn(argv: &[Vec<u8>]) -> Result<(u32, ChildStdout, ChildStderr), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let name = String::from_utf8_lossy(program).into_owned();
    let mut child = Command::new(std::ffi::OsStr::from_bytes(program))
        .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let pid = child.id();
    match (child.stdout.take(), child.stderr.take()) {
        (Some(o), Some(e)) => Ok((pid, o, e)),
        _ => Err(format!("{name}: no pipes")),
    }
}

/// Reads what is there from a readable pipe; marks EOF on 0 bytes or an error.
fn drain(pipe: &mut impl Read, lines: &mut Lines, console: &mut Console) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    match pipe.read(&mut chunk) {
        Ok(0) | Err(_) => {
            if let Some(m) = lines.finish() {
                console.send(&m)?;
            }
        }
        Ok(n) => {
            for m in lines.feed(&chunk[..n]) {
                console.send(&m)?;
            }
        }
    }
    Ok(())
}

/// Runs `argv` to its end (or until the host asks to power off).
pub fn run(argv: &[Vec<u8>], console: &mut Console, host_in: &mut File) -> Result<End, String> {
    let (pid, mut stdout, mut stderr) = spawn(argv)?;
    let pid = pid as libc::pid_t;
    let (mut out, mut err) = (Lines::new(Stream::Stdout), Lines::new(Stream::Stderr));
    let mut decoder = Decoder::new();
    let mut status = None;
    let io_err = |e: io::Error| format!("console: {e}");
    loop {
        while let Some(ended) = sys::reap_one() {
            if ended.pid == pid {
                status = Some(ended);
            }
        }
        if out.eof && err.eof {
            if let Some(s) = status {
                return Ok(End::Exited {
                    code: s.code,
                    signal: s.signal,
                });
            }
        }
        let fds = [
            if out.eof { -1 } else { stdout.as_raw_fd() },
            if err.eof { -1 } else { stderr.as_raw_fd() },
            host_in.as_raw_fd(),
        ];
        // The timeout only bounds how late a reaped child is noticed.
        let ready = sys::poll(&fds, 50).map_err(|e| format!("poll: {e}"))?;
        let readable = |r: libc::c_short| r & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        if readable(ready[0]) {
            drain(&mut stdout, &mut out, console).map_err(io_err)?;
        }
        if readable(ready[1]) {
            drain(&mut stderr, &mut err, console).map_err(io_err)?;
        }
        if ready[2] & libc::POLLIN != 0 {
            let mut chunk = [0u8; 4096];
            let n = host_in.read(&mut chunk).map_err(io_err)?;
            decoder.push(&chunk[..n]);
            while let Some(frame) = decoder.next_frame() {
                let message = frame
                    .map_err(|e| e.to_string())
                    .and_then(|p| decode_host(&p).map_err(|e| e.to_string()));
                match message {
                    Ok(HostMessage::PowerOff) => {
                        sys::kill(pid);
                        return Ok(End::PowerOffRequested);
                    }
                    Ok(HostMessage::StepClock { delta_ns }) => {
                        if let Err(e) = sys::step_realtime(delta_ns) {
                            console
                                .send(&AgentMessage::Error {
                                    message: format!("cannot step the clock: {e}"),
                                })
                                .map_err(io_err)?;
                        }
                    }
                    Err(e) => console
                        .send(&AgentMessage::Error {
                            message: format!("bad host message: {e}"),
                        })
                        .map_err(io_err)?,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(ms: Vec<AgentMessage>) -> Vec<String> {
        ms.into_iter()
            .map(|m| match m {
                AgentMessage::Output { line, .. } => line,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_and_long_lines_are_cut() {
        let mut l = Lines::new(Stream::Stdout);
        assert!(l.feed(b"a").is_empty());
        assert_eq!(lines_of(l.feed(b"b\nc\n")), ["ab", "c"]);
        let mut long = vec![b'x'; MAX_LINE + 5];
        long.extend_from_slice(b"\nnext\n");
        let got = lines_of(l.feed(&long));
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with(detvm_protocol::message::TRUNCATED_MARKER));
        assert_eq!(got[1], "next");
        l.feed(b"tail");
        assert!(l.finish().is_some());
        assert!(l.eof);
    }
}
