//! The agent's own mounts and the container's root: the image's read-only squashfs on
//! /dev/vda under a tmpfs overlay at [`ROOT`], with /proc, /sys (cgroup2 inside), /dev
//! (pts, shm inside) and a fresh /run mounted in it.
//!
//! The service gets its own mount namespace (a copy of the agent's, so it sees all of
//! these) and `chroot`s into [`ROOT`]; exec'd commands join the running service's mount
//! namespace (`setns`) and `chroot` into the same path, so they see what it sees, mounts
//! it made included. With no service running they use the agent's namespace.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use detvm_protocol::spec::ServiceSpec;

use crate::sys::{mount, rbind};

/// The container's root in the agent's mount namespace.
pub const ROOT: &str = "/mnt/root";
/// The service's root filesystem: the image's squashfs, the first virtio-blk disk.
pub const DISK: &str = "/dev/vda";
const LOWER: &str = "/mnt/image";
const RW: &str = "/mnt/rw";
/// Inside the container: one SDK output file per process under here.
pub const SDK_DIR: &str = "/run/detvm/sdk";

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The links a container runtime adds to /dev (runc's defaults): bash's process
/// substitution (`<(…)`) and `/dev/stdout` need them, and devtmpfs has none.
const DEV_LINKS: [(&str, &str); 4] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

/// The mounts PID 1 needs before anything else (in the initramfs).
pub fn mount_agent_fs() -> std::io::Result<()> {
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    for (link, target) in DEV_LINKS {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, "")?;
    mount("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, "")?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=0620,ptmxmode=0666,gid=5",
    )?;
    mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    )?;
    mount(
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    )?;
    mount(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        "",
    )
}

/// Mounts the container root at [`ROOT`] and its pseudo file systems.
pub fn mount_container_root() -> Result<(), String> {
    if !Path::new(DISK).exists() {
        return Err(format!(
            "no {DISK}: attach the image's squashfs root filesystem as the first virtio-blk \
             disk (read-only); `detvm image rootfs IMAGE` prints its path"
        ));
    }
    let e = |e: std::io::Error| e.to_string();
    mount(DISK, LOWER, "squashfs", libc::MS_RDONLY, "")
        .map_err(|err| format!("{err} (is {DISK} a squashfs image made by detvm?)"))?;
    mount("tmpfs", RW, "tmpfs", 0, "mode=0755").map_err(e)?;
    let (upper, work) = (format!("{RW}/upper"), format!("{RW}/work"));
    for dir in [&upper, &work] {
        std::fs::create_dir_all(dir).map_err(|err| format!("mkdir {dir}: {err}"))?;
    }
    // The merged root takes the upper folder's owner and mode: copy the image's.
    if let Ok(meta) = std::fs::metadata(LOWER) {
        let _ = std::os::unix::fs::chown(&upper, Some(meta.uid()), Some(meta.gid()));
        let _ = std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(meta.mode()));
    }
    let options = format!("lowerdir={LOWER},upperdir={upper},workdir={work}");
    mount("overlay", ROOT, "overlay", 0, &options).map_err(e)?;
    mount(
        "proc",
        &format!("{ROOT}/proc"),
        "proc",
        NOSUID_NODEV_NOEXEC,
        "",
    )
    .map_err(e)?;
    rbind("/sys", &format!("{ROOT}/sys")).map_err(e)?;
    rbind("/dev", &format!("{ROOT}/dev")).map_err(e)?;
    let run = format!("{ROOT}/run");
    mount(
        "tmpfs",
        &run,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    )
    .map_err(e)?;
    let sdk = format!("{ROOT}{SDK_DIR}");
    std::fs::create_dir_all(&sdk).map_err(|err| format!("mkdir {sdk}: {err}"))?;
    Ok(())
}

/// Replaces `path` in the container (the image's file is shadowed in the overlay's upper
/// layer, never modified).
fn write_container_file(path: &str, text: &str) -> Result<(), String> {
    let host_path = format!("{ROOT}{path}");
    if let Some(parent) = Path::new(&host_path).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::remove_file(&host_path); // a symlink in the image must not be followed
    std::fs::write(&host_path, text)
        .map_err(|e| format!("cannot write {path} in the container: {e}"))?;
    std::fs::set_permissions(&host_path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("cannot chmod {path}: {e}"))
}

/// The container's /etc/hosts: localhost, then the spec's entries in order.
pub fn hosts_file(spec: &ServiceSpec) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for h in &spec.hosts {
        text.push_str(&format!("{}\t{}\n", h.ip, h.name));
    }
    text
}

/// The container's /etc/resolv.conf: the spec's lines, or a note that there is no DNS.
pub fn resolv_conf(spec: &ServiceSpec) -> String {
    if spec.dns.is_empty() {
        return "# detvm: no DNS server; compose service names are in /etc/hosts\n".into();
    }
    spec.dns.iter().map(|l| format!("{l}\n")).collect()
}

/// Writes /etc/hosts, /etc/resolv.conf and /etc/hostname into the container.
pub fn write_etc(spec: &ServiceSpec, hostname: &str) -> Result<(), String> {
    write_container_file("/etc/hosts", &hosts_file(spec))?;
    write_container_file("/etc/resolv.conf", &resolv_conf(spec))?;
    write_container_file("/etc/hostname", &format!("{hostname}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use detvm_protocol::spec::HostEntry;

    #[test]
    fn etc_files() {
        let spec = ServiceSpec {
            hosts: vec![
                HostEntry {
                    name: "web".into(),
                    ip: "10.0.0.2".into(),
                },
                HostEntry {
                    name: "db".into(),
                    ip: "10.0.0.3".into(),
                },
            ],
            ..ServiceSpec::default()
        };
        assert!(hosts_file(&spec).ends_with("10.0.0.2\tweb\n10.0.0.3\tdb\n"));
        assert!(resolv_conf(&spec).starts_with('#'));
        let spec = ServiceSpec {
            dns: vec!["nameserver 10.0.0.1".into()],
            ..spec
        };
        assert_eq!(resolv_conf(&spec), "nameserver 10.0.0.1\n");
    }
}
