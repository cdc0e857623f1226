//! `detvm doctor`: which CPU backends work on this host, and which one detvm uses.
//!
//! Each backend boots a tiny probe guest ([`probe`]) through the normal `Vm` exit loop
//! and the answers are checked against what detvm promises: the fixed CPU model is
//! what the guest sees, TSC MSRs read virtual time, a user-mode SYSCALL reaches ring 0
//! (Linux dies at its first syscall otherwise), and kernel-mode code runs natively.
//! `kvm` is *sound* only if every check passes. On hosts whose /dev/kvm is a nested
//! PVM hypervisor (`kvm_pvm`) it is usable for tiny ring-0 guests but not sound.

pub mod probe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::backend::kvm::{self, host};
use crate::backend::BackendKind;
use crate::machine::Outcome;

const CPUID_CHECK: &str = "the guest sees detvm's CPU model (KVM_SET_CPUID2 on kvm)";
/// Kernel-mode loop iterations slower than this are emulated, not native.
const NATIVE_LOOP_NS: f64 = 100.0;
/// Host time a probe run may take (PVM emulates the probe's kernel code at ~4 µs per
/// instruction: about a second).
const PROBE_HOST_LIMIT: Duration = Duration::from_secs(60);

/// One fact about a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// What the doctor found out about one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendReport {
    pub backend: BackendKind,
    /// Compiled into this build (`emu` is behind a cargo feature).
    pub built: bool,
    /// Whether a VM can be created at all, or why not.
    pub usable: Result<(), String>,
    /// Every check run, in order; empty when the backend is unusable.
    pub checks: Vec<Check>,
    pub exits_per_sec: Option<f64>,
    /// Host nanoseconds per iteration of a kernel-mode `dec; jnz` loop.
    pub kernel_loop_ns: Option<f64>,
    /// Facts that explain the checks (the KVM module, the device).
    pub notes: Vec<String>,
    /// What the probe guest printed (for `detvm doctor --verbose`).
    pub probe_console: String,
}

impl BackendReport {
    /// Usable and every check passed.
    pub fn sound(&self) -> bool {
        self.usable.is_ok() && !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// Why the backend is not sound, one reason per item.
    pub fn problems(&self) -> Vec<String> {
        match &self.usable {
            Err(reason) => vec![reason.clone()],
            Ok(()) => self
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect(),
        }
    }
}

/// The doctor's full answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DoctorReport {
    pub kvm: BackendReport,
    pub emu: BackendReport,
    /// What `detvm` uses when no backend is named; `None` if nothing works.
    pub default_backend: Option<BackendKind>,
    pub reason: String,
}

/// Where to look: the KVM device (tests point it at missing or wrong files).
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub kvm_device: PathBuf,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            kvm_device: PathBuf::from(host::KVM_DEVICE),
        }
    }
}

/// Probes both backends on this host.
pub fn run(options: &DoctorOptions) -> DoctorReport {
    let kvm = probe_kvm(&options.kvm_device);
    let emu = probe_emu();
    let (default_backend, reason) = choose(&kvm, &emu);
    DoctorReport {
        kvm,
        emu,
        default_backend,
        reason,
    }
}

/// Whether the `kvm` backend can create a VM here (not whether it is sound).
pub fn kvm_usable() -> Result<(), String> {
    kvm::check_usable(Path::new(host::KVM_DEVICE))
}

/// The `kvm` report for /dev/kvm, probed once per process.
pub fn kvm_report() -> &'static BackendReport {
    static REPORT: OnceLock<BackendReport> = OnceLock::new();
    REPORT.get_or_init(|| probe_kvm(Path::new(host::KVM_DEVICE)))
}

/// Backends that integration tests booting Linux should cover here: `emu` whenever it
/// is built, `kvm` only where the doctor finds it sound.
pub fn sound_backends() -> Vec<BackendKind> {
    let mut backends = Vec::new();
    if cfg!(feature = "emu") {
        backends.push(BackendKind::Emu);
    }
    if kvm_report().sound() {
        backends.push(BackendKind::Kvm);
    }
    backends
}

/// Why `kvm` is skipped by tests that need a sound KVM (`None` when it is sound).
pub fn kvm_unsound_reason() -> Option<String> {
    let report = kvm_report();
    (!report.sound()).then(|| report.problems().join("; "))
}

