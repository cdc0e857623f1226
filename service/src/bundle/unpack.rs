//! Checking and unpacking a bundle on the server (`detvm serve`). Nothing is kept from a
//! bundle that breaks a rule: the caller unpacks into a fresh folder and removes it on
//! any error, and images are loaded only after every entry checked out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use detvm_images::digest::HashWriter;
use detvm_images::Store;

use super::{safe_relative, BundleError, Limits, Manifest, FORMAT, MANIFEST};

fn refused(message: impl Into<String>) -> BundleError {
    BundleError::Refused(message.into())
}

/// The manifest's own rules: format, safe unique paths, real digests, sizes in bounds.
/// Returns the entries the archive must hold, by path, with (sha256, size).
pub fn check_manifest(
    m: &Manifest,
    limits: &Limits,
) -> Result<BTreeMap<String, (String, u64)>, BundleError> {
    if m.format != FORMAT {
        return Err(refused(format!(
            "format {} (this server reads {FORMAT})",
            m.format
        )));
    }
    let mut expected = BTreeMap::new();
    let mut add = |path: String, sha: &str, size: u64| {
        if detvm_images::digest::parse(sha).is_none() {
            return Err(refused(format!("{path}: `{sha}` is not a sha256 digest")));
        }
        if expected
            .insert(path.clone(), (sha.to_string(), size))
            .is_some()
        {
            return Err(refused(format!("{path} is named twice")));
        }
        Ok(())
    };
    for (prefix, list) in [("files", &m.files), ("archives", &m.archives)] {
        for e in list {
            if !safe_relative(&e.path, limits.path_bytes) {
                return Err(refused(format!(
                    "{prefix}/{:?}: paths must be relative, without `..`, `.` or empty parts",
                    e.path
                )));
            }
            add(format!("{prefix}/{}", e.path), &e.sha256, e.size)?;
        }
    }
    if !m.files.iter().any(|f| f.path == m.compose) {
        return Err(refused(format!(
            "the compose file {:?} is not among the files",
            m.compose
        )));
    }
    let needed: BTreeMap<&str, u64> = m
        .images
        .iter()
        .flat_map(|i| i.blobs.iter().map(|b| (b.sha256.as_str(), b.size)))
        .collect();
    for image in &m.images {
        if detvm_images::digest::parse(&image.manifest).is_none()
            || image.blobs.first().map(|b| &b.sha256) != Some(&image.manifest)
        {
            return Err(refused(format!(
                "image {}: its first blob must be its manifest {}",
                image.name, image.manifest
            )));
        }
        detvm_images::normalize_name(&image.name)
            .map_err(|e| refused(format!("image name {:?}: {e}", image.name)))?;
    }
    for d in &m.carried_blobs {
        let Some(hex) = detvm_images::digest::parse(d) else {
            return Err(refused(format!("`{d}` is not a sha256 digest")));
        };
        let Some(size) = needed.get(d.as_str()) else {
            return Err(refused(format!("blob {d} belongs to no image")));
        };
        add(format!("blobs/sha256/{hex}"), d, *size)?;
    }
    let total: u64 = expected.values().map(|(_, s)| *s).sum();
    if total > limits.unpacked_bytes || expected.len() + 1 > limits.entries {
        return Err(refused(format!(
            "{} entries, {total} bytes unpacked: over this server's limits ({} entries, {} bytes)",
            expected.len() + 1,
            limits.entries,
            limits.unpacked_bytes
        )));
    }
    Ok(expected)
}

