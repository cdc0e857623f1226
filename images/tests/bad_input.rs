//! Bad input: each case fails with an error naming the file and the entry, and leaves the
//! store exactly as it was.

mod common;
use common::store;
use detvm_images::build::{write_archive, write_layout, LayerBlob};
use detvm_images::{ImageConfig, ImportError, Store};
use std::path::Path;

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// A tar with names written verbatim (the tar crate's own path setters refuse `..`).
fn raw_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let (name, data, kind, link): (&str, &[u8], _, Option<&str>) = match e {
            E::File(n, d) => (n, d, tar::EntryType::Regular, None),
            E::Dir(n) => (n, b"", tar::EntryType::Directory, None),
            E::Symlink(n, t) => (n, b"", tar::EntryType::Symlink, Some(t)),
            E::HardLink(n, t) => (n, b"", tar::EntryType::Link, Some(t)),
        };
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An OCI layout at `dir` whose layers are the given raw tars.
fn layout(dir: &Path, layers: &[Vec<u8>]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let blobs: Vec<LayerBlob> = layers
        .iter()
        .enumerate()
        .map(|(i, tar)| {
            LayerBlob::from_tar(&dir.with_extension(format!("layer{i}")), &tar[..]).unwrap()
        })
        .collect();
    write_layout(dir, "bad:1", &blobs, &ImageConfig::default()).unwrap()
}

fn assert_untouched(store: &Store) {
    assert!(store.list().unwrap().is_empty());
    for sub in ["blobs/sha256", "tmp", "rootfs"] {
        let left: Vec<_> = std::fs::read_dir(store.root().join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub} has leftovers: {left:?}");
    }
}

/// Loads `path`, expecting an error whose message names every string in `names`.
fn load_fails(path: &Path, names: &[&str]) -> ImportError {
    let (_dir, store) = store();
    let err = store.load(path).expect_err("load must fail");
    let msg = err.to_string();
    for n in names {
        assert!(msg.contains(n), "error {msg:?} should name {n:?}");
    }
    assert!(
        msg.contains(&path.display().to_string()),
        "error {msg:?} should name the file"
    );
    assert_untouched(&store);
    err
}

#[test]
fn truncated_archive() {
    let dir = tempfile::tempdir().unwrap();
    let blob = LayerBlob::from_tar(
        &dir.path().join("l"),
        &raw_tar(&[E::File("big", &[7u8; 100_000])])[..],
    )
    .unwrap();
    let archive = dir.path().join("image.tar");
    write_archive(&archive, "t:1", &[blob], &ImageConfig::default()).unwrap();
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() / 2 + 100]).unwrap();
    let err = load_fails(&archive, &["truncated"]);
    assert!(matches!(err, ImportError::Archive { .. }), "{err:?}");
}

#[test]
fn truncated_layer_tar() {
    let dir = tempfile::tempdir().unwrap();
    let mut tar = raw_tar(&[E::File("a", b"aaaa"), E::File("big", &[7u8; 10_000])]);
    tar.truncate(3000);
    std::fs::create_dir(dir.path().join("img")).unwrap();
    let err = load_fails(&dir.path().join("img"), &["not an image"]);
    assert!(matches!(err, ImportError::NotAnImage { .. }), "{err:?}");
    layout(&dir.path().join("img"), &[tar]);
    let err = load_fails(
        &dir.path().join("img"),
        &["after entry \"big\"", "truncated"],
    );
    assert!(matches!(err, ImportError::Layer { .. }), "{err:?}");
}

#[test]
fn layer_digest_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    layout(&img, &[raw_tar(&[E::File("a", b"hello")])]);
    let manifest = std::fs::read_dir(img.join("blobs/sha256")).unwrap();
    // Corrupt the gzip layer: the only blob that is not JSON.
    let layer = manifest
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap()[0] == 0x1f)
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let hex = layer.file_name().unwrap().to_str().unwrap();
    let err = load_fails(&img, &[&format!("blobs/sha256/{hex}"), "corrupt"]);
    assert!(matches!(err, ImportError::DigestMismatch { .. }), "{err:?}");
}

#[test]
fn dot_dot_escapes_the_root() {
    let dir = tempfile::tempdir().unwrap();
    layout(
        &dir.path().join("img"),
        &[raw_tar(&[
            E::Dir("a/"),
            E::File("ok", b"1"),
            E::File("a/../../evil", b"x"),
        ])],
    );
    let err = load_fails(&dir.path().join("img"), &["a/../../evil", "`..`"]);
    assert!(matches!(err, ImportError::Layer { .. }), "{err:?}");
}

#[test]
fn write_through_an_absolute_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let lower = raw_tar(&[E::Symlink("etc", "/host/etc")]);
    let upper = raw_tar(&[E::File("etc/passwd", b"root::0:0::/:/bin/sh\n")]);
    layout(&dir.path().join("img"), &[lower, upper]);
    load_fails(
        &dir.path().join("img"),
        &["etc/passwd", "symlink \"etc\" -> \"/host/etc\""],
    );
}

#[test]
fn hard_link_out_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    layout(
        &dir.path().join("img"),
        &[raw_tar(&[E::HardLink("shadow", "../../etc/shadow")])],
    );
    load_fails(&dir.path().join("img"), &["\"shadow\"", "../../etc/shadow"]);
}

#[test]
fn missing_config() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let manifest = layout(&img, &[raw_tar(&[E::File("a", b"1")])]);
    let text = std::fs::read_to_string(img.join("blobs/sha256").join(&manifest[7..])).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap()[7..].to_string();
    std::fs::remove_file(img.join("blobs/sha256").join(&config)).unwrap();
    let err = load_fails(&img, &[&format!("blobs/sha256/{config} is missing")]);
    assert!(matches!(err, ImportError::Missing { .. }), "{err:?}");
}

#[test]
fn a_failed_load_keeps_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    layout(&good, &[raw_tar(&[E::File("a", b"1")])]);
    let bad = dir.path().join("bad");
    layout(&bad, &[raw_tar(&[E::File("../x", b"1")])]);
    let (_s, store) = store();
    store.load(&good).unwrap();
    let blobs = |s: &Store| {
        std::fs::read_dir(s.root().join("blobs/sha256"))
            .unwrap()
            .count()
    };
    let (before, index) = (
        blobs(&store),
        std::fs::read(store.root().join("index.json")).unwrap(),
    );
    store.load(&bad).unwrap_err();
    assert_eq!(blobs(&store), before);
    assert_eq!(
        std::fs::read(store.root().join("index.json")).unwrap(),
        index
    );
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
}
