//! `detvm replay C/T@VTIME`: a campaign's timeline rebuilt from the root's inputs by its
//! path of forks: the root booted and set up, then each timeline on the path forked from
//! its parent's end with its branch id and faults, to the moment. The replayed events
//! of the timeline are checked against the ones the campaign stored.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::store::CampaignStore;
use super::{branch_faults, files, Root, Timeline};
use crate::moment::{format_vtime, Moment};
use crate::observer::Observer;
use crate::run::inputs::RunInputs;
use crate::run::prepare::Prepared;
use crate::run::replay::ReplaySummary;
use crate::run::{check, decision_point, RunError, RunOptions, Session};
use crate::store::StoredEvent;

const FILE: &str = "campaign.json";

/// What a campaign was made of besides the run inputs (kept in its folder).
#[derive(Serialize, Deserialize)]
struct CampaignInputs {
    horizon_ns: u64,
}

/// Writes the campaign's inputs into its folder; returns its inputs key: what its
/// findings are compared by (the system as built, its variables and duration; not the
/// seed, the horizon or the budget).
pub(super) fn save_inputs(
    dir: &Path,
    opts: &RunOptions,
    prepared: &Prepared,
    horizon_ns: u64,
) -> Result<String, RunError> {
    let inputs = RunInputs::new(
        opts,
        prepared.seed,
        prepared.duration_ns(),
        prepared.epoch,
        prepared.fingerprint()?,
    );
    inputs.save(dir)?;
    let path = dir.join(FILE);
    std::fs::write(
        &path,
        serde_json::to_vec(&CampaignInputs { horizon_ns }).expect("json"),
    )
    .map_err(|e| RunError::Infrastructure(format!("cannot write {}: {e}", path.display())))?;
    let mut vars = inputs.vars.clone();
    vars.sort();
    let key = serde_json::json!({
        "fingerprint": inputs.fingerprint,
        "vars": vars,
        "duration_ns": inputs.duration_ns,
        "kvm": inputs.kvm,
    });
    Ok(detvm_images::digest::of_bytes(key.to_string().as_bytes()))
}

/// The campaign in `dir` rebuilt from its inputs (refused, naming what changed, if the
/// compose file, kernel, agent or an image changed), its volumes in a scratch folder
/// the caller keeps.
pub(super) fn open_root(
    home: &Path,
    dir: &Path,
    what: &str,
    observer: &mut dyn Observer,
) -> Result<(Root, tempfile::TempDir), RunError> {
    let inputs = RunInputs::load(dir)?;
    let extra: CampaignInputs = std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            RunError::Input(format!(
                "{}: missing or unreadable",
                dir.join(FILE).display()
            ))
        })?;
    let (run_opts, prepared) = inputs.prepare_again(home, what, observer)?;
    let scratch = tempfile::tempdir()
        .map_err(|e| RunError::Infrastructure(format!("a scratch folder: {e}")))?;
    let plan = prepared.world_plan(run_opts.backend, &scratch.path().join("volumes"))?;
    Ok((Root::new(plan, &prepared, extra.horizon_ns), scratch))
}

/// `C/T` split into the campaign id and the timeline number.
pub(super) fn parse(run: &str) -> Result<(&str, u64), String> {
    let (c, t) = run
        .split_once('/')
        .ok_or_else(|| format!("`{run}` is not a timeline; write CAMPAIGN/T<number>"))?;
    let t = t
        .strip_prefix('T')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("`{t}` is not a timeline; write T<number>, e.g. T7"))?;
    Ok((c, t))
}

struct Collect(Vec<StoredEvent>);

impl Observer for Collect {
    fn events(&mut self, batch: &[StoredEvent]) -> Result<(), String> {
        self.0.extend_from_slice(batch);
        Ok(())
    }
}

