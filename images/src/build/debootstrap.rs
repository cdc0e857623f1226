//! A Debian base layer made by `debootstrap --variant=minbase`, cached under
//! `$DETVM_CACHE/debootstrap/<key>/` where the key hashes every input (suite, packages,
//! mirror, architecture), so the slow step runs once per machine.

use super::layer::{LayerBlob, LayerWriter};
use super::BuildError;
use crate::digest;
use crate::progress::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Debootstrap {
    /// e.g. `bookworm`.
    pub suite: String,
    /// Extra packages (`--include`), e.g. `etcd-server`.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Default: the Debian mirror the host's apt uses, else deb.debian.org.
    #[serde(default)]
    pub mirror: Option<String>,
}

/// Bump when the layer made from the same inputs changes (cleanup list, tar format).
const CACHE_VERSION: u32 = 2;

impl Debootstrap {
    fn mirror(&self) -> String {
        self.mirror
            .clone()
            .or_else(apt_mirror)
            .unwrap_or_else(|| "http://deb.debian.org/debian".into())
    }

    pub fn cache_key(&self) -> String {
        let mut packages = self.packages.clone();
        packages.sort();
        packages.dedup();
        let text = format!(
            "v{CACHE_VERSION}\nminbase\namd64\n{}\n{}\n{}\n",
            self.suite,
            self.mirror(),
            packages.join(",")
        );
        digest::of_bytes(text.as_bytes())["sha256:".len()..].to_string()
    }

    /// The cached layer, building it first if needed.
    pub fn layer(&self, cache: &Path) -> Result<LayerBlob, BuildError> {
        let dir = cache.join("debootstrap").join(self.cache_key());
        let meta_path = dir.join("layer.json");
        if let Some(blob) = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerBlob>(&b).ok())
        {
            if blob.path.is_file() {
                return Ok(blob);
            }
        }
        std::fs::create_dir_all(&dir).map_err(|source| BuildError::Output {
            path: dir.clone(),
            source,
        })?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(BuildError::NotRoot);
        }
        let work = tempfile::Builder::new()
            .prefix("work-")
            .tempdir_in(&dir)
            .map_err(|source| BuildError::Output {
                path: dir.clone(),
                source,
            })?;
        let target = work.path().join("rootfs");
        let result = self.run(&target, &work.path().join("debootstrap.log"));
        unmount_below(&target); // debootstrap may leave /proc or bind mounts behind on failure
        result?;
        clean(&target);
        let tmp_layer = work.path().join("layer.tar.gz");
        let bar =
            ProgressBar::new_spinner().with_message(format!("packing the {} layer", self.suite));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {binary_bytes} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let write_err = |source| BuildError::Output {
            path: tmp_layer.clone(),
            source,
        };
        let mut w = LayerWriter::create(&tmp_layer).map_err(write_err)?;
        w.host_mtime = Some(w.mtime);
        w.host_tree(&target, &bar).map_err(write_err)?;
        let mut blob = w.finish().map_err(write_err)?;
        bar.finish_and_clear();
        // Named by digest and described by a layer.json renamed into place, so two builds
        // racing on one cache folder each leave a consistent pair.
        let final_path = dir.join(format!("{}.tar.gz", &blob.digest["sha256:".len()..]));
        std::fs::rename(&tmp_layer, &final_path).map_err(|source| BuildError::Output {
            path: final_path.clone(),
            source,
        })?;
        blob.path = final_path;
        let json = serde_json::to_vec_pretty(&blob).map_err(|e| BuildError::Output {
            path: meta_path.clone(),
            source: e.into(),
        })?;
        let out_err = |source| BuildError::Output {
            path: meta_path.clone(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(out_err)?;
        std::io::Write::write_all(&mut tmp, &json).map_err(out_err)?;
        tmp.persist(&meta_path).map_err(|e| out_err(e.error))?;
        Ok(blob)
    }

    fn run(&self, target: &Path, log: &Path) -> Result<(), BuildError> {
        let hint = "install debootstrap (scripts/setup.sh does)";
        let mut cmd = Command::new("debootstrap");
        cmd.arg("--variant=minbase");
        if !self.packages.is_empty() {
            cmd.arg(format!("--include={}", self.packages.join(",")));
        }
        cmd.arg(&self.suite).arg(target).arg(self.mirror());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|_| BuildError::NoTool {
                tool: "debootstrap",
                hint,
            })?;
        let bar = ProgressBar::new_spinner().with_message(format!("debootstrap {}", self.suite));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let mut lines = Vec::new();
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(step) = line.strip_prefix("I: ") {
                    bar.set_message(format!("debootstrap {}: {step}", self.suite));
                }
                lines.push(line);
            }
        }
        let status = child.wait().map_err(|_| BuildError::NoTool {
            tool: "debootstrap",
            hint,
        })?;
        bar.finish_and_clear();
        let _ = std::fs::write(log, lines.join("\n"));
        if status.success() {
            return Ok(());
        }
        let keep = log.with_file_name("..").join("last-failure.log");
        let _ = std::fs::copy(log, &keep);
        let tail = lines
            .iter()
            .rev()
            .take(15)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        Err(BuildError::Debootstrap {
            suite: self.suite.clone(),
            status: status.to_string(),
            log: keep,
            tail,
        })
    }
}

