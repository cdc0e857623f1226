//! The blocking work behind the pages, on the engine's [`Session`]: a session at any
//! moment of any timeline (a stored run from its nearest snapshot; a branch by
//! replaying its parent moment and its cell's action), and running a cell. Everything
//! here runs on a blocking thread, never on the async runtime.
//!
//! A branch moment is rebuilt exactly: the cell's action is applied again at the
//! parent moment (same fork id, same request ids, same fault) and the session steps
//! to the wanted time, so it reaches what the cell's own run saw there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use explorer::at_moment::{session_at, MomentSession, Start};
use explorer::moment::{format_vtime, parse_vtime, Moment};
use explorer::observer::Observer;
use explorer::run::actions::ExecResult;
use explorer::run::{decision_point, Ending, Session};
use explorer::store::{RunStore, StoredEvent};
use serde::{Deserialize, Serialize};

use crate::cells::{Action, Cell, FaultAction};
use crate::db::Db;
use crate::error::AppError;
use crate::events::{self, EventRow};
use crate::faults;
use crate::timeline::{self, Source};

/// How long an exec or file request may take (virtual) unless the cell says otherwise.
pub const DEFAULT_LIMIT_NS: u64 = 10_000_000_000;
/// The longest a branch may run (virtual), so one click cannot hold the server for long.
pub const MAX_RUN_FOR_NS: u64 = 120_000_000_000;
/// Log lines per node on a moment's page.
const LAST_LINES: usize = 12;

/// Reports the virtual time reached (for pending pages) and keeps events if asked.
pub struct Progress {
    pub vtime_ns: Arc<AtomicU64>,
    pub keep: bool,
    pub events: Vec<StoredEvent>,
}

impl Progress {
    pub fn new(vtime_ns: Arc<AtomicU64>, keep: bool) -> Self {
        Progress {
            vtime_ns,
            keep,
            events: Vec::new(),
        }
    }
}

impl Observer for Progress {
    fn events(&mut self, batch: &[StoredEvent]) -> Result<(), String> {
        if self.keep {
            self.events.extend_from_slice(batch);
        }
        Ok(())
    }
    fn progress(&mut self, vtime_ns: u64, _phase: &str) {
        self.vtime_ns.store(vtime_ns, Ordering::Relaxed);
    }
}

/// A private session at a moment: the restored run or campaign timeline (its session,
/// and the scratch folder its volumes live in), moved on to the moment asked for.
pub struct At {
    pub base: MomentSession,
    /// A stored run's or campaign timeline's replay compared with its stored events;
    /// `None` for branches.
    pub divergence: Option<Option<String>>,
}

/// Rebuilds a session at `moment` (of a run, a campaign timeline, or a branch of either).
pub fn open(db: &Db, moment: &Moment, observer: &mut dyn Observer) -> Result<At, String> {
    let conn = db.conn().map_err(|e| e.message)?;
    let store = RunStore::open(db.home()).map_err(|e| e.to_string())?;
    let timeline = timeline::resolve(&conn, &store, &moment.run).map_err(|e| e.message)?;
    drop(conn);
    match &timeline.source {
        Source::Run(_) | Source::Campaign { .. } => {
            let base = session_at(db.home(), moment, Start::default(), &db.moments, observer)
                .map_err(|e| e.to_string())?;
            let divergence = base.divergence.clone();
            Ok(At {
                base,
                divergence: Some(divergence),
            })
        }
        Source::Branch { cell, parent } => {
            let start = decision_point(parent.vtime_ns);
            let point = decision_point(moment.vtime_ns);
            if point < start {
                return Err(format!(
                    "{moment}: branch {} starts at {}",
                    timeline.id,
                    format_vtime(start)
                ));
            }
            if let Some(end) = timeline.end_ns().filter(|&end| point > end) {
                return Err(format!(
                    "{moment}: branch {} ended at {}; pick a moment up to then",
                    timeline.id,
                    format_vtime(end)
                ));
            }
            let mut at = open(db, parent, observer)?;
            begin(&mut at.base.session, &cell.action, Some(point), observer)?;
            at.base.session.run_to(point, observer)?;
            at.base.moment = moment.clone();
            at.divergence = None;
            Ok(at)
        }
    }
}

/// What an action itself produced (before the branch runs on).
#[derive(Debug, Default)]
struct Begun {
    exec: Option<ExecResult>,
    file: Option<Vec<u8>>,
}

fn limit(text: &Option<String>) -> Result<u64, String> {
    match text {
        Some(t) if !t.trim().is_empty() => parse_vtime(t),
        _ => Ok(DEFAULT_LIMIT_NS),
    }
}

