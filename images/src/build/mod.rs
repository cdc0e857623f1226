//! Building example images without Docker: a busybox-static base plus files, or a Debian
//! root filesystem made by debootstrap plus files. The result is a normal OCI image.
//!
//! An image is described by a small TOML file (see `images/examples/etcd/image.toml`):
//!
//! ```toml
//! name = "example/etcd:3.4"
//! [debootstrap]            # leave out for the busybox base
//! suite = "bookworm"
//! packages = ["etcd-server"]
//! [[files]]
//! src = "etcd.conf"        # relative to the TOML file
//! dest = "/etc/etcd.conf"
//! mode = 0o644             # optional: default the source's mode
//! [config]
//! entrypoint = ["/usr/bin/etcd"]
//! ```

mod debootstrap;
mod layer;
mod output;

pub use debootstrap::{apt_mirror, Debootstrap};
pub use layer::{LayerBlob, LayerWriter};
pub use output::{write_archive, write_layout};

use crate::oci::ImageConfig;
use crate::tree::clean_path;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Spec {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: {what}")]
    BadSpec { path: PathBuf, what: String },
    #[error("cannot read {path}: {source}")]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{tool}` is missing: {hint}")]
    NoTool {
        tool: &'static str,
        hint: &'static str,
    },
    #[error("debootstrap needs root (it makes device nodes and chroots); run as root")]
    NotRoot,
    #[error("debootstrap {suite} failed ({status}); its log is {log}:\n{tail}")]
    Debootstrap {
        suite: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
}

/// What to build. Paths in `files` are relative to `base_dir`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `name:tag`.
    pub name: String,
    /// A Debian base; without it the base is busybox-static.
    #[serde(default)]
    pub debootstrap: Option<Debootstrap>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub config: ImageConfig,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub src: PathBuf,
    pub dest: String,
    pub mode: Option<u32>,
}

impl Spec {
    pub fn from_file(path: &Path) -> Result<Spec, BuildError> {
        let text = std::fs::read_to_string(path).map_err(|source| BuildError::Input {
            path: path.into(),
            source,
        })?;
        let mut spec: Spec = toml::from_str(&text).map_err(|e| BuildError::Spec {
            path: path.into(),
            source: Box::new(e),
        })?;
        spec.base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(spec)
    }
}

/// A built image: its layer blobs (in a temporary folder it owns) and config.
#[derive(Debug)]
pub struct Built {
    pub name: String,
    pub layers: Vec<LayerBlob>,
    pub config: ImageConfig,
    work: tempfile::TempDir,
}

impl Built {
    /// Writes the image as an OCI layout folder, or an OCI archive if `out` ends in `.tar`.
    /// Returns the manifest digest.
    pub fn write(&self, out: &Path) -> Result<String, BuildError> {
        let result = if out.extension().is_some_and(|e| e == "tar") {
            write_archive(out, &self.name, &self.layers, &self.config)
        } else {
            write_layout(out, &self.name, &self.layers, &self.config)
        };
        result.map_err(|source| BuildError::Output {
            path: out.into(),
            source,
        })
    }

    /// Loads the image into `store` under its name (through an OCI layout, like any import).
    pub fn load_into(
        &self,
        store: &crate::Store,
    ) -> Result<Vec<crate::ImageRef>, crate::ImportError> {
        let layout = self.work.path().join("layout");
        write_layout(&layout, &self.name, &self.layers, &self.config).map_err(|source| {
            crate::ImportError::Write {
                path: layout.clone(),
                source,
            }
        })?;
        let loaded = store.load_as(&layout, Some(&self.name));
        let _ = std::fs::remove_dir_all(&layout);
        loaded
    }
}

/// `cache` keeps debootstrap results: the CLI passes `$DETVM_CACHE`, else `~/.cache/detvm`.
pub struct BuildOptions {
    pub cache: PathBuf,
}

