//! Compose `volumes` and `tmpfs` inside the container: ext4 virtio-blk disks found by
//! their serial, and tmpfs mounts, placed under the container root before the service
//! starts so the service and every exec see them. A fresh volume takes the owner and
//! mode of the image's folder at its mount point, as a Docker named volume does.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use detvm_protocol::spec::{Mount, MountSource};

use crate::rootfs::ROOT;
use crate::sys::mount;

/// `/dev/vdX` whose virtio-blk serial is `serial`.
fn disk_with_serial(serial: &str) -> Result<String, String> {
    let entries = std::fs::read_dir("/sys/block").map_err(|e| format!("/sys/block: {e}"))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    for name in names {
        let found =
            std::fs::read_to_string(format!("/sys/block/{name}/serial")).unwrap_or_default();
        if found.trim_end_matches(['\0', '\n']) == serial {
            return Ok(format!("/dev/{name}"));
        }
    }
    Err(format!(
        "no virtio-blk disk with serial `{serial}` is attached"
    ))
}

/// Mounts each of `mounts` not mounted yet (a restarted service keeps its mounts).
pub fn mount_all(mounts: &[Mount], done: &mut Vec<String>) -> Result<(), String> {
    for m in mounts {
        if done.contains(&m.target) {
            continue;
        }
        if !m.target.starts_with('/') || m.target.split('/').any(|part| part == "..") {
            return Err(format!(
                "mount target `{}` must be an absolute path without `..`",
                m.target
            ));
        }
        let at = format!("{ROOT}{}", m.target);
        if std::fs::symlink_metadata(&at).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(format!(
                "mount target `{}` is a symlink in the image",
                m.target
            ));
        }
        let image_dir = std::fs::metadata(&at).ok();
        let ro = if m.read_only { libc::MS_RDONLY } else { 0 };
        match &m.source {
            MountSource::Disk { serial } => {
                let dev = disk_with_serial(serial)?;
                mount(&dev, &at, "ext4", ro | libc::MS_NOSUID | libc::MS_NODEV, "").map_err(
                    |e| format!("cannot mount {dev} (volume {serial}) at {}: {e}", m.target),
                )?;
                if let Some(meta) = image_dir.filter(|_| !m.read_only && fresh(&at)) {
                    let _ = std::os::unix::fs::chown(&at, Some(meta.uid()), Some(meta.gid()));
                    let _ =
                        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(meta.mode()));
                }
            }
            MountSource::Tmpfs => {
                mount(
                    "tmpfs",
                    &at,
                    "tmpfs",
                    ro | libc::MS_NOSUID | libc::MS_NODEV,
                    "mode=1777",
                )
                .map_err(|e| format!("cannot mount tmpfs at {}: {e}", m.target))?;
            }
        }
        done.push(m.target.clone());
    }
    Ok(())
}

/// A just-formatted ext4 file system holds only `lost+found`.
fn fresh(dir: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .all(|e| e.file_name() == "lost+found")
    }) && Path::new(dir).is_dir()
}
