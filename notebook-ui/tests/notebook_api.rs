//! The notebook's JSON API on a real run store made by a real failing run of the kv
//! example: runs, triage, timeline lanes, search with temporal queries, exports,
//! moments replayed from snapshots, cells (exec, file, branch, fault) with re-run and
//! export/import, and the access guard.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{fixture, Client};
use serde_json::{json, Value};

const FAILING: &str = "a read right after an acknowledged write returns it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_triage_show_the_failing_run_with_moments() {
    let f = fixture();
    let c = Client::new(&f.home);
    let runs = c.get_json("/api/runs").await;
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == f.run.as_str())
        .expect("the run is listed");
    assert_eq!(run["status"], "properties_failed");
    assert_eq!(run["seed"], 1);
    assert_eq!(run["trace_hash"], f.report["trace_hash"]);
    assert!(run["failed_properties"].as_u64().unwrap() >= 1);
    assert_eq!(
        run["snapshots"],
        json!([1_000_000_000u64, 2_000_000_000u64])
    );

    let t = c.get_json(&format!("/api/runs/{}", f.run)).await;
    let p = t["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["message"] == FAILING)
        .expect("the failing property");
    assert_eq!(p["status"], "failed");
    let first = p["first_failure"]["vtime_ns"].as_u64().unwrap();
    assert_eq!(
        p["first_failure_moment"],
        format!("{}@{}", f.run, explorer::moment::format_vtime(first))
    );
    let failing_examples: Vec<&Value> = p["examples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["passed"] == false)
        .collect();
    assert!(!failing_examples.is_empty(), "{p:#}");
    assert_eq!(
        failing_examples[0]["vtime_ns"], first,
        "the first failing example is the first failure"
    );
    let nodes: BTreeSet<&str> = t["utilization"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["driver", "kv", "world"]));

    // The pages render the same data.
    let page = c.get(&format!("/runs/{}", f.run)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains(FAILING));
    assert!(page.text().contains(&format!("/moments/{}@", f.run)));
    let list = c.get("/").await;
    assert!(list.text().contains(&f.run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_count_every_frame_and_mark_property_failures() {
    let f = fixture();
    let c = Client::new(&f.home);
    let all = c
        .get(&format!("/api/runs/{}/export/events.jsonl", f.run))
        .await;
    assert_eq!(all.status, StatusCode::OK);
    let events: Vec<Value> = all
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let frames = events.iter().filter(|e| e["kind"] == "frame").count() as u64;
    assert!(frames > 0);

    let lanes = c
        .get_json(&format!("/api/runs/{}/lanes?buckets=97", f.run))
        .await;
    assert_eq!(lanes["end_ns"], f.report["vtime_end_ns"]);
    let counted: u64 = lanes["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|lane| lane.as_array().unwrap())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(counted, frames, "every frame in exactly one bucket");
    let first = f.report["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["message"] == FAILING)
        .unwrap()["first_failure"]["vtime_ns"]
        .clone();
    let marks = lanes["marks"].as_array().unwrap();
    assert!(
        marks
            .iter()
            .any(|m| m["kind"] == "fail" && m["vtime_ns"] == first),
        "the first failure is marked"
    );
    assert!(marks
        .iter()
        .any(|m| m["kind"] == "state" && m["label"] == "booted"));
    assert!(marks
        .iter()
        .any(|m| m["kind"] == "state" && m["label"] == "paused" && m["node"] == "kv"));
    // The planned faults as spans: the partition on both nodes, the pause on kv.
    let spans: BTreeSet<(String, String, u64, u64)> = lanes["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
                s["from_ns"].as_u64().unwrap(),
                s["to_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    let partition = |n: &str| {
        (
            n.to_string(),
            "partition".to_string(),
            1_500_000_000,
            1_800_000_000,
        )
    };
    let pause = (
        "kv".to_string(),
        "pause".to_string(),
        2_200_000_000,
        2_400_000_000,
    );
    assert_eq!(
        spans,
        BTreeSet::from([partition("driver"), partition("kv"), pause])
    );

    // Zoomed in on 100 ms around the failure: only that window, finer buckets.
    let t = first.as_u64().unwrap();
    let zoom = c
        .get_json(&format!(
            "/api/runs/{}/lanes?from={}&to={}&buckets=50",
            f.run,
            t - 50_000_000,
            t + 50_000_000
        ))
        .await;
    assert_eq!(zoom["bucket_ns"], 2_000_000);
    assert!(zoom["marks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["vtime_ns"].as_u64().unwrap().abs_diff(t) <= 50_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_and_temporal_queries() {
    let f = fixture();
    let c = Client::new(&f.home);
    let base = format!("/api/runs/{}/events", f.run);
    let missing = c
        .get_json(&format!("{base}?kind=agent.sdk&text=missing&limit=500"))
        .await;
    let found = missing["events"].as_array().unwrap();
    assert!(!found.is_empty());
    for e in found {
        assert_eq!(e["label"], "agent.sdk");
        assert!(
            e["text"].as_str().unwrap().contains("MISSING"),
            "case-insensitive text"
        );
        assert!(e["moment"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}@", f.run)));
    }
    // A preceded by B within W, and not: together exactly A.
    let q = |op: &str| {
        format!("{base}?kind=agent.sdk&text=MISSING&op={op}&b_node=kv&b_kind=frame&within=1ms&limit=500")
    };
    let yes = c.get_json(&q("preceded_by")).await["events"]
        .as_array()
        .unwrap()
        .clone();
    let no = c.get_json(&q("not_preceded_by")).await["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(yes.len() + no.len(), found.len());
    let kv_frames = c
        .get_json(&format!("{base}?node=kv&kind=frame&limit=2000"))
        .await;
    let times: Vec<u64> = kv_frames["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["vtime_ns"].as_u64().unwrap())
        .collect();
    for e in &yes {
        let t = e["vtime_ns"].as_u64().unwrap();
        assert!(times.iter().any(|&b| b < t && t - b <= 1_000_000), "{e}");
    }
    for e in &no {
        let t = e["vtime_ns"].as_u64().unwrap();
        assert!(!times.iter().any(|&b| b < t && t - b <= 1_000_000), "{e}");
    }
    // Nothing follows the run's last event.
    let last = c
        .get_json(&format!("{base}?op=not_followed_by&limit=5"))
        .await;
    assert!(!last["events"].as_array().unwrap().is_empty());
    let bad = c.get(&format!("{base}?op=sometimes_after")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"]
        .as_str()
        .unwrap()
        .contains("not a relation"));
    // The log page renders results from the same search.
    let page = c
        .get(&format!("/runs/{}/logs?kind=agent.sdk&text=MISSING", f.run))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("MISSING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perfetto_trace_has_a_track_per_node_and_message_flows() {
    let f = fixture();
    let c = Client::new(&f.home);
    let r = c
        .get(&format!("/api/runs/{}/export/trace.json", f.run))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains(".trace.json"));
    let trace = r.json();
    let events = trace["traceEvents"].as_array().unwrap();
    let tracks: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tracks, BTreeSet::from(["driver", "kv", "world"]));
    let starts: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["ph"] == "s")
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    let ends: Vec<u64> = events
        .iter()
        .filter(|e| e["ph"] == "f")
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(!ends.is_empty(), "deliveries are paired with sends");
    assert!(ends.iter().all(|id| starts.contains(id)));
    let faults = events
        .iter()
        .filter(|e| e["cat"] == "fault" && e["ph"] == "X")
        .count();
    assert_eq!(faults, 3, "the partition on two tracks and the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moment_replays_from_its_snapshot_and_errors_are_shown_not_500() {
    let f = fixture();
    let c = Client::new(&f.home);
    let m = c
        .get_json(&format!("/api/moments/{}@1.5s?wait=120", f.run))
        .await;
    assert_eq!(m["status"], "done", "{m:#}");
    let v = &m["result"];
    assert!(
        v["started_from"]
            .as_str()
            .unwrap()
            .ends_with("snapshot-000001000000000.dsnap"),
        "{v:#}"
    );
    assert_eq!(v["state"]["now_ns"], 1_500_000_000u64);
    assert_eq!(v["divergence"], Value::Null, "replay identical to the run");
    let services: BTreeSet<&str> = v["state"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, BTreeSet::from(["driver", "kv"]));
    assert!(v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| !n["lines"].as_array().unwrap().is_empty()));
    // Cached: answered at once, the same.
    let again = c.get_json(&format!("/api/moments/{}@1.5s", f.run)).await;
    assert_eq!(again["result"], *v);
    let page = c.get(&format!("/moments/{}@1.5s", f.run)).await;
    assert!(page.text().contains("Services and VMs"));

    // After the run's end: the replay's error, as JSON, not a 500.
    let late = c.get(&format!("/api/moments/{}@999s?wait=60", f.run)).await;
    assert_eq!(
        late.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        late.text()
    );
    assert!(late.json()["error"]
        .as_str()
        .unwrap()
        .contains("pick a moment up to then"));
    let garbage = c.get("/api/moments/not-a-moment").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    let unknown = c.get("/api/moments/rnope@1s").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let traversal = c.get("/api/runs/..%2F..%2Fetc/lanes").await;
    assert_eq!(traversal.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_exec_file_and_branch_then_rerun_all_gives_the_same_outputs() {
    let f = fixture();
    let c = Client::new(&f.home);
    let run = f.run.as_str();
    let at = format!("{run}@1.2s");
    // Two tabs at once: an exec and a file read, started together.
    let (exec, file) = tokio::join!(
        c.run_cell(run, json!({"kind": "exec", "moment": at, "node": "kv", "command": "sh -c 'cat /etc/hosts; echo oops >&2; exit 3'"})),
        c.run_cell(run, json!({"kind": "file", "moment": at, "node": "driver", "path": "/etc/hosts"})),
    );
    assert_eq!(exec["status"], "done", "{exec:#}");
    let x = &exec["output"]["exec"];
    assert_eq!(x["code"], 3);
    let lines: Vec<&str> = x["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert!(lines.contains(&"10.0.0.3\tkv"), "{lines:?}");
    assert!(x["output"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["stream"] == "stderr" && l["line"] == "oops"));
    assert_eq!(exec["output"]["from_ns"], 1_200_000_000u64);

    assert_eq!(file["status"], "done", "{file:#}");
    let download = c.get(&format!("/api/cells/{}/file", file["id"])).await;
    assert_eq!(download.status, StatusCode::OK);
    assert!(download.text().contains("10.0.0.2\tdriver"));
    assert_eq!(file["output"]["file"]["size"], download.body.len());

    // A command that does not exist: the agent's error, in the cell.
    let missing = c
        .run_cell(
            run,
            json!({"kind": "exec", "moment": at, "node": "kv", "command": "no-such-program"}),
        )
        .await;
    assert_eq!(missing["status"], "done");
    let m = &missing["output"]["exec"];
    assert!(m["error"].is_string() || m["code"] == 127, "{m:#}");

    // A branch with new randomness, itself a timeline with moments.
    let branch = c
        .run_cell(
            run,
            json!({"kind": "branch", "moment": at, "branch": 7, "run_for": "500ms"}),
        )
        .await;
    assert_eq!(branch["status"], "done", "{branch:#}");
    let tl = branch["timeline"].as_str().unwrap().to_string();
    assert_eq!(branch["output"]["end_ns"], 1_700_000_000u64);
    let lanes = c
        .get_json(&format!("/api/runs/{tl}/lanes?buckets=10"))
        .await;
    assert_eq!(lanes["start_ns"], 1_200_000_000u64);
    let inside = c
        .get_json(&format!("/api/moments/{tl}@1.7s?wait=120"))
        .await;
    assert_eq!(inside["status"], "done", "{inside:#}");
    assert_eq!(
        inside["result"]["state"]["trace_hash"], branch["output"]["trace_hash"],
        "replaying the branch to its end reaches the branch's own state"
    );
    // The stored run is untouched by all this.
    let runs = c.get_json("/api/runs").await;
    let r = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == run)
        .unwrap();
    assert_eq!(r["trace_hash"], f.report["trace_hash"]);

    // A moment kept as a cell: the state there.
    let kept = c
        .run_cell(run, json!({"kind": "moment", "moment": at}))
        .await;
    assert_eq!(kept["status"], "done", "{kept:#}");
    assert_eq!(kept["output"]["state"]["now_ns"], 1_200_000_000u64);
    assert_eq!(
        kept["timeline"],
        Value::Null,
        "a moment cell makes no branch"
    );

    // A fault injected at the moment (World::inject), on a branch of its own.
    let fault = c.run_cell(run, json!({"kind": "fault", "moment": at, "fault": {"type": "kill", "node": "kv"}, "run_for": "1s"})).await;
    assert_eq!(fault["status"], "done", "{fault:#}");
    assert!(
        fault["timeline"].is_string(),
        "a fault cell makes a branch: {fault:#}"
    );
    let unknown = c.run_cell(run, json!({"kind": "fault", "moment": at, "fault": {"type": "kill", "node": "db"}, "run_for": "1s"})).await;
    assert_eq!(unknown["status"], "failed", "{unknown:#}");
    let bad_node = c
        .run_cell(
            run,
            json!({"kind": "exec", "moment": at, "node": "db", "command": "true"}),
        )
        .await;
    assert_eq!(bad_node["status"], "failed");
    assert!(bad_node["error"].as_str().unwrap().contains("no node `db`"));

    // Re-run everything: the same outputs (determinism).
    let before = c.get_json(&format!("/api/runs/{run}/cells")).await;
    let r = c
        .post(&format!("/api/runs/{run}/cells/rerun"), &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for cell in before.as_array().unwrap() {
        let id = cell["id"].as_u64().unwrap();
        let after = c.cell_done(id).await;
        assert_eq!(after["runs"], cell["runs"].as_u64().unwrap() + 1);
        if cell["status"] == "done" {
            assert_eq!(after["same_as_before"], true, "cell {id}: {after:#}");
            assert_eq!(after["output"], cell["output"], "cell {id}");
        } else {
            assert_eq!(after["error"], cell["error"], "cell {id}");
        }
    }

    // Export, then import: the cells come back, not run, moments pointing at the copies.
    let export = c.get(&format!("/api/runs/{run}/notebook")).await;
    assert_eq!(export.status, StatusCode::OK);
    let file_json = export.json();
    assert_eq!(file_json["format"], "detvm-notebook/1");
    let imported = c
        .send(
            Request::post(format!("/api/runs/{run}/notebook"))
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Body::from(export.body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(imported.status, StatusCode::CREATED, "{}", imported.text());
    let new_cells = imported.json();
    assert_eq!(
        new_cells.as_array().unwrap().len(),
        file_json["cells"].as_array().unwrap().len()
    );
    for (old, new) in file_json["cells"]
        .as_array()
        .unwrap()
        .iter()
        .zip(new_cells.as_array().unwrap())
    {
        assert_eq!(new["status"], "new");
        assert_eq!(new["output"], old["output"]);
        assert_eq!(new["action"]["kind"], old["action"]["kind"]);
    }
    // Reopening runs nothing: the notebook page shows the saved outputs as they are.
    let page = c.get(&format!("/runs/{run}/notebook")).await;
    assert!(page.text().contains("10.0.0.3\tkv"));
}

#[tokio::test]
async fn the_guard_wants_the_token_and_loopback_hosts() {
    let home = tempfile::tempdir().unwrap();
    let token = "a-long-enough-secret-token";
    let app = notebook_ui::router(home.path(), Some(token.to_string())).unwrap();
    let c = Client { app, token: None };
    let r = c.get("/api/runs").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].as_str().unwrap().contains("token"));
    let with = Client {
        app: c.app.clone(),
        token: Some(token.into()),
    };
    assert_eq!(with.get("/api/runs").await.status, StatusCode::OK);
    let wrong = Client {
        app: c.app.clone(),
        token: Some("a-long-enough-secret-tokeN".into()),
    };
    assert_eq!(
        wrong.get("/api/runs").await.status,
        StatusCode::UNAUTHORIZED
    );
    let q = c.get(&format!("/?token={token}")).await;
    assert_eq!(q.status, StatusCode::OK);
    let cookie = q.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"));
    let by_cookie = c
        .send(
            Request::get("/api/runs")
                .header("cookie", cookie.split(';').next().unwrap())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(by_cookie.status, StatusCode::OK);

    // Without a token: loopback host names only, and changes only as JSON.
    let open = Client::new(home.path());
    let evil = open
        .send(
            Request::get("/api/runs")
                .header("host", "attacker.example:7878")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    let form = open
        .send(
            Request::post("/api/runs/r1/cells/rerun")
                .header("host", "localhost:7878")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("x=1"))
                .unwrap(),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let page = open.get("/no/such/page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.text().contains("no such page"));

    // Listening anywhere but loopback needs a token.
    let cfg = |listen: &str, token: Option<&str>| notebook_ui::Config {
        home: home.path().to_path_buf(),
        listen: listen.parse().unwrap(),
        token: token.map(String::from),
    };
    assert!(cfg("127.0.0.1:7878", None).check().is_ok());
    assert!(cfg("0.0.0.0:7878", None)
        .check()
        .unwrap_err()
        .contains("without --token"));
    assert!(cfg("0.0.0.0:7878", Some("short")).check().is_err());
    assert!(cfg("0.0.0.0:7878", Some(token)).check().is_ok());
}

#[tokio::test]
async fn oversized_notebook_imports_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let c = Client::new(home.path());
    let big = vec![b' '; notebook_ui::notebook::MAX_IMPORT_BYTES + 10];
    let r = c
        .send(
            Request::post("/api/runs/r1/notebook")
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}
