//! Packing a bundle on the sender's side (`detvm push`): which files and images a
//! compose system needs, then the tar+zstd file with the blobs the server lacks.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use detvm_images::digest::HashReader;
use detvm_images::Store;
use explorer::run::RunOptions;

use super::{BundleError, CampaignSettings, Entry, ImageEntry, Manifest, FORMAT, MANIFEST};

/// What to pack.
#[derive(Debug, Clone)]
pub struct PackInput {
    pub compose: PathBuf,
    /// A fault plan file (`--faults`), inside the compose file's folder.
    pub faults: Option<PathBuf>,
    /// `docker save` or OCI archives to send whole.
    pub archives: Vec<PathBuf>,
    /// The `.detvm` folder whose image store holds the compose file's images.
    pub home: PathBuf,
    pub campaign: CampaignSettings,
}

/// A bundle's manifest with where each of its entries comes from on this host.
#[derive(Debug, Clone)]
pub struct Plan {
    pub manifest: Manifest,
    sources: Vec<(String, PathBuf)>,
    blob_dir: PathBuf,
}

fn input(message: String) -> BundleError {
    BundleError::Input(message)
}

/// sha256 and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, u64), BundleError> {
    let file = File::open(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
    HashReader::new(file)
        .finish()
        .map_err(|e| input(format!("{}: {e}", path.display())))
}

