//! Applying layer tars, in order, to an in-memory tree: the merged root filesystem.
//!
//! Nothing is extracted to the host, so an archive's symlinks are never followed on the host.
//! The tree only records where each file's bytes live (layer, offset), so a multi-gigabyte
//! image costs a few hundred bytes per entry.

use std::collections::BTreeMap;
use std::io::Read;
use thiserror::Error;

/// Why a layer could not be applied. `layer` names the file (or blob) the tar came from.
#[derive(Debug, Error)]
pub enum LayerError {
    /// `at` is `after "name"` for a broken header, `in "name"` for a bad field.
    #[error(
        "layer {layer}: cannot read the tar {at}: {source} (is the file truncated or not a tar?)"
    )]
    Tar {
        layer: String,
        at: String,
        source: std::io::Error,
    },
    #[error("layer {layer}: entry {entry:?} escapes the root with `..`; the archive is unsafe, rebuild it")]
    Escapes { layer: String, entry: String },
    #[error(
        "layer {layer}: entry {entry:?} goes through the symlink {link:?} -> {target:?}; \
         detvm never follows archive symlinks while applying layers, rebuild the image with the real path"
    )]
    ThroughSymlink {
        layer: String,
        entry: String,
        link: String,
        target: String,
    },
    #[error("layer {layer}: entry {entry:?} needs {parent:?} to be a directory, but a lower entry made it a file")]
    NotADirectory {
        layer: String,
        entry: String,
        parent: String,
    },
    #[error("layer {layer}: hard link {entry:?} points to {target:?}, which is not a file in this or a lower layer")]
    HardLinkTarget {
        layer: String,
        entry: String,
        target: String,
    },
    #[error("layer {layer}: entry {entry:?}: {what} is not supported")]
    Unsupported {
        layer: String,
        entry: String,
        what: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Sorted by name (PAX `SCHILY.xattr.*`), e.g. `security.capability`.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    fn implicit_dir() -> Meta {
        Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Where a regular file's bytes are: `size` bytes at `offset` of layer `layer`'s tar stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRef {
    pub layer: usize,
    pub offset: u64,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(DataRef),
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub meta: Meta,
    /// Paths that share an inode are hard links to each other.
    pub inode: u64,
}

/// The merged tree: paths are relative (`etc/passwd`), parents sort before children.
#[derive(Debug)]
pub struct Tree {
    pub root: Meta,
    pub nodes: BTreeMap<String, Node>,
    next_inode: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            root: Meta::implicit_dir(),
            nodes: BTreeMap::new(),
            next_inode: 1,
        }
    }
}

enum Change {
    Whiteout(String),
    Opaque(String),
    Put {
        path: String,
        kind: Pending,
        meta: Meta,
    },
}

enum Pending {
    Node(Kind),
    HardLink(String),
}

/// Splits a tar name into clean components: `./a//b/` → `a/b`, `/a` → `a` (as Docker does),
/// and refuses `..`. `Ok(None)` is the root itself.
pub(crate) fn clean_path(raw: &str) -> Result<Option<String>, ()> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(()),
            p => parts.push(p),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

impl Tree {
    /// Applies one layer tar (already decompressed). `index` is recorded in each file's
    /// [`DataRef`] so the caller can find the bytes again.
    pub fn apply(
        &mut self,
        index: usize,
        layer: &str,
        reader: impl Read,
    ) -> Result<(), LayerError> {
        let changes = read_changes(index, layer, reader)?;
        // Whiteouts hide lower layers only, wherever they sit in this layer's tar.
        for change in &changes {
            match change {
                Change::Whiteout(path) => self.remove_subtree(path),
                Change::Opaque(dir) => self.remove_children(dir),
                Change::Put { .. } => {}
            }
        }
        for change in changes {
            if let Change::Put { path, kind, meta } = change {
                self.put(layer, path, kind, meta)?;
            }
        }
        Ok(())
    }

    fn put(
        &mut self,
        layer: &str,
        path: String,
        kind: Pending,
        meta: Meta,
    ) -> Result<(), LayerError> {
        if path.is_empty() {
            self.root = meta; // `./`: the root directory's owner and mode
            return Ok(());
        }
        self.make_parents(layer, &path)?;
        let kind = match kind {
            Pending::Node(Kind::Dir) => {
                if let Some(node) = self.nodes.get_mut(&path).filter(|n| n.kind == Kind::Dir) {
                    node.meta = meta; // a directory entry over a directory keeps its children
                    return Ok(());
                }
                Kind::Dir
            }
            Pending::Node(kind) => kind,
            Pending::HardLink(target) => {
                let err = || LayerError::HardLinkTarget {
                    layer: layer.into(),
                    entry: path.clone(),
                    target: target.clone(),
                };
                let target = clean_path(&target).map_err(|_| err())?.ok_or_else(err)?;
                if target == path {
                    return Ok(());
                }
                let node = self
                    .nodes
                    .get(&target)
                    .filter(|n| n.kind != Kind::Dir)
                    .ok_or_else(err)?
                    .clone();
                self.remove_subtree(&path);
                self.nodes.insert(path, node);
                return Ok(());
            }
        };
        self.remove_subtree(&path);
        let inode = self.next_inode;
        self.next_inode += 1;
        self.nodes.insert(path, Node { kind, meta, inode });
        Ok(())
    }

