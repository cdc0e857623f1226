//! Where detvm keeps things on the host.

use std::path::PathBuf;

/// The cache folder shared by the kernel build script and the CLI:
/// `$DETVM_CACHE`, else `$XDG_CACHE_HOME/detvm`, else `~/.cache/detvm`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DETVM_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("detvm");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/detvm")
}

/// The guest kernel the build script last produced (`images/kernel/build.sh`).
pub fn cached_kernel_dir() -> PathBuf {
    cache_dir().join("kernel/current")
}