/// `env_file` entries of every service, as written (string, list, or list of `{path}`).
fn env_files(compose_text: &str) -> Vec<String> {
    let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(compose_text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(services) = doc["services"].as_object() else {
        return out;
    };
    for service in services.values() {
        let items = match &service["env_file"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().or_else(|| v["path"].as_str()).map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        out.extend(items);
    }
    out
}

/// `path` relative to `dir` with `/` separators; refused when it is outside `dir`.
fn inside(dir: &Path, path: &Path) -> Result<String, BundleError> {
    let full = dir
        .join(path)
        .canonicalize()
        .map_err(|e| input(format!("{}: {e}", dir.join(path).display())))?;
    let rel = full.strip_prefix(dir).map_err(|_| {
        input(format!(
            "{}: outside the compose file's folder {}; a bundle carries only files under it",
            full.display(),
            dir.display()
        ))
    })?;
    let text = rel.to_string_lossy().replace('\\', "/");
    if !super::safe_relative(&text, 1024) {
        return Err(input(format!(
            "{}: not a plain relative path",
            rel.display()
        )));
    }
    Ok(text)
}

fn run_options(input: &PackInput) -> RunOptions {
    RunOptions {
        compose: input.compose.clone(),
        seed: input.campaign.seed,
        duration: None,
        epoch: None,
        faults: None,
        no_faults: true,
        vars: input.campaign.vars.clone(),
        backend: vmm::backend::BackendKind::Emu,
        home: input.home.clone(),
        snapshot_at: Vec::new(),
    }
}

/// Finds every file and image the compose system needs; nothing is written yet.
pub fn plan(input: &PackInput) -> Result<Plan, BundleError> {
    let compose = input
        .compose
        .canonicalize()
        .map_err(|e| self::input(format!("{}: {e}", input.compose.display())))?;
    let dir = compose.parent().unwrap_or(Path::new("/")).to_path_buf();
    let parsed = explorer::run::prepare::load_compose(&run_options(input))
        .map_err(|e| self::input(e.to_string()))?;
    let text = std::fs::read_to_string(&compose)
        .map_err(|e| self::input(format!("{}: {e}", compose.display())))?;

    let mut names: BTreeSet<String> = BTreeSet::new();
    names.insert(inside(&dir, &compose)?);
    if dir.join(".env").is_file() {
        names.insert(".env".into());
    }
    for f in env_files(&text) {
        names.insert(inside(&dir, Path::new(&f))?);
    }
    if let Some(f) = &input.faults {
        names.insert(inside(&dir, &std::path::absolute(f).unwrap_or(f.clone()))?);
    }
    let mut sources = Vec::new();
    let mut files = Vec::new();
    for name in &names {
        let path = dir.join(name);
        let (sha256, size) = hash_file(&path)?;
        files.push(Entry {
            path: name.clone(),
            sha256,
            size,
        });
        sources.push((format!("files/{name}"), path));
    }

    let mut archives = Vec::new();
    for (i, a) in input.archives.iter().enumerate() {
        let (sha256, size) = hash_file(a)?;
        let stem: String = a
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = format!("{i}-{stem}");
        sources.push((format!("archives/{path}"), a.clone()));
        archives.push(Entry { path, sha256, size });
    }

    let store = Store::open(input.home.join("images"))
        .map_err(|e| self::input(format!("image store: {e}")))?;
    let blob_dir = store.root().join("blobs/sha256");
    let mut images: Vec<ImageEntry> = Vec::new();
    for service in &parsed.services {
        match store.resolve(&service.image) {
            Ok(image) => {
                if images.iter().any(|i| i.manifest == image.digest) {
                    continue;
                }
                let mut digests = vec![image.digest.clone(), image.config_digest.clone()];
                digests.extend(image.layers.iter().map(|l| l.digest.clone()));
                let mut blobs = Vec::new();
                for d in digests {
                    let hex = detvm_images::digest::parse(&d)
                        .ok_or_else(|| self::input(format!("bad digest {d} in the store")))?;
                    let size = std::fs::metadata(blob_dir.join(hex))
                        .map_err(|e| self::input(format!("blob {d}: {e}")))?
                        .len();
                    blobs.push(Entry {
                        path: d.clone(),
                        sha256: d,
                        size,
                    });
                }
                images.push(ImageEntry {
                    name: image
                        .names
                        .first()
                        .cloned()
                        .unwrap_or_else(|| service.image.clone()),
                    manifest: image.digest,
                    blobs,
                });
            }
            Err(_) if !input.archives.is_empty() => {} // the server finds it in an archive
            Err(e) => {
                return Err(self::input(format!(
                    "services.{}.image: `{}` is not in the image store ({e}); load or build it, or pass --image-archive FILE",
                    service.name, service.image
                )))
            }
        }
    }
    let compose_name = inside(&dir, &compose)?;
    Ok(Plan {
        manifest: Manifest {
            format: FORMAT,
            compose: compose_name,
            files,
            archives,
            images,
            carried_blobs: Vec::new(),
            campaign: input.campaign.clone(),
        },
        sources,
        blob_dir,
    })
}

impl Plan {
    /// Every blob digest the images need, for asking the server which it lacks.
    pub fn blob_digests(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .manifest
            .images
            .iter()
            .flat_map(|i| i.blobs.iter().map(|b| b.sha256.clone()))
            .collect();
        set.into_iter().collect()
    }

    /// Writes the bundle to `out`, carrying the blobs in `carry` (the ones the server lacks).
    pub fn write(&self, carry: &BTreeSet<String>, out: &Path) -> Result<Manifest, BundleError> {
        let mut manifest = self.manifest.clone();
        manifest.carried_blobs = self
            .blob_digests()
            .into_iter()
            .filter(|d| carry.contains(d))
            .collect();
        let io = |e: std::io::Error| BundleError::Io(format!("{}: {e}", out.display()));
        let file = File::create(out).map_err(io)?;
        let encoder = zstd::Encoder::new(BufWriter::new(file), 3).map_err(io)?;
        let mut tar = tar::Builder::new(encoder);
        let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        append(&mut tar, MANIFEST, json.len() as u64, &json[..]).map_err(io)?;
        let mut entries = self.sources.clone();
        for d in &manifest.carried_blobs {
            let hex = detvm_images::digest::parse(d).unwrap_or_default();
            entries.push((format!("blobs/sha256/{hex}"), self.blob_dir.join(hex)));
        }
        for (name, path) in entries {
            let f = File::open(&path)
                .map_err(|e| BundleError::Io(format!("{}: {e}", path.display())))?;
            let len = f.metadata().map_err(io)?.len();
            append(&mut tar, &name, len, f).map_err(io)?;
        }
        let encoder = tar.into_inner().map_err(io)?;
        encoder.finish().map_err(io)?.flush().map_err(io)?;
        Ok(manifest)
    }
}

/// A regular file entry with fixed metadata (the bundle does not depend on the host).
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    len: u64,
    data: impl Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(len);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data.take(len))
}
