//! Campaigns in the notebook, on a real campaign: `detvm explore` of the replog example
//! runs in the background while the test follows it live through the server-sent
//! events of `/api/campaigns/C/live` (timelines must arrive while the campaign still
//! runs), then checks the campaign's API (list, tree, properties against the report
//! `--json` wrote), its timelines as timelines (triage, lanes, search), the search over
//! the whole campaign with a temporal query, and a campaign moment rebuilt by the
//! campaign replay, identical to the stored events.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use serde_json::Value;
use tower::ServiceExt;

use common::{detvm, repo_root, Client};

/// A fresh run store with the replog example's images.
fn replog_home() -> PathBuf {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("notebook_campaigns-home");
    for f in ["runs.db", "runs.db-wal", "runs.db-shm"] {
        let _ = std::fs::remove_file(home.join(f));
    }
    let _ = std::fs::remove_dir_all(home.join("campaigns"));
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(repo_root().join("examples/replog/build-images.sh"))
        .env("DETVM_HOME", &home)
        .env("DETVM", detvm())
        .output()
        .expect("run examples/replog/build-images.sh");
    assert!(
        out.status.success(),
        "build-images.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    home
}

/// A moment's view through the API, waiting for its replay.
async fn moment_view(client: &Client, moment: &str) -> Value {
    for _ in 0..10 {
        let r = client.get(&format!("/api/moments/{moment}?wait=60")).await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::ACCEPTED,
            "{moment}: {}",
            r.text()
        );
        if r.status == StatusCode::OK {
            return r.json()["result"].clone();
        }
    }
    panic!("{moment}: not replayed in 10 minutes");
}