pub fn build(spec: &Spec, opts: &BuildOptions) -> Result<Built, BuildError> {
    let name = crate::import::normalize_name(&spec.name).map_err(|e| BuildError::BadSpec {
        path: spec.base_dir.clone(),
        what: e.to_string(),
    })?;
    let work = tempfile::tempdir().map_err(|source| BuildError::Output {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut layers = Vec::new();
    let mut config = spec.config.clone();
    match &spec.debootstrap {
        Some(deb) => layers.push(deb.layer(&opts.cache)?),
        None => layers.push(busybox_layer(&work.path().join("base.tar.gz"))?),
    }
    if !spec.files.is_empty() {
        layers.push(files_layer(spec, &work.path().join("files.tar.gz"))?);
    }
    if !config.env.iter().any(|e| e.starts_with("PATH=")) {
        config.env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    Ok(Built {
        name,
        layers,
        config,
        work,
    })
}

/// Debian's busybox-static as `/bin/busybox`, one symlink per applet, and the few files a
/// program expects (`/etc/passwd`, `/tmp`).
fn busybox_layer(out: &Path) -> Result<LayerBlob, BuildError> {
    const BUSYBOX: &str = "/bin/busybox";
    let hint = "install busybox-static (scripts/setup.sh does)";
    let output = std::process::Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .map_err(|_| BuildError::NoTool {
            tool: "busybox",
            hint,
        })?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    applets.sort();
    let write_err = |source| BuildError::Output {
        path: out.into(),
        source,
    };
    let mut w = LayerWriter::create(out).map_err(write_err)?;
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o755),
        ("root", 0o700),
        ("run", 0o755),
        ("sbin", 0o755),
        ("sys", 0o755),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ] {
        w.dir(dir, mode).map_err(write_err)?;
    }
    let file = std::fs::File::open(BUSYBOX).map_err(|source| BuildError::Input {
        path: BUSYBOX.into(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| BuildError::Input {
            path: BUSYBOX.into(),
            source,
        })?
        .len();
    w.file("bin/busybox", 0o755, size, file)
        .map_err(write_err)?;
    for applet in applets.iter().filter(|a| a.as_str() != "bin/busybox") {
        w.symlink(applet, "/bin/busybox").map_err(write_err)?;
    }
    let passwd =
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\nnobody:x:65534:\n";
    for (path, text) in [("etc/passwd", passwd), ("etc/group", group)] {
        w.file(path, 0o644, text.len() as u64, text.as_bytes())
            .map_err(write_err)?;
    }
    w.finish().map_err(write_err)
}

/// The spec's files, with their parent folders, in one layer.
fn files_layer(spec: &Spec, out: &Path) -> Result<LayerBlob, BuildError> {
    let write_err = |source| BuildError::Output {
        path: out.into(),
        source,
    };
    let mut w = LayerWriter::create(out).map_err(write_err)?;
    let mut files: Vec<(String, &FileSpec)> = Vec::new();
    for f in &spec.files {
        let bad = || BuildError::BadSpec {
            path: spec.base_dir.clone(),
            what: format!("file dest {:?} must be a path inside the image", f.dest),
        };
        files.push((clean_path(&f.dest).map_err(|_| bad())?.ok_or_else(bad)?, f));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dirs: Vec<&str> = files
        .iter()
        .flat_map(|(p, _)| p.match_indices('/').map(|(i, _)| &p[..i]))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        w.dir(dir, 0o755).map_err(write_err)?;
    }
    for (dest, f) in files {
        let src = spec.base_dir.join(&f.src);
        let input = |source| BuildError::Input {
            path: src.clone(),
            source,
        };
        let file = std::fs::File::open(&src).map_err(input)?;
        let meta = file.metadata().map_err(input)?;
        if !meta.is_file() {
            return Err(BuildError::BadSpec {
                path: src.clone(),
                what: "only regular files can be added".into(),
            });
        }
        let mode = f
            .mode
            .unwrap_or(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777);
        w.file(&dest, mode, meta.len(), file).map_err(write_err)?;
    }
    w.finish().map_err(write_err)
}
