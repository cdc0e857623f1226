//! The system calls PID 1 needs, each wrapped to return `io::Result`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Mounts `source` (of type `fstype`, with `data` options) on `target`, creating the
/// target folder if missing. An already mounted target (EBUSY) is fine.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (src, tgt, ty, data) = (
        cstring(source)?,
        cstring(target)?,
        cstring(fstype)?,
        cstring(data)?,
    );
    // SAFETY: all four pointers are valid NUL-terminated strings that outlive the call.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    match check(ret) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => other.map(|_| ()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("mount {fstype} {source} on {target}: {e}"),
            )
        }),
    }
}

/// Bind-mounts `source` with everything mounted below it on `target`.
pub fn rbind(source: &str, target: &str) -> io::Result<()> {
    mount(source, target, "", libc::MS_BIND | libc::MS_REC, "")
}

/// Makes sure fds 0, 1 and 2 are open: the kernel leaves them closed when the initramfs
/// has no /dev/console, and then the first files opened would take their numbers.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            let path = c"/dev/console";
            // SAFETY: a valid NUL-terminated path; the result is checked.
            let mut got = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
            if got < 0 {
                // SAFETY: as above.
                got = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            }
            if got >= 0 && got != fd {
                // SAFETY: both descriptors are ours; dup2 then close the spare.
                unsafe {
                    libc::dup2(got, fd);
                    libc::close(got);
                }
            }
        }
    }
}

/// Puts the terminal `file` into raw mode: no echo, no line discipline, 8-bit clean.
pub fn set_raw(file: &File) -> io::Result<()> {
    // SAFETY: termios is a plain C struct for which all-zero bytes are a valid value.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the duration of the call and `t` is a valid termios.
    check(unsafe { libc::tcgetattr(file.as_raw_fd(), &mut t) })?;
    // SAFETY: `t` is a valid, initialised termios.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: as for tcgetattr.
    check(unsafe { libc::tcsetattr(file.as_raw_fd(), libc::TCSANOW, &t) })?;
    Ok(())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid during the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(|_| ())
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub pid: libc::pid_t,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Reaps one ended child without blocking: `None` when no child has ended (or none exist).
pub fn reap_one() -> Option<Ended> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out pointer; WNOHANG makes the call non-blocking.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Some(Ended { pid, code, signal })
}

/// Blocks SIGCHLD and returns a non-blocking signalfd that becomes readable when a
/// child ends, so the event loop needs no timeout to notice it. Children get an empty
/// signal mask again before exec.
pub fn sigchld_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these calls to fill and read.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        check(libc::sigprocmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
    }
    // SAFETY: `set` is initialised; the returned fd is checked before use.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Empties a non-blocking fd (a signalfd or inotify fd) of what is pending.
pub fn drain_fd(fd: RawFd) {
    let mut buf = [0u8; 4096];
    // SAFETY: `buf` is valid for writes of its length; the fd is non-blocking.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Waits (without a timeout) until one of `fds` is readable or has hung up.
/// Returns the revents of each fd in order (all zero after EINTR).
pub fn poll(fds: &[RawFd]) -> io::Result<Vec<libc::c_short>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs; negative fds are
    // ignored by the kernel.
    let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
    match check(ret) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(vec![0; fds.len()]),
        Err(e) => Err(e),
        Ok(_) => Ok(pfds.iter().map(|p| p.revents).collect()),
    }
}

/// Sends SIGKILL to the process group `pgid` (the service and what it started without
/// leaving the group); a group already gone is fine.
pub fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Flushes file systems and powers the machine off. Never returns.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions; as PID 1 with
    // CAP_SYS_BOOT, reboot(RB_POWER_OFF) does not return on success.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Only reached if reboot failed (not PID 1, no capability): PID 1 must not exit.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Moves CLOCK_REALTIME by `delta_ns` (the World's clock-step fault).
pub fn step_realtime(delta_ns: i64) -> std::io::Result<()> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the kernel to fill and then read.
    unsafe {
        if libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let total =
            i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec) + i128::from(delta_ns);
        let total = total.max(0);
        now.tv_sec = (total / 1_000_000_000) as libc::time_t;
        now.tv_nsec = (total % 1_000_000_000) as libc::c_long;
        if libc::clock_settime(libc::CLOCK_REALTIME, &now) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens `path` as seen from inside `root` (symlinks, `..` and absolute links resolve
/// within it, as they would in a chroot), read-only.
pub fn open_in_root(root: &File, path: &str) -> io::Result<File> {
    let c = cstring(path)?;
    // SAFETY: open_how is plain data; all-zero is valid and the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: the pointers are valid for the call; the size is open_how's size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd as RawFd) })
}
