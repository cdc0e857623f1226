//! `detvm replay C/T@VTIME`: a campaign's timeline rebuilt from the root's inputs by its
//! path of forks: the root booted and set up, then each timeline on the path forked from
//! its parent's end with its branch id and faults, to the moment. The replayed events
//! of the timeline are checked against the ones the campaign stored.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::store::CampaignStore;
use super::{branch_faults, Root, Timeline};
use crate::moment::{format_vtime, Moment};
use crate::observer::Observer;
use crate::run::inputs::RunInputs;
use crate::run::prepare::Prepared;
use crate::run::replay::ReplaySummary;
use crate::run::{check, decision_point, RunError, RunOptions};
use crate::store::StoredEvent;

const FILE: &str = "campaign.json";

/// What a campaign was made of besides the run inputs (kept in its folder).
#[derive(Serialize, Deserialize)]
struct CampaignInputs {
    horizon_ns: u64,
}

pub(super) fn save_inputs(
    dir: &Path,
    opts: &RunOptions,
    prepared: &Prepared,
    horizon_ns: u64,
) -> Result<(), RunError> {
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
    .map_err(|e| RunError::Infrastructure(format!("cannot write {}: {e}", path.display())))
}

/// The horizon a campaign's branches ran for (its `campaign.json`).
pub(super) fn load_horizon(dir: &Path) -> Result<u64, RunError> {
    std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<CampaignInputs>(&b).ok())
        .map(|c| c.horizon_ns)
        .ok_or_else(|| {
            RunError::Input(format!(
                "{}: missing or unreadable",
                dir.join(FILE).display()
            ))
        })
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
    let inputs = RunInputs::load(&dir)?;
    let extra: CampaignInputs = std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            RunError::Input(format!(
                "{}: missing or unreadable",
                dir.join(FILE).display()
            ))
        })?;
    let (run_opts, prepared) = inputs.prepare_again(home, &moment.to_string(), observer)?;
    let scratch = tempfile::tempdir()
        .map_err(|e| RunError::Infrastructure(format!("a scratch folder: {e}")))?;
    let plan = prepared.world_plan(run_opts.backend, &scratch.path().join("volumes"))?;
    let root = Root::new(plan, &prepared, extra.horizon_ns);
    observer.info(&format!(
        "{moment}: the root, then {} fork(s)",
        path.len().saturating_sub(1)
    ));
    let mut collect = Collect(Vec::new());
    let mut session = root.boot(&mut collect)?;
    let fail = |e: String| RunError::Infrastructure(format!("{moment}: the replay failed: {e}"));
    for t in &path[1..] {
        let snap = session.snapshot().map_err(fail)?;
        let branch = t.branch.unwrap_or(0);
        let faults = branch_faults(root.seed, branch, &root.names, root.horizon_ns);
        session = root.start_branch(&snap, branch, &faults).map_err(fail)?;
        collect = Collect(Vec::new());
        if t.id == target {
            session.run_to(point, &mut collect).map_err(fail)?;
        } else {
            root.advance(&mut session, t.from_ns, &mut collect)
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
        started_from: format!("boot, then the path T{}", {
            let ids: Vec<String> = path.iter().map(|t| t.id.to_string()).collect();
            ids.join(" → T")
        }),
        started_at_ns: 0,
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
