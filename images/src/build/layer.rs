//! Writing layers: a gzip-compressed tar whose digest and uncompressed digest are computed
//! while it is written. Entries are added in a fixed order with fixed times, so the same
//! input gives the same bytes.

use crate::digest::HashWriter;
use flate2::write::GzEncoder;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A finished layer blob (gzip tar) on disk.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    pub path: PathBuf,
    /// Digest of the compressed blob.
    pub digest: String,
    /// Digest of the uncompressed tar (the config's `diff_ids`).
    pub diff_id: String,
    pub size: u64,
}

impl LayerBlob {
    /// Compresses an existing tar stream (any content, even unsafe: tests use this to craft
    /// bad layers) into a layer blob at `path`.
    pub fn from_tar(path: &Path, mut tar: impl Read) -> io::Result<LayerBlob> {
        let mut out = create_output(path)?;
        io::copy(&mut tar, &mut out)?;
        finish_output(out, path)
    }
}

type Output = HashWriter<GzEncoder<HashWriter<BufWriter<File>>>>;

fn create_output(path: &Path) -> io::Result<Output> {
    let file = HashWriter::new(BufWriter::new(File::create(path)?));
    Ok(HashWriter::new(GzEncoder::new(
        file,
        flate2::Compression::default(),
    )))
}

fn finish_output(out: Output, path: &Path) -> io::Result<LayerBlob> {
    let (gz, diff_id, _) = out.finish();
    let (mut file, digest, size) = gz.finish()?.finish();
    file.flush()?;
    Ok(LayerBlob {
        path: path.into(),
        digest,
        diff_id,
        size,
    })
}

/// Builds a layer entry by entry; owners root, times `mtime`.
pub struct LayerWriter {
    builder: tar::Builder<Output>,
    path: PathBuf,
    pub mtime: u64,
    /// Time for entries of a host tree too (else each file's own): a tree made on the
    /// build host at build time, like debootstrap's, then packs the same on every host.
    pub host_mtime: Option<u64>,
}

impl LayerWriter {
    pub fn create(path: &Path) -> io::Result<LayerWriter> {
        Ok(LayerWriter {
            builder: tar::Builder::new(create_output(path)?),
            path: path.into(),
            mtime: 0,
            host_mtime: None,
        })
    }

    fn header(&self, kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(0);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let mut h = self.header(tar::EntryType::Directory, mode);
        self.builder
            .append_data(&mut h, format!("{path}/"), io::empty())
    }

    pub fn file(&mut self, path: &str, mode: u32, size: u64, data: impl Read) -> io::Result<()> {
        let mut h = self.header(tar::EntryType::Regular, mode);
        h.set_size(size);
        self.builder.append_data(&mut h, path, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let mut h = self.header(tar::EntryType::Symlink, 0o777);
        self.builder.append_link(&mut h, path, target)
    }

    /// Appends a whole host folder as the layer's root: owners, modes, times, symlinks, hard
    /// links, device nodes and xattrs as they are on disk, in sorted order. Symlinks are
    /// stored, never followed.
    pub fn host_tree(
        &mut self,
        root: &Path,
        progress: &crate::progress::ProgressBar,
    ) -> io::Result<()> {
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        self.walk(root, "", &mut links, progress)
    }

    fn walk(
        &mut self,
        dir: &Path,
        rel: &str,
        links: &mut HashMap<(u64, u64), String>,
        progress: &crate::progress::ProgressBar,
    ) -> io::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let host = dir.join(&name);
            let name = name.to_str().ok_or_else(|| {
                io::Error::other(format!("{}: name is not UTF-8", host.display()))
            })?;
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(&host)?;
            let ft = meta.file_type();
            let xattrs: Vec<(String, Vec<u8>)> = match xattr::list(&host) {
                Ok(list) => list
                    .filter_map(|k| {
                        let v = xattr::get(&host, &k).ok()??;
                        Some((format!("SCHILY.xattr.{}", k.to_string_lossy()), v))
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            if !xattrs.is_empty() {
                self.builder.append_pax_extensions(
                    xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                )?;
            }
            let kind = if ft.is_dir() {
                tar::EntryType::Directory
            } else if ft.is_symlink() {
                tar::EntryType::Symlink
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_file() {
                tar::EntryType::Regular
            } else {
                continue; // sockets have no place in an image
            };
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(meta.mode() & 0o7777);
            h.set_uid(meta.uid() as u64);
            h.set_gid(meta.gid() as u64);
            h.set_mtime(self.host_mtime.unwrap_or(meta.mtime().max(0) as u64));
            h.set_size(0);
            if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
                h.set_device_major(libc::major(meta.rdev()))?;
                h.set_device_minor(libc::minor(meta.rdev()))?;
            }
            match kind {
                tar::EntryType::Directory => {
                    self.builder
                        .append_data(&mut h, format!("{path}/"), io::empty())?;
                    self.walk(&host, &path, links, progress)?;
                }
                tar::EntryType::Symlink => {
                    let target = std::fs::read_link(&host)?;
                    self.builder.append_link(&mut h, &path, target)?;
                }
                tar::EntryType::Regular
                    if meta.nlink() > 1 && links.contains_key(&(meta.dev(), meta.ino())) =>
                {
                    h.set_entry_type(tar::EntryType::Link);
                    self.builder
                        .append_link(&mut h, &path, &links[&(meta.dev(), meta.ino())])?;
                }
                tar::EntryType::Regular => {
                    if meta.nlink() > 1 {
                        links.insert((meta.dev(), meta.ino()), path.clone());
                    }
                    h.set_size(meta.len());
                    let file = File::open(&host)?;
                    self.builder.append_data(
                        &mut h,
                        &path,
                        progress.wrap_read(file).take(meta.len()),
                    )?;
                }
                _ => self.builder.append_data(&mut h, &path, io::empty())?,
            }
        }
        Ok(())
    }

    pub fn finish(self) -> io::Result<LayerBlob> {
        let out = self.builder.into_inner()?;
        finish_output(out, &self.path)
    }
}