fn choose(kvm: &BackendReport, emu: &BackendReport) -> (Option<BackendKind>, String) {
    if kvm.sound() {
        return (
            Some(BackendKind::Kvm),
            "kvm passed every probe: guest code runs natively".into(),
        );
    }
    let failed: Vec<&str> = kvm
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect();
    let why = match &kvm.usable {
        Err(reason) => format!("kvm is unusable here ({reason})"),
        Ok(()) => format!("kvm is not sound here (failed: {})", failed.join(", ")),
    };
    if emu.built {
        (Some(BackendKind::Emu), why)
    } else {
        (
            None,
            format!("{why}, and this build has no emu backend (build with the `emu` feature)"),
        )
    }
}

fn probe_kvm(device: &Path) -> BackendReport {
    let mut report = BackendReport {
        backend: BackendKind::Kvm,
        built: true,
        usable: kvm::check_usable(device),
        checks: Vec::new(),
        exits_per_sec: None,
        kernel_loop_ns: None,
        notes: vec![format!("device: {}", device.display())],
        probe_console: String::new(),
    };
    match host::vendor_module() {
        Some("kvm_pvm") => report
            .notes
            .push("module: kvm_pvm, a nested PVM hypervisor, not VMX/SVM".into()),
        Some(m) => report.notes.push(format!("module: {m}")),
        None => {}
    }
    if report.usable.is_err() || device != Path::new(host::KVM_DEVICE) {
        // Probe guests always use /dev/kvm; a custom device only gets the usability check.
        return report;
    }
    let result = probe::run(BackendKind::Kvm, PROBE_HOST_LIMIT);
    report.checks = checks(&result, true);
    report.probe_console = result.console;
    report.exits_per_sec = result.exits_per_sec;
    report.kernel_loop_ns = result.kernel_loop_ns;
    report
}

fn probe_emu() -> BackendReport {
    let ram = crate::memory::GuestRam::new(crate::layout::MIN_RAM);
    let usable = ram.map_err(|e| e.to_string()).and_then(|ram| {
        crate::backend::create_vcpus(BackendKind::Emu, &ram, &[], 1)
            .map(drop)
            .map_err(|e| match e {
                crate::vcpu::VcpuError::Unavailable { reason, .. } => reason,
                other => other.to_string(),
            })
    });
    let mut report = BackendReport {
        backend: BackendKind::Emu,
        built: cfg!(feature = "emu"),
        usable,
        checks: Vec::new(),
        exits_per_sec: None,
        kernel_loop_ns: None,
        notes: Vec::new(),
        probe_console: String::new(),
    };
    if !report.built {
        report.usable = Err("not built in (cargo feature `emu`)".into());
    }
    if report.usable.is_ok() {
        let result = probe::run(BackendKind::Emu, PROBE_HOST_LIMIT);
        report.checks = checks(&result, false);
        report.probe_console = result.console;
        // Not timed on emu: its console arrives once per slice, so the probe's line
        // timestamps say nothing about how fast exits are.
        report.exits_per_sec = None;
        report.kernel_loop_ns = result.kernel_loop_ns;
    }
    report
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
    }
}

/// Turns a probe run into checks; `hardware`: also require native kernel-mode speed.
fn checks(r: &probe::ProbeResult, hardware: bool) -> Vec<Check> {
    let mut out = Vec::new();
    let finished = r.outcome == Some(Outcome::PowerOff);
    let detail = match (&r.error, r.outcome, r.exception) {
        (Some(e), _, _) => e.clone(),
        (None, Some(Outcome::PowerOff), None) => "ran to ACPI power-off".into(),
        (None, Some(Outcome::PowerOff), Some(v)) if r.syscall_cpl.is_some() => format!(
            "ran to ACPI power-off (after exception {v:#x} past SYSCALL, at RIP {:#x})",
            r.exception_at
        ),
        (None, _, Some(v)) => format!(
            "the probe took exception {v:#x} at RIP {:#x} (error code {:#x})",
            r.exception_at, r.exception_error
        ),
        (None, other, None) => format!("the probe ended with {other:?}"),
    };
    // A fault after SYSCALL is part of the SYSCALL finding (ring 3 cannot go on).
    let faulted = r.exception.is_some() && r.syscall_cpl.is_none();
    out.push(check("probe guest runs", finished && !faulted, detail));

    out.push(cpuid_check(r));

    let tsc_ok = r.tsc.is_some_and(|t| t <= r.virtual_time.as_nanos());
    let tsc_detail = match r.tsc {
        Some(t) if tsc_ok => format!("RDMSR IA32_TSC read {t} ns of virtual time"),
        Some(t) => format!("RDMSR IA32_TSC read {t:#x}, not virtual time (the MSR filter leaks)"),
        None => "the probe never got to RDMSR".into(),
    };
    out.push(check("TSC MSR reads virtual time", tsc_ok, tsc_detail));

    let syscall_detail = match r.syscall_cpl {
        Some(0) => "SYSCALL from ring 3 arrived at LSTAR in ring 0".to_string(),
        Some(cpl) => format!(
            "SYSCALL from ring 3 arrived at LSTAR still in ring {cpl}: a Linux guest dies at \
             its first system call"
        ),
        None => "the probe never got to SYSCALL".into(),
    };
    out.push(check(
        "user-mode SYSCALL reaches ring 0",
        r.syscall_cpl == Some(0),
        syscall_detail,
    ));

    if hardware {
        let (ok, detail) = match r.kernel_loop_ns {
            Some(ns) if ns < NATIVE_LOOP_NS => (true, format!("{ns:.1} ns per loop iteration")),
            Some(ns) => (
                false,
                format!(
                    "{ns:.0} ns per loop iteration: guest kernel code is emulated, so a Linux \
                     guest boots far slower than on emu"
                ),
            ),
            None => (false, "the probe never got to the loop".into()),
        };
        out.push(check("kernel-mode code runs natively", ok, detail));
    }
    if r.forced_preemptions > 0 {
        out.push(check(
            "no forced preemption",
            false,
            format!("{} forced preemptions", r.forced_preemptions),
        ));
    }
    out
}

