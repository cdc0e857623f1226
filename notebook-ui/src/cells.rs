//! Notebook cells: the actions taken from a moment, in order, with their outputs, saved
//! with the run (`notebook_cells`). Reopening a notebook re-runs nothing; running a cell
//! again replaces its output and says whether it came out the same (it should: a cell
//! is a deterministic function of the stored run and its parameters).
//!
//! A cell that acts (branch, exec, file, fault) makes a timeline of its own, named
//! `<run>~<cell id>` (see [`crate::timeline`]): its events are kept and it can be
//! viewed, searched, exported and replayed to any of its moments like a run.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What a cell does. Times are virtual-time strings (`2s`, `1500ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Replay to a moment and show the state there.
    Moment { moment: String },
    /// Continue from a moment with new randomness (branch id `branch`) for `run_for`.
    Branch {
        moment: String,
        branch: u64,
        run_for: String,
    },
    /// Run a command in a node's container at a moment, on a copy of the run.
    Exec {
        moment: String,
        node: String,
        /// Shell words: `cat /etc/hosts`, `sh -c 'ls /tmp'`.
        command: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<u64>,
        /// How long (virtual) to wait for it; default 10s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<String>,
    },
    /// Read a file from a node's container at a moment.
    File {
        moment: String,
        node: String,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<u64>,
    },
    /// Pause or kill a node, or partition two, then continue for `run_for`.
    Fault {
        moment: String,
        fault: FaultAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<u64>,
        run_for: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    Pause { node: String, duration: String },
    Kill { node: String },
    Partition { a: String, b: String },
}

impl Action {
    /// The moment the cell starts from.
    pub fn moment(&self) -> &str {
        match self {
            Action::Moment { moment }
            | Action::Branch { moment, .. }
            | Action::Exec { moment, .. }
            | Action::File { moment, .. }
            | Action::Fault { moment, .. } => moment,
        }
    }

    /// Whether the cell makes a timeline of its own.
    pub fn branches(&self) -> bool {
        !matches!(self, Action::Moment { .. })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Moment { .. } => "moment",
            Action::Branch { .. } => "branch",
            Action::Exec { .. } => "exec",
            Action::File { .. } => "file",
            Action::Fault { .. } => "fault",
        }
    }

    /// One line for lists and titles.
    pub fn summary(&self) -> String {
        match self {
            Action::Moment { moment } => format!("state at {moment}"),
            Action::Branch {
                moment,
                branch,
                run_for,
            } => format!("branch {branch} from {moment} for {run_for}"),
            Action::Exec {
                moment,
                node,
                command,
                ..
            } => format!("exec `{command}` in {node} at {moment}"),
            Action::File {
                moment, node, path, ..
            } => format!("file {node}:{path} at {moment}"),
            Action::Fault {
                moment,
                fault,
                run_for,
                ..
            } => {
                let what = match fault {
                    FaultAction::Pause { node, duration } => format!("pause {node} for {duration}"),
                    FaultAction::Kill { node } => format!("kill {node}"),
                    FaultAction::Partition { a, b } => format!("partition {a} | {b}"),
                };
                format!("{what} at {moment}, then run {run_for}")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Saved, never run (an imported notebook's cells until asked).
    New,
    Queued,
    Running,
    Done,
    Failed,
}

impl CellStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CellStatus::New => "new",
            CellStatus::Queued => "queued",
            CellStatus::Running => "running",
            CellStatus::Done => "done",
            CellStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> CellStatus {
        match s {
            "queued" => CellStatus::Queued,
            "running" => CellStatus::Running,
            "done" => CellStatus::Done,
            "failed" => CellStatus::Failed,
            _ => CellStatus::New,
        }
    }
    pub fn busy(self) -> bool {
        matches!(self, CellStatus::Queued | CellStatus::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub id: u64,
    pub run: String,
    pub position: u64,
    pub action: Action,
    pub status: CellStatus,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    /// How many times it ran.
    pub runs: u64,
    /// After a re-run: whether the output equals the one before.
    pub same_as_before: Option<bool>,
    /// The cell's own timeline, when it makes one.
    pub timeline: Option<String>,
    pub updated_at: String,
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

const COLUMNS: &str =
    "id, run_id, position, action, status, output, error, runs, same_as_before, updated_at";

fn row_to_cell(r: &rusqlite::Row) -> rusqlite::Result<Cell> {
    let action: String = r.get(3)?;
    let action: Action = serde_json::from_str(&action).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let id = r.get::<_, i64>(0)? as u64;
    let run: String = r.get(1)?;
    let output: Option<String> = r.get(5)?;
    Ok(Cell {
        id,
        timeline: action.branches().then(|| branch_id(&run, id)),
        run,
        position: r.get::<_, i64>(2)? as u64,
        action,
        status: CellStatus::parse(&r.get::<_, String>(4)?),
        output: output.and_then(|o| serde_json::from_str(&o).ok()),
        error: r.get(6)?,
        runs: r.get::<_, i64>(7)? as u64,
        same_as_before: r.get::<_, Option<bool>>(8)?,
        updated_at: r.get(9)?,
    })
}

/// The timeline a cell makes: `<run>~<cell>`.
pub fn branch_id(run: &str, cell: u64) -> String {
    format!("{run}~{cell}")
}

pub fn list(conn: &Connection, run: &str) -> Result<Vec<Cell>, AppError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM notebook_cells WHERE run_id = ?1 ORDER BY position, id"
    ))?;
    let cells = stmt
        .query_map(params![run], row_to_cell)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(cells)
}

pub fn get(conn: &Connection, id: u64) -> Result<Cell, AppError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM notebook_cells WHERE id = ?1"),
        params![id as i64],
        row_to_cell,
    )
    .optional()?
    .ok_or_else(|| AppError::not_found(format!("no notebook cell {id}")))
}

