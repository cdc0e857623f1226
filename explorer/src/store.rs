//! The run store: `.detvm/runs.db` (SQLite: runs, events, properties) and a folder
//! per run for logs and reports (`.detvm/runs/<id>/`). Every event is addressable as a
//! moment `RUN@VTIME`. Writes go in transactions, so a crash or Ctrl-C leaves each
//! table consistent; a run left `running` by a process that is gone reads as
//! `interrupted`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::properties::Property;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    compose TEXT NOT NULL,
    seed INTEGER NOT NULL,
    command TEXT NOT NULL,
    started_at TEXT NOT NULL,
    pid INTEGER NOT NULL,
    status TEXT NOT NULL,
    vtime_end_ns INTEGER,
    trace_hash TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    vtime_ns INTEGER NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(run_id, vtime_ns);
CREATE TABLE IF NOT EXISTS properties (
    run_id TEXT NOT NULL REFERENCES runs(id),
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, id)
);
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Passed,
    PropertiesFailed,
    SetupFailed,
    InfrastructureError,
    /// A test command was still running long after the driver phase ended.
    DriverHung,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::PropertiesFailed => "properties_failed",
            RunStatus::SetupFailed => "setup_failed",
            RunStatus::InfrastructureError => "infrastructure_error",
            RunStatus::DriverHung => "driver_hung",
            RunStatus::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> RunStatus {
        match s {
            "running" => RunStatus::Running,
            "passed" => RunStatus::Passed,
            "properties_failed" => RunStatus::PropertiesFailed,
            "setup_failed" => RunStatus::SetupFailed,
            "interrupted" => RunStatus::Interrupted,
            "driver_hung" => RunStatus::DriverHung,
            _ => RunStatus::InfrastructureError,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub compose: String,
    pub seed: u64,
    /// The command line that reproduces this run.
    pub command: String,
    pub started_at: String,
    pub status: RunStatus,
    pub vtime_end_ns: Option<u64>,
    pub trace_hash: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub vtime_ns: u64,
    pub node: String,
    pub kind: String,
    pub body: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("run store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no run `{0}` in the run store (see `detvm runs`)")]
    NoSuchRun(String),
}

pub struct RunStore {
    root: PathBuf,
    conn: Connection,
}

/// Opens `root/runs.db` (WAL, a busy timeout for concurrent writers, whose transactions
/// take the write lock when they begin) and creates the tables of `schema` if missing.
/// The run store and the campaign store share the file.
pub(crate) fn connect(root: &Path, schema: &str) -> Result<Connection, StoreError> {
    let path = root.join("runs.db");
    let sql = |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    let conn = Connection::open(&path).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql)?;
    // Switching to WAL takes a lock another process's open may hold, and the mode stays
    // with the file: only the first open switches.
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
    }
    conn.execute_batch(schema).map_err(sql)?;
    Ok(conn)
}

