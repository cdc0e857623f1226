//! The store's names, lookups and removal (with garbage collection).

mod common;
use common::store;
use detvm_images::build::{write_layout, LayerBlob};
use detvm_images::{ImageConfig, StoreError};
use std::path::{Path, PathBuf};

/// An OCI layout named `name` with one layer holding `file`.
fn image(dir: &Path, name: &str, file: &str) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(1);
    b.append_data(&mut h, file, &b"x"[..]).unwrap();
    let out = dir.join(format!("{}-{file}", name.replace([':', '/'], "_")));
    let layer =
        LayerBlob::from_tar(&out.with_extension("gz"), &b.into_inner().unwrap()[..]).unwrap();
    let config = ImageConfig {
        cmd: vec![file.into()],
        ..Default::default()
    };
    write_layout(&out, name, &[layer], &config).unwrap();
    out
}

fn blob_count(store: &detvm_images::Store) -> usize {
    std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn names_move_lookups_work_and_remove_collects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, store) = store();
    let a = store
        .load(&image(dir.path(), "docker.io/library/app", "a"))
        .unwrap();
    assert_eq!(a[0].names, ["app:latest"]);
    // Same name, new content: the name moves; the old image stays, unnamed.
    let b = store.load(&image(dir.path(), "app:latest", "b")).unwrap();
    assert_ne!(a[0].digest, b[0].digest);
    assert_eq!(store.resolve("app").unwrap().config.cmd, ["b"]);
    let old = store.resolve(&a[0].digest).unwrap();
    assert!(old.names.is_empty());
    assert_eq!(
        store.resolve(&a[0].digest[7..19]).unwrap().digest,
        a[0].digest
    );
    assert_eq!(
        store
            .resolve(&format!("app@{}", a[0].digest))
            .unwrap()
            .digest,
        a[0].digest
    );
    // A second name for b, with --tag.
    store
        .load_as(&image(dir.path(), "app:latest", "b"), Some("other:2"))
        .unwrap();
    assert_eq!(
        store.resolve("other:2").unwrap().names,
        ["app:latest", "other:2"]
    );
    assert_eq!(store.list().unwrap().len(), 2);
    if common::have(
        "names_move_lookups_work_and_remove_collects_garbage (rootfs part)",
        &["mksquashfs"],
    ) {
        store.rootfs(&old).unwrap_or_else(|e| panic!("{e}"));
    }

    // Removing one of two names keeps the image; the unnamed one goes by digest with its blobs.
    assert_eq!(store.remove("other:2").unwrap(), ["other:2"]);
    let before = blob_count(&store);
    assert_eq!(store.remove(&a[0].digest).unwrap(), [a[0].digest.clone()]);
    assert_eq!(
        blob_count(&store),
        before - 3,
        "manifest, config and layer of the removed image"
    );
    assert_eq!(
        std::fs::read_dir(store.root().join("rootfs"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        store.remove("app").unwrap(),
        ["app:latest".to_string(), b[0].digest.clone()]
    );
    assert_eq!(blob_count(&store), 0);
    match store.resolve("app") {
        Err(e @ StoreError::NotFound { .. }) => assert!(e.to_string().contains("detvm image load")),
        other => panic!("{other:?}"),
    }
}