/// Drops what only the build needed (downloaded packages, apt's lists) and what records
/// when and where it ran (logs, caches of file times, password-change days), so the
/// same packages give the same layer on every host and day: a guest that reads
/// different bytes runs differently, and a seed must replay on another machine.
fn clean(root: &Path) {
    remove_files_below(&root.join("var/log"));
    for file in [
        "var/cache/ldconfig/aux-cache",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "etc/shadow-",
        "etc/gshadow-",
        "etc/passwd-",
        "etc/group-",
    ] {
        let _ = std::fs::remove_file(root.join(file));
    }
    fix_password_change_days(&root.join("etc/shadow"));
    for (dir, keep) in [
        ("var/cache/apt/archives", &["lock", "partial"][..]),
        ("var/lib/apt/lists", &["lock", "partial"]),
        ("var/cache/apt", &["archives"]),
    ] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !keep.iter().any(|k| name == *k) && entry.file_type().is_ok_and(|t| t.is_file())
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Removes every regular file below `dir`, keeping the folders (packages expect them).
fn remove_files_below(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => remove_files_below(&entry.path()),
            Ok(_) => {
                let _ = std::fs::remove_file(entry.path());
            }
            Err(_) => {}
        }
    }
}

/// Sets `/etc/shadow`'s third field (day of the last password change, the build day
/// for users a package made) to a fixed day (2024-01-01) where it is set.
fn fix_password_change_days(shadow: &Path) {
    let Ok(text) = std::fs::read_to_string(shadow) else {
        return;
    };
    let fixed: String = text
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 2 && !fields[2].is_empty() {
                fields[2] = "19723";
            }
            fields.join(":") + "\n"
        })
        .collect();
    let _ = std::fs::write(shadow, fixed);
}

/// Lazily unmounts anything mounted under `root`, deepest first, so deleting the work
/// folder can never reach into the host's /proc or /dev.
fn unmount_below(root: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

/// The Debian mirror the host's apt uses (`/etc/apt/sources.list` or a deb822
/// `sources.list.d/*.sources`), if any URI ends in `/debian`.
pub fn apt_mirror() -> Option<String> {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        texts.extend(
            paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
                .filter_map(|p| std::fs::read_to_string(p).ok()),
        );
    }
    texts.iter().flat_map(|t| t.lines()).find_map(|line| {
        let line = line.trim();
        let uris = line.strip_prefix("URIs:").map(str::to_string).or_else(|| {
            let rest = line.strip_prefix("deb ")?;
            let rest = if rest.trim_start().starts_with('[') {
                rest.split_once(']')?.1
            } else {
                rest
            };
            rest.split_whitespace().next().map(str::to_string)
        })?;
        uris.split_whitespace()
            .map(|u| u.trim_end_matches('/'))
            .find(|u| u.ends_with("/debian"))
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_drops_build_records_and_fixes_password_days() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in ["var/log/apt", "var/cache/ldconfig", "etc"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("var/log/dpkg.log"), "2026-11-22 install").unwrap();
        std::fs::write(r.join("var/log/apt/history.log"), "Start-Date").unwrap();
        std::fs::write(r.join("var/cache/ldconfig/aux-cache"), "times").unwrap();
        std::fs::write(r.join("etc/shadow-"), "old").unwrap();
        std::fs::write(
            r.join("etc/shadow"),
            "root:*:20414:0:99999:7:::\netcd:!:20414::::::\nodd\n",
        )
        .unwrap();
        clean(r);
        assert!(r.join("var/log/apt").is_dir(), "folders stay");
        assert!(!r.join("var/log/dpkg.log").exists());
        assert!(!r.join("var/log/apt/history.log").exists());
        assert!(!r.join("var/cache/ldconfig/aux-cache").exists());
        assert!(!r.join("etc/shadow-").exists());
        assert_eq!(
            std::fs::read_to_string(r.join("etc/shadow")).unwrap(),
            "root:*:19723:0:99999:7:::\netcd:!:19723::::::\nodd\n"
        );
    }
}
