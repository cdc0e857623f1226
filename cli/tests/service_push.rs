//! `detvm push` to a real `detvm serve` on loopback: the campaign runs there and `--wait`
//! exits with its code; a second push sends no image blob the server already has; a bad
//! bundle is refused whole, with the reason, and leaves nothing behind.

mod common;

use std::io::Write;
use std::path::Path;

use common::cli::{example_home, text};
use common::server::Server;
use detvm_service::bundle::{CampaignSettings, Entry, Manifest, FORMAT};
use detvm_service::client::{Client, ClientError};

fn push(home: &Path, server: &Server, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "push",
        "--server",
        &server.url,
        "examples/kv/docker-compose.yaml",
    ];
    args.extend_from_slice(extra);
    common::cli::run_detvm(home, &args)
}

#[test]
fn a_pushed_campaign_runs_on_the_server_and_images_are_sent_once() {
    let client_home = example_home("push-client-home", "examples/kv/build-images.sh");
    let server_home = tempfile::tempdir().unwrap();
    let server = Server::start(server_home.path(), &["--jobs", "2"]);
    let first = push(
        &client_home,
        &server,
        &[
            "--var",
            "KV_BUG=drop-writes",
            "--seed",
            "5",
            "--duration",
            "4s",
            "--horizon",
            "2s",
            "--branches",
            "4",
            "--wait",
        ],
    );
    let all = text(&first);
    assert_eq!(first.status.code(), Some(1), "the planted bug fails: {all}");
    assert!(all.contains("FAIL"), "{all}");
    let sent = |all: &str| -> (u64, u64) {
        let at = all.find(" blobs sent").expect(all);
        let words: Vec<&str> = all[..at].rsplit('(').next().unwrap().split(' ').collect();
        (words[0].parse().unwrap(), words[2].parse().unwrap())
    };
    let (carried, total) = sent(&all);
    assert!(total > 0 && carried == total, "{all}");
    let campaign = all
        .lines()
        .find_map(|l| {
            l.strip_prefix("campaign ")
                .and_then(|r| r.split(':').next())
        })
        .expect(&all)
        .to_string();
    assert!(
        server_home
            .path()
            .join("campaigns")
            .join(&campaign)
            .is_dir(),
        "the campaign ran in the server's store: {all}"
    );

    let second = push(&client_home, &server, &["--branches", "1"]);
    let all = text(&second);
    assert_eq!(second.status.code(), Some(0), "{all}");
    assert_eq!(sent(&all), (0, total), "nothing sent twice: {all}");
}

/// A bundle written by hand: the manifest, then `entries` as they are.
fn raw_bundle(manifest: &Manifest, entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let enc = zstd::Encoder::new(file.reopen().unwrap(), 1).unwrap();
    let mut tar = tar::Builder::new(enc);
    let json = serde_json::to_vec(manifest).unwrap();
    let mut all = vec![("manifest.json", &json[..])];
    all.extend_from_slice(entries);
    for (name, data) in all {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    file
}

fn compose_only(compose: &[u8], claimed: &[u8]) -> Manifest {
    Manifest {
        format: FORMAT,
        compose: "docker-compose.yaml".into(),
        files: vec![Entry {
            path: "docker-compose.yaml".into(),
            sha256: detvm_images::digest::of_bytes(claimed),
            size: compose.len() as u64,
        }],
        archives: Vec::new(),
        images: Vec::new(),
        carried_blobs: Vec::new(),
        campaign: CampaignSettings::default(),
    }
}

#[test]
fn a_bad_bundle_is_refused_whole_with_the_reason() {
    let server_home = tempfile::tempdir().unwrap();
    let server = Server::start(server_home.path(), &[]);
    let client = Client::new(&server.url, None);
    let compose = b"services:\n  a:\n    image: nowhere/x:1\n";
    let refused = |bundle: &tempfile::NamedTempFile| match client.upload(bundle.path()) {
        Err(ClientError::Refused { status, message }) => (status, message),
        other => panic!("not refused: {other:?}"),
    };

    // Content that does not hash to what the manifest says.
    let wrong = compose_only(compose, b"something else");
    let (status, why) = refused(&raw_bundle(
        &wrong,
        &[("files/docker-compose.yaml", compose)],
    ));
    assert_eq!(status, 400, "{why}");
    assert!(
        why.starts_with("bundle refused:") && why.contains("hashes to"),
        "{why}"
    );

    // Checked and complete, but its image is neither in it nor on the server.
    let (status, why) = refused(&raw_bundle(
        &compose_only(compose, compose),
        &[("files/docker-compose.yaml", compose)],
    ));
    assert_eq!(status, 400, "{why}");
    assert!(
        why.contains("neither in the bundle nor on this server"),
        "{why}"
    );

    // Nothing of either was kept, and no job was queued.
    let jobs = server_home.path().join("service/jobs");
    let left: Vec<_> = std::fs::read_dir(&jobs)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(client.jobs().unwrap().is_empty());
}
