//! The notebook tests' fixture: a `.detvm` home with the kv example's images and one
//! real failing run (`KV_BUG=drop-writes`) with snapshots, made once per test binary
//! with the `detvm` binary as a user would; and a client for the notebook's router.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `detvm` binary of this build profile (`cargo test --workspace` builds it; run
/// `cargo build --release -p detvm` first when testing this crate alone).
pub fn detvm() -> PathBuf {
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("release/detvm");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release -p detvm` (the workspace test run builds it)",
        bin.display()
    );
    bin
}

pub struct Fixture {
    pub home: PathBuf,
    /// A kv run that fails its properties, snapshotted at 1s and 2s, with a partition
    /// of kv and driver at 1.5s for 300ms and kv paused at 2.2s for 200ms.
    pub run: String,
    pub report: Value,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        // One home per test binary: cargo runs them one after another, never sharing.
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().unwrap().to_string_lossy();
        let name = name.split('-').next().unwrap().to_string();
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-home"));
        // A fresh run store each time; the image store is kept between test runs.
        for f in ["runs.db", "runs.db-wal", "runs.db-shm"] {
            let _ = std::fs::remove_file(home.join(f));
        }
        let _ = std::fs::remove_dir_all(home.join("runs"));
        let _ = std::fs::remove_dir_all(home.join("campaigns"));
        std::fs::create_dir_all(&home).unwrap();
        let out = Command::new(repo_root().join("examples/kv/build-images.sh"))
            .env("DETVM_HOME", &home)
            .env("DETVM", detvm())
            .output()
            .expect("run examples/kv/build-images.sh");
        assert!(
            out.status.success(),
            "build-images.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = home.join("report.json");
        let out = Command::new(detvm())
            .args([
                "run",
                "examples/kv/docker-compose.yaml",
                "--seed",
                "1",
                "--duration",
                "3s",
                "--snapshot-at",
                "1s,2s",
                "--var",
                "KV_BUG=drop-writes",
                "--faults",
                "notebook-ui/tests/kv-faults.yaml",
                "--json",
            ])
            .arg(&json)
            .env("DETVM_HOME", &home)
            .current_dir(repo_root())
            .output()
            .expect("run detvm");
        assert_eq!(
            out.status.code(),
            Some(1),
            "the kv run with drop-writes should fail its properties:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        Fixture {
            home,
            run: report["run"].as_str().unwrap().to_string(),
            report,
        }
    })
}

/// The notebook over `home`, answering requests in-process.
pub struct Client {
    pub app: Router,
    pub token: Option<String>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    pub fn new(home: &Path) -> Client {
        Client {
            app: notebook_ui::router(home, None).unwrap(),
            token: None,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), 256 << 20)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    fn request(&self, method: &str, uri: &str) -> axum::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1:7878");
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(self.request("GET", uri).body(Body::empty()).unwrap())
            .await
    }

    /// GET that must answer 200 with JSON.
    pub async fn get_json(&self, uri: &str) -> Value {
        let r = self.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "GET {uri}: {}", r.text());
        r.json()
    }

    pub async fn post(&self, uri: &str, body: &Value) -> Reply {
        self.send(
            self.request("POST", uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    /// Waits until a cell is neither queued nor running.
    pub async fn cell_done(&self, id: u64) -> Value {
        for _ in 0..20 {
            let c = self.get_json(&format!("/api/cells/{id}?wait=30")).await;
            if c["status"] != "queued" && c["status"] != "running" {
                return c;
            }
        }
        panic!("cell {id} did not finish in 10 minutes");
    }

    /// Adds a cell to `run`'s notebook, runs it, and waits for it.
    pub async fn run_cell(&self, run: &str, action: Value) -> Value {
        let r = self
            .post(
                &format!("/api/runs/{run}/cells"),
                &serde_json::json!({ "action": action }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        self.cell_done(r.json()["id"].as_u64().unwrap()).await
    }
}
