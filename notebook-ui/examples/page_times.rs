//! Measures the notebook's server time per page on a run with many events:
//!
//!   cargo run --release -p notebook-ui --example page_times [EVENTS]
//!
//! makes a synthetic run store (EVENTS events, default 100,000, over 5 minutes of
//! virtual time on 5 nodes: frames, log lines, SDK assertions, state changes, faults),
//! inserted through the engine's RunStore, then times each page and API call through
//! the router (no network): the median and the slowest of 5.
//!
//!   cargo run --release -p notebook-ui --example page_times -- --moments HOME RUN T1 T2 ...
//!
//! times moment views of a real run instead (replays from its nearest snapshot). With
//! `PAGE_TIMES_HOME=DIR` the synthetic store is kept in DIR.
//!
//!   cargo run --release -p notebook-ui --example page_times -- --moment-cache HOME RUN
//!
//! times the moment cache on a real run: a cold moment, stepping and rewinding near it,
//! then the whole run warmed (as opening its page does) and moments anywhere.
//!
//!   cargo run --release -p notebook-ui --example page_times -- --campaign HOME C
//!
//! times the campaign pages and API calls of a real campaign C; with `--campaign
//! synthetic [EVENTS]`, of a synthetic campaign of 40 timelines holding EVENTS events
//! (default 100,000) in all.

use std::path::Path;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use explorer::properties::{parse_sdk_line, PropertyBook, SdkLine};
use explorer::store::{RunStatus, RunStore, StoredEvent};
use serde_json::json;
use tower::ServiceExt;

const NODES: [&str; 5] = ["db1", "db2", "db3", "client", "proxy"];
const SPAN_NS: u64 = 300_000_000_000;

fn assertion(id: &str, always: bool, ok: bool) -> String {
    json!({"antithesis_assert": {
        "assert_type": if always { "always" } else { "sometimes" }, "display_type": "Always",
        "condition": ok, "message": id, "id": id, "hit": true, "must_hit": true,
        "location": {}, "details": {"note": "synthetic"}
    }})
    .to_string()
}

fn synthetic(home: &Path, n: u64) -> String {
    let mut store = RunStore::open(home).unwrap();
    let run = store.create_run("synthetic.yaml", 42, "synthetic").unwrap();
    let mut book = PropertyBook::new();
    let mut batch = Vec::new();
    for seq in 0..n {
        let t = seq * SPAN_NS / n;
        let node = NODES[(seq % 5) as usize];
        let other = NODES[((seq + 1) % 5) as usize];
        let (kind, body) = match seq % 100 {
            0 => {
                let line = assertion("replicas agree", true, seq % 700 != 0);
                if let Ok(SdkLine::Assert(a)) = parse_sdk_line(&line) {
                    book.record(&a, node, t);
                }
                (
                    "agent",
                    json!({"type": "agent", "message": {"type": "sdk", "line": line}}),
                )
            }
            1..=14 => (
                "agent",
                json!({"type": "agent", "message": {"type": "output", "stream": "stdout",
                "line": format!("request {seq} served by {node} in {} ms", seq % 17)}}),
            ),
            15 if seq % 1000 == 15 => (
                "state",
                json!({"type": "state", "state": {"change": "paused"}}),
            ),
            16 if seq % 1000 == 16 => (
                "fault_applied",
                json!({"type": "fault_applied",
                "fault": {"type": "partition", "groups": [[node], [other]], "duration": "2s"}}),
            ),
            17 if seq % 1000 == 17 => (
                "fault_healed",
                json!({"type": "fault_healed",
                "fault": {"type": "partition", "groups": [[NODES[((seq - 1) % 5) as usize]], [NODES[(seq % 5) as usize]]], "duration": "2s"}}),
            ),
            _ => {
                let action = if seq % 2 == 0 { "sent" } else { "delivered" };
                (
                    "frame",
                    json!({"type": "frame", "action": action, "src": node, "dst": other, "len": 90 + seq % 50, "ethertype": 2048}),
                )
            }
        };
        batch.push(StoredEvent {
            seq,
            vtime_ns: t,
            node: node.to_string(),
            kind: kind.to_string(),
            body,
        });
        if batch.len() == 5000 {
            store.append_events(&run, &batch).unwrap();
            batch.clear();
        }
    }
    store.append_events(&run, &batch).unwrap();
    store
        .finish_run(
            &run,
            RunStatus::PropertiesFailed,
            &book.properties(),
            SPAN_NS,
            "0123456789abcdef",
            None,
        )
        .unwrap();
    run
}

