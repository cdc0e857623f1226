//! Where a cold moment's wall time goes, phase by phase, on a real stored run:
//!
//!   cargo run --release -p explorer --example moment_times -- HOME RUN T1 T2 ...
//!
//! For each moment `RUN@T`: the run's inputs loaded and prepared again (fingerprints
//! checked), its world plan, the nearest snapshot file loaded, the session restored,
//! and the replay to the moment (with its virtual seconds per wall second); then the
//! same moment through `at_moment::session_at` with a fresh cache (what a fresh server
//! does), and again with the run's inputs already prepared (the cache kept them).

use std::path::Path;
use std::time::Instant;

use explorer::at_moment::{session_at, MomentCache, Start};
use explorer::moment::Moment;
use explorer::observer::Observer;
use explorer::run::inputs::RunInputs;
use explorer::run::{decision_point, snapshot_files, Session};
use explorer::store::RunStore;

/// Whether [`phases`] also takes a snapshot every second (as the moment cache does).
static KEEP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Quiet;
impl Observer for Quiet {}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn phases(home: &Path, run: &str, t: &str) {
    let moment: Moment = format!("{run}@{t}").parse().unwrap();
    let point = decision_point(moment.vtime_ns);
    let store = RunStore::open(home).unwrap();
    let dir = store.run_dir(run);
    let all = Instant::now();
    let start = Instant::now();
    let inputs = RunInputs::load(&dir).unwrap();
    let (opts, prepared) = inputs.prepare_again(home, run, &mut Quiet).unwrap();
    let prepare = ms(start);
    let start = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let plan = prepared
        .world_plan(opts.backend, &scratch.path().join("volumes"))
        .unwrap();
    let world_plan = ms(start);
    let file = snapshot_files(&dir).into_iter().rfind(|(t, _)| *t <= point);
    let start = Instant::now();
    let snap = file.as_ref().map(|(_, p)| Session::load(p, &plan).unwrap());
    let load = ms(start);
    let start = Instant::now();
    let mut session = match &snap {
        Some(s) => Session::restore(&plan, s, inputs.seed, inputs.duration_ns, None).unwrap(),
        None => Session::boot(plan.clone(), inputs.seed, inputs.duration_ns).unwrap(),
    };
    let restore = ms(start);
    let from = session.now();
    let start = Instant::now();
    let mut snapshots = (0, 0.0);
    while session.now() < point {
        let next = ((session.now() / 1_000_000_000 + 1) * 1_000_000_000).min(point);
        session.run_to(next, &mut Quiet).unwrap();
        if KEEP.load(std::sync::atomic::Ordering::Relaxed) && session.now() < point {
            let s = Instant::now();
            let snap = session.snapshot().unwrap();
            snapshots.0 += 1;
            snapshots.1 += ms(s);
            drop(snap);
        }
    }
    let replay = ms(start) - snapshots.1;
    let start = Instant::now();
    let stored = store.events(run, from, point).unwrap();
    let read_events = ms(start);
    let vs = (point - from) as f64 / 1e9;
    println!(
        "| {t} | {} | {prepare:.0} | {world_plan:.0} | {load:.0} | {restore:.0} | {replay:.0} ({vs:.2} s virtual, {:.1} vs/s) | {} in {:.0} | {} in {read_events:.0} | {:.0} |",
        file.map_or("boot".to_string(), |(t, _)| explorer::moment::format_vtime(t)),
        vs / (replay / 1000.0),
        snapshots.0,
        snapshots.1,
        stored.len(),
        ms(all)
    );
}

fn through_engine(home: &Path, run: &str, t: &str, cache: &MomentCache, what: &str) {
    let moment: Moment = format!("{run}@{t}").parse().unwrap();
    let start = Instant::now();
    let at = session_at(home, &moment, Start::default(), cache, &mut Quiet).unwrap();
    assert!(at.divergence.is_none(), "{moment}: {:?}", at.divergence);
    println!(
        "| {t} | {what} | {} | {:.0} ms |",
        at.started_from.rsplit('/').next().unwrap_or(""),
        ms(start)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (home, run, times) = (Path::new(&args[0]), &args[1], &args[2..]);
    println!("| moment | from file at | prepare ms | world plan ms | load file ms | restore ms | replay ms | snapshots kept, ms | stored events read, ms | total ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for keep in [false, true] {
        KEEP.store(keep, std::sync::atomic::Ordering::Relaxed);
        for t in times {
            phases(home, run, t);
        }
    }
    println!("\n| moment | case | started from | wall |\n|---|---|---|---|");
    for t in times {
        through_engine(home, run, t, &MomentCache::default(), "cold (fresh cache)");
        let warm_inputs = MomentCache::default();
        through_engine(home, run, "0.01s", &warm_inputs, "(preparing the inputs)");
        warm_inputs.clear_snapshots();
        through_engine(
            home,
            run,
            t,
            &warm_inputs,
            "inputs prepared, no snapshot kept",
        );
    }
}
