//! The work queue's load test and crash-test worker (docs/scale-out.md):
//!   detvm-queue-load seed QUEUE CAMPAIGN ITEMS
//!   detvm-queue-load work QUEUE CAMPAIGN ITEMS WORKERS WORK_MS LEASE_MS [OBJECTS_URL KEY]
//! `work` prints `items N workers W wall S items/s R`.

use std::process::ExitCode;
use std::time::Duration;

use detvm_service::scale::load::{seed, work, Load};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 { args.get(i).and_then(|a| a.parse().ok()).unwrap_or(0) };
    if args.len() < 4 {
        eprintln!("usage: detvm-queue-load seed|work QUEUE CAMPAIGN ITEMS [WORKERS WORK_MS LEASE_MS [OBJECTS_URL KEY]]");
        return ExitCode::from(4);
    }
    let load = Load {
        queue: args[1].clone(),
        campaign: args[2].clone(),
        items: num(3) as i64,
        workers: num(4).max(1) as usize,
        work: Duration::from_millis(num(5)),
        lease: Duration::from_millis(num(6).max(100)),
        objects: args
            .get(7)
            .zip(args.get(8))
            .map(|(u, k)| (u.clone(), k.clone())),
    };
    let outcome = match args[0].as_str() {
        "seed" => seed(&load).map(|()| String::from("seeded")),
        "work" => work(&load, &format!("pid{}", std::process::id())).map(|(n, wall)| {
            format!(
                "items {n} workers {} wall {:.3} items/s {:.1}",
                load.workers,
                wall.as_secs_f64(),
                n as f64 / wall.as_secs_f64().max(1e-9)
            )
        }),
        other => {
            eprintln!("unknown mode {other}");
            return ExitCode::from(4);
        }
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(3)
        }
    }
}
