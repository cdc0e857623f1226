//! Real services for the tests, started by the tests on loopback (never mocks):
//! PostgreSQL and moto's S3 server through scripts/test-services.sh, stopped when dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Service {
    pub url: String,
    pub port: u16,
    what: &'static str,
    child: Child,
    _dir: tempfile::TempDir,
}

fn start(what: &'static str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = Command::new(repo_root().join("scripts/test-services.sh"))
        .args([
            what,
            dir.path().join("data").to_str().unwrap(),
            &port.to_string(),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("scripts/test-services.sh (run scripts/setup.sh first)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start: {}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = match what {
        "postgres" => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        _ => format!("http://127.0.0.1:{port}"),
    };
    Service {
        url,
        port,
        what,
        child,
        _dir: dir,
    }
}

/// A throw-away PostgreSQL server.
pub fn postgres() -> Service {
    let s = start("postgres");
    // Accepting TCP is not yet accepting queries: wait for a real connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    while postgres::Client::connect(&s.url, postgres::NoTls).is_err() {
        assert!(Instant::now() < deadline, "postgres never accepted a query");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

/// moto's S3-compatible server, with a bucket `detvm`.
pub fn s3() -> Service {
    let s = start("s3");
    let out = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{}/detvm", s.url)])
        .output()
        .unwrap();
    assert!(out.status.success(), "create bucket: {out:?}");
    s
}

impl Drop for Service {
    fn drop(&mut self) {
        // postgres: SIGINT is its fast shutdown, which ends its clients' sessions too
        // (SIGTERM would wait for every client, e.g. a worker a failed test left behind).
        let signal = if self.what == "postgres" {
            "-INT"
        } else {
            "-TERM"
        };
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
