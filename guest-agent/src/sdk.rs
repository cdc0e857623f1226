//! Antithesis SDK output. Every process the agent starts gets
//! `ANTITHESIS_SDK_LOCAL_OUTPUT` pointing at a file of its own under
//! [`rootfs::SDK_DIR`] (`service.jsonl`, `exec-<id>.jsonl`); the SDKs append one JSON
//! object per line there. The agent follows those files with inotify and forwards each
//! complete line unchanged.
//!
//! Why regular files and inotify rather than a FIFO: the Rust SDK opens the path with
//! `File::create` and writes each line with several `write` calls (one per formatted
//! piece), so with a shared FIFO two writers could interleave pieces of their lines,
//! and a writer blocks whenever the agent is slow. A file per process keeps every line
//! whole whatever its length, never blocks the writer, and stays readable in the
//! container for later inspection. A file that is truncated (the SDK's `File::create`
//! in a restarted process) is read again from its start.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

use detvm_protocol::message::MAX_SDK_LINE;

use crate::lines::{Line, Lines};
use crate::rootfs::{ROOT, SDK_DIR};
use crate::sys::{check, cstring, drain_fd};

/// The environment variable the Antithesis SDKs read.
pub const ENV: &str = "ANTITHESIS_SDK_LOCAL_OUTPUT";

struct Reader {
    file: Option<File>,
    ino: u64,
    offset: u64,
    lines: Lines,
}

pub struct SdkWatch {
    inotify: OwnedFd,
    readers: BTreeMap<String, Reader>,
}

/// One forwarded line, or why one was dropped.
pub type SdkItem = Result<String, String>;

fn host_path(name: &str) -> String {
    format!("{ROOT}{SDK_DIR}/{name}")
}

fn item(line: Line) -> SdkItem {
    if line.cut {
        let start = String::from_utf8_lossy(&line.bytes[..line.bytes.len().min(80)]).into_owned();
        return Err(format!(
            "an SDK line over {MAX_SDK_LINE} bytes was dropped (it starts {start:?}); \
             send smaller details with each assertion"
        ));
    }
    String::from_utf8(line.bytes).map_err(|_| "an SDK line that is not UTF-8 was dropped".into())
}

impl SdkWatch {
    pub fn new() -> io::Result<SdkWatch> {
        // SAFETY: inotify_init1 has no memory-safety preconditions; the fd is checked.
        let fd = check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: a fresh descriptor we own.
        let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
        let dir = cstring(&format!("{ROOT}{SDK_DIR}"))?;
        let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO;
        // SAFETY: a valid NUL-terminated path and our inotify fd.
        check(unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), dir.as_ptr(), mask) })?;
        Ok(SdkWatch {
            inotify,
            readers: BTreeMap::new(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    /// Creates (or empties) the file `name`, writable by any user, and follows it.
    /// Returns its path inside the container, for [`ENV`].
    pub fn add(&mut self, name: &str) -> io::Result<String> {
        let path = host_path(name);
        File::create(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        self.readers.insert(
            name.to_string(),
            Reader {
                file: None,
                ino: 0,
                offset: 0,
                lines: Lines::new(MAX_SDK_LINE),
            },
        );
        Ok(format!("{SDK_DIR}/{name}"))
    }

    /// New complete lines of every followed file, by file name, after inotify spoke.
    pub fn pump(&mut self) -> Vec<(String, SdkItem)> {
        drain_fd(self.inotify.as_raw_fd());
        let mut out = Vec::new();
        for (name, reader) in &mut self.readers {
            for line in reader.read(name) {
                out.push((name.clone(), item(line)));
            }
        }
        out
    }

    /// The last lines of `name` (its unterminated tail included); stops following it
    /// and removes the file.
    pub fn finish(&mut self, name: &str) -> Vec<SdkItem> {
        let Some(mut reader) = self.readers.remove(name) else {
            return Vec::new();
        };
        let mut lines = reader.read(name);
        lines.extend(reader.lines.finish());
        let _ = std::fs::remove_file(host_path(name));
        lines.into_iter().map(item).collect()
    }
}

impl Reader {
    fn read(&mut self, name: &str) -> Vec<Line> {
        let Ok(meta) = std::fs::metadata(host_path(name)) else {
            return Vec::new();
        };
        if self.file.is_none() || meta.ino() != self.ino || meta.len() < self.offset {
            // New, replaced or truncated: read it from the start.
            self.file = File::open(host_path(name)).ok();
            self.ino = meta.ino();
            self.offset = 0;
            self.lines = Lines::new(MAX_SDK_LINE);
        }
        let Some(file) = &self.file else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = file.read_at(&mut buf, self.offset) {
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            out.extend(self.lines.feed(&buf[..n]));
        }
        out
    }
}
