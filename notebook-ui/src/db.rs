//! The notebook's access to the run store's SQLite file (`.detvm/runs.db`). The
//! engine's `RunStore` creates and migrates the run tables; the notebook adds its own,
//! prefixed `notebook_`, with `CREATE ... IF NOT EXISTS`, and reads events with its own
//! queries (bucketed, searched), which the engine has no use for.
//!
//! Each request opens its own connection (WAL mode, a busy timeout): several tabs and
//! the engine's own writers can act at once; every write is one transaction, begun
//! IMMEDIATE (a read that later writes would fail at once, not wait, when another
//! connection wrote in between).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::AppError;
use explorer::at_moment::MomentCache;

/// The notebook's tables. A branch's events use the run store's event columns, in
/// their own table so a stored run's rows are never touched.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notebook_cells (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    file BLOB,
    runs INTEGER NOT NULL DEFAULT 0,
    same_as_before INTEGER,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notebook_cells_by_run ON notebook_cells(run_id, position);
CREATE TABLE IF NOT EXISTS notebook_events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    vtime_ns INTEGER NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS notebook_events_by_time ON notebook_events(run_id, vtime_ns);
";

#[derive(Clone)]
pub struct Db {
    home: PathBuf,
    /// Snapshots kept by replays, so moments near one seen before are fast.
    pub moments: Arc<MomentCache>,
}

impl Db {
    /// Creates the run store (through the engine, so its schema is current) and the
    /// notebook's tables; cells left running by a server that is gone are marked failed.
    pub fn open(home: &Path) -> Result<Db, AppError> {
        explorer::store::RunStore::open(home)?;
        explorer::campaign::store::CampaignStore::open(home)?;
        let db = Db {
            home: home.to_path_buf(),
            moments: Arc::new(MomentCache::default()),
        };
        let conn = db.conn()?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "UPDATE notebook_cells SET status = 'failed',
             error = 'the notebook server stopped while this cell ran; run it again'
             WHERE status IN ('queued', 'running')",
            [],
        )?;
        Ok(db)
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A connection for one request.
    pub fn conn(&self) -> Result<Connection, AppError> {
        let path = self.home.join("runs.db");
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| AppError::internal(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }
}
