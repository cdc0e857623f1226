//! A campaign's project and images through an object store (a `file://` folder): a
//! worker home with nothing in it gets a copy that passes the campaign's fingerprint,
//! images already in the store are not uploaded again nor downloaded by a worker that
//! has them, and a copy that differs from what the coordinator ran is refused.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use detvm_images::build::{write_layout, LayerBlob};
use detvm_images::{ImageConfig, Store};
use explorer::campaign::campaigns_dir;
use explorer::observer::Quiet;
use explorer::run::inputs::RunInputs;
use explorer::run::prepare::prepare;
use explorer::run::RunOptions;

use super::objects::Objects;
use super::project::{fetch, upload};

/// Loads an image `name` with one layer holding `file` into `home`'s store.
fn load_image(home: &Path, name: &str, file: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(1);
    b.append_data(&mut h, file, &b"x"[..]).unwrap();
    let out = scratch.path().join("layout");
    let layer =
        LayerBlob::from_tar(&out.with_extension("gz"), &b.into_inner().unwrap()[..]).unwrap();
    let config = ImageConfig {
        cmd: vec![format!("/{file}")],
        ..Default::default()
    };
    write_layout(&out, name, &[layer], &config).unwrap();
    let store = Store::open(home.join("images")).unwrap();
    store.load(&out).unwrap()[0].digest.clone()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Campaign `id`'s inputs in `home`, with the fingerprint of the project prepared there.
fn campaign(home: &Path, id: &str, src: &Path) -> RunInputs {
    let opts = RunOptions {
        compose: src.join("docker-compose.yaml"),
        seed: Some(1),
        duration: Some(Duration::from_secs(4)),
        epoch: None,
        faults: Some(src.join("plans/none.yaml")),
        no_faults: false,
        vars: Vec::new(),
        backend: vmm::backend::BackendKind::Emu,
        home: home.to_path_buf(),
        snapshot_at: Vec::new(),
    };
    let prepared = prepare(&opts, &mut Quiet).unwrap();
    let inputs = RunInputs::new(
        &opts,
        prepared.seed,
        prepared.duration_ns(),
        prepared.epoch,
        prepared.fingerprint().unwrap(),
    );
    let dir = campaigns_dir(home).join(id);
    std::fs::create_dir_all(&dir).unwrap();
    inputs.save(&dir).unwrap();
    inputs
}

#[test]
fn a_bare_worker_gets_the_project_and_images_once_and_the_fingerprint_decides() {
    let tmp = tempfile::tempdir().unwrap();
    let coordinator = tmp.path().join("coordinator");
    let app = load_image(&coordinator, "app:1", "a");
    load_image(&coordinator, "tool:2", "b");
    let src = tmp.path().join("src");
    // An `x-detvm.prepare` script that does not exist: it must never be needed.
    write(
        &src.join("docker-compose.yaml"),
        "services:\n  a:\n    image: app:1\n    env_file: a.env\n  b:\n    image: tool:${TAG}\nx-detvm:\n  prepare: ./missing-build.sh\n",
    );
    write(&src.join(".env"), "TAG=2\n");
    write(&src.join("a.env"), "X=1\n");
    write(&src.join("plans/none.yaml"), "faults: []\n");
    let inputs = campaign(&coordinator, "c1", &src);
    campaign(&coordinator, "c2", &src);

    let store_dir = tmp.path().join("objects");
    let objects = Objects::open(&format!("file://{}", store_dir.display())).unwrap();
    let first = upload(&objects, &coordinator, "c1", &mut BTreeSet::new()).unwrap();
    assert!(store_dir.join("c1/project.bundle").is_file());
    assert_eq!(
        std::fs::read_dir(store_dir.join("images/sha256"))
            .unwrap()
            .count(),
        6,
        "two images: a manifest, a config and a layer each"
    );
    // A coordinator started again finds it all there; a second campaign of the same
    // images uploads its project only.
    assert_eq!(
        upload(&objects, &coordinator, "c1", &mut BTreeSet::new()).unwrap(),
        0
    );
    let second = upload(&objects, &coordinator, "c2", &mut BTreeSet::new()).unwrap();
    let project_bytes = std::fs::metadata(store_dir.join("c2/project.bundle"))
        .unwrap()
        .len();
    assert_eq!(second, project_bytes, "no image blob uploaded again");
    assert!(first > second);

    let worker = tmp.path().join("worker");
    let copy = fetch(&objects, &worker, "c1").unwrap();
    assert_eq!(copy, campaigns_dir(&worker).join("c1/project/files"));
    for f in [".env", "a.env", "plans/none.yaml"] {
        assert_eq!(
            std::fs::read(copy.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    let here = Store::open(worker.join("images")).unwrap();
    assert_eq!(here.resolve("app:1").unwrap().digest, app);
    let moved = inputs.moved_to(&copy).unwrap();
    moved
        .prepare_again(&worker, "c1", &mut Quiet)
        .expect("the copy is what the coordinator ran");

    // The worker has the images now: another campaign needs only its project.
    std::fs::remove_dir_all(store_dir.join("images")).unwrap();
    fetch(&objects, &worker, "c2").expect("no image downloaded again");

    // A copy that differs from what the coordinator ran is refused.
    let compose = copy.join("docker-compose.yaml");
    let mut text = std::fs::read_to_string(&compose).unwrap();
    text.push_str("# changed\n");
    std::fs::write(&compose, text).unwrap();
    let err = moved
        .prepare_again(&worker, "c1", &mut Quiet)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("c1: the compose file changed"), "{err}");

    // A finished campaign's objects go; another campaign's stay.
    assert!(objects.delete_under("c1").unwrap() >= 1);
    assert!(!objects.exists("c1/project.bundle").unwrap());
    assert!(objects.exists("c2/project.bundle").unwrap());
}
