//! The few system calls PID 1 needs, each wrapped to return `io::Result`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Mounts `fstype` on `target` (created if missing); an already mounted target is fine.
pub fn mount(fstype: &str, target: &str) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (src, tgt, ty) = (cstring(fstype)?, cstring(target)?, cstring(fstype)?);
    // SAFETY: all three pointers are valid NUL-terminated strings that outlive the call;
    // the data argument may be null.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ptr(),
            libc::MS_NOSUID,
            std::ptr::null(),
        )
    };
    match check(ret) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => other.map(|_| ()),
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

/// Waits until one of `fds` is readable (or has hung up), or `timeout_ms` passes.
/// Returns the revents of each fd in order.
pub fn poll(fds: &[libc::c_int], timeout_ms: libc::c_int) -> io::Result<Vec<libc::c_short>> {
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
    let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    match check(ret) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(vec![0; fds.len()]),
        Err(e) => Err(e),
        Ok(_) => Ok(pfds.iter().map(|p| p.revents).collect()),
    }
}

/// Sends SIGKILL to `pid`; a process already gone is fine.
pub fn kill(pid: libc::pid_t) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
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
