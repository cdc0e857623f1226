//! A campaign's project through the object store, so a worker needs only `--queue` and
//! `--objects`: the coordinator uploads the compose file and the files it names (what
//! `detvm push` packs, as a bundle without blobs: `C/project.bundle`) and every blob of
//! the images the compose file uses (`images/sha256/<hex>`, shared by all campaigns:
//! one already in the store is not uploaded again). A worker unpacks the project into
//! its own campaign folder (`project/`, checked like any bundle) and loads the images
//! its own image store lacks; its compose file is then the copy, and the campaign's
//! fingerprint decides whether the copy is what the coordinator ran.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use detvm_images::Store;
use explorer::campaign::campaigns_dir;
use explorer::run::inputs::RunInputs;
use explorer::run::RunError;

use super::objects::Objects;
use crate::bundle::pack::{self, PackInput};
use crate::bundle::unpack::{load_images, unpack};
use crate::bundle::{CampaignSettings, Limits, Manifest, MANIFEST};

/// The project's folder in a worker's campaign folder.
const PROJECT: &str = "project";

fn infra(e: impl std::fmt::Display) -> RunError {
    RunError::Infrastructure(e.to_string())
}

/// The object key of the campaign's project bundle.
pub fn project_key(campaign: &str) -> String {
    format!("{campaign}/project.bundle")
}

/// The object key of an image blob (`sha256:<hex>`), shared by every campaign.
pub fn blob_key(digest: &str) -> Option<String> {
    detvm_images::digest::parse(digest).map(|hex| format!("images/sha256/{hex}"))
}

/// Uploads the campaign's project and the image blobs the store lacks (the blobs
/// first: a project in the store means its images are there too). `known` holds the
/// keys already seen in the store. Returns the bytes uploaded.
pub fn upload(
    objects: &Objects,
    home: &Path,
    campaign: &str,
    known: &mut BTreeSet<String>,
) -> Result<u64, RunError> {
    let project = project_key(campaign);
    if known.contains(&project) || objects.exists(&project).map_err(infra)? {
        known.insert(project);
        return Ok(0);
    }
    let inputs = RunInputs::load(&campaigns_dir(home).join(campaign))?;
    let plan = pack::plan(&PackInput {
        compose: inputs.compose.clone(),
        faults: inputs.faults.clone(),
        archives: Vec::new(),
        home: home.to_path_buf(),
        campaign: CampaignSettings {
            vars: inputs.vars.clone(),
            ..CampaignSettings::default()
        },
    })
    .map_err(|e| infra(format!("the campaign's project for the object store: {e}")))?;
    let store = Store::open(home.join("images")).map_err(infra)?;
    let mut bytes = 0;
    for digest in plan.blob_digests() {
        let (Some(key), Some(hex)) = (blob_key(&digest), detvm_images::digest::parse(&digest))
        else {
            return Err(infra(format!("bad blob digest {digest}")));
        };
        if known.contains(&key) || objects.exists(&key).map_err(infra)? {
            known.insert(key);
            continue;
        }
        let path = store.root().join("blobs/sha256").join(hex);
        bytes += objects.put_file(&key, &path).map_err(infra)?;
        known.insert(key);
    }
    let scratch = tempfile::tempdir().map_err(infra)?;
    let file = scratch.path().join("project.bundle");
    plan.write(&BTreeSet::new(), &file).map_err(infra)?;
    bytes += objects.put_file(&project, &file).map_err(infra)?;
    known.insert(project);
    Ok(bytes)
}

/// Makes the campaign's project present in this home's campaign folder (downloaded and
/// checked once) and its images in this home's image store (only those it lacks);
/// returns the folder the compose file is in.
pub fn fetch(objects: &Objects, home: &Path, campaign: &str) -> Result<PathBuf, RunError> {
    let dir = campaigns_dir(home).join(campaign);
    let project = dir.join(PROJECT);
    if !project.join(MANIFEST).is_file() {
        std::fs::create_dir_all(&dir).map_err(infra)?;
        // Unpacked aside and renamed into place: two workers sharing a home do not
        // see each other's half-written copy.
        let scratch = tempfile::Builder::new()
            .prefix(".project-")
            .tempdir_in(&dir)
            .map_err(infra)?;
        let bundle = scratch.path().join("project.bundle");
        objects
            .get_file(&project_key(campaign), &bundle)
            .map_err(infra)?;
        let unpacked = scratch.path().join(PROJECT);
        std::fs::create_dir(&unpacked).map_err(infra)?;
        let manifest = unpack(&bundle, &unpacked, &Limits::default()).map_err(infra)?;
        std::fs::write(
            unpacked.join(MANIFEST),
            serde_json::to_vec_pretty(&manifest).expect("manifests serialize"),
        )
        .map_err(infra)?;
        if std::fs::rename(&unpacked, &project).is_err() && !project.join(MANIFEST).is_file() {
            return Err(infra(format!(
                "cannot move the project to {}",
                project.display()
            )));
        }
    }
    let text = std::fs::read(project.join(MANIFEST)).map_err(infra)?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(infra)?;
    load_missing_images(objects, home, &manifest)?;
    Ok(project.join("files"))
}

/// Loads the manifest's images this home's store does not have under their names and
/// digests, with the blobs it lacks downloaded (the store checks every digest).
fn load_missing_images(
    objects: &Objects,
    home: &Path,
    manifest: &Manifest,
) -> Result<(), RunError> {
    let store = Store::open(home.join("images")).map_err(infra)?;
    let missing: Vec<_> = manifest
        .images
        .iter()
        .filter(|i| {
            store
                .resolve(&i.name)
                .map_or(true, |have| have.digest != i.manifest)
        })
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let scratch = tempfile::Builder::new()
        .prefix("worker-images-")
        .tempdir_in(store.root().join("tmp"))
        .map_err(infra)?;
    let blobs = scratch.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(infra)?;
    for blob in missing.iter().flat_map(|i| &i.blobs) {
        let hex = detvm_images::digest::parse(&blob.sha256)
            .ok_or_else(|| infra(format!("bad blob digest {}", blob.sha256)))?;
        if store.root().join("blobs/sha256").join(hex).is_file() || blobs.join(hex).is_file() {
            continue;
        }
        let key = blob_key(&blob.sha256).expect("parsed above");
        objects.get_file(&key, &blobs.join(hex)).map_err(infra)?;
    }
    let only_missing = Manifest {
        images: missing,
        archives: Vec::new(),
        ..manifest.clone()
    };
    load_images(&only_missing, scratch.path(), &store).map_err(infra)
}
