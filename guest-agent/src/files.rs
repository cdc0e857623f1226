//! `ReadFile`: one regular file of the container, whole, at most `MAX_FILE` bytes.

use std::fs::File;
use std::io::Read;

use detvm_protocol::message::MAX_FILE;

use crate::sys::open_in_root;

/// The contents of `path` (absolute, inside the container whose root is `root`).
pub fn read(root: &File, path: &str) -> Result<Vec<u8>, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` is not an absolute path in the container"));
    }
    let file = open_in_root(root, path).map_err(|e| format!("cannot open `{path}`: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat `{path}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("`{path}` is not a regular file"));
    }
    let too_big = |len: u64| {
        format!(
            "`{path}` is {len} bytes, over the {MAX_FILE}-byte limit of ReadFile: read it in \
             parts with Exec (`head -c`, `tail -c`)"
        )
    };
    if meta.len() > MAX_FILE as u64 {
        return Err(too_big(meta.len()));
    }
    let mut data = Vec::new();
    file.take(MAX_FILE as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if data.len() > MAX_FILE {
        return Err(too_big(data.len() as u64));
    }
    Ok(data)
}
