//! Starting a process in the container: chroot into [`ROOT`] (in a new mount namespace
//! for the service; in the service's for exec'd commands), the working directory (created if missing, as Docker
//! does), the user's groups, gid and uid, the given environment only, stdin on
//! /dev/null and stdout/stderr piped. It leads its own process group, so the service and
//! what it starts can be killed together.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

use detvm_protocol::spec::env_key;

use crate::rootfs::ROOT;
use crate::sys::{check, cstring};
use crate::user::Identity;

pub struct Launch<'a> {
    pub argv: &'a [String],
    /// The whole environment, `KEY=value`.
    pub env: &'a [String],
    /// Absolute, inside the container; empty means `/`.
    pub working_dir: &'a str,
    pub identity: &'a Identity,
    pub mount_namespace: MountNamespace,
}

/// Where the process's mounts come from.
#[derive(Clone, Copy)]
pub enum MountNamespace {
    /// A new one, copied from the agent's (the service).
    New,
    /// The running service's (an fd of its /proc/PID/ns/mnt), as `docker exec` does.
    Join(RawFd),
    /// The agent's own (exec while no service runs).
    Agent,
}

pub struct Started {
    pub pid: libc::pid_t,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Which step before exec failed, written by the child to a side pipe.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Step {
    MountNamespace = 1,
    Chroot,
    WorkingDir,
    Groups,
    Gid,
    Uid,
}

fn step_name(step: u8, working_dir: &str, id: &Identity) -> String {
    match step {
        1 => "cannot make or join the mount namespace".into(),
        2 => format!("cannot chroot into {ROOT}"),
        3 => format!(
            "cannot enter the working directory `{working_dir}` (it is not a folder, or \
             cannot be created there); fix `working_dir:`"
        ),
        4 => format!("cannot set supplementary groups {:?}", id.groups),
        5 => format!("cannot set gid {}", id.gid),
        _ => format!("cannot set uid {}", id.uid),
    }
}

/// What went wrong when exec itself failed, with what to do about it.
fn exec_error(program: &str, path: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) if program.contains('/') => format!(
            "`{program}` does not exist in the container (or its #! interpreter does not): \
             check `entrypoint:`/`command:` and the image"
        ),
        Some(libc::ENOENT) => format!(
            "`{program}` is not in the container's PATH ({path}): give its full path or \
             fix PATH in `environment:`"
        ),
        Some(libc::EACCES) => format!(
            "`{program}` is not executable by this user (no execute permission, a folder, or \
             a folder on its path is not searchable): chmod +x it in the image"
        ),
        Some(libc::ENOEXEC) => format!(
            "`{program}` is not a program the guest can run (neither an x86-64 ELF nor a \
             script with a #! line)"
        ),
        _ => format!("cannot start `{program}`: {e}"),
    }
}

/// Every prefix of `dir` ("/a/b" → "/a", "/a/b"), for creating it in the child.
fn prefixes(dir: &str) -> io::Result<Vec<CString>> {
    let dir = dir.trim_end_matches('/');
    let mut out = Vec::new();
    for (i, c) in dir.char_indices().skip(1) {
        if c == '/' {
            out.push(cstring(&dir[..i])?);
        }
    }
    if !dir.is_empty() {
        out.push(cstring(dir)?);
    }
    Ok(out)
}

fn pipe() -> io::Result<(File, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: fds[0] is a fresh descriptor we own.
    Ok((unsafe { File::from_raw_fd(fds[0]) }, fds[1]))
}

pub fn spawn(l: &Launch) -> Result<Started, String> {
    let (program, args) = l
        .argv
        .split_first()
        .ok_or("nothing to run: the command is empty")?;
    let working_dir = if l.working_dir.is_empty() {
        "/"
    } else {
        l.working_dir
    };
    let bad = |e: io::Error| format!("cannot start `{program}`: {e}");
    let root = cstring(ROOT).map_err(bad)?;
    let wd = cstring(working_dir).map_err(bad)?;
    let mkdirs = prefixes(working_dir).map_err(bad)?;
    let groups: Vec<libc::gid_t> = l.identity.groups.clone();
    let (uid, gid) = (l.identity.uid, l.identity.gid);
    let mount_ns = l.mount_namespace;
    let (mut step_read, step_write) = pipe().map_err(bad)?;

    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(l.env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let fail = move |step: Step| -> io::Error {
        let e = io::Error::last_os_error();
        let byte = step as u8;
        // SAFETY: writes one byte from a live stack variable to our pipe.
        unsafe { libc::write(step_write, (&byte as *const u8).cast(), 1) };
        e
    };
    // SAFETY: the closure runs in the forked child of this single-threaded agent and
    // makes only system calls on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            let ns = match mount_ns {
                MountNamespace::New => libc::unshare(libc::CLONE_NEWNS),
                MountNamespace::Join(fd) => libc::setns(fd, libc::CLONE_NEWNS),
                MountNamespace::Agent => 0,
            };
            if ns != 0 {
                return Err(fail(Step::MountNamespace));
            }
            if libc::chroot(root.as_ptr()) != 0 {
                return Err(fail(Step::Chroot));
            }
            for dir in &mkdirs {
                libc::mkdir(dir.as_ptr(), 0o755);
            }
            if libc::chdir(wd.as_ptr()) != 0 {
                return Err(fail(Step::WorkingDir));
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                return Err(fail(Step::Groups));
            }
            if libc::setgid(gid) != 0 {
                return Err(fail(Step::Gid));
            }
            if libc::setuid(uid) != 0 {
                return Err(fail(Step::Uid));
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    // SAFETY: our copy of the write end; the child had its own.
    unsafe { libc::close(step_write) };
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let mut step = [0u8; 1];
            let message = match step_read.read(&mut step) {
                Ok(1) => format!("{}: {e}", step_name(step[0], working_dir, l.identity)),
                _ => {
                    let path = l
                        .env
                        .iter()
                        .find(|e| env_key(e) == Some("PATH"))
                        .map_or("", |e| &e[5..]);
                    exec_error(program, path, &e)
                }
            };
            return Err(message);
        }
    };
    let pid = child.id() as libc::pid_t;
    match (child.stdout.take(), child.stderr.take()) {
        (Some(stdout), Some(stderr)) => Ok(Started {
            pid,
            stdout,
            stderr,
        }),
        _ => Err(format!("`{program}`: no output pipes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_dir_prefixes() {
        let p: Vec<String> = prefixes("/var/lib/etcd/")
            .unwrap()
            .into_iter()
            .map(|c| c.into_string().unwrap())
            .collect();
        assert_eq!(p, ["/var", "/var/lib", "/var/lib/etcd"]);
        assert!(prefixes("/").unwrap().is_empty());
    }
}