async fn time(app: &axum::Router, uri: &str) -> (u128, u128, usize) {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let res = app
            .clone()
            .oneshot(
                Request::get(uri)
                    .header("host", "127.0.0.1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(res.status().is_success(), "{uri}: {}", res.status());
        size = axum::body::to_bytes(res.into_body(), 1 << 30)
            .await
            .unwrap()
            .len();
        times.push(start.elapsed().as_micros());
    }
    times.sort();
    (times[2], times[4], size)
}

async fn moments(home: &Path, run: &str, times: &[String]) {
    let app = notebook_ui::router(home, None).unwrap();
    for t in times {
        let uri = format!("/api/moments/{run}@{t}?wait=120");
        let start = Instant::now();
        let res = app
            .clone()
            .oneshot(
                Request::get(&uri)
                    .header("host", "127.0.0.1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 30)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        println!(
            "{run}@{t}: {status} in {} ms wall, from {}",
            start.elapsed().as_millis(),
            v["result"]["started_from"]
                .as_str()
                .unwrap_or("?")
                .rsplit('/')
                .next()
                .unwrap_or("")
        );
    }
}

/// Wall time of one moment view through the engine (as the API computes it).
fn time_one(db: &notebook_ui::db::Db, run: &str, t: &str, what: &str) {
    let moment: explorer::moment::Moment = format!("{run}@{t}").parse().unwrap();
    let (view, ms) = notebook_ui::engine::time_moment(db, &moment).unwrap();
    assert!(
        view.divergence == Some(None),
        "{moment}: the replay differs from the run: {:?}",
        view.divergence
    );
    let (kept, bytes) = db.moments.size();
    println!(
        "| {what} | {t} | {} | {:.2} s | {kept} kept, {} MiB |",
        view.started_from.rsplit('/').next().unwrap_or(""),
        ms as f64 / 1000.0,
        bytes >> 20
    );
}

fn moment_cache(home: &Path, run: &str) {
    let db = notebook_ui::db::Db::open(home).unwrap();
    println!("| case | moment | replayed from | wall | cache after |\n|---|---|---|---|---|");
    time_one(&db, run, "15s", "cold (fresh server)");
    time_one(&db, run, "16s", "step +1s");
    time_one(&db, run, "14s", "rewind -2s");
    time_one(&db, run, "14.5s", "step +0.5s");
    time_one(&db, run, "19.99s", "jump to 19.99s");
    db.moments.clear();
    time_one(&db, run, "19.99s", "cold (fresh server)");
    let start = Instant::now();
    let mut quiet = notebook_ui::engine::Progress::new(Default::default(), false);
    explorer::at_moment::warm(home, run, &db.moments, &mut quiet).unwrap();
    let (kept, bytes) = db.moments.size();
    println!(
        "| warming the whole run (opening its page) | | | {:.2} s | {kept} kept, {} MiB |",
        start.elapsed().as_secs_f64(),
        bytes >> 20
    );
    for t in ["5s", "9.99s", "29.99s", "37.5s", "52.3s"] {
        time_one(&db, run, t, "warm");
    }
}

/// A synthetic campaign: 40 timelines (each timeline's parent is (id-1)/4), each 3 s of
/// virtual time after its parent's end, EVENTS events spread over them.
fn synthetic_campaign(home: &Path, events: u64) -> String {
    explorer::campaign::store::CampaignStore::open(home).unwrap();
    let mut conn = rusqlite::Connection::open(home.join("runs.db")).unwrap();
    let c = "csynthetic1".to_string();
    let tx = conn.transaction().unwrap();
    tx.execute(
        "INSERT INTO campaigns (id, compose, seed, started_at, status) VALUES (?1, 'synthetic.yaml', 1, '2026-12-07T00:00:00Z', 'failed')",
        [&c],
    )
    .unwrap();
    let per = events / 40;
    let mut ends = vec![0u64; 40];
    for t in 0..40u64 {
        let parent = (t > 0).then(|| (t - 1) / 4);
        let from = parent.map(|p| ends[p as usize]).unwrap_or(0);
        let end = from + 3_000_000_000;
        ends[t as usize] = end;
        let failed: Vec<&str> = if t % 7 == 3 {
            vec!["every write is kept"]
        } else {
            vec![]
        };
        let body = json!({"id": t, "parent": parent, "from_ns": from, "branch": parent.map(|_| t),
            "end_ns": end, "finished": false, "score": 3.0, "faults": "fault plan: 1 fault",
            "failed": failed, "error": null});
        tx.execute(
            "INSERT INTO timelines (campaign, id, body) VALUES (?1, ?2, ?3)",
            rusqlite::params![c, t as i64, body.to_string()],
        )
        .unwrap();
        let mut insert = tx
            .prepare("INSERT INTO timeline_events (campaign, timeline, seq, vtime_ns, node, kind, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .unwrap();
        for i in 0..per {
            let node = NODES[(i % 5) as usize];
            let (kind, body) = match i % 10 {
                0..=4 => (
                    "frame",
                    json!({"action": "deliver", "src": node, "dst": NODES[((i + 1) % 5) as usize], "len": 120}),
                ),
                5 | 6 => (
                    "agent",
                    json!({"message": {"type": "output", "stream": "stdout", "line": format!("served key {i}")}}),
                ),
                7 => ("console", json!({"line": format!("[{i}] kernel line")})),
                8 if i % 500 == 8 => (
                    "fault_applied",
                    json!({"fault": {"type": "pause", "node": node, "duration": "1s"}}),
                ),
                _ => (
                    "agent",
                    json!({"message": {"type": "sdk", "line": format!("assert {i}")}}),
                ),
            };
            insert
                .execute(rusqlite::params![
                    c,
                    t as i64,
                    i as i64,
                    (from + i * 3_000_000_000 / per) as i64,
                    node,
                    kind,
                    body.to_string()
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    c
}

async fn campaign_pages(home: &Path, c: &str) {
    let app = notebook_ui::router(home, None).unwrap();
    let uris = [
        "/campaigns".to_string(),
        "/api/campaigns".to_string(),
        format!("/campaigns/{c}"),
        format!("/api/campaigns/{c}"),
        format!("/campaigns/{c}/logs"),
        format!("/campaigns/{c}/logs?kind=fault_applied"),
        format!("/api/campaigns/{c}/events?kind=agent.output&op=preceded_by&b_kind=fault_applied&within=500ms"),
        format!("/runs/{c}/T1"),
        format!("/api/runs/{c}/T1/lanes?buckets=1500"),
        format!("/runs/{c}/T1/logs"),
    ];
    println!("| request | median | max | bytes |\n|---|---|---|---|");
    for uri in uris {
        let (median, max, size) = time(&app, &uri).await;
        println!(
            "| `{uri}` | {:.1} ms | {:.1} ms | {size} |",
            median as f64 / 1000.0,
            max as f64 / 1000.0
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--campaign") {
        if args[1] == "synthetic" {
            let dir = tempfile::tempdir().unwrap();
            let n = args.get(2).map(|a| a.parse().unwrap()).unwrap_or(100_000);
            let c = synthetic_campaign(dir.path(), n);
            println!("synthetic campaign {c}: 40 timelines, {n} events");
            campaign_pages(dir.path(), &c).await;
        } else {
            campaign_pages(Path::new(&args[1]), &args[2]).await;
        }
        return;
    }
    if args.first().map(String::as_str) == Some("--moment-cache") {
        moment_cache(Path::new(&args[1]), &args[2]);
        return;
    }
    if args.first().map(String::as_str) == Some("--moments") {
        moments(Path::new(&args[1]), &args[2], &args[3..]).await;
        return;
    }
    let n: u64 = args.first().map(|a| a.parse().unwrap()).unwrap_or(100_000);
    // PAGE_TIMES_HOME keeps the synthetic store (to open it with `detvm notebook`).
    let dir = tempfile::tempdir().unwrap();
    let home = std::env::var_os("PAGE_TIMES_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().to_path_buf());
    let start = Instant::now();
    let run = synthetic(&home, n);
    println!(
        "synthetic run {run}: {n} events inserted in {} ms",
        start.elapsed().as_millis()
    );
    let app = notebook_ui::router(&home, None).unwrap();
    let mid = SPAN_NS / 2;
    let uris = [
        "/".to_string(),
        format!("/runs/{run}"),
        format!("/api/runs/{run}"),
        format!("/runs/{run}/timeline"),
        format!("/api/runs/{run}/lanes?buckets=1500"),
        format!("/api/runs/{run}/lanes?buckets=1500&from={}&to={}", mid, mid + 10_000_000_000),
        format!("/runs/{run}/logs"),
        format!("/runs/{run}/logs?node=db2&kind=agent.output&text=served"),
        format!("/api/runs/{run}/events?kind=agent.sdk&text=replicas&op=not_followed_by&b_kind=state&within=5s"),
        format!("/api/runs/{run}/events?kind=state&op=preceded_by&b_kind=fault_applied&within=1s"),
        format!("/runs/{run}/notebook"),
        format!("/api/runs/{run}/export/events.jsonl"),
        format!("/api/runs/{run}/export/trace.json"),
    ];
    println!(
        "{:<110} {:>9} {:>9} {:>10}",
        "request", "median ms", "max ms", "bytes"
    );
    for uri in uris {
        let (median, max, size) = time(&app, &uri).await;
        println!(
            "{uri:<110} {:>9.1} {:>9.1} {size:>10}",
            median as f64 / 1000.0,
            max as f64 / 1000.0
        );
    }
}