pub fn replay(
    home: &Path,
    moment: &Moment,
    observer: &mut dyn Observer,
) -> Result<ReplaySummary, RunError> {
    let wall = Instant::now();
    let (campaign, target) = parse(&moment.run).map_err(RunError::Input)?;
    let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
    let store = CampaignStore::open(home).map_err(infra)?;
    let timelines = store.timelines(campaign).map_err(infra)?;
    let find = |id: u64| timelines.iter().find(|t| t.id == id);
    let Some(last) = find(target) else {
        return Err(RunError::Input(format!(
            "{moment}: campaign {campaign} has no timeline T{target} (see `detvm campaigns`)"
        )));
    };
    let point = decision_point(moment.vtime_ns);
    if point < last.from_ns || point > last.end_ns {
        return Err(RunError::Input(format!(
            "{moment}: T{target} runs from {} to {}; pick a moment in between",
            format_vtime(last.from_ns),
            format_vtime(last.end_ns)
        )));
    }
    let mut path: Vec<&Timeline> = vec![last];
    while let Some(parent) = path.last().and_then(|t| t.parent) {
        path.push(find(parent).ok_or_else(|| {
            RunError::Input(format!(
                "{moment}: timeline T{parent} is missing from the store"
            ))
        })?);
    }
    path.reverse();

    let dir = store.dir(campaign);
    let (root, _scratch) = open_root(home, &dir, &moment.to_string(), observer)?;
    // The nearest ancestor whose snapshot file is still there (the cap may have removed
    // some), else the root booted again.
    let start = path[..path.len() - 1]
        .iter()
        .rposition(|t| files::path_of(&dir, t.id).is_file());
    let fail = |e: String| RunError::Infrastructure(format!("{moment}: the replay failed: {e}"));
    let mut collect = Collect(Vec::new());
    let (mut session, first) = match start {
        Some(i) => {
            let file = files::path_of(&dir, path[i].id);
            let snap = Session::load(&file, &root.plan)?;
            let session = Session::restore(&root.plan, &snap, root.seed, root.duration_ns, None)?;
            (session, i)
        }
        None => (root.boot(&mut collect)?, 0),
    };
    observer.info(&format!(
        "{moment}: from T{}{}, then {} fork(s)",
        path[first].id,
        if start.is_some() {
            "'s snapshot file"
        } else {
            " booted again"
        },
        path.len() - 1 - first
    ));
    for t in &path[first + 1..] {
        let snap = session.snapshot().map_err(fail)?;
        let branch = t.branch.unwrap_or(0);
        let faults = branch_faults(root.seed, branch, &root.names, root.horizon_ns);
        session = root.start_branch(&snap, branch, &faults).map_err(fail)?;
        collect = Collect(Vec::new());
        if t.id == target {
            if let Some(judged) = t.judged_at_ns.filter(|&j| point > j) {
                session.run_to(judged, &mut collect).map_err(fail)?;
                session.end_drivers_now();
            }
            session.run_to(point, &mut collect).map_err(fail)?;
        } else {
            root.advance(&mut session, t.from_ns, root.horizon_ns, &mut collect)
                .map_err(fail)?;
        }
    }
    if path.len() == 1 && session.now() < point {
        return Err(RunError::Input(format!(
            "{moment}: the root timeline ends at {}",
            format_vtime(session.now())
        )));
    }
    let before = |e: &StoredEvent| e.vtime_ns < point;
    let replayed: Vec<StoredEvent> = collect.0.into_iter().filter(before).collect();
    let stored: Vec<StoredEvent> = store
        .events(campaign, target)
        .map_err(infra)?
        .into_iter()
        .filter(before)
        .collect();
    let divergence = check::first_difference(&stored, &replayed);
    Ok(ReplaySummary {
        moment: moment.to_string(),
        decision_point_ns: point,
        started_from: format!(
            "{}, then the path T{}",
            if start.is_some() {
                format!("T{}'s snapshot file", path[first].id)
            } else {
                "boot".to_string()
            },
            {
                let ids: Vec<String> = path[first..].iter().map(|t| t.id.to_string()).collect();
                ids.join(" → T")
            }
        ),
        started_at_ns: start.map_or(0, |i| path[i].end_ns),
        state: session.state(),
        events_replayed: replayed.len(),
        divergence,
        wall_ms: wall.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn timeline_names_parse() {
        assert_eq!(super::parse("c12/T7"), Ok(("c12", 7)));
        assert!(super::parse("c12").is_err());
        assert!(super::parse("c12/7").is_err());
    }
}
