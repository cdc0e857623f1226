//! Where the time goes: process-wide counters of the time spent running guests, forking
//! sessions, snapshotting them and scoring novelty, summed over every thread. Cheap (two
//! clock reads per timed call, one atomic add), so they are always on; a campaign prints
//! them at its end and `scripts/bench-explore.sh` reads that line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `World::run_until`: the guests and the VMM's devices and network.
    Guest,
    /// A session restored or forked from a snapshot.
    Fork,
    /// A session snapshotted, and snapshot files written and read.
    Snapshot,
    /// Novelty: events turned into coverage keys, merged into the campaign's.
    Score,
}

const PHASES: [Phase; 4] = [Phase::Guest, Phase::Fork, Phase::Snapshot, Phase::Score];

static NANOS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Counts the time from its creation to its drop against `phase`.
pub struct Timer {
    phase: Phase,
    start: Instant,
}

pub fn timer(phase: Phase) -> Timer {
    Timer {
        phase,
        start: Instant::now(),
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let ns = self.start.elapsed().as_nanos() as u64;
        NANOS[self.phase as usize].fetch_add(ns, Ordering::Relaxed);
    }
}

/// Seconds spent so far in each phase, over all threads.
pub fn totals() -> [(Phase, f64); 4] {
    PHASES.map(|p| (p, NANOS[p as usize].load(Ordering::Relaxed) as f64 / 1e9))
}

/// One line: each phase's seconds and its share of the threads' time (`wall_s` times
/// `threads`); the rest is the runner's own work, the store and waiting.
pub fn summary(wall_s: f64, threads: usize) -> String {
    let budget = (wall_s * threads.max(1) as f64).max(1e-9);
    let parts: Vec<String> = totals()
        .iter()
        .map(|(p, s)| {
            let name = match p {
                Phase::Guest => "guest execution",
                Phase::Fork => "forks",
                Phase::Snapshot => "snapshots",
                Phase::Score => "scoring",
            };
            format!("{name} {s:.1}s ({:.1}%)", 100.0 * s / budget)
        })
        .collect();
    format!(
        "time over {threads} thread(s) × {wall_s:.1}s wall: {}",
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_adds_its_time_to_its_phase() {
        let before = totals()[Phase::Snapshot as usize].1;
        {
            let _t = timer(Phase::Snapshot);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let after = totals()[Phase::Snapshot as usize].1;
        assert!(after - before >= 0.019, "{before} → {after}");
        assert!(summary(1.0, 2).contains("snapshots"));
    }
}
