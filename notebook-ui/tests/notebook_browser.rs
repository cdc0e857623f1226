//! The notebook in headless Chromium (Debian's `chromium`, driven by `playwright-core`
//! from npm; see tests/browser/notebook.js): runs list, failing run, first failure's
//! moment, a branch, a command in a container and its output, timeline, logs, trace
//! export; and a campaign (`detvm explore` of kv with its planted bug, started in the
//! background): its tree growing live, its failing timeline followed to its moment, its
//! logs. Skips, saying so, only when Chromium is not installed (scripts/setup.sh
//! installs it). Screenshots go to $NOTEBOOK_SCREENSHOTS (default: the target's tmp).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, repo_root};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.is_file().then_some(path)
}

/// playwright-core under tests/browser, installed from its lock file when missing.
fn playwright(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .expect("npm (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves the notebook on a free loopback port from a thread of its own.
fn serve(home: &Path) -> std::net::SocketAddr {
    let home = home.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let app = notebook_ui::router(&home, None).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

#[test]
fn the_notebook_works_in_chromium() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: no Chromium at /usr/bin/chromium (install Debian's `chromium`: scripts/setup.sh)");
        return;
    };
    let dir = repo_root().join("notebook-ui/tests/browser");
    playwright(&dir);
    let f = fixture();
    let mut explore = Command::new(common::detvm())
        .args([
            "explore",
            "examples/kv/docker-compose.yaml",
            "--var",
            "KV_BUG=drop-writes",
            "--seed",
            "5",
            "--duration",
            "4s",
            "--horizon",
            "2s",
            "--branches",
            "8",
            "--jobs",
            "1",
        ])
        .env("DETVM_HOME", &f.home)
        .current_dir(repo_root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start detvm explore");
    let campaign = loop {
        let store = explorer::campaign::store::CampaignStore::open(&f.home).unwrap();
        if let Some(c) = store.list().unwrap().first() {
            break c.id.clone();
        }
        assert!(
            explore.try_wait().unwrap().is_none(),
            "explore ended at once"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let addr = serve(&f.home);
    let shots = std::env::var_os("NOTEBOOK_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("notebook-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(dir.join("notebook.js"))
        .current_dir(&dir)
        .env("BASE_URL", format!("http://{addr}"))
        .env("RUN", &f.run)
        .env("CAMPAIGN", &campaign)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node");
    let explored = explore.wait().unwrap();
    assert_eq!(explored.code(), Some(1), "the campaign finds kv's bug");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("browser test passed"), "{text}");
    for page in [
        "campaigns",
        "campaign",
        "campaign-moment",
        "campaign-logs",
        "runs",
        "triage",
        "moment",
        "notebook",
        "timeline",
        "logs",
    ] {
        assert!(shots.join(format!("{page}.png")).is_file(), "{page}.png");
    }
}
