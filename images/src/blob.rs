//! Blobs: staging them with digest checks, and opening layers whatever their compression.

use crate::digest::{self, HashReader};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The file of blob `digest` in the folder `dir` (files named by digest hex); `None` for a
/// digest that is not a well-formed sha256 one, so it is never joined into a path.
pub fn path_in(dir: &Path, digest: &str) -> Option<PathBuf> {
    digest::parse(digest).map(|hex| dir.join(hex))
}

/// Tells the compression of a blob from its first bytes, which is more reliable than the
/// media types, which `docker save` and some tools get wrong.
pub fn sniff(path: &Path) -> io::Result<Compression> {
    let mut magic = [0u8; 4];
    let n = File::open(path)?.read(&mut magic)?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}

/// Opens a layer blob as its uncompressed tar stream.
pub fn open_layer(path: &Path) -> io::Result<Box<dyn Read>> {
    let file = BufReader::new(File::open(path)?);
    Ok(match sniff(path)? {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    })
}

/// Copies `reader` into `dir` as `<hex>`, returning (digest, size, path). Writes go to a
/// temporary name first, so a blob under its digest name is always complete.
pub fn stage(dir: &Path, reader: impl Read) -> io::Result<(String, u64, PathBuf)> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut hashing = HashReader::new(reader);
    io::copy(&mut hashing, tmp.as_file_mut())?;
    let (digest, size) = hashing.finish()?;
    let path = dir.join(&digest["sha256:".len()..]);
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok((digest, size, path))
}
