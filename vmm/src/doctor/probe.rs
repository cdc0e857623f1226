//! Running the probe guest (probe.S) on one backend and reading what it printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::backend::BackendKind;
use crate::boot::long_mode_entry_state;
use crate::clock::VirtualTime;
use crate::machine::{Outcome, Vm, VmConfig};

/// The probe guest's flat binary, built from probe.S (see its header).
pub const PROBE_IMAGE: &[u8] = include_bytes!("probe.bin");
pub const LOAD_ADDR: u64 = 0x10_0000;
/// Port writes between "exits: start" and "exits: end".
pub const EXIT_LOOPS: f64 = 5000.0;
/// Loop iterations between "loop: start" and "loop: end".
pub const KERNEL_LOOPS: f64 = 100_000.0;

/// What one probe run showed.
#[derive(Debug, Clone, Default)]
pub struct ProbeResult {
    /// How the run ended, or why it did not.
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// (leaf, [eax, ebx, ecx, edx]) as the guest saw them.
    pub cpuid: BTreeMap<u32, [u32; 4]>,
    /// The same, executed in ring 3.
    pub cpuid_user: BTreeMap<u32, [u32; 4]>,
    pub exits_per_sec: Option<f64>,
    /// Host nanoseconds per kernel-mode loop iteration.
    pub kernel_loop_ns: Option<f64>,
    pub tsc: Option<u64>,
    pub syscall_cpl: Option<u8>,
    pub exception: Option<u32>,
    /// Low 32 bits of the faulting RIP, and the error code.
    pub exception_at: u64,
    pub exception_error: u64,
    /// Virtual time at the end of the run.
    pub virtual_time: VirtualTime,
    pub forced_preemptions: u64,
    pub console: String,
}