/// (index in [eax, ebx, ecx, edx], name, bits KVM may change at run time).
type Register = (usize, &'static str, u32);

/// Registers (index, name, bits that KVM may legitimately change at run time) the
/// probe compares per leaf: leaf 1 ECX.OSXSAVE and EDX.APIC follow CR4 and the APIC
/// base MSR, leaf 7 ECX.OSPKE follows CR4.
const COMPARED: &[(u32, &[Register])] = &[
    (
        0,
        &[(0, "EAX", 0), (1, "EBX", 0), (2, "ECX", 0), (3, "EDX", 0)],
    ),
    (1, &[(0, "EAX", 0), (2, "ECX", 1 << 27), (3, "EDX", 1 << 9)]),
    (7, &[(1, "EBX", 0), (2, "ECX", 1 << 4), (3, "EDX", 0)]),
];

/// Where what the guest saw differs from the model, e.g. "leaf 1 ECX 0x76d83203 (model
/// 0x982201)"; empty when it matches.
fn cpuid_differences(seen: &BTreeMap<u32, [u32; 4]>, mode: &str) -> Vec<String> {
    let model = kvm::model_leaves(0, 1);
    let mut out = Vec::new();
    for (leaf, regs) in COMPARED {
        let Some(got) = seen.get(leaf) else { continue };
        let want = model
            .iter()
            .find(|(l, s, _)| l == leaf && *s == 0)
            .map_or([0; 4], |e| e.2);
        for &(i, name, dynamic) in *regs {
            if (got[i] ^ want[i]) & !dynamic != 0 {
                out.push(format!(
                    "{mode} leaf {leaf:#x} {name} {:#x} (model {:#x})",
                    got[i], want[i]
                ));
            }
        }
    }
    out
}

/// The guest must see the model in kernel and user mode, and no KVM paravirt leaves.
fn cpuid_check(r: &probe::ProbeResult) -> Check {
    if !r.cpuid.contains_key(&0) {
        return check(CPUID_CHECK, false, "the probe printed no CPUID");
    }
    let mut wrong = cpuid_differences(&r.cpuid, "kernel mode:");
    wrong.extend(cpuid_differences(&r.cpuid_user, "user mode:"));
    let hv = r.cpuid.get(&0x4000_0000).copied().unwrap_or_default();
    if hv[1] == u32::from_le_bytes(*b"KVMK") {
        wrong.push("KVM's paravirt leaves are visible (KVMKVMKVM at 0x40000000)".into());
    }
    let modes = if r.cpuid_user.is_empty() {
        "kernel mode"
    } else {
        "kernel and user mode"
    };
    if wrong.len() > 4 {
        let more = wrong.len() - 3;
        wrong.truncate(3);
        wrong.push(format!("{more} more"));
    }
    if wrong.is_empty() {
        check(CPUID_CHECK, true, format!("{modes} see detvm's CPU model"))
    } else {
        check(
            CPUID_CHECK,
            false,
            format!(
                "{modes} see host bits, not detvm's model: {}",
                wrong.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests;
