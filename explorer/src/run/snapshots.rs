//! `detvm run --snapshot-at T`: the whole run (World and runner) saved at the first
//! step boundary at or after each T, under `.detvm/runs/<run>/snapshots/`. The first
//! file is full; each later one is a child of the one before (only the pages that
//! changed). `detvm replay` starts from the latest one at or before its moment.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use vmm::world::snapshot::{file, WorldSnapshot};

use super::session::Session;
use crate::moment::format_vtime;
use crate::observer::Observer;

pub const DIR: &str = "snapshots";

/// The snapshot times still to take, and the last one taken (the next one's parent).
pub struct Schedule {
    dir: PathBuf,
    due: VecDeque<u64>,
    parent: Option<(PathBuf, WorldSnapshot)>,
}

impl Schedule {
    pub fn new(run_dir: &Path, mut times_ns: Vec<u64>) -> Schedule {
        times_ns.sort_unstable();
        times_ns.dedup();
        Schedule {
            dir: run_dir.join(DIR),
            due: times_ns.into(),
            parent: None,
        }
    }

    /// Takes a snapshot if one is due at the session's current time.
    pub fn take_due(
        &mut self,
        session: &mut Session,
        observer: &mut dyn Observer,
    ) -> Result<(), String> {
        let now = session.now();
        if self.due.front().is_none_or(|&t| t > now) {
            return Ok(());
        }
        while self.due.front().is_some_and(|&t| t <= now) {
            self.due.pop_front();
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self
            .dir
            .join(file::file_name_at(vmm::clock::VirtualTime(now)));
        let parent = self.parent.as_ref().map(|(p, s)| (p.as_path(), s));
        let incremental = parent.is_some();
        let (snap, written) = session
            .save(&path, parent)
            .map_err(|e| format!("snapshot at {}: {e}", format_vtime(now)))?;
        observer.info(&format!(
            "snapshot at {}: {} ({} KiB, {} pages{})",
            format_vtime(now),
            path.display(),
            written.bytes / 1024,
            written.pages,
            if incremental { ", incremental" } else { "" }
        ));
        self.parent = Some((path, snap.world));
        Ok(())
    }
}

/// A run's snapshot files by virtual time, earliest first.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(run_dir.join(DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let ns = name.strip_prefix("snapshot-")?.strip_suffix(".dsnap")?;
            Some((ns.parse().ok()?, path))
        })
        .collect();
    found.sort();
    found
}
