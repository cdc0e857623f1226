//! Importing an OCI layout, an OCI archive or a `docker save` archive into a staging folder:
//! every blob is copied, its digest checked, and every layer applied once to prove it sound.

use crate::blob::{self, Compression};
use crate::digest;
use crate::errors::ImportError;
use crate::oci::*;
use crate::source::Source;
use crate::tree::Tree;
use std::path::{Path, PathBuf};

/// An image whose blobs (manifest, config, layers) are complete and checked in the staging folder.
#[derive(Debug)]
pub struct Staged {
    pub manifest: String,
    pub names: Vec<String>,
}

/// Imports every image of `path` into `staging` (blobs as `staging/<hex>`).
pub fn import(path: &Path, staging: &Path, tag: Option<&str>) -> Result<Vec<Staged>, ImportError> {
    let source = Source::open(path, staging)?;
    let blobs = staging.join("blobs");
    std::fs::create_dir_all(&blobs).map_err(|source| ImportError::Write {
        path: blobs.clone(),
        source,
    })?;
    let importer = Importer {
        source: &source,
        blobs: &blobs,
    };
    let mut images = if source.exists("index.json") {
        importer.oci()?
    } else if source.exists("manifest.json") {
        importer.docker()?
    } else {
        return Err(ImportError::NotAnImage { path: path.into() });
    };
    if images.is_empty() {
        return Err(ImportError::NoImages { path: path.into() });
    }
    if let Some(tag) = tag {
        if images.len() != 1 {
            return Err(ImportError::TagMany {
                path: path.into(),
                count: images.len(),
            });
        }
        images[0].names = vec![normalize_name(tag)?];
    }
    Ok(images)
}

/// `busybox` → `busybox:latest`; `docker.io/library/x:1` → `x:1`.
pub fn normalize_name(name: &str) -> Result<String, ImportError> {
    let bad = |why| ImportError::BadName {
        name: name.into(),
        why,
    };
    let mut n = name.trim();
    for prefix in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
    ] {
        n = n.strip_prefix(prefix).unwrap_or(n);
    }
    if n.is_empty() || n.contains(char::is_whitespace) || n.contains('@') {
        return Err(bad("a name is `name[:tag]` without spaces or `@`"));
    }
    let has_tag = n.rfind(':').is_some_and(|c| n[c..].find('/').is_none());
    Ok(if has_tag {
        n.to_string()
    } else {
        format!("{n}:latest")
    })
}

struct Importer<'a> {
    source: &'a Source,
    blobs: &'a Path,
}

