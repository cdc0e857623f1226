//! Moments of campaign timelines `C/T<n>`: from the latest state known on the path of
//! forks from the root to T (a snapshot kept in memory, or the snapshot file of a
//! timeline's end), else from the root booted again; then each timeline on the rest
//! of the path forked from its parent's end with its branch id and faults, and T run
//! to the moment. A branch the campaign judged early forks its children, and has its
//! file, at the end of its horizon (`judged_at_ns`); past it, its drivers end there
//! (`Session::end_drivers_now`) and the judging plays on.

use std::path::Path;
use std::sync::Arc;

use super::cache::Base;
use super::{advance, Collect, MomentCache, MomentSession};
use crate::campaign::replay::{open_root, parse};
use crate::campaign::store::CampaignStore;
use crate::campaign::{files, Root, Timeline};
use crate::moment::{format_vtime, Moment};
use crate::observer::Observer;
use crate::run::{check, decision_point, RunError, Session, SessionSnapshot, STEP_NS};
use crate::store::StoredEvent;

fn infra(e: impl std::fmt::Display) -> RunError {
    RunError::Infrastructure(e.to_string())
}

/// Where the replay starts: on the path's timeline `level`, at `t`.
struct From {
    level: usize,
    t: u64,
    snapshot: Arc<SessionSnapshot>,
    what: String,
}

pub(super) fn session_at(
    home: &Path,
    moment: &Moment,
    cache: &MomentCache,
    observer: &mut dyn Observer,
) -> Result<MomentSession, RunError> {
    let (campaign, target) = parse(&moment.run).map_err(RunError::Input)?;
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
    let base = cache.base(campaign, || {
        let (root, scratch) = open_root(home, &dir, &moment.to_string(), observer)?;
        Ok::<_, RunError>(Base::Campaign {
            root,
            dir: dir.clone(),
            _scratch: scratch,
        })
    })?;
    let Base::Campaign { root, .. } = &*base else {
        unreachable!("a campaign's base")
    };
    let name = |t: &Timeline| format!("{campaign}/T{}", t.id);
    let top = path.len() - 1;
    let limit = |level: usize| {
        if level == top {
            point
        } else {
            path[level].fork_at()
        }
    };
    // A judged target past its judging moment: its drivers ended there.
    let judged_at = |level: usize| {
        (level == top)
            .then_some(path[level].judged_at_ns)
            .flatten()
            .filter(|&j| point > j)
    };
    let from = start(&path, &dir, root, cache, &name, &limit)?;
    let fail = |e: String| RunError::Infrastructure(format!("{moment}: the replay failed: {e}"));
    let mut session = None;
    let mut started_at_ns = 0;
    if let Some(f) = &from {
        started_at_ns = f.t;
        observer.info(&format!(
            "{moment}: from {} at {}, then {} fork(s)",
            f.what,
            format_vtime(f.t),
            top - f.level
        ));
        // A timeline's end is only forked from; a state inside one goes on as it (a
        // judged one's past its judging with the run's duration cut there, as
        // `Session::end_drivers_now` left it).
        if f.t < path[f.level].fork_at() || f.level == top {
            let duration_ns = judged_at(f.level)
                .filter(|&j| f.t > j)
                .unwrap_or(root.duration_ns);
            session = Some(Session::restore(
                &root.plan,
                &f.snapshot,
                root.seed,
                duration_ns,
                None,
            )?);
        }
    } else {
        observer.info(&format!(
            "{moment}: from the root booted again, then {top} fork(s)"
        ));
    }
    // From a timeline's end, the next timeline on the path is the first to run.
    let first_level = from
        .as_ref()
        .map_or(0, |f| f.level + usize::from(session.is_none()));
    let mut parent_end = from
        .as_ref()
        .filter(|_| session.is_none())
        .map(|f| f.snapshot.clone());
    let mut collect = Collect {
        events: Vec::new(),
        outer: observer,
    };
    let mut first_seq = 0;
    for (level, &t) in path.iter().enumerate().skip(first_level) {
        let mut s = match (session.take(), parent_end.take()) {
            (Some(s), _) => s,
            (None, Some(end)) => {
                let branch = t.branch.unwrap_or(0);
                let faults = root.faults_of(branch, root.horizon_ns);
                root.start_branch(&end, branch, &faults).map_err(fail)?
            }
            (None, None) => Session::boot(root.plan.clone(), root.seed, root.duration_ns)?,
        };
        collect.events.clear();
        first_seq = s.runner().next_event();
        if let Some(j) = judged_at(level).filter(|&j| s.now() <= j) {
            advance(cache, &name(t), &mut s, j, &mut collect).map_err(fail)?;
            s.end_drivers_now();
        }
        let ending = advance(cache, &name(t), &mut s, limit(level), &mut collect).map_err(fail)?;
        if s.now() < limit(level) {
            return Err(RunError::Infrastructure(format!(
                "{moment}: T{} ended at {} ({ending:?}) before {}",
                t.id,
                format_vtime(s.now()),
                format_vtime(limit(level))
            )));
        }
        if level < top {
            let end = Arc::new(s.snapshot().map_err(fail)?);
            cache.keep(&name(t), t.fork_at(), end.clone());
            parent_end = Some(end);
        } else {
            session = Some(s);
        }
    }
    let session = session.expect("the target level ran");
    let before = |e: &StoredEvent| e.vtime_ns < point;
    let events: Vec<StoredEvent> = collect.events.into_iter().filter(before).collect();
    let stored: Vec<StoredEvent> = store
        .events(campaign, target)
        .map_err(infra)?
        .into_iter()
        .filter(|e| before(e) && e.seq >= first_seq)
        .collect();
    let divergence = check::first_difference(&stored, &events);
    let ids: Vec<String> = path[from.as_ref().map_or(0, |f| f.level)..]
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    let started_from = format!(
        "{}, then the path T{}",
        from.as_ref()
            .map_or_else(|| "boot".to_string(), |f| f.what.clone()),
        ids.join(" → T")
    );
    Ok(MomentSession {
        session,
        moment: moment.clone(),
        decision_point_ns: point,
        started_from,
        started_at_ns,
        first_seq,
        events,
        divergence,
        base: base.clone(),
    })
}