/// `detvm explore` of replog with a small branch budget, in the background.
fn explore(home: &Path, json: &Path) -> Child {
    Command::new(detvm())
        .args([
            "explore",
            "examples/replog/docker-compose.yaml",
            "--seed",
            "0",
            "--duration",
            "12s",
            "--horizon",
            "3s",
            "--branches",
            "8",
            "--jobs",
            "1",
            "--json",
        ])
        .arg(json)
        .env("DETVM_HOME", home)
        .current_dir(repo_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start detvm explore")
}

/// One server-sent event: its name and JSON data.
fn parse_event(block: &str) -> Option<(String, Value)> {
    let mut name = "message".to_string();
    let mut data = String::new();
    for line in block.lines() {
        if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        }
    }
    (!data.is_empty()).then(|| {
        (
            name,
            serde_json::from_str(&data).expect("event data is JSON"),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_campaign_streams_its_timelines_and_its_api_shows_the_tree() {
    let home = replog_home();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("report.json");
    let mut child = explore(&home, &json);
    let client = Client::new(&home);

    // The campaign appears in the list while it runs.
    let started = Instant::now();
    let campaign = loop {
        let list = client.get_json("/api/campaigns").await;
        if let Some(c) = list.as_array().and_then(|l| l.first()) {
            assert_eq!(c["status"], "running", "{c:#}");
            break c["id"].as_str().unwrap().to_string();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "explore ended before its campaign was listed"
        );
        assert!(started.elapsed() < Duration::from_secs(300), "no campaign");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Live: every timeline as it is stored, then `end`.
    let req = Request::builder()
        .uri(format!("/api/campaigns/{campaign}/live"))
        .header("host", "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let res = client.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = res.into_body().into_data_stream();
    let mut buffer = String::new();
    let mut seen: Vec<Value> = Vec::new();
    let mut while_running = 0;
    let mut end = None;
    while end.is_none() {
        let chunk = tokio::time::timeout(Duration::from_secs(600), body.next())
            .await
            .expect("the live stream went quiet for 10 minutes")
            .expect("the live stream closed without `end`")
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(i) = buffer.find("\n\n") {
            let block: String = buffer.drain(..i + 2).collect();
            let Some((name, data)) = parse_event(&block) else {
                continue; // keep-alive comments
            };
            match name.as_str() {
                "timeline" => {
                    // Arrived while the explore process still ran: live, not a replay.
                    if data["campaign_status"] == "running" && child.try_wait().unwrap().is_none() {
                        while_running += 1;
                    }
                    seen.push(data);
                }
                "end" => end = Some(data),
                other => panic!("unexpected event {other}: {data}"),
            }
        }
    }
    let status = child.wait().unwrap();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        while_running >= 1,
        "no timeline arrived before the campaign ended ({} in all)",
        seen.len()
    );
    let expected = if status.code() == Some(1) {
        "failed"
    } else {
        "passed"
    };
    assert_eq!(end.unwrap()["status"], expected);
    // Every timeline exactly once, in id order, as the report has them.
    let ids: Vec<u64> = seen.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    let report_ids: Vec<u64> = report["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, report_ids);
    assert_eq!(ids.len(), 9, "the root and 8 branches");

    // A stream asked for what comes after the last timeline ends at once with `end`.
    let r = client
        .get(&format!("/api/campaigns/{campaign}/live?after={}", ids[8]))
        .await;
    let text = r.text();
    assert!(!text.contains("event: timeline"), "{text}");
    assert!(text.contains("event: end"), "{text}");

    // The list and the tree.
    let list = client.get_json("/api/campaigns").await;
    let row = &list[0];
    assert_eq!(row["id"], campaign.as_str());
    assert_eq!(row["status"], expected);
    assert_eq!(row["branches"], 8);
    let detail = client.get_json(&format!("/api/campaigns/{campaign}")).await;
    let tree = detail["timelines"].as_array().unwrap();
    for (mine, theirs) in tree.iter().zip(report["timelines"].as_array().unwrap()) {
        for key in [
            "id", "parent", "branch", "from_ns", "end_ns", "failed", "faults",
        ] {
            assert_eq!(mine[key], theirs[key], "{key} of T{}", mine["id"]);
        }
        let id = mine["id"].as_u64().unwrap();
        assert_eq!(mine["timeline"], format!("{campaign}/T{id}"));
    }
    assert!(tree[0]["parent"].is_null() && tree[0]["fork_moment"].is_null());
    // The properties are the report's judgement.
    let props = detail["properties"].as_array().unwrap();
    let report_props = report["properties"].as_array().unwrap();
    assert_eq!(props.len(), report_props.len());
    for (p, r) in props.iter().zip(report_props) {
        assert_eq!(p["message"], r["message"]);
        assert_eq!(p["status"], r["status"]);
        assert_eq!(p["failing"], r["failing"]);
    }

    // A branch as a timeline: its triage starts at its fork, its events are its own.
    let t = &tree[5];
    let tid = t["timeline"].as_str().unwrap();
    let triage = client.get_json(&format!("/api/runs/{tid}")).await;
    assert_eq!(triage["start_ns"], t["from_ns"]);
    assert_eq!(triage["end_ns"], t["end_ns"]);
    assert_eq!(triage["campaign"], campaign.as_str());
    assert_eq!(triage["parent"], t["fork_moment"]);
    for page in ["", "/timeline", "/logs"] {
        let r = client.get(&format!("/runs/{tid}{page}")).await;
        assert_eq!(r.status, StatusCode::OK, "/runs/{tid}{page}: {}", r.text());
    }
    let lanes = client
        .get_json(&format!("/api/runs/{tid}/lanes?buckets=20"))
        .await;
    let frames: u64 = lanes["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l.as_array().unwrap())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(frames > 0, "{lanes:#}");
    let own = client
        .get_json(&format!("/api/runs/{tid}/events?limit=2000"))
        .await;
    let from = t["from_ns"].as_u64().unwrap();
    let own_events = own["events"].as_array().unwrap();
    assert!(!own_events.is_empty());
    assert!(own_events
        .iter()
        .all(|e| e["vtime_ns"].as_u64().unwrap() >= from
            && e["moment"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{tid}@"))));

    // The search over the whole campaign: every timeline's own events.
    let found = client
        .get_json(&format!(
            "/api/campaigns/{campaign}/events?kind=fault_applied&limit=2000"
        ))
        .await;
    let faults = found["events"].as_array().unwrap();
    assert!(!faults.is_empty(), "the branches' swarm faults: {found:#}");
    let with_faults: std::collections::BTreeSet<&str> = faults
        .iter()
        .map(|e| e["timeline"].as_str().unwrap())
        .collect();
    assert!(
        with_faults.len() > 1,
        "faults in several timelines: {with_faults:?}"
    );
    for e in faults {
        assert_eq!(e["label"], "fault_applied");
        let moment = e["moment"].as_str().unwrap();
        assert!(moment.starts_with(&format!("{}@", e["timeline"].as_str().unwrap())));
    }
    // Preceded and not preceded (within a timeline) split the matches exactly.
    let q = |op: &str| {
        format!("/api/campaigns/{campaign}/events?kind=agent.output&op={op}&b_kind=fault_applied&within=500ms&limit=2000")
    };
    let all = client
        .get_json(&format!(
            "/api/campaigns/{campaign}/events?kind=agent.output&limit=2000"
        ))
        .await;
    let yes = client.get_json(&q("preceded_by")).await;
    let no = client.get_json(&q("not_preceded_by")).await;
    assert_eq!(all["truncated"], false);
    let count = |v: &Value| v["events"].as_array().unwrap().len();
    assert!(
        count(&yes) > 0 && count(&no) > 0,
        "{} {}",
        count(&yes),
        count(&no)
    );
    assert_eq!(count(&yes) + count(&no), count(&all));
    // Each "preceded" event has a fault of its own timeline within 500 ms before it.
    for e in yes["events"].as_array().unwrap() {
        let t = e["vtime_ns"].as_u64().unwrap();
        assert!(
            faults.iter().any(|f| f["timeline"] == e["timeline"]
                && f["vtime_ns"].as_u64().unwrap() < t
                && t - f["vtime_ns"].as_u64().unwrap() <= 500_000_000),
            "{e:#}"
        );
    }
    let r = client
        .get(&format!("/campaigns/{campaign}/logs?kind=fault_applied"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains(&format!("/moments/{campaign}/T")));

    // The pages.
    let r = client.get("/campaigns").await;
    assert!(r.text().contains(&format!("/campaigns/{campaign}")));
    let r = client.get(&format!("/campaigns/{campaign}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = r.text();
    for t in tree {
        assert!(
            page.contains(&format!("id=\"t{}\"", t["id"])),
            "T{} drawn",
            t["id"]
        );
    }

    // A moment inside a branch, rebuilt from the root by its path of forks, is the
    // stored timeline's.
    let t = &tree[8];
    let moment = format!(
        "{}@{}",
        t["timeline"].as_str().unwrap(),
        explorer::moment::format_vtime(t["from_ns"].as_u64().unwrap() + 1_500_000_000)
    );
    let view = moment_view(&client, &moment).await;
    assert_eq!(view["moment"], moment.as_str(), "the moment was rebuilt");
    assert!(view["divergence"].is_null(), "{:#}", view["divergence"]);
    let path = view["started_from"].as_str().unwrap();
    // From boot or a frontier snapshot file of an ancestor, then the path of forks.
    assert!(path.contains("the path T"), "{path}");
    assert!(path.ends_with(&format!("T{}", t["id"])), "{path}");
    let r = client.get(&format!("/moments/{moment}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("Services and VMs"));

    // Through the moment cache: stepping on inside T starts from a snapshot of T the
    // first replay kept; rewinding to just after the fork, from a kept snapshot of T or
    // of its parent's end. Both identical to the stored events.
    let from_ns = t["from_ns"].as_u64().unwrap();
    for (offset, kept_of) in [
        (2_500_000_000u64, vec![t["id"].clone()]),
        (100_000_000, vec![t["id"].clone(), t["parent"].clone()]),
    ] {
        let m = format!(
            "{}@{}",
            t["timeline"].as_str().unwrap(),
            explorer::moment::format_vtime(from_ns + offset)
        );
        let v = moment_view(&client, &m).await;
        assert!(v["divergence"].is_null(), "{m}: {:#}", v["divergence"]);
        let from = v["started_from"].as_str().unwrap();
        assert!(
            kept_of
                .iter()
                .any(|id| from.starts_with(&format!("a snapshot of T{id} kept in memory"))),
            "{m}: {from}"
        );
    }

    // Acting from a campaign moment, as from a run's: each cell of the timeline's
    // notebook a branch `C/T<n>~CELL` with moments of its own, the campaign untouched.
    let tl_id = t["timeline"].as_str().unwrap().to_string();
    let tree_before = client.get_json(&format!("/api/campaigns/{campaign}")).await;
    let exec = client
        .run_cell(&tl_id, serde_json::json!({"kind": "exec", "moment": moment, "node": "log1", "command": "cat /etc/hosts"}))
        .await;
    assert_eq!(exec["status"], "done", "{exec:#}");
    assert_eq!(exec["output"]["exec"]["code"], 0, "{exec:#}");
    assert!(
        exec["output"]["exec"]["output"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["line"].as_str().unwrap().ends_with("log2")),
        "{exec:#}"
    );
    let file = client
        .run_cell(&tl_id, serde_json::json!({"kind": "file", "moment": moment, "node": "driver", "path": "/etc/hosts"}))
        .await;
    assert_eq!(file["status"], "done", "{file:#}");
    let download = client.get(&format!("/api/cells/{}/file", file["id"])).await;
    assert_eq!(download.status, StatusCode::OK);
    assert!(download.text().contains("log1"));
    let branch = client
        .run_cell(&tl_id, serde_json::json!({"kind": "branch", "moment": moment, "branch": 5, "run_for": "500ms"}))
        .await;
    assert_eq!(branch["status"], "done", "{branch:#}");
    let branch_tl = branch["timeline"].as_str().unwrap().to_string();
    assert_eq!(branch_tl, format!("{tl_id}~{}", branch["id"]));
    let end = branch["output"]["end_ns"].as_u64().unwrap();
    assert_eq!(
        end,
        view["decision_point_ns"].as_u64().unwrap() + 500_000_000
    );
    let inside = moment_view(&client, &format!("{branch_tl}@{}ns", end)).await;
    assert_eq!(
        inside["state"]["trace_hash"], branch["output"]["trace_hash"],
        "replaying the branch to its end reaches the branch's own state"
    );
    let fault = client
        .run_cell(&tl_id, serde_json::json!({"kind": "fault", "moment": moment, "fault": {"type": "pause", "node": "log1", "duration": "200ms"}, "run_for": "1s"}))
        .await;
    assert_eq!(fault["status"], "done", "{fault:#}");
    let faults = client
        .get_json(&format!(
            "/api/runs/{}/events?kind=fault_applied",
            fault["timeline"].as_str().unwrap()
        ))
        .await;
    assert!(
        faults["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"] == "log1" || e["text"].as_str().unwrap_or("").contains("log1")),
        "{faults:#}"
    );
    let page = client.get(&format!("/moments/{moment}")).await;
    assert!(page.text().contains("Act from this moment"));
    let r = client
        .post(
            &format!("/api/runs/{tl_id}/cells/rerun"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for cell in [&exec, &file, &branch, &fault] {
        let after = client.cell_done(cell["id"].as_u64().unwrap()).await;
        assert_eq!(after["same_as_before"], true, "{after:#}");
        assert_eq!(after["output"], cell["output"]);
    }
    assert_eq!(
        client.get_json(&format!("/api/campaigns/{campaign}")).await,
        tree_before,
        "acting changes nothing stored by the campaign"
    );

    // Errors: a moment outside the timeline, unknown and malformed ids.
    let before = format!("{}@0.1s", t["timeline"].as_str().unwrap());
    let r = client.get(&format!("/api/moments/{before}?wait=60")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("pick a moment"));
    let r = client.get(&format!("/api/runs/{campaign}/T99")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = client.get("/api/campaigns/cnosuch").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = client.get("/api/campaigns/c..%2Fetc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = client.get(&format!("/api/runs/{campaign}/T1x")).await;
    assert!(r.status.is_client_error());
}
