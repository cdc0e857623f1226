//! The local image store: an OCI image layout under `.detvm/images/` whose index.json names
//! each manifest (`org.opencontainers.image.ref.name` = `name:tag`), plus cached root
//! filesystems under `rootfs/`. Every change goes through a staging folder and a rename, so a
//! failed import leaves nothing half-written.

use crate::blob;
use crate::errors::{ImportError, RootfsError, StoreError};
use crate::image::{Image, ImageRef, Layer};
use crate::import::{self, normalize_name};
use crate::oci::*;
use crate::rootfs;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store the CLI uses: `$DETVM_HOME/images`, else `.detvm/images` in the current folder.
    pub fn default_root() -> PathBuf {
        match std::env::var_os("DETVM_HOME") {
            Some(home) => PathBuf::from(home).join("images"),
            None => PathBuf::from(".detvm/images"),
        }
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let store = Store { root: root.into() };
        for dir in ["blobs/sha256", "tmp", "rootfs"] {
            let path = store.root.join(dir);
            std::fs::create_dir_all(&path).map_err(|source| StoreError::Io { path, source })?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        blob::path_in(&self.blobs_dir(), digest)
    }

    /// Imports every image of an OCI layout folder, OCI archive or `docker save` archive.
    pub fn load(&self, path: &Path) -> Result<Vec<ImageRef>, ImportError> {
        self.load_as(path, None)
    }

    /// Like [`Store::load`], naming the (single) image `tag` instead of the archive's names.
    pub fn load_as(&self, path: &Path, tag: Option<&str>) -> Result<Vec<ImageRef>, ImportError> {
        let _lock = self.lock()?;
        let staging = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(|source| ImportError::Write {
                path: self.root.join("tmp"),
                source,
            })?;
        let staged = import::import(path, staging.path(), tag)?;
        // Blobs are complete and checked; moving them in first means the index never names a
        // missing blob. A crash here leaves only unreferenced blobs, which `remove` collects.
        let blobs = staging.path().join("blobs");
        let write_err = |path: &Path, source| ImportError::Write {
            path: path.into(),
            source,
        };
        for entry in std::fs::read_dir(&blobs).map_err(|e| write_err(&blobs, e))? {
            let entry = entry.map_err(|e| write_err(&blobs, e))?;
            let dest = self.root.join("blobs/sha256").join(entry.file_name());
            if !dest.exists() {
                std::fs::rename(entry.path(), &dest).map_err(|e| write_err(&dest, e))?;
            }
        }
        let mut index = self.read_index()?;
        let before: BTreeSet<String> = index.manifests.iter().map(|d| d.digest.clone()).collect();
        for image in &staged {
            index
                .manifests
                .retain(|d| match d.annotations.get(ANNOTATION_REF) {
                    Some(name) => !image.names.contains(name),
                    None => d.digest != image.manifest,
                });
            let size = self
                .blob_path(&image.manifest)
                .and_then(|p| p.metadata().ok())
                .map_or(0, |m| m.len());
            let desc = |name: Option<&String>| Descriptor {
                media_type: MEDIA_MANIFEST.into(),
                digest: image.manifest.clone(),
                size,
                annotations: name
                    .map(|n| [(ANNOTATION_REF.to_string(), n.clone())].into())
                    .unwrap_or_default(),
                platform: None,
            };
            if image.names.is_empty() && !index.manifests.iter().any(|d| d.digest == image.manifest)
            {
                index.manifests.push(desc(None));
            }
            index
                .manifests
                .extend(image.names.iter().map(|n| desc(Some(n))));
        }
        // An image whose last name moved to another image stays, unnamed, until removed.
        for digest in before {
            if !index.manifests.iter().any(|d| d.digest == digest) {
                index.manifests.push(Descriptor {
                    media_type: MEDIA_MANIFEST.into(),
                    digest,
                    ..Default::default()
                });
            }
        }
        self.write_index(&index)?;
        Ok(staged
            .into_iter()
            .map(|s| {
                let names = names_of(&index, &s.manifest);
                ImageRef {
                    digest: s.manifest,
                    names,
                }
            })
            .collect())
    }

    /// Finds an image by `name[:tag]`, `name@sha256:…`, `sha256:…` or a unique digest prefix.
    pub fn resolve(&self, reference: &str) -> Result<Image, StoreError> {
        let index = self.read_index()?;
        let digest = self.find(&index, reference)?;
        self.read_image(&index, &digest)
    }

    /// Every image in the store, sorted by first name (unnamed ones last).
    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let index = self.read_index()?;
        let digests: BTreeSet<&String> = index.manifests.iter().map(|d| &d.digest).collect();
        let mut images = digests
            .into_iter()
            .map(|d| self.read_image(&index, d))
            .collect::<Result<Vec<_>, _>>()?;
        images.sort_by_key(|i| {
            (
                i.names.is_empty(),
                i.names.first().cloned(),
                i.digest.clone(),
            )
        });
        Ok(images)
    }

    /// Removes a name, or a whole image when given its digest or its last name; then deletes
    /// blobs and cached root filesystems no image uses. Returns what was removed.
    pub fn remove(&self, reference: &str) -> Result<Vec<String>, StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let digest = self.find(&index, reference)?;
        let name = normalize_name(reference)
            .ok()
            .filter(|n| names_of(&index, &digest).contains(n));
        let mut removed = Vec::new();
        match name {
            Some(name) if names_of(&index, &digest).len() > 1 => {
                index
                    .manifests
                    .retain(|d| d.annotations.get(ANNOTATION_REF) != Some(&name));
                removed.push(name);
            }
            _ => {
                removed.extend(names_of(&index, &digest));
                index.manifests.retain(|d| d.digest != digest);
                removed.push(digest);
            }
        }
        self.write_index(&index)?;
        self.collect_garbage(&index)?;
        Ok(removed)
    }

    /// The guest root filesystem of `image`: a reproducible squashfs, built once and cached.
    pub fn rootfs(&self, image: &Image) -> Result<PathBuf, RootfsError> {
        let out = self.rootfs_path(image);
        rootfs::build(image, &self.blobs_dir(), &self.root.join("tmp"), &out)?;
        Ok(out)
    }

    fn rootfs_path(&self, image: &Image) -> PathBuf {
        self.root
            .join("rootfs")
            .join(format!("{}.sqfs", rootfs::cache_key(image)))
    }

    fn find(&self, index: &Index, reference: &str) -> Result<String, StoreError> {
        let not_found = || StoreError::NotFound {
            reference: reference.into(),
            root: self.root.clone(),
        };
        let wanted = reference
            .split_once('@')
            .map_or(reference, |(_, d)| d)
            .trim();
        if !reference.contains('@') {
            if let Ok(name) = normalize_name(reference) {
                if let Some(d) = index
                    .manifests
                    .iter()
                    .find(|d| d.annotations.get(ANNOTATION_REF) == Some(&name))
                {
                    return Ok(d.digest.clone());
                }
            }
        }
        let hex = wanted.strip_prefix("sha256:").unwrap_or(wanted);
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let matches: BTreeSet<&String> = index
            .manifests
            .iter()
            .map(|d| &d.digest)
            .filter(|d| d["sha256:".len()..].starts_with(hex))
            .collect();
        match matches.len() {
            0 => Err(not_found()),
            1 => Ok(matches.into_iter().next().cloned().unwrap_or_default()),
            _ => Err(StoreError::Ambiguous {
                reference: reference.into(),
                matches: matches.into_iter().cloned().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    fn read_image(&self, index: &Index, digest: &str) -> Result<Image, StoreError> {
        let manifest: Manifest = self.read_json(digest)?;
        let config: ConfigFile = self.read_json(&manifest.config.digest)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            let what = format!("manifest {digest} and its config disagree on the number of layers");
            return Err(StoreError::Corrupt {
                path: self.root.clone(),
                what,
            });
        }
        let layers = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(l, diff_id)| Layer {
                digest: l.digest.clone(),
                diff_id: diff_id.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect();
        Ok(Image {
            digest: digest.into(),
            names: names_of(index, digest),
            config_digest: manifest.config.digest.clone(),
            config: config
                .config
                .as_ref()
                .map(ImageConfig::from)
                .unwrap_or_default(),
            layers,
        })
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &str) -> Result<T, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt {
            path: self.root.join("blobs/sha256"),
            what,
        };
        let path = self
            .blob_path(digest)
            .ok_or_else(|| corrupt(format!("bad digest {digest:?}")))?;
        let bytes = std::fs::read(&path).map_err(|e| corrupt(format!("blob {digest}: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("blob {digest}: {e}")))
    }

    fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.root.join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                what: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index {
                schema_version: 2,
                ..Default::default()
            }),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let mut index = index.clone();
        index.manifests.sort_by(|a, b| {
            (a.annotations.get(ANNOTATION_REF), &a.digest)
                .cmp(&(b.annotations.get(ANNOTATION_REF), &b.digest))
        });
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| StoreError::Corrupt {
            path: self.root.clone(),
            what: e.to_string(),
        })?;
        self.write_atomic(&self.root.join("index.json"), &bytes)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.into(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp")).map_err(io)?;
        std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Serializes changes to the index between processes (released when the file closes).
    fn lock(&self) -> Result<File, StoreError> {
        let path = self.root.join("lock");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let file = File::create(&path).map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(file)
    }

    fn collect_garbage(&self, index: &Index) -> Result<(), StoreError> {
        let mut keep_blobs = BTreeSet::new();
        let mut keep_rootfs = BTreeSet::new();
        let digests: BTreeSet<&String> = index.manifests.iter().map(|d| &d.digest).collect();
        for digest in digests {
            let image = self.read_image(index, digest)?;
            keep_rootfs.insert(self.rootfs_path(&image));
            keep_blobs.insert(image.digest.clone());
            keep_blobs.insert(image.config_digest.clone());
            keep_blobs.extend(image.layers.iter().map(|l| l.digest.clone()));
        }
        let keep_blobs: BTreeSet<PathBuf> = keep_blobs
            .iter()
            .filter_map(|d| self.blob_path(d))
            .collect();
        for (dir, keep) in [("blobs/sha256", &keep_blobs), ("rootfs", &keep_rootfs)] {
            let dir = self.root.join(dir);
            let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                if !keep.contains(&entry.path()) {
                    std::fs::remove_file(entry.path()).map_err(|source| StoreError::Io {
                        path: entry.path(),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn names_of(index: &Index, digest: &str) -> Vec<String> {
    let mut names: Vec<String> = index
        .manifests
        .iter()
        .filter(|d| d.digest == digest)
        .filter_map(|d| d.annotations.get(ANNOTATION_REF).cloned())
        .collect();
    names.sort();
    names
}
