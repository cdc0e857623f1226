//! Opening /dev/kvm and checking that this KVM has everything the backend needs, with
//! messages that say what to do when it does not.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// Where KVM lives on every Linux host.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// The only KVM API version Linux has shipped since 2.6.22.
const KVM_API_VERSION: i32 = 12;

/// Capabilities the backend cannot work without, and why.
const REQUIRED: &[(Cap, &str, &str)] = &[
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY", "guest RAM slots"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID", "the fixed CPU model"),
    (
        Cap::ImmediateExit,
        "KVM_CAP_IMMEDIATE_EXIT",
        "watchdog kicks and completing exits",
    ),
    (
        Cap::X86UserSpaceMsr,
        "KVM_CAP_X86_USER_SPACE_MSR",
        "TSC MSRs read virtual time",
    ),
    (
        Cap::X86MsrFilter,
        "KVM_CAP_X86_MSR_FILTER",
        "TSC MSRs read virtual time",
    ),
];

/// Opens `path` as KVM and checks its API version and capabilities.
pub fn open(path: &Path) -> Result<Kvm, String> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} is not a valid device path", path.display()))?;
    let kvm = Kvm::new_with_path(cpath).map_err(|e| open_error(path, e.errno()))?;
    let version = kvm.get_api_version();
    if version < 0 {
        return Err(format!(
            "{} is not a KVM device (KVM_GET_API_VERSION failed)",
            path.display()
        ));
    }
    if version != KVM_API_VERSION {
        return Err(format!(
            "{} speaks KVM API version {version}; detvm needs version {KVM_API_VERSION} \
             (any Linux since 2.6.22)",
            path.display()
        ));
    }
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|(cap, _, _)| !kvm.check_extension(*cap))
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "this KVM is too old: it lacks {}; Linux 5.10 or later has everything detvm needs",
            missing.join(", ")
        ));
    }
    Ok(kvm)
}

/// A message for a failed open of the KVM device, by errno.
pub fn open_error(path: &Path, errno: i32) -> String {
    let p = path.display();
    match errno {
        libc::ENOENT => format!(
            "{p} does not exist: this host has no KVM (load kvm_intel or kvm_amd on bare \
             metal, or enable nested virtualization in a VM)"
        ),
        libc::EACCES | libc::EPERM => format!(
            "permission denied opening {p}: add your user to the group that owns it, usually \
             `kvm` (sudo usermod -aG kvm $USER, then log in again)"
        ),
        libc::ENXIO | libc::ENODEV => {
            format!("{p} has no KVM driver behind it (is the kvm module loaded?)")
        }
        e => format!("cannot open {p}: {}", std::io::Error::from_raw_os_error(e)),
    }
}

/// The loaded KVM vendor module, for reports: `kvm_intel`, `kvm_amd` or `kvm_pvm`.
pub fn vendor_module() -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|m| Path::new("/sys/module").join(m).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_says_there_is_no_kvm() {
        let err = open(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_kvm_is_named() {
        let err = open(Path::new("/dev/null")).unwrap_err();
        assert!(err.contains("not a KVM device"), "{err}");
    }

    #[test]
    fn permission_errors_say_how_to_fix_them() {
        let msg = open_error(Path::new("/dev/kvm"), libc::EACCES);
        assert!(msg.contains("usermod -aG kvm"), "{msg}");
    }
}