/// Applies `action` to a session at its moment: the fork first (when the action has a
/// branch id), then the request or fault. `until` caps how far a request may step
/// (replaying a branch to an earlier moment than its request's answer).
fn begin(
    session: &mut Session,
    action: &Action,
    until: Option<u64>,
    observer: &mut dyn Observer,
) -> Result<Begun, String> {
    let branch = match action {
        Action::Moment { .. } => return Ok(Begun::default()),
        Action::Branch { branch, .. } => Some(*branch),
        Action::Exec { branch, .. }
        | Action::File { branch, .. }
        | Action::Fault { branch, .. } => *branch,
    };
    if let Some(b) = branch {
        *session = session.fork(b)?;
    }
    let cap = |limit: u64| match until {
        Some(u) => limit.min(u.saturating_sub(session.now())),
        None => limit,
    };
    let mut begun = Begun::default();
    match action {
        Action::Exec {
            node,
            command,
            limit: l,
            ..
        } => {
            let argv = shell_words(command)?;
            let lim = cap(limit(l)?);
            begun.exec = Some(session.exec(node, &argv, lim, observer)?);
        }
        Action::File { node, path, .. } => {
            let lim = cap(DEFAULT_LIMIT_NS);
            match session.read_file(node, path, lim, observer) {
                Ok(bytes) => begun.file = Some(bytes),
                // A replay to a moment before the answer is fine; a cell needs the file.
                Err(e) if until.is_none() => return Err(e),
                Err(_) => {}
            }
        }
        Action::Fault { fault, .. } => faults::inject(session, fault)?,
        Action::Branch { .. } | Action::Moment { .. } => {}
    }
    Ok(begun)
}

/// The command's words, split like a POSIX shell would (quotes, backslashes), nothing
/// expanded.
fn shell_words(command: &str) -> Result<Vec<String>, String> {
    let argv = shell_words::split(command).map_err(|e| format!("`{command}`: {e}"))?;
    if argv.is_empty() {
        return Err("the command is empty".to_string());
    }
    Ok(argv)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeLines {
    pub node: String,
    pub lines: Vec<EventRow>,
}

/// The state at a moment, as the moment page and a `moment` cell show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MomentView {
    pub moment: String,
    pub timeline: String,
    pub decision_point_ns: u64,
    pub started_from: String,
    pub started_at_ns: u64,
    pub state: serde_json::Value,
    pub logs: Vec<NodeLines>,
    /// For a stored run: the first replayed event that differs from the run (`null`:
    /// identical). Absent for branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Option<String>>,
}

pub fn moment_view(
    db: &Db,
    moment: &Moment,
    progress: &mut Progress,
) -> Result<MomentView, String> {
    let at = open(db, moment, progress)?;
    let state = at.base.session.state();
    let point = decision_point(moment.vtime_ns);
    let nodes: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    let logs = node_lines(db, &moment.run, &nodes, point).map_err(|e| e.message)?;
    Ok(MomentView {
        moment: events::moment_of(&moment.run, moment.vtime_ns),
        timeline: moment.run.clone(),
        decision_point_ns: point,
        started_from: at.base.started_from.clone(),
        started_at_ns: at.base.started_at_ns,
        state: serde_json::to_value(&state).expect("state serializes"),
        logs,
        divergence: at.divergence.clone(),
    })
}

/// The last log lines of each node before `point` on a timeline; a branch's nodes
/// with few lines of their own get their parent's from before the branch.
fn node_lines(
    db: &Db,
    timeline_id: &str,
    nodes: &[String],
    point: u64,
) -> Result<Vec<NodeLines>, AppError> {
    let conn = db.conn()?;
    let store = RunStore::open(db.home())?;
    let timeline = timeline::resolve(&conn, &store, timeline_id)?;
    let mut own = events::last_lines(&conn, &timeline, nodes, point, LAST_LINES)?;
    if let Some(parent) = timeline.parent() {
        let parent_tl = timeline::resolve(&conn, &store, &parent.run)?;
        let before = decision_point(parent.vtime_ns);
        let theirs = events::last_lines(&conn, &parent_tl, nodes, before, LAST_LINES)?;
        for ((_, mine), (_, old)) in own.iter_mut().zip(theirs) {
            if mine.len() < LAST_LINES {
                let missing = LAST_LINES - mine.len();
                let mut lines: Vec<EventRow> = old.into_iter().rev().take(missing).collect();
                lines.reverse();
                lines.append(mine);
                *mine = lines;
            }
        }
    }
    Ok(own
        .into_iter()
        .map(|(node, lines)| NodeLines { node, lines })
        .collect())
}

/// What a cell that branches produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchOutput {
    pub timeline: String,
    pub from_ns: u64,
    pub end_ns: u64,
    pub trace_hash: String,
    pub events: usize,
    /// Why the branch stopped before its interval, if it did (the run's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<String>,
    /// The session's state at the end (`SessionState`).
    pub state: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub node: String,
    pub path: String,
    pub size: usize,
    pub sha256: String,
    /// The start of the file when it is text.
    pub preview: Option<String>,
}

/// A cell's output and, for a `file` cell, the file.
pub type CellOutput = (serde_json::Value, Option<Vec<u8>>);

