//! `detvm doctor`: which backends work on this host, and why.

use std::path::Path;

use crate::backend::kvm::{self, host};

/// Whether the `kvm` backend can create a VM here (not whether it is sound).
pub fn kvm_usable() -> Result<(), String> {
    kvm::check_usable(Path::new(host::KVM_DEVICE))
}