impl Importer<'_> {
    fn path(&self) -> PathBuf {
        self.source.path().into()
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        entry: &str,
        what: &'static str,
    ) -> Result<T, ImportError> {
        serde_json::from_slice(bytes).map_err(|source| ImportError::Json {
            path: self.path(),
            entry: entry.into(),
            what,
            source,
        })
    }

    fn blob_name(&self, digest: &str) -> Result<String, ImportError> {
        let hex = digest::parse(digest).ok_or_else(|| ImportError::Unsupported {
            path: self.path(),
            what: format!("blob digest {digest:?} is not sha256"),
        })?;
        Ok(format!("blobs/sha256/{hex}"))
    }

    /// Copies an entry into the staging folder, checking digest and size when known.
    fn stage(
        &self,
        entry: &str,
        expect: Option<(&str, u64)>,
    ) -> Result<(String, u64, PathBuf), ImportError> {
        let (reader, _) = self.source.open_entry(entry)?;
        let (digest, size, staged) =
            blob::stage(self.blobs, reader).map_err(|e| self.source.read_err(entry, e))?;
        if let Some((want, want_size)) = expect {
            if digest != want {
                let _ = std::fs::remove_file(&staged);
                return Err(ImportError::DigestMismatch {
                    path: self.path(),
                    entry: entry.into(),
                    expected: want.into(),
                    actual: digest,
                });
            }
            if size != want_size {
                return Err(ImportError::SizeMismatch {
                    path: self.path(),
                    entry: entry.into(),
                    expected: want_size,
                    actual: size,
                });
            }
        }
        Ok((digest, size, staged))
    }

    fn read_blob(&self, desc: &Descriptor) -> Result<(String, Vec<u8>), ImportError> {
        let entry = self.blob_name(&desc.digest)?;
        let bytes = self.source.read_small(&entry)?;
        let actual = digest::of_bytes(&bytes);
        if actual != desc.digest {
            return Err(ImportError::DigestMismatch {
                path: self.path(),
                entry,
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok((entry, bytes))
    }

    fn oci(&self) -> Result<Vec<Staged>, ImportError> {
        let index: Index = self.json(
            &self.source.read_small("index.json")?,
            "index.json",
            "OCI index",
        )?;
        let mut out: Vec<Staged> = Vec::new();
        for desc in &index.manifests {
            let names = self.oci_names(desc)?;
            for manifest in self.platform_manifests(desc)? {
                let digest = self.oci_manifest(&manifest)?;
                match out.iter_mut().find(|s| s.manifest == digest) {
                    Some(s) => s.names.extend(names.clone()),
                    None => out.push(Staged {
                        manifest: digest,
                        names: names.clone(),
                    }),
                }
            }
        }
        for s in &mut out {
            s.names.sort();
            s.names.dedup();
        }
        Ok(out)
    }

    /// A full name from containerd's annotation, or `<file stem>:<ref>` from OCI's (a tag).
    fn oci_names(&self, desc: &Descriptor) -> Result<Vec<String>, ImportError> {
        if let Some(full) = desc.annotations.get(ANNOTATION_CONTAINERD) {
            return Ok(vec![normalize_name(full)?]);
        }
        let Some(r) = desc.annotations.get(ANNOTATION_REF) else {
            return Ok(Vec::new());
        };
        if r.contains(':') || r.contains('/') {
            return Ok(vec![normalize_name(r)?]);
        }
        let file = self
            .source
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = file.split('.').next().unwrap_or("image").to_lowercase();
        Ok(vec![normalize_name(&format!("{stem}:{r}"))?])
    }

    /// A manifest descriptor, or the linux/amd64 manifests of a (nested) index.
    fn platform_manifests(&self, desc: &Descriptor) -> Result<Vec<Descriptor>, ImportError> {
        if desc.media_type != MEDIA_INDEX && desc.media_type != DOCKER_MANIFEST_LIST {
            return Ok(vec![desc.clone()]);
        }
        let (entry, bytes) = self.read_blob(desc)?;
        let index: Index = self.json(&bytes, &entry, "OCI index")?;
        let mut found = Vec::new();
        for d in index.manifests.iter().filter(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
        }) {
            found.extend(self.platform_manifests(d)?);
        }
        if found.is_empty() {
            let what =
                format!("index {entry} has no linux/amd64 image; detvm guests are x86-64 Linux");
            return Err(ImportError::Unsupported {
                path: self.path(),
                what,
            });
        }
        Ok(found)
    }

    fn oci_manifest(&self, desc: &Descriptor) -> Result<String, ImportError> {
        let (entry, bytes) = self.read_blob(desc)?;
        let manifest: Manifest = self.json(&bytes, &entry, "image manifest")?;
        if manifest.schema_version != 2 {
            let what = format!(
                "{entry} is a schema {} manifest; only schema 2 is supported",
                manifest.schema_version
            );
            return Err(ImportError::Unsupported {
                path: self.path(),
                what,
            });
        }
        blob::stage(self.blobs, &bytes[..]).map_err(|source| ImportError::Write {
            path: self.blobs.into(),
            source,
        })?;
        let config_entry = self.blob_name(&manifest.config.digest)?;
        let (_, config_bytes) = self.read_blob(&manifest.config)?;
        blob::stage(self.blobs, &config_bytes[..]).map_err(|source| ImportError::Write {
            path: self.blobs.into(),
            source,
        })?;
        let config: ConfigFile = self.json(&config_bytes, &config_entry, "image config")?;
        let mut layers = Vec::new();
        for layer in &manifest.layers {
            let entry = self.blob_name(&layer.digest)?;
            let (_, _, staged) = self.stage(&entry, Some((&layer.digest, layer.size)))?;
            layers.push((entry, staged));
        }
        self.check_layers(&config, &config_entry, &layers)?;
        Ok(desc.digest.clone())
    }

    fn docker(&self) -> Result<Vec<Staged>, ImportError> {
        let entries: Vec<DockerManifestEntry> = self.json(
            &self.source.read_small("manifest.json")?,
            "manifest.json",
            "docker save manifest",
        )?;
        let mut out = Vec::new();
        for image in &entries {
            let config_bytes = self.source.read_small(&image.config)?;
            let actual = digest::of_bytes(&config_bytes);
            if let Some(expected) = digest_in_name(&image.config).filter(|e| *e != actual) {
                return Err(ImportError::DigestMismatch {
                    path: self.path(),
                    entry: image.config.clone(),
                    expected,
                    actual,
                });
            }
            let config: ConfigFile = self.json(&config_bytes, &image.config, "image config")?;
            let (config_digest, config_size, _) = blob::stage(self.blobs, &config_bytes[..])
                .map_err(|source| ImportError::Write {
                    path: self.blobs.into(),
                    source,
                })?;
            let mut layers = Vec::new();
            let mut descriptors = Vec::new();
            for entry in &image.layers {
                let (digest, size, staged) = self.stage(entry, None)?;
                if let Some(expected) = digest_in_name(entry).filter(|e| *e != digest) {
                    return Err(ImportError::DigestMismatch {
                        path: self.path(),
                        entry: entry.clone(),
                        expected,
                        actual: digest,
                    });
                }
                let media_type =
                    match blob::sniff(&staged).map_err(|e| self.source.read_err(entry, e))? {
                        Compression::None => MEDIA_LAYER_TAR,
                        Compression::Gzip => MEDIA_LAYER_GZIP,
                        Compression::Zstd => MEDIA_LAYER_ZSTD,
                    };
                descriptors.push(Descriptor {
                    media_type: media_type.into(),
                    digest,
                    size,
                    ..Default::default()
                });
                layers.push((entry.clone(), staged));
            }
            self.check_layers(&config, &image.config, &layers)?;
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(MEDIA_MANIFEST.into()),
                config: Descriptor {
                    media_type: MEDIA_CONFIG.into(),
                    digest: config_digest,
                    size: config_size,
                    ..Default::default()
                },
                layers: descriptors,
            };
            let bytes = serde_json::to_vec(&manifest).map_err(|source| ImportError::Json {
                path: self.path(),
                entry: "manifest.json".into(),
                what: "manifest",
                source,
            })?;
            let (manifest, _, _) =
                blob::stage(self.blobs, &bytes[..]).map_err(|source| ImportError::Write {
                    path: self.blobs.into(),
                    source,
                })?;
            let mut names = Vec::new();
            for tag in image.repo_tags.iter().flatten() {
                names.push(normalize_name(tag)?);
            }
            out.push(Staged { manifest, names });
        }
        Ok(out)
    }

    /// Applies every layer once (finding unsafe paths, truncation, bad links) and checks each
    /// uncompressed digest against the config's `diff_ids`.
    fn check_layers(
        &self,
        config: &ConfigFile,
        config_entry: &str,
        layers: &[(String, PathBuf)],
    ) -> Result<(), ImportError> {
        if !config.os.is_empty()
            && (config.os != "linux" || !matches!(config.architecture.as_str(), "amd64" | ""))
        {
            let what = format!(
                "{config_entry}: the image is for {}/{}; detvm guests are linux/amd64",
                config.os, config.architecture
            );
            return Err(ImportError::Unsupported {
                path: self.path(),
                what,
            });
        }
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(ImportError::LayerCount {
                path: self.path(),
                layers: layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        let mut tree = Tree::default();
        for (i, ((entry, staged), expected)) in
            layers.iter().zip(&config.rootfs.diff_ids).enumerate()
        {
            let reader = blob::open_layer(staged).map_err(|e| self.source.read_err(entry, e))?;
            let mut hashing = digest::HashReader::new(reader);
            tree.apply(i, entry, &mut hashing)
                .map_err(|source| ImportError::Layer {
                    path: self.path(),
                    source,
                })?;
            let (actual, _) = hashing
                .finish()
                .map_err(|e| self.source.read_err(entry, e))?;
            if &actual != expected {
                let entry = format!("{entry} (uncompressed)");
                return Err(ImportError::DigestMismatch {
                    path: self.path(),
                    entry,
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// `blobs/sha256/<hex>`, `<hex>.json`, `<hex>.tar` and `<hex>/layer.tar`-less names carry
/// their digest; other names (old `<id>/layer.tar`) do not.
fn digest_in_name(entry: &str) -> Option<String> {
    let base = entry.rsplit('/').next()?;
    let hex = base
        .strip_suffix(".json")
        .or_else(|| base.strip_suffix(".tar"))
        .unwrap_or(base);
    let digest = format!("sha256:{hex}");
    let in_blobs = entry.contains("blobs/sha256/") || base != hex;
    (in_blobs && digest::parse(&digest).is_some()).then_some(digest)
}
