//! Bundles refused whole: each rule broken once, in a bundle otherwise valid.

use std::io::Write;

use super::unpack::unpack;
use super::{BundleError, CampaignSettings, Entry, Limits, Manifest, FORMAT};

const COMPOSE: &[u8] = b"services:\n  a:\n    image: x:1\n";

fn entry(path: &str, data: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        sha256: detvm_images::digest::of_bytes(data),
        size: data.len() as u64,
    }
}

fn manifest() -> Manifest {
    Manifest {
        format: FORMAT,
        compose: "docker-compose.yaml".into(),
        files: vec![entry("docker-compose.yaml", COMPOSE)],
        archives: Vec::new(),
        images: Vec::new(),
        carried_blobs: Vec::new(),
        campaign: CampaignSettings::default(),
    }
}

enum Kind {
    File,
    Symlink(&'static str),
}

/// A tar+zstd bundle of `manifest` then `entries`, written raw (no path checks), so it
/// can hold what a hostile sender would send.
fn bundle(manifest: &Manifest, entries: &[(&str, &[u8], Kind)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let enc = zstd::Encoder::new(file.reopen().unwrap(), 1).unwrap();
    let mut tar = tar::Builder::new(enc);
    let mut put = |name: &str, data: &[u8], kind: &Kind| {
        let mut h = tar::Header::new_gnu();
        match kind {
            Kind::File => h.set_entry_type(tar::EntryType::Regular),
            Kind::Symlink(to) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(to).unwrap();
            }
        }
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Raw name bytes: `set_path` would refuse `..`, which is the point here.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        tar.append(&h, data).unwrap();
    };
    let json = serde_json::to_vec(manifest).unwrap();
    put("manifest.json", &json, &Kind::File);
    for (name, data, kind) in entries {
        put(name, data, kind);
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    file
}

fn refused(m: &Manifest, entries: &[(&str, &[u8], Kind)], limits: Limits) -> String {
    let b = bundle(m, entries);
    let dest = tempfile::tempdir().unwrap();
    match unpack(b.path(), dest.path(), &limits) {
        Err(BundleError::Refused(reason)) => reason,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_valid_bundle_unpacks() {
    let b = bundle(
        &manifest(),
        &[("files/docker-compose.yaml", COMPOSE, Kind::File)],
    );
    let dest = tempfile::tempdir().unwrap();
    let m = unpack(b.path(), dest.path(), &Limits::default()).unwrap();
    assert_eq!(m, manifest());
    assert_eq!(
        std::fs::read(dest.path().join("files/docker-compose.yaml")).unwrap(),
        COMPOSE
    );
}

#[test]
fn paths_that_climb_out_or_are_absolute_are_refused() {
    for bad in ["../docker-compose.yaml", "/etc/x", "a/../../b"] {
        let mut m = manifest();
        m.files.push(entry(bad, b"x"));
        let why = refused(&m, &[], Limits::default());
        assert!(why.contains("relative"), "{bad}: {why}");
    }
    // In the archive itself, even when the manifest is clean.
    let why = refused(
        &manifest(),
        &[
            ("files/docker-compose.yaml", COMPOSE, Kind::File),
            ("files/../../escape", b"x", Kind::File),
        ],
        Limits::default(),
    );
    assert!(why.contains("unsafe path"), "{why}");
}

#[test]
fn links_are_refused() {
    let why = refused(
        &manifest(),
        &[(
            "files/docker-compose.yaml",
            b"",
            Kind::Symlink("/etc/passwd"),
        )],
        Limits::default(),
    );
    assert!(why.contains("only regular files"), "{why}");
}

#[test]
fn a_wrong_digest_unlisted_or_missing_entry_is_refused() {
    let other = b"services:\n  b:\n    image: y:1\n";
    let mut padded = other.to_vec();
    padded.truncate(COMPOSE.len());
    padded.resize(COMPOSE.len(), b' ');
    let why = refused(
        &manifest(),
        &[("files/docker-compose.yaml", &padded, Kind::File)],
        Limits::default(),
    );
    assert!(why.contains("hashes to"), "{why}");
    let why = refused(
        &manifest(),
        &[
            ("files/docker-compose.yaml", COMPOSE, Kind::File),
            ("files/extra", b"x", Kind::File),
        ],
        Limits::default(),
    );
    assert!(why.contains("not named"), "{why}");
    let why = refused(&manifest(), &[], Limits::default());
    assert!(why.contains("missing"), "{why}");
}

#[test]
fn bundles_over_the_limits_are_refused() {
    let limits = Limits {
        unpacked_bytes: 10,
        ..Limits::default()
    };
    let why = refused(
        &manifest(),
        &[("files/docker-compose.yaml", COMPOSE, Kind::File)],
        limits,
    );
    assert!(why.contains("over this server's limits"), "{why}");
}

#[test]
fn carried_blobs_must_belong_to_an_image() {
    let blob = b"layer";
    let mut m = manifest();
    m.carried_blobs.push(detvm_images::digest::of_bytes(blob));
    let why = refused(&m, &[], Limits::default());
    assert!(why.contains("belongs to no image"), "{why}");
}
