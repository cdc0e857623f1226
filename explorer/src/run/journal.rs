//! A run's journal: its events in the run store (in batches) and as text log files in
//! its folder (`events.log` with every event, `<node>.log` with one node's).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use crate::store::{RunStore, StoredEvent};

/// Events kept in memory before they are written.
const BATCH: usize = 512;

pub struct Journal {
    store: RunStore,
    run: String,
    dir: PathBuf,
    events: Vec<StoredEvent>,
    /// Lines for the log files, by file name, not yet written.
    logs: BTreeMap<String, String>,
}

impl Journal {
    pub fn new(store: RunStore, run: String, dir: PathBuf) -> Journal {
        Journal {
            store,
            run,
            dir,
            events: Vec::new(),
            logs: BTreeMap::new(),
        }
    }

    pub fn store(&self) -> &RunStore {
        &self.store
    }

    /// Keeps one event: `line` (without newline) for the log files, `stored` for the
    /// run store.
    pub fn record(&mut self, line: &str, stored: StoredEvent) {
        let line = format!("{line}\n");
        self.logs
            .entry("events.log".into())
            .or_default()
            .push_str(&line);
        self.logs
            .entry(format!("{}.log", stored.node))
            .or_default()
            .push_str(&line);
        self.events.push(stored);
    }

    /// Writes when a batch is full.
    pub fn flush_if_full(&mut self) -> Result<(), String> {
        if self.events.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes everything pending.
    pub fn flush(&mut self) -> Result<(), String> {
        self.write_logs()
            .map_err(|e| format!("cannot write logs in {}: {e}", self.dir.display()))?;
        let batch = std::mem::take(&mut self.events);
        self.store
            .append_events(&self.run, &batch)
            .map_err(|e| e.to_string())
    }

    fn write_logs(&mut self) -> std::io::Result<()> {
        for (file, text) in std::mem::take(&mut self.logs) {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(file))?
                .write_all(text.as_bytes())?;
        }
        Ok(())
    }

    pub fn into_store(self) -> RunStore {
        self.store
    }
}
