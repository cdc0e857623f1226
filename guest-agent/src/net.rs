//! Network setup without `ip` or `ifconfig`: loopback up, and eth0's address, netmask and
//! default route from the kernel command line, through the classic socket ioctls.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use detvm_protocol::boot_params::{netmask, BootParams};

use crate::sys::check;

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
const SIOCADDRT: libc::c_ulong = 0x890b;
const RTF_UP: libc::c_ushort = 0x1;
const RTF_GATEWAY: libc::c_ushort = 0x2;

/// `struct ifreq`: a name and a 24-byte union (flags or a sockaddr).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

/// `struct rtentry` (x86_64 layout).
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: libc::sockaddr_in,
    gateway: libc::sockaddr_in,
    genmask: libc::sockaddr_in,
    flags: libc::c_ushort,
    pad2: libc::c_short,
    pad3: libc::c_ulong,
    pad4: *mut libc::c_void,
    metric: libc::c_short,
    dev: *mut libc::c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: libc::c_ushort,
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn ifreq(name: &str) -> IfReq {
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    r
}

struct Ioctl(OwnedFd);

impl Ioctl {
    fn new() -> io::Result<Ioctl> {
        // SAFETY: socket has no memory-safety preconditions; the fd is checked.
        let fd = check(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: a fresh descriptor we own.
        Ok(Ioctl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn call<T>(&self, request: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
        // SAFETY: `arg` is the repr(C) struct this request reads or writes.
        check(unsafe { libc::ioctl(self.0.as_raw_fd(), request, arg as *mut T) })
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
    }

    fn up(&self, dev: &str) -> io::Result<()> {
        let mut r = ifreq(dev);
        self.call(SIOCGIFFLAGS, &mut r, &format!("{dev}: read flags"))?;
        let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | libc::IFF_UP as i16;
        r.data[..2].copy_from_slice(&flags.to_ne_bytes());
        self.call(SIOCSIFFLAGS, &mut r, &format!("{dev}: set up"))
    }

    fn set_addr(&self, dev: &str, request: libc::c_ulong, addr: Ipv4Addr) -> io::Result<()> {
        let mut r = ifreq(dev);
        let sa = sockaddr(addr);
        // SAFETY: sockaddr_in is 16 bytes of plain data, and `data` holds 24.
        let bytes: [u8; 16] = unsafe { std::mem::transmute(sa) };
        r.data[..16].copy_from_slice(&bytes);
        self.call(request, &mut r, &format!("{dev}: set address {addr}"))
    }
}

/// Brings loopback up, then eth0 with the address and default route in `params`.
pub fn configure(params: &BootParams) -> io::Result<()> {
    let s = Ioctl::new()?;
    s.up("lo")?;
    let Some((addr, prefix)) = params.ip else {
        return Ok(());
    };
    s.set_addr("eth0", SIOCSIFADDR, addr)?;
    s.set_addr("eth0", SIOCSIFNETMASK, netmask(prefix))?;
    s.up("eth0")?;
    if let Some(gw) = params.gateway {
        let mut rt = RtEntry {
            pad1: 0,
            dst: sockaddr(Ipv4Addr::UNSPECIFIED),
            gateway: sockaddr(gw),
            genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
            flags: RTF_UP | RTF_GATEWAY,
            pad2: 0,
            pad3: 0,
            pad4: std::ptr::null_mut(),
            metric: 0,
            dev: std::ptr::null_mut(),
            mtu: 0,
            window: 0,
            irtt: 0,
        };
        s.call(SIOCADDRT, &mut rt, &format!("default route via {gw}"))?;
    }
    Ok(())
}