/// Replays campaign timeline `C/T<n>` once to its last step, keeping a snapshot every
/// [`super::EVERY_NS`] on the way (and its path's ends), so that opening any of its
/// moments later starts at most that far back. Does nothing when the timeline's replay
/// is already kept to its end.
pub(super) fn warm(
    home: &Path,
    timeline: &str,
    cache: &MomentCache,
    observer: &mut dyn Observer,
) -> Result<(), RunError> {
    let (campaign, target) = parse(timeline).map_err(RunError::Input)?;
    let store = CampaignStore::open(home).map_err(infra)?;
    let Some(t) = store
        .timelines(campaign)
        .map_err(infra)?
        .into_iter()
        .find(|t| t.id == target)
    else {
        return Err(RunError::Input(format!(
            "campaign {campaign} has no timeline T{target}"
        )));
    };
    // The last step boundary inside the timeline: a moment there has a decision point.
    let last = t.end_ns / STEP_NS * STEP_NS;
    if last <= t.from_ns || cache.has(timeline, last / super::EVERY_NS * super::EVERY_NS) {
        return Ok(());
    }
    let moment = Moment {
        run: timeline.to_string(),
        vtime_ns: last,
    };
    session_at(home, &moment, cache, observer).map(|_| ())
}

/// The latest known state on the path at or before each level's limit, looking from
/// the target up: a snapshot kept in memory, or a timeline's end snapshot file (kept
/// in memory once loaded). `None`: boot the root.
fn start(
    path: &[&Timeline],
    dir: &Path,
    root: &Root,
    cache: &MomentCache,
    name: &dyn Fn(&Timeline) -> String,
    limit: &dyn Fn(usize) -> u64,
) -> Result<Option<From>, RunError> {
    for level in (0..path.len()).rev() {
        let t = path[level];
        let kept = cache.nearest(&name(t), limit(level));
        let file = files::path_of(dir, t.id);
        let file_usable = t.fork_at() <= limit(level) && file.is_file();
        match kept {
            Some((at, snapshot)) if !file_usable || at >= t.fork_at() => {
                return Ok(Some(From {
                    level,
                    t: at,
                    snapshot,
                    what: format!("a snapshot of T{} kept in memory", t.id),
                }))
            }
            _ if file_usable => {
                let snapshot = Arc::new(Session::load(&file, &root.plan)?);
                cache.keep(&name(t), t.fork_at(), snapshot.clone());
                return Ok(Some(From {
                    level,
                    t: t.fork_at(),
                    snapshot,
                    what: format!("T{}'s snapshot file", t.id),
                }));
            }
            _ => {}
        }
    }
    Ok(None)
}