/// Runs one cell from its moment. Branch events are stored under the cell's timeline.
pub fn run_cell(db: &Db, cell: &Cell, vtime: Arc<AtomicU64>) -> Result<CellOutput, String> {
    let moment = timeline::parse_moment(cell.action.moment()).map_err(|e| e.message)?;
    let mut quiet = Progress::new(vtime.clone(), false);
    if let Action::Moment { .. } = cell.action {
        let view = moment_view(db, &moment, &mut quiet)?;
        return Ok((serde_json::to_value(view).expect("views serialize"), None));
    }
    check_action(&cell.action)?;
    let mut at = open(db, &moment, &mut quiet)?;
    let from_ns = at.base.session.now();
    let mut progress = Progress::new(vtime, true);
    let begun = begin(&mut at.base.session, &cell.action, None, &mut progress)?;
    let mut ending = None;
    let run_for = match &cell.action {
        Action::Branch { run_for, .. } | Action::Fault { run_for, .. } => {
            Some(parse_vtime(run_for)?)
        }
        _ => None,
    };
    if let Some(run_for) = run_for {
        match at.base.session.run_to(from_ns + run_for, &mut progress)? {
            Ending::Reached => {}
            other => ending = Some(format!("{other:?}")),
        }
    }
    let timeline = crate::cells::branch_id(&cell.run, cell.id);
    store_events(db, &timeline, &progress.events).map_err(|e| e.message)?;
    let file = begun.file.as_ref().map(|bytes| {
        let (node, path) = match &cell.action {
            Action::File { node, path, .. } => (node.clone(), path.clone()),
            _ => unreachable!("only file cells read files"),
        };
        FileInfo {
            node,
            path,
            size: bytes.len(),
            sha256: sha256_hex(bytes),
            preview: std::str::from_utf8(&bytes[..bytes.len().min(4096)])
                .ok()
                .map(String::from),
        }
    });
    let output = BranchOutput {
        timeline,
        from_ns,
        end_ns: at.base.session.now(),
        trace_hash: at.base.session.trace_hash(),
        events: progress.events.len(),
        ending,
        state: serde_json::to_value(at.base.session.state()).expect("states serialize"),
        exec: begun.exec,
        file,
    };
    Ok((
        serde_json::to_value(output).expect("outputs serialize"),
        begun.file,
    ))
}

/// Refuses parameters that make no sense before anything is replayed.
fn check_action(action: &Action) -> Result<(), String> {
    let run_for = |t: &str| -> Result<(), String> {
        let ns = parse_vtime(t)?;
        if ns == 0 || ns > MAX_RUN_FOR_NS {
            return Err(format!(
                "run for {t}: choose more than 0 and at most {}",
                format_vtime(MAX_RUN_FOR_NS)
            ));
        }
        Ok(())
    };
    match action {
        Action::Branch { run_for: t, .. } => run_for(t),
        Action::Fault {
            run_for: t, fault, ..
        } => {
            run_for(t)?;
            if let FaultAction::Pause { duration, .. } = fault {
                parse_vtime(duration)?;
            }
            Ok(())
        }
        Action::Exec {
            command, limit: l, ..
        } => {
            shell_words(command)?;
            let ns = limit(l)?;
            if ns == 0 || ns > MAX_RUN_FOR_NS {
                return Err(format!("limit: at most {}", format_vtime(MAX_RUN_FOR_NS)));
            }
            Ok(())
        }
        Action::File { path, .. } => {
            if !path.starts_with('/') {
                return Err(format!("`{path}`: give an absolute path in the container"));
            }
            Ok(())
        }
        Action::Moment { .. } => Ok(()),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces a branch timeline's events in one transaction.
fn store_events(db: &Db, timeline: &str, events: &[StoredEvent]) -> Result<(), AppError> {
    let mut conn = db.conn()?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "DELETE FROM notebook_events WHERE run_id = ?1",
        rusqlite::params![timeline],
    )?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO notebook_events (run_id, seq, vtime_ns, node, kind, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in events {
            stmt.execute(rusqlite::params![
                timeline,
                e.seq as i64,
                e.vtime_ns as i64,
                e.node,
                e.kind,
                e.body.to_string()
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Measures how long it takes to reach a moment (for docs/notebook.md).
pub fn time_moment(db: &Db, moment: &Moment) -> Result<(MomentView, u128), String> {
    let wall = Instant::now();
    let mut p = Progress::new(Arc::new(AtomicU64::new(0)), false);
    let v = moment_view(db, moment, &mut p)?;
    Ok((v, wall.elapsed().as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            shell_words("cat /etc/hosts").unwrap(),
            ["cat", "/etc/hosts"]
        );
        assert_eq!(
            shell_words(r#"sh -c 'echo "a b" | wc -c'"#).unwrap(),
            ["sh", "-c", r#"echo "a b" | wc -c"#]
        );
        assert!(shell_words("echo 'open").is_err());
        assert!(shell_words("   ").is_err());
    }
}