/// Unpacks `bundle` into the empty folder `dest`, checking every rule; returns its manifest.
pub fn unpack(bundle: &Path, dest: &Path, limits: &Limits) -> Result<Manifest, BundleError> {
    let file =
        File::open(bundle).map_err(|e| BundleError::Io(format!("{}: {e}", bundle.display())))?;
    let decoder =
        zstd::Decoder::new(BufReader::new(file)).map_err(|e| refused(format!("not zstd: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let bad_tar = |e: std::io::Error| refused(format!("not a valid tar+zstd bundle: {e}"));
    let mut entries = archive.entries().map_err(bad_tar)?;

    let mut first = entries
        .next()
        .ok_or_else(|| refused("empty bundle"))?
        .map_err(bad_tar)?;
    if first.path_bytes().as_ref() != MANIFEST.as_bytes() || first.size() > limits.manifest_bytes {
        return Err(refused(format!(
            "the first entry must be {MANIFEST} (at most {} bytes)",
            limits.manifest_bytes
        )));
    }
    let mut text = Vec::new();
    (&mut first)
        .take(limits.manifest_bytes)
        .read_to_end(&mut text)
        .map_err(bad_tar)?;
    drop(first);
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| refused(format!("{MANIFEST}: {e}")))?;
    let expected = check_manifest(&manifest, limits)?;

    let mut seen = BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(bad_tar)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(refused(format!(
                "{name:?}: only regular files are allowed (no links, folders or devices)"
            )));
        }
        if !safe_relative(&name, limits.path_bytes + 32) {
            return Err(refused(format!("{name:?}: unsafe path")));
        }
        let Some((sha, size)) = expected.get(&name) else {
            return Err(refused(format!("{name}: not named in {MANIFEST}")));
        };
        if !seen.insert(name.clone()) {
            return Err(refused(format!("{name}: appears twice")));
        }
        if entry.size() != *size {
            return Err(refused(format!(
                "{name}: {} bytes, the manifest says {size}",
                entry.size()
            )));
        }
        let path = dest.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| BundleError::Io(format!("{}: {e}", parent.display())))?;
        }
        let out = File::create_new(&path)
            .map_err(|e| BundleError::Io(format!("{}: {e}", path.display())))?;
        let mut writer = HashWriter::new(out);
        std::io::copy(&mut (&mut entry).take(*size), &mut writer).map_err(bad_tar)?;
        let (_, digest, count) = writer.finish();
        if count != *size || &digest != sha {
            return Err(refused(format!(
                "{name}: its content hashes to {digest}, the manifest says {sha}"
            )));
        }
    }
    if let Some(missing) = expected.keys().find(|k| !seen.contains(*k)) {
        return Err(refused(format!(
            "{missing}: named in {MANIFEST} but missing"
        )));
    }
    Ok(manifest)
}

/// Loads the bundle's images into `store`: each image as an OCI layout assembled from the
/// bundle's blobs and the ones the store already has, then the archives. The store's
/// import checks every blob's digest again.
pub fn load_images(manifest: &Manifest, unpacked: &Path, store: &Store) -> Result<(), BundleError> {
    let io = |p: &Path, e: std::io::Error| BundleError::Io(format!("{}: {e}", p.display()));
    if !manifest.images.is_empty() {
        let layout = tempfile::Builder::new()
            .prefix("bundle-layout-")
            .tempdir_in(store.root().join("tmp"))
            .map_err(|e| io(store.root(), e))?;
        let blobs = layout.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| io(&blobs, e))?;
        let mut index = Vec::new();
        for image in &manifest.images {
            for b in &image.blobs {
                let hex = detvm_images::digest::parse(&b.sha256).unwrap_or_default();
                let target = blobs.join(hex);
                if target.exists() {
                    continue;
                }
                let carried = unpacked.join("blobs/sha256").join(hex);
                let stored = store.root().join("blobs/sha256").join(hex);
                let from = if carried.is_file() {
                    carried
                } else if stored.is_file() {
                    stored
                } else {
                    return Err(refused(format!(
                        "image {}: blob {} is neither in the bundle nor on this server",
                        image.name, b.sha256
                    )));
                };
                std::fs::hard_link(&from, &target)
                    .or_else(|_| std::fs::copy(&from, &target).map(|_| ()))
                    .map_err(|e| io(&target, e))?;
            }
            index.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.manifest,
                "size": image.blobs[0].size,
                "annotations": {"org.opencontainers.image.ref.name": image.name},
            }));
        }
        let write = |name: &str, value: serde_json::Value| {
            let p = layout.path().join(name);
            std::fs::write(&p, value.to_string()).map_err(|e| io(&p, e))
        };
        write(
            "oci-layout",
            serde_json::json!({"imageLayoutVersion": "1.0.0"}),
        )?;
        write(
            "index.json",
            serde_json::json!({"schemaVersion": 2, "manifests": index}),
        )?;
        let loaded = store
            .load(layout.path())
            .map_err(|e| refused(format!("images: {e}")))?;
        for image in &manifest.images {
            if !loaded.iter().any(|l| l.digest == image.manifest) {
                return Err(refused(format!(
                    "image {}: the store did not load manifest {}",
                    image.name, image.manifest
                )));
            }
        }
    }
    for a in &manifest.archives {
        let path = unpacked.join("archives").join(&a.path);
        store
            .load(&path)
            .map_err(|e| refused(format!("archive {}: {e}", a.path)))?;
    }
    Ok(())
}
