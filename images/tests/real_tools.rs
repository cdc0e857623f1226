//! Images made by real tools (umoci, GNU tar, skopeo), imported from all three formats.

mod common;
use common::*;
use detvm_images::ImageConfig;
use std::os::unix::fs::MetadataExt;

const TOOLS: &[&str] = &["umoci", "skopeo", "tar", "mksquashfs", "unsquashfs"];

/// Layer 2 deleted `gone/` and `opq/old` (umoci whiteouts) and rewrote `etc/a`; layer 3 made
/// `opq/` opaque (hiding `opq/sub/deep`) and added `opq/new`.
const EXPECTED: &[&str] = &[
    "drwxr-xr-x 0/0 - /",
    "drwxr-xr-x 0/0 - /etc",
    "-rw-r--r-- 0/0 4 /etc/a",
    "drwxr-xr-x 0/0 - /keep",
    "lrwxrwxrwx 0/0 6 /keep/abs-link -> /etc/a",
    "-rwsr-xr-x 0/0 5 /keep/k",
    "-rwsr-xr-x 0/0 5 /keep/k-hard",
    "crw-r--r-- 0/0 1,3 /keep/null",
    "lrwxrwxrwx 0/0 8 /keep/rel-link -> ../etc/a",
    "drwxr-xr-x 0/0 - /opq",
    "-rw-r--r-- 0/0 4 /opq/new",
    "drwx------ 0/0 - /private",
    "-rw-r--r-- 1000/2000 2 /private/secret",
];

#[test]
fn oci_layout_oci_archive_and_docker_archive_give_the_exact_tree() {
    if !have(
        "oci_layout_oci_archive_and_docker_archive_give_the_exact_tree",
        TOOLS,
    ) {
        return;
    }
    let fx = fixture();
    let mut images = Vec::new();
    for (file, name) in [
        ("lay", "lay:v1"),
        ("oci.tar", "oci:v1"),
        ("docker.tar", "example/layered:v1"),
    ] {
        let (_dir, store) = store();
        let loaded = store
            .load(&fx.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(loaded.len(), 1, "{file}");
        assert_eq!(loaded[0].names, vec![name.to_string()], "{file}");
        let image = store.resolve(name).unwrap();
        let want = ImageConfig {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["serve".into()],
            env: vec!["FOO=bar".into()],
            working_dir: "/keep".into(),
            user: "1000:2000".into(),
            exposed_ports: vec!["8080/tcp".into()],
        };
        assert_eq!(image.config, want, "{file}");
        let sqfs = store.rootfs(&image).unwrap();
        assert_eq!(listing(&sqfs), EXPECTED, "{file}");
        // Contents, and the hard link kept as one inode.
        let out = tempfile::tempdir().unwrap();
        let tree = out.path().join("t");
        sh(
            out.path(),
            &format!(
                "unsquashfs -q -n -d {} {} >/dev/null",
                tree.display(),
                sqfs.display()
            ),
        );
        assert_eq!(
            std::fs::read_to_string(tree.join("etc/a")).unwrap(),
            "two\n"
        );
        assert_eq!(
            std::fs::read_to_string(tree.join("opq/new")).unwrap(),
            "new\n"
        );
        let (k, hard) = (
            tree.join("keep/k").metadata().unwrap(),
            tree.join("keep/k-hard").metadata().unwrap(),
        );
        assert_eq!((k.ino(), k.nlink()), (hard.ino(), 2));
        images.push(std::fs::read(&sqfs).unwrap());
    }
    assert!(
        images.windows(2).all(|w| w[0] == w[1]),
        "the three formats must give byte-identical root filesystems"
    );
}

#[test]
fn same_input_gives_a_byte_identical_rootfs_twice() {
    if !have("same_input_gives_a_byte_identical_rootfs_twice", TOOLS) {
        return;
    }
    let fx = fixture();
    let mut built = Vec::new();
    for _ in 0..2 {
        let (_dir, store) = store();
        store.load(&fx.join("docker.tar")).unwrap();
        let image = store.resolve("example/layered:v1").unwrap();
        built.push(std::fs::read(store.rootfs(&image).unwrap()).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(1100)); // a different build second
    }
    assert_eq!(built[0], built[1]);
}

#[test]
fn detvm_built_images_are_read_by_skopeo_and_umoci() {
    if !have(
        "detvm_built_images_are_read_by_skopeo_and_umoci",
        &["umoci", "skopeo", "busybox"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hi\n").unwrap();
    let spec = detvm_images::build::Spec {
        name: "hello:1".into(),
        files: vec![detvm_images::build::FileSpec {
            src: "hello.txt".into(),
            dest: "/srv/hello.txt".into(),
            mode: Some(0o640),
        }],
        config: ImageConfig {
            entrypoint: vec!["/bin/cat".into(), "/srv/hello.txt".into()],
            ..Default::default()
        },
        base_dir: dir.path().into(),
        ..Default::default()
    };
    let built = detvm_images::build::build(
        &spec,
        &detvm_images::build::BuildOptions {
            cache: dir.path().join("cache"),
        },
    )
    .unwrap();
    built.write(&dir.path().join("layout")).unwrap();
    built.write(&dir.path().join("archive.tar")).unwrap();
    let out = sh(
        dir.path(),
        "skopeo inspect --config oci:layout:1 && skopeo copy --quiet oci-archive:archive.tar:1 docker-archive:d.tar:hello:1 \
         && umoci unpack --image layout:1 bundle >/dev/null && cat bundle/rootfs/srv/hello.txt && stat -c %a bundle/rootfs/srv/hello.txt \
         && chroot bundle/rootfs /bin/sh -c 'echo from-busybox'",
    );
    assert!(out.contains("\"/bin/cat\""), "{out}");
    assert!(out.contains("hi\n640\nfrom-busybox"), "{out}");
    // The docker-archive skopeo made from our archive loads back to the same layers.
    let (_s, store) = store();
    store.load(&dir.path().join("d.tar")).unwrap();
    let image = store.resolve("hello:1").unwrap();
    assert_eq!(
        image.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
        built.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()
    );
}
