//! `detvm boot`: boot one VM with the guest kernel and an initramfs, print the
//! guest console, then a summary of the run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use vmm::backend::BackendKind;
use vmm::clock::VirtualTime;
use vmm::machine::{Outcome, Vm, VmConfig};
use vmm::trace::{first_divergence, Divergence};

#[derive(Args, Debug)]
pub struct BootArgs {
    /// CPU backend: `emu` (deterministic software CPU) or `kvm` (hardware; see `detvm doctor`).
    #[arg(long, default_value = "emu")]
    pub backend: BackendKind,
    /// Guest kernel (vmlinux ELF or bzImage). Default: the cached build of images/kernel/build.sh.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The initramfs (newc cpio) whose /init runs first.
    #[arg(long)]
    pub initrd: PathBuf,
    /// The world seed: every random choice of the run follows it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed of the vCPU switch points only (default: the world seed).
    #[arg(long)]
    pub schedule_seed: Option<u64>,
    /// Wall-clock time at power-on, RFC 3339 (UTC) or seconds since 1970.
    #[arg(long, default_value = "2038-01-19T03:14:00Z")]
    pub epoch: String,
    /// Extra kernel command-line options, appended to detvm's own.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Number of vCPUs (they take turns; switch points follow the seed).
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u64,
    /// Stop after this much virtual time, in seconds.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
    /// Print the trace hash and its checkpoints.
    #[arg(long)]
    pub trace_hash: bool,
    /// Boot a second time with the same inputs and compare trace hashes; on a mismatch,
    /// name the first diverging checkpoint. Exit code 5 when the runs differ.
    #[arg(long)]
    pub verify: bool,
}

pub fn run(args: BootArgs) -> anyhow::Result<ExitCode> {
    let kernel = match args.kernel {
        Some(k) => k,
        None => default_kernel()?,
    };
    let mut config = VmConfig::new(kernel);
    config.initrd = Some(args.initrd);
    config.cmdline = args.cmdline;
    config.seed = args.seed;
    config.schedule_seed = args.schedule_seed;
    config.vcpus = args.vcpus;
    config.backend = args.backend;
    config.memory = args.memory << 20;
    config.epoch_unix_secs = parse_epoch(&args.epoch)?;

    let started = Instant::now();
    let mut vm = Vm::boot(&config)?;
    let mut stdout = std::io::stdout();
    let limit = VirtualTime(args.max_seconds.saturating_mul(1_000_000_000));
    let outcome = vm.run(limit, &mut |bytes| {
        let _ = stdout.write_all(bytes);
        let _ = stdout.flush();
    })?;
    let wall = started.elapsed().as_secs_f64();

    let stats = vm.stats();
    let insns = vm.instructions();
    eprintln!();
    eprintln!("detvm boot: {outcome:?} at virtual time {}", vm.now());
    eprintln!(
        "  instructions {insns}  wall {wall:.2}s  {:.1} MIPS  slices {}",
        insns as f64 / wall / 1e6,
        stats.slices
    );
    eprintln!(
        "  exits: pio {}r/{}w  mmio {}r/{}w  hlt {}  injected {}",
        stats.pio_reads,
        stats.pio_writes,
        stats.mmio_reads,
        stats.mmio_writes,
        stats.halts,
        stats.injections
    );
    eprintln!(
        "  trace hash {:016x} over {} decisions",
        vm.trace().value(),
        vm.trace().decisions()
    );
    if args.trace_hash {
        for c in vm.trace().checkpoints() {
            eprintln!(
                "  checkpoint {:>10} {:016x} at {}",
                c.decisions, c.hash, c.last.time
            );
        }
    }
    if args.verify {
        let mut again = Vm::boot(&config)?;
        again.run(limit, &mut |_| {})?;
        match first_divergence(vm.trace(), again.trace()) {
            Divergence::None => eprintln!(
                "detvm boot --verify: a second run gave the same trace hash {:016x}",
                again.trace().value()
            ),
            divergence => {
                eprintln!("detvm boot --verify: the runs DIVERGE\n{divergence}");
                return Ok(ExitCode::from(5));
            }
        }
    }
    Ok(match outcome {
        Outcome::PowerOff | Outcome::Halted => ExitCode::SUCCESS,
        Outcome::TripleFault { vcpu, rip } => {
            eprintln!(
                "detvm boot: the guest triple-faulted on vCPU {vcpu} at RIP {rip:#x}, {}",
                vm.now()
            );
            ExitCode::from(3)
        }
        Outcome::Reset | Outcome::TimeLimit => ExitCode::from(2),
    })
}

fn default_kernel() -> anyhow::Result<PathBuf> {
    let dir = explorer::paths::cached_kernel_dir();
    for name in ["vmlinux", "bzImage"] {
        if dir.join(name).is_file() {
            return Ok(dir.join(name));
        }
    }
    anyhow::bail!(
        "no cached guest kernel in {}: build it with images/kernel/build.sh or pass --kernel",
        dir.display()
    )
}

/// `2038-01-19T03:14:00Z` or plain seconds since 1970.
pub fn parse_epoch(text: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let bad = || format!("--epoch {text:?}: expected YYYY-MM-DDTHH:MM:SSZ or seconds since 1970");
    let t = text.strip_suffix('Z').with_context(bad)?;
    let (date, time) = t.split_once('T').with_context(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()
        .with_context(bad)?;
    let h: Vec<i64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()
        .with_context(bad)?;
    if d.len() != 3 || h.len() != 3 || !(1..=12).contains(&d[1]) || !(1..=31).contains(&d[2]) {
        anyhow::bail!(bad());
    }
    Ok(days_from_civil(d[0], d[1], d[2]) * 86_400 + h[0] * 3600 + h[1] * 60 + h[2])
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_parse() {
        assert_eq!(parse_epoch("2038-01-19T03:14:00Z").unwrap(), 2_147_483_640);
        assert_eq!(parse_epoch("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_epoch("12345").unwrap(), 12345);
        assert!(parse_epoch("2038-13-01T00:00:00Z").is_err());
        assert!(parse_epoch("yesterday").is_err());
    }
}