/// Boots the probe guest on `backend`; gives up after `host_limit` of host time.
pub fn run(backend: BackendKind, host_limit: Duration) -> ProbeResult {
    let (tx, rx) = mpsc::channel();
    // The VM lives on its own thread so a guest that never ends cannot hang the caller.
    let spawned = std::thread::Builder::new()
        .name(format!("doctor-{backend:?}"))
        .spawn(move || {
            let mut result = ProbeResult::default();
            let mut lines = Vec::new();
            match run_vm(backend, &mut lines, &mut result) {
                Ok(()) => {}
                Err(e) => result.error = Some(e),
            }
            parse(&lines, &mut result);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return ProbeResult {
            error: Some(format!("starting the probe thread: {e}")),
            ..ProbeResult::default()
        };
    }
    rx.recv_timeout(host_limit).unwrap_or_else(|_| ProbeResult {
        error: Some(format!(
            "the probe guest did not finish within {} s of host time",
            host_limit.as_secs()
        )),
        ..ProbeResult::default()
    })
}

fn run_vm(
    backend: BackendKind,
    lines: &mut Vec<(Instant, String)>,
    result: &mut ProbeResult,
) -> Result<(), String> {
    let mut config = VmConfig::new(PathBuf::new());
    config.backend = backend;
    config.memory = crate::layout::MIN_RAM;
    let entry = long_mode_entry_state(LOAD_ADDR, 0);
    let mut vm = Vm::boot_flat(&config, PROBE_IMAGE, LOAD_ADDR, entry).map_err(|e| match e {
        crate::machine::VmError::Vcpu { error, .. } => error.to_string(),
        other => other.to_string(),
    })?;
    let mut partial = String::new();
    let mut console = String::new();
    let outcome = vm.run(VirtualTime::from_millis(60_000), &mut |bytes| {
        let text = String::from_utf8_lossy(bytes);
        console.push_str(&text);
        for c in text.chars() {
            if c == '\n' {
                lines.push((Instant::now(), std::mem::take(&mut partial)));
            } else {
                partial.push(c);
            }
        }
    });
    result.console = console;
    result.virtual_time = vm.now();
    result.forced_preemptions = vm.stats().forced_preemptions;
    result.outcome = Some(outcome.map_err(|e| e.to_string())?);
    Ok(())
}

fn hex(word: &str) -> Option<u64> {
    u64::from_str_radix(word, 16).ok()
}

fn parse(lines: &[(Instant, String)], r: &mut ProbeResult) {
    let at = |name: &str| lines.iter().find(|(_, l)| l == name).map(|(t, _)| *t);
    for (_, line) in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [kind @ ("cpuid" | "cpuid-user"), leaf, a, b, c, d] => {
                let regs = [a, b, c, d].map(|w| hex(w).unwrap_or(0) as u32);
                let map = match *kind {
                    "cpuid" => &mut r.cpuid,
                    _ => &mut r.cpuid_user,
                };
                if let Some(leaf) = hex(leaf) {
                    map.insert(leaf as u32, regs);
                }
            }
            ["tsc", value] => r.tsc = hex(value),
            ["exception", vector, rip, error] => {
                r.exception = hex(vector).map(|v| v as u32);
                r.exception_at = hex(rip).unwrap_or(0);
                r.exception_error = hex(error).unwrap_or(0);
            }
            _ => {}
        }
        if let Some(cpl) = line.strip_prefix("syscall: cpl=") {
            r.syscall_cpl = cpl.trim().parse().ok();
        }
    }
    let span = |a: &str, b: &str| Some(at(b)?.saturating_duration_since(at(a)?));
    if let Some(d) = span("exits: start", "exits: end") {
        r.exits_per_sec = Some(EXIT_LOOPS / d.as_secs_f64().max(1e-9));
    }
    if let (Some(d), Some(rate)) = (span("loop: start", "loop: end"), r.exits_per_sec) {
        // About 22 exits print "loop: end"; take their cost out.
        let loop_secs = (d.as_secs_f64() - 22.0 / rate).max(0.0);
        r.kernel_loop_ns = Some(loop_secs * 1e9 / KERNEL_LOOPS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_binary_matches_probe_s() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/doctor");
        let tmp = std::env::temp_dir().join(format!("detvm-probe-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let path = |name: &str| tmp.join(name).to_str().unwrap().to_string();
        let (obj, elf, bin) = (path("p.o"), path("p.elf"), path("p.bin"));
        let src = dir.join("probe.S").to_str().unwrap().to_string();
        let steps: [(&str, Vec<&str>); 3] = [
            ("as", vec!["--64", "-o", &obj, &src]),
            (
                "ld",
                vec!["-N", "-Ttext=0x100000", "-e", "_start", "-o", &elf, &obj],
            ),
            ("objcopy", vec!["-O", "binary", &elf, &bin]),
        ];
        for (tool, args) in steps {
            match std::process::Command::new(tool).args(&args).output() {
                Ok(out) => assert!(
                    out.status.success(),
                    "{tool}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => {
                    eprintln!("skipped: {tool} is not installed ({e})");
                    return;
                }
            }
        }
        let built = std::fs::read(&bin).unwrap();
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            built == PROBE_IMAGE,
            "probe.bin is stale: rebuild it from probe.S"
        );
    }

    #[test]
    fn output_is_parsed() {
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        let lines: Vec<(Instant, String)> = [
            (0, "cpuid 00000000 0000000d 756e6547 6c65746e 49656e69"),
            (1, "exits: start"),
            (101, "exits: end"),
            (102, "loop: start"),
            (202, "loop: end"),
            (203, "tsc 00000000000f4240"),
            (204, "syscall: cpl=3"),
        ]
        .into_iter()
        .map(|(ms, l)| (t(ms), l.to_string()))
        .collect();
        let mut r = ProbeResult::default();
        parse(&lines, &mut r);
        assert_eq!(r.cpuid[&0][1], 0x756e_6547);
        assert_eq!(r.tsc, Some(1_000_000));
        assert_eq!(r.syscall_cpl, Some(3));
        assert!((r.exits_per_sec.unwrap() - 50_000.0).abs() < 1.0);
        assert!(r.kernel_loop_ns.unwrap() > 900.0);
    }
}