/// Appends a cell at the end of `run`'s notebook.
pub fn append(
    conn: &mut Connection,
    run: &str,
    action: &Action,
    status: CellStatus,
    output: Option<&serde_json::Value>,
) -> Result<Cell, AppError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let position: i64 = tx.query_row(
        "SELECT COALESCE(MAX(position), 0) + 1 FROM notebook_cells WHERE run_id = ?1",
        params![run],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO notebook_cells (run_id, position, action, status, output, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            run,
            position,
            serde_json::to_string(action).expect("actions serialize"),
            status.as_str(),
            output.map(|o| o.to_string()),
            now_text()
        ],
    )?;
    let id = tx.last_insert_rowid() as u64;
    tx.commit()?;
    get(conn, id)
}

/// Marks a cell queued, unless it already is queued or running (then `false`).
pub fn queue(conn: &Connection, id: u64) -> Result<bool, AppError> {
    let changed = conn.execute(
        "UPDATE notebook_cells SET status = 'queued', updated_at = ?2
         WHERE id = ?1 AND status NOT IN ('queued', 'running')",
        params![id as i64, now_text()],
    )?;
    Ok(changed == 1)
}

pub fn set_running(conn: &Connection, id: u64) -> Result<(), AppError> {
    conn.execute(
        "UPDATE notebook_cells SET status = 'running', updated_at = ?2 WHERE id = ?1",
        params![id as i64, now_text()],
    )?;
    Ok(())
}

/// Stores the outcome of a run of the cell, and whether its output equals the last one.
pub fn finish(
    conn: &mut Connection,
    id: u64,
    outcome: Result<(serde_json::Value, Option<Vec<u8>>), String>,
) -> Result<(), AppError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (before, runs): (Option<String>, i64) = tx.query_row(
        "SELECT output, runs FROM notebook_cells WHERE id = ?1",
        params![id as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let before: Option<serde_json::Value> = before.and_then(|b| serde_json::from_str(&b).ok());
    match outcome {
        Ok((output, file)) => {
            let same = (runs > 0).then(|| before.as_ref() == Some(&output));
            tx.execute(
                "UPDATE notebook_cells SET status = 'done', output = ?2, error = NULL, file = ?3,
                 runs = runs + 1, same_as_before = ?4, updated_at = ?5 WHERE id = ?1",
                params![id as i64, output.to_string(), file, same, now_text()],
            )?;
        }
        Err(error) => {
            tx.execute(
                "UPDATE notebook_cells SET status = 'failed', error = ?2, runs = runs + 1,
                 same_as_before = NULL, updated_at = ?3 WHERE id = ?1",
                params![id as i64, error, now_text()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The file a `file` cell extracted.
pub fn file(conn: &Connection, id: u64) -> Result<Option<Vec<u8>>, AppError> {
    Ok(conn
        .query_row(
            "SELECT file FROM notebook_cells WHERE id = ?1",
            params![id as i64],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()?
        .flatten())
}

/// Removes a cell and its timeline's events.
pub fn delete(conn: &mut Connection, id: u64) -> Result<(), AppError> {
    let cell = get(conn, id)?;
    if cell.status.busy() {
        return Err(AppError::bad_request(format!(
            "cell {id} is {}; wait until it ends",
            cell.status.as_str()
        )));
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if let Some(t) = &cell.timeline {
        tx.execute("DELETE FROM notebook_events WHERE run_id = ?1", params![t])?;
    }
    tx.execute(
        "DELETE FROM notebook_cells WHERE id = ?1",
        params![id as i64],
    )?;
    tx.commit()?;
    Ok(())
}

/// A notebook as a file: its cells in order with their outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotebookFile {
    pub format: String,
    pub run: String,
    pub cells: Vec<FileCell>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileCell {
    /// The cell's id in the notebook it was exported from (branch moments name it).
    #[serde(default)]
    pub id: Option<u64>,
    pub action: Action,
    #[serde(default)]
    pub output: Option<serde_json::Value>,
}

pub const FORMAT: &str = "detvm-notebook/1";