    /// Creates missing parent directories; refuses to walk through a symlink or a file.
    fn make_parents(&mut self, layer: &str, path: &str) -> Result<(), LayerError> {
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            match self.nodes.get(parent).map(|n| &n.kind) {
                Some(Kind::Dir) => {}
                Some(Kind::Symlink(target)) => {
                    return Err(LayerError::ThroughSymlink {
                        layer: layer.into(),
                        entry: path.into(),
                        link: parent.into(),
                        target: target.clone(),
                    })
                }
                Some(_) => {
                    return Err(LayerError::NotADirectory {
                        layer: layer.into(),
                        entry: path.into(),
                        parent: parent.into(),
                    })
                }
                None => {
                    let inode = self.next_inode;
                    self.next_inode += 1;
                    self.nodes.insert(
                        parent.into(),
                        Node {
                            kind: Kind::Dir,
                            meta: Meta::implicit_dir(),
                            inode,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn remove_subtree(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &str) {
        if dir.is_empty() {
            self.nodes.clear();
            return;
        }
        // '0' is the byte after '/', so [dir/, dir0) is exactly the subtree.
        let mut children = self.nodes.split_off(&format!("{dir}/"));
        let mut after = children.split_off(&format!("{dir}0"));
        self.nodes.append(&mut after);
    }
}

fn read_changes(index: usize, layer: &str, reader: impl Read) -> Result<Vec<Change>, LayerError> {
    let mut archive = tar::Archive::new(reader);
    let mut changes = Vec::new();
    let mut last = String::from("(start of the tar)");
    let tar_err = |at: String, source| LayerError::Tar {
        layer: layer.into(),
        at,
        source,
    };
    let entries = archive
        .entries()
        .map_err(|e| tar_err(format!("after entry {last:?}"), e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_err(format!("after entry {last:?}"), e))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsupported = |what: &str| LayerError::Unsupported {
            layer: layer.into(),
            entry: raw.clone(),
            what: what.into(),
        };
        if raw.contains('\u{FFFD}') {
            return Err(unsupported("a name that is not UTF-8"));
        }
        let path = clean_path(&raw).map_err(|_| LayerError::Escapes {
            layer: layer.into(),
            entry: raw.clone(),
        })?;
        let meta = read_meta(&mut entry).map_err(|e| tar_err(format!("in entry {raw:?}"), e))?;
        let header = entry.header();
        let kind = header.entry_type();
        let Some(path) = path else {
            if kind.is_dir() {
                changes.push(Change::Put {
                    path: String::new(),
                    kind: Pending::Node(Kind::Dir),
                    meta,
                });
            }
            last = raw;
            continue;
        };
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d, b),
            None => ("", path.as_str()),
        };
        if let Some(hidden) = base.strip_prefix(".wh.") {
            if hidden == ".wh..opq" {
                changes.push(Change::Opaque(dir.into()));
            } else if !hidden.starts_with(".wh.") {
                // `.wh..wh.*` other than `.opq` are aufs bookkeeping and hide nothing.
                let hidden = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                changes.push(Change::Whiteout(hidden));
            }
            last = raw;
            continue;
        }
        let device = |e: &tar::Entry<_>| -> std::io::Result<(u32, u32)> {
            let h = e.header();
            Ok((
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            ))
        };
        let pending = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let data = DataRef {
                    layer: index,
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                };
                Pending::Node(Kind::File(data))
            }
            tar::EntryType::Directory => Pending::Node(Kind::Dir),
            tar::EntryType::Symlink => {
                Pending::Node(Kind::Symlink(link_name(&entry, &raw, layer)?))
            }
            tar::EntryType::Link => Pending::HardLink(link_name(&entry, &raw, layer)?),
            tar::EntryType::Char => {
                let (ma, mi) =
                    device(&entry).map_err(|e| tar_err(format!("in entry {raw:?}"), e))?;
                Pending::Node(Kind::Char(ma, mi))
            }
            tar::EntryType::Block => {
                let (ma, mi) =
                    device(&entry).map_err(|e| tar_err(format!("in entry {raw:?}"), e))?;
                Pending::Node(Kind::Block(ma, mi))
            }
            tar::EntryType::Fifo => Pending::Node(Kind::Fifo),
            tar::EntryType::GNUSparse => return Err(unsupported("a GNU sparse file")),
            other => return Err(unsupported(&format!("tar entry type {other:?}"))),
        };
        changes.push(Change::Put {
            path,
            kind: pending,
            meta,
        });
        last = raw;
    }
    Ok(changes)
}

fn link_name<R: Read>(entry: &tar::Entry<R>, raw: &str, layer: &str) -> Result<String, LayerError> {
    match entry.link_name_bytes() {
        Some(name) => Ok(String::from_utf8_lossy(&name).into_owned()),
        None => Err(LayerError::Unsupported {
            layer: layer.into(),
            entry: raw.into(),
            what: "a link without a target".into(),
        }),
    }
}

/// Owner, mode, time and xattrs, with PAX records overriding the ustar fields.
fn read_meta<R: Read>(entry: &mut tar::Entry<R>) -> std::io::Result<Meta> {
    let h = entry.header();
    // Some writers leave owner and time fields blank; the header checksum already passed, so
    // blank means zero rather than corruption.
    let mut meta = Meta {
        mode: h.mode()? & 0o7777,
        uid: h.uid().unwrap_or(0),
        gid: h.gid().unwrap_or(0),
        mtime: h.mtime().unwrap_or(0),
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key().unwrap_or_default();
            let number = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
            };
            match key {
                "uid" => meta.uid = number().unwrap_or(meta.uid),
                "gid" => meta.gid = number().unwrap_or(meta.gid),
                "mtime" => meta.mtime = number().unwrap_or(meta.mtime),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        meta.xattrs
                            .push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    meta.xattrs.sort();
    Ok(meta)
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