impl RunStore {
    /// Opens (creating) the store under `root` (normally `.detvm`).
    pub fn open(root: &Path) -> Result<RunStore, StoreError> {
        let io = |source| StoreError::Io {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root.join("runs")).map_err(io)?;
        let conn = connect(root, SCHEMA)?;
        let store = RunStore {
            root: root.to_path_buf(),
            conn,
        };
        store.mark_abandoned()?;
        Ok(store)
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.root.join("runs.db"),
            source,
        }
    }

    /// Runs still `running` whose process is gone were cut off: say so.
    fn mark_abandoned(&self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, pid FROM runs WHERE status = 'running'")
            .map_err(|e| self.sql(e))?;
        let rows: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sql(e))?;
        for (id, pid) in rows {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                self.set_status(
                    &id,
                    RunStatus::Interrupted,
                    Some("the detvm process ended before the run finished"),
                )?;
            }
        }
        Ok(())
    }

    /// The folder for a run's logs and reports.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id)
    }

    /// Registers a new run and makes its folder; returns its id.
    pub fn create_run(
        &self,
        compose: &str,
        seed: u64,
        command: &str,
    ) -> Result<String, StoreError> {
        let id = new_run_id(seed);
        std::fs::create_dir_all(self.run_dir(&id)).map_err(|source| StoreError::Io {
            path: self.run_dir(&id),
            source,
        })?;
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.conn
            .execute(
                "INSERT INTO runs (id, compose, seed, command, started_at, pid, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running')",
                params![
                    id,
                    compose,
                    seed as i64,
                    command,
                    started,
                    std::process::id()
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(id)
    }

    /// Appends events in one transaction (all or none).
    pub fn append_events(&mut self, run: &str, events: &[StoredEvent]) -> Result<(), StoreError> {
        let path = self.root.join("runs.db");
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (run_id, seq, vtime_ns, node, kind, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for e in events {
                stmt.execute(params![
                    run,
                    e.seq as i64,
                    e.vtime_ns as i64,
                    e.node,
                    e.kind,
                    e.body.to_string()
                ])
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Stores the verdicts and the final status together.
    pub fn finish_run(
        &mut self,
        run: &str,
        status: RunStatus,
        properties: &[Property],
        vtime_end_ns: u64,
        trace_hash: &str,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let path = self.root.join("runs.db");
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        tx.execute("DELETE FROM properties WHERE run_id = ?1", params![run])
            .map_err(sql)?;
        for p in properties {
            let body = serde_json::to_string(p).expect("properties serialize");
            let status = match p.status {
                crate::properties::Status::Passed => "passed",
                crate::properties::Status::Failed => "failed",
            };
            tx.execute(
                "INSERT INTO properties (run_id, id, status, body) VALUES (?1, ?2, ?3, ?4)",
                params![run, p.id, status, body],
            )
            .map_err(sql)?;
        }
        tx.execute(
            "UPDATE runs SET status = ?2, vtime_end_ns = ?3, trace_hash = ?4, message = ?5 WHERE id = ?1",
            params![run, status.as_str(), vtime_end_ns as i64, trace_hash, message],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    pub fn set_status(
        &self,
        run: &str,
        status: RunStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, message = ?3 WHERE id = ?1",
                params![run, status.as_str(), message],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    pub fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        self.conn
            .query_row(
                "SELECT id, compose, seed, command, started_at, status, vtime_end_ns, trace_hash, message
                 FROM runs WHERE id = ?1",
                params![id],
                |r| {
                    Ok(RunRecord {
                        id: r.get(0)?,
                        compose: r.get(1)?,
                        seed: r.get::<_, i64>(2)? as u64,
                        command: r.get(3)?,
                        started_at: r.get(4)?,
                        status: RunStatus::parse(&r.get::<_, String>(5)?),
                        vtime_end_ns: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                        trace_hash: r.get(7)?,
                        message: r.get(8)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .ok_or_else(|| StoreError::NoSuchRun(id.to_string()))
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM runs ORDER BY started_at DESC, rowid DESC")
            .map_err(|e| self.sql(e))?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sql(e))?;
        ids.iter().map(|id| self.run(id)).collect()
    }

    /// Events with `from_ns <= vtime < to_ns`, in order.
    pub fn events(
        &self,
        run: &str,
        from_ns: u64,
        to_ns: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, vtime_ns, node, kind, body FROM events
                 WHERE run_id = ?1 AND vtime_ns >= ?2 AND vtime_ns < ?3 ORDER BY seq",
            )
            .map_err(|e| self.sql(e))?;
        let to = i64::try_from(to_ns).unwrap_or(i64::MAX);
        stmt.query_map(params![run, from_ns as i64, to], |r| {
            let body: String = r.get(4)?;
            Ok(StoredEvent {
                seq: r.get::<_, i64>(0)? as u64,
                vtime_ns: r.get::<_, i64>(1)? as u64,
                node: r.get(2)?,
                kind: r.get(3)?,
                body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.sql(e))
    }

    pub fn properties(&self, run: &str) -> Result<Vec<Property>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM properties WHERE run_id = ?1 ORDER BY id")
            .map_err(|e| self.sql(e))?;
        let bodies: Vec<String> = stmt
            .query_map(params![run], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sql(e))?;
        Ok(bodies
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect())
    }
}

/// `r` + 10 hex digits from the seed, the host clock and the process id: unique per
/// invocation (the id is metadata; nothing inside the simulation sees it).
pub(crate) fn new_run_id(seed: u64) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    format!("r{:010x}", h.finish() >> 24)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::PropertyBook;

    fn event(seq: u64, vtime_ns: u64) -> StoredEvent {
        StoredEvent {
            seq,
            vtime_ns,
            node: "web".into(),
            kind: "console".into(),
            body: serde_json::json!({"line": format!("l{seq}")}),
        }
    }

    #[test]
    fn a_run_with_events_and_properties_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RunStore::open(dir.path()).unwrap();
        let id = store
            .create_run("c.yaml", 7, "detvm run c.yaml --seed 7")
            .unwrap();
        assert!(store.run_dir(&id).is_dir());
        assert_eq!(store.run(&id).unwrap().status, RunStatus::Running);
        store
            .append_events(&id, &[event(0, 10), event(1, 20), event(2, 30)])
            .unwrap();
        let mut book = PropertyBook::new();
        book.declare_builtin("detvm: setup completed", "setup completed");
        store
            .finish_run(&id, RunStatus::Passed, &book.properties(), 30, "abc", None)
            .unwrap();
        let run = store.run(&id).unwrap();
        assert_eq!(run.status, RunStatus::Passed);
        assert_eq!(run.trace_hash.as_deref(), Some("abc"));
        assert_eq!(run.seed, 7);
        let events = store.events(&id, 15, 30).unwrap();
        assert_eq!(events, [event(1, 20)]);
        assert_eq!(store.properties(&id).unwrap(), book.properties());
        assert_eq!(store.runs().unwrap().len(), 1);
        assert!(matches!(store.run("nope"), Err(StoreError::NoSuchRun(_))));
    }

    #[test]
    fn a_run_left_running_by_a_dead_process_reads_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = RunStore::open(dir.path()).unwrap();
            let id = store.create_run("c.yaml", 1, "detvm run").unwrap();
            store
                .conn
                .execute("UPDATE runs SET pid = 999999999 WHERE id = ?1", params![id])
                .unwrap();
            id
        };
        let store = RunStore::open(dir.path()).unwrap();
        assert_eq!(store.run(&id).unwrap().status, RunStatus::Interrupted);
    }

    #[test]
    fn duplicate_event_batch_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RunStore::open(dir.path()).unwrap();
        let id = store.create_run("c.yaml", 1, "detvm run").unwrap();
        store.append_events(&id, &[event(0, 1)]).unwrap();
        assert!(store
            .append_events(&id, &[event(1, 2), event(0, 3)])
            .is_err());
        assert_eq!(
            store.events(&id, 0, u64::MAX).unwrap().len(),
            1,
            "all or none"
        );
    }
}
