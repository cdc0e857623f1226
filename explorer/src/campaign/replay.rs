//! What a campaign's timelines are rebuilt from: its inputs, saved in its folder and
//! prepared again (its moments `C/T@VTIME` are reached by [`crate::at_moment`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Root;
use crate::observer::Observer;
use crate::run::inputs::RunInputs;
use crate::run::prepare::Prepared;
use crate::run::{RunError, RunOptions};

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
pub(crate) fn open_root(
    home: &Path,
    dir: &Path,
    what: &str,
    observer: &mut dyn Observer,
) -> Result<(Root, tempfile::TempDir), RunError> {
    open_root_moved(home, dir, what, None, observer)
}

/// [`open_root`] with the compose file's folder at `project` when given (a copy of the
/// campaign's project, e.g. a worker's download: [`RunInputs::moved_to`]).
pub(crate) fn open_root_moved(
    home: &Path,
    dir: &Path,
    what: &str,
    project: Option<&Path>,
    observer: &mut dyn Observer,
) -> Result<(Root, tempfile::TempDir), RunError> {
    let mut inputs = RunInputs::load(dir)?;
    if let Some(project) = project {
        inputs = inputs.moved_to(project)?;
    }
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
pub(crate) fn parse(run: &str) -> Result<(&str, u64), String> {
    let (c, t) = run
        .split_once('/')
        .ok_or_else(|| format!("`{run}` is not a timeline; write CAMPAIGN/T<number>"))?;
    let t = t
        .strip_prefix('T')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("`{t}` is not a timeline; write T<number>, e.g. T7"))?;
    Ok((c, t))
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
