//! The etcd example image (images/examples/etcd/image.toml), built by the debootstrap path,
//! loaded, turned into a root filesystem, and its config run under chroot until etcd serves.
//! Cold (first debootstrap) it takes about two minutes; with the cached layer, under one.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cache_dir() -> PathBuf {
    match std::env::var_os("DETVM_CACHE") {
        Some(d) => d.into(),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/detvm"),
    }
}

#[test]
fn etcd_image_from_debian_packages_runs_etcd() {
    let tools = [
        "debootstrap",
        "mksquashfs",
        "unsquashfs",
        "unshare",
        "chroot",
    ];
    if !have("etcd_image_from_debian_packages_runs_etcd", &tools) {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("SKIP etcd_image_from_debian_packages_runs_etcd: debootstrap needs root");
        return;
    }
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/etcd/image.toml");
    let spec = detvm_images::build::Spec::from_file(&spec_path).unwrap();
    let t = Instant::now();
    let built = detvm_images::build::build(
        &spec,
        &detvm_images::build::BuildOptions { cache: cache_dir() },
    )
    .unwrap();
    eprintln!(
        "TIME build (debootstrap layer {}): {:.1}s",
        cache_dir().display(),
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("etcd.tar");
    let t = Instant::now();
    built.write(&archive).unwrap();
    let size = archive.metadata().unwrap().len();
    eprintln!(
        "TIME write oci-archive ({:.1} MiB): {:.1}s",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let (_s, store) = store();
    let t = Instant::now();
    let loaded = store.load(&archive).unwrap();
    eprintln!(
        "TIME load (verify + apply layers): {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(loaded[0].names, vec!["detvm-examples/etcd:3.4".to_string()]);
    let image = store.resolve("detvm-examples/etcd:3.4").unwrap();
    assert_eq!(image.config.entrypoint, vec!["/usr/bin/etcd"]);
    assert_eq!(image.config.user, "etcd");

    let t = Instant::now();
    let sqfs = store.rootfs(&image).unwrap();
    let sqfs_size = sqfs.metadata().unwrap().len();
    eprintln!(
        "TIME rootfs squashfs ({:.1} MiB): {:.1}s",
        sqfs_size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let list = listing(&sqfs);
    assert!(
        list.iter()
            .any(|l| l.starts_with("-rwxr-xr-x 0/0") && l.ends_with(" /usr/bin/etcd")),
        "no /usr/bin/etcd"
    );
    assert!(
        !list
            .iter()
            .any(|l| l.contains("/var/cache/apt/archives/") && l.ends_with(".deb")),
        "apt cache left in"
    );

    // Run the image's own config (entrypoint + cmd as its user) in a private network.
    let root = dir.path().join("root");
    sh(
        dir.path(),
        &format!(
            "unsquashfs -q -n -d {} {} >/dev/null",
            root.display(),
            sqfs.display()
        ),
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{}:", image.config.user)))
        .expect("etcd user");
    let f: Vec<&str> = user.split(':').collect();
    let command = [image.config.entrypoint.clone(), image.config.cmd.clone()]
        .concat()
        .join(" ");
    let script = format!(
        "ip link set lo up; cd {root}{wd}; exec chroot --userspec={}:{} {root} {command}",
        f[2],
        f[3],
        root = root.display(),
        wd = image.config.working_dir
    );
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    let ready = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("ready to serve client requests") => break true,
            Ok(line) => log.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "etcd did not become ready:\n{}", log.join("\n"));
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
