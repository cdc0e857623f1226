//! Reading files out of what the user hands us: an OCI layout folder, or a tar archive
//! (an OCI archive or a `docker save` archive, optionally gzip-compressed).

use crate::errors::ImportError;
use crate::tree::clean_path;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub enum Entry {
    File { offset: u64, size: u64 },
    Link(String),
}

pub enum Source {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        data: PathBuf,
        entries: HashMap<String, Entry>,
    },
}

impl Source {
    /// Opens a folder or indexes a tar archive. A gzip-compressed archive is first unpacked to
    /// `scratch` so blobs can be read at random.
    pub fn open(path: &Path, scratch: &Path) -> Result<Source, ImportError> {
        let open_err = |source| ImportError::Open {
            path: path.into(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.into()));
        }
        let mut data = path.to_path_buf();
        let mut magic = [0u8; 2];
        let n = File::open(path)
            .and_then(|mut f| f.read(&mut magic))
            .map_err(open_err)?;
        if n == 2 && magic == [0x1f, 0x8b] {
            data = scratch.join("archive.tar");
            let mut out = File::create(&data).map_err(|source| ImportError::Write {
                path: data.clone(),
                source,
            })?;
            let input = File::open(path).map_err(open_err)?;
            io::copy(
                &mut flate2::read::GzDecoder::new(BufReader::new(input)),
                &mut out,
            )
            .map_err(|source| ImportError::Archive {
                path: path.into(),
                after: "(gzip stream)".into(),
                source,
            })?;
        }
        let entries = index_tar(path, &data)?;
        Ok(Source::Tar {
            path: path.into(),
            data,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            Source::Dir(p) => p,
            Source::Tar { path, .. } => path,
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(dir) => clean_path(name)
                .ok()
                .flatten()
                .is_some_and(|n| dir.join(n).is_file()),
            Source::Tar { entries, .. } => self.resolve(entries, name).is_some(),
        }
    }

    /// Opens `name` (a path inside the layout or archive) and returns it with its size.
    pub fn open_entry(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64), ImportError> {
        let missing = || ImportError::Missing {
            path: self.path().into(),
            entry: name.into(),
        };
        match self {
            Source::Dir(dir) => {
                let clean = clean_path(name).ok().flatten().ok_or_else(missing)?;
                let full = dir.join(clean);
                // The layout is a folder the user gave us; still, a blob must not be a symlink
                // that leads out of it.
                let meta = std::fs::symlink_metadata(&full).map_err(|_| missing())?;
                if !meta.is_file() {
                    return Err(missing());
                }
                let file = File::open(&full).map_err(|source| ImportError::Open {
                    path: full.clone(),
                    source,
                })?;
                Ok((Box::new(BufReader::new(file)), meta.len()))
            }
            Source::Tar { data, entries, .. } => {
                let (offset, size) = self.resolve(entries, name).ok_or_else(missing)?;
                let mut file = File::open(data).map_err(|source| ImportError::Open {
                    path: data.clone(),
                    source,
                })?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|source| ImportError::Open {
                        path: data.clone(),
                        source,
                    })?;
                Ok((Box::new(BufReader::new(file).take(size)), size))
            }
        }
    }

    /// Reads a small JSON document (index, manifest, config) fully.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>, ImportError> {
        const LIMIT: u64 = 64 << 20;
        let (mut reader, size) = self.open_entry(name)?;
        if size > LIMIT {
            return Err(ImportError::TooBig {
                path: self.path().into(),
                entry: name.into(),
                size,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| self.read_err(name, source))?;
        if (bytes.len() as u64) < size {
            return Err(self.read_err(name, io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(bytes)
    }

    pub fn read_err(&self, name: &str, source: io::Error) -> ImportError {
        ImportError::Archive {
            path: self.path().into(),
            after: name.into(),
            source,
        }
    }

    /// Follows archive-internal links (old `docker save` links duplicate layers), at most 8 deep.
    fn resolve(&self, entries: &HashMap<String, Entry>, name: &str) -> Option<(u64, u64)> {
        let mut name = clean_path(name).ok()??;
        for _ in 0..8 {
            match entries.get(&name)? {
                Entry::File { offset, size } => return Some((*offset, *size)),
                Entry::Link(target) => name = target.clone(),
            }
        }
        None
    }
}

fn index_tar(path: &Path, data: &Path) -> Result<HashMap<String, Entry>, ImportError> {
    let file = File::open(data).map_err(|source| ImportError::Open {
        path: data.into(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| ImportError::Open {
            path: data.into(),
            source,
        })?
        .len();
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut entries = HashMap::new();
    let mut last = String::from("(start of the archive)");
    let err = |after: &str, source| ImportError::Archive {
        path: path.into(),
        after: after.into(),
        source,
    };
    for entry in archive.entries().map_err(|e| err(&last, e))? {
        let entry = entry.map_err(|e| err(&last, e))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_name = || ImportError::UnsafeName {
            path: path.into(),
            entry: raw.clone(),
        };
        let Some(name) = clean_path(&raw).map_err(|_| unsafe_name())? else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            let (offset, size) = (entry.raw_file_position(), entry.size());
            if offset + size > len {
                return Err(err(
                    &raw,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the archive ends inside this entry",
                    ),
                ));
            }
            entries.insert(name, Entry::File { offset, size });
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            // Symlinks are relative to the link's folder; hard links to the archive root.
            let joined = match name.rsplit_once('/') {
                Some((dir, _)) if kind.is_symlink() && !target.starts_with('/') => {
                    format!("{dir}/{target}")
                }
                _ => target.clone(),
            };
            let target = resolve_dots(&joined).ok_or_else(unsafe_name)?;
            entries.insert(name, Entry::Link(target));
        }
        last = raw;
    }
    Ok(entries)
}

/// Normalizes `a/../b` inside the archive; `None` if it climbs above the archive root.
fn resolve_dots(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}
