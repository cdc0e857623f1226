//! The snapshot files of a campaign's frontier moments under
//! `.detvm/campaigns/C/snapshots/`: the root's in full, every other one incremental
//! against its parent's. They are what branches fork from after `--resume`, what
//! workers fork from, and where `detvm replay` starts. `--snapshot-cap` bounds their
//! total size: the files of the lowest-energy moments go first (they leave the
//! frontier), never the root's and never one another file is incremental against.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::frontier::Frontier;

/// Default `--snapshot-cap`: 2 GiB.
pub const DEFAULT_CAP: u64 = 2 << 30;

/// Which moments have a file, its size, and whose file it is incremental against.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Files {
    /// Timeline → (bytes, the parent timeline its file is a child of).
    pub kept: BTreeMap<u64, (u64, Option<u64>)>,
    /// How many files the cap removed so far.
    pub pruned: u64,
}

impl Files {
    pub fn add(&mut self, timeline: u64, bytes: u64, parent: Option<u64>) {
        self.kept.insert(timeline, (bytes, parent));
    }

    pub fn bytes(&self) -> u64 {
        self.kept.values().map(|(b, _)| b).sum()
    }

    /// Moments whose files go to bring the total under `cap`: lowest energy first (then
    /// the oldest), skipping the root and any file another kept file depends on. They
    /// are removed from `self` and from the frontier; the caller deletes the files
    /// (after the campaign state that no longer names them is committed).
    pub fn prune(&mut self, cap: u64, frontier: &mut Frontier) -> Vec<u64> {
        let mut gone = Vec::new();
        while self.bytes() > cap {
            let parents: BTreeSet<u64> = self.kept.values().filter_map(|(_, p)| *p).collect();
            let energy = |t: u64| {
                frontier
                    .moments
                    .iter()
                    .find(|m| m.timeline == t)
                    .map_or(0.0, |m| m.energy)
            };
            let victim = self
                .kept
                .keys()
                .copied()
                .filter(|&t| t != 0 && !parents.contains(&t))
                .min_by(|&a, &b| energy(a).total_cmp(&energy(b)).then(a.cmp(&b)));
            let Some(t) = victim else { break };
            self.kept.remove(&t);
            frontier.moments.retain(|m| m.timeline != t);
            self.pruned += 1;
            gone.push(t);
        }
        gone
    }
}

pub fn path_of(campaign_dir: &Path, timeline: u64) -> PathBuf {
    snapshot_dir(campaign_dir).join(snapshot_name(timeline))
}

/// Deletes the files of these timelines (a missing one is fine).
pub fn delete(campaign_dir: &Path, timelines: &[u64]) {
    for &t in timelines {
        let _ = std::fs::remove_file(path_of(campaign_dir, t));
    }
}

/// Deletes snapshot files `kept` does not name: those of a round a killed campaign
/// did not commit, or of moments whose deletion it did not reach.
pub fn delete_strays(campaign_dir: &Path, kept: &Files) {
    let Ok(entries) = std::fs::read_dir(snapshot_dir(campaign_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(t) = name.to_str().and_then(|n| {
            n.strip_prefix('T')?
                .strip_suffix(".dsnap")?
                .parse::<u64>()
                .ok()
        }) else {
            continue;
        };
        if !kept.kept.contains_key(&t) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The folder of a campaign's snapshot files.
pub fn snapshot_dir(campaign_dir: &Path) -> PathBuf {
    campaign_dir.join("snapshots")
}

/// The file name of the snapshot at the end of timeline `t`.
pub fn snapshot_name(t: u64) -> String {
    format!("T{t}.dsnap")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_removes_low_energy_leaves_never_the_root_or_a_parent() {
        let mut frontier = Frontier::default();
        let mut files = Files::default();
        files.add(0, 100, None);
        frontier.push(0, 0, 0.0);
        // 1 ← 2 (2 is incremental against 1); 3 a leaf off the root.
        for (t, parent, score) in [(1, 0, 0.0), (2, 1, 50.0), (3, 0, 5.0)] {
            files.add(t, 10, Some(parent));
            frontier.push(t, t * 10, score);
        }
        let gone = files.prune(125, &mut frontier);
        // 1 has the least energy but 2 depends on it; 3 is the cheapest leaf.
        assert_eq!(gone, vec![3]);
        assert_eq!(files.bytes(), 120);
        let gone = files.prune(100, &mut frontier);
        assert_eq!(gone, vec![2, 1], "2 goes, then 1 is a leaf");
        assert!(files.kept.contains_key(&0));
        let gone = files.prune(0, &mut frontier);
        assert!(gone.is_empty(), "the root's file stays");
        assert_eq!(frontier.moments.len(), 1);
        assert_eq!(files.pruned, 3);
    }
}
