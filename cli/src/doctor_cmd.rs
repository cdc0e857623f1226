//! `detvm doctor`: print which CPU backends work on this host and which one detvm uses.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use vmm::doctor::{BackendReport, DoctorOptions, DoctorReport};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The KVM device to check (only the device check runs on another path).
    #[arg(long, default_value = vmm::backend::kvm::host::KVM_DEVICE)]
    pub kvm_device: PathBuf,
    /// Also print what each probe guest wrote on its console.
    #[arg(long)]
    pub verbose: bool,
}

/// Exit code 0 when some backend can run guests here, 1 when none can.
pub fn run(args: DoctorArgs) -> ExitCode {
    let report = vmm::doctor::run(&DoctorOptions {
        kvm_device: args.kvm_device,
    });
    print!("{}", render(&report, args.verbose));
    match report.default_backend {
        Some(_) => ExitCode::SUCCESS,
        None => ExitCode::from(1),
    }
}

pub fn render(report: &DoctorReport, verbose: bool) -> String {
    let mut out = String::new();
    for backend in [&report.kvm, &report.emu] {
        render_backend(&mut out, backend, verbose);
    }
    let default = match report.default_backend {
        Some(kind) => format!("{kind:?}").to_lowercase(),
        None => "none".into(),
    };
    out.push_str(&format!("default backend: {default}: {}\n", report.reason));
    out
}

fn render_backend(out: &mut String, b: &BackendReport, verbose: bool) {
    let name = format!("{:?}", b.backend).to_lowercase();
    let verdict = match (&b.usable, b.sound()) {
        (Err(_), _) => "unusable",
        (Ok(()), true) => "sound",
        (Ok(()), false) => "usable for tiny guests, not sound",
    };
    out.push_str(&format!("{name}: {verdict}\n"));
    for note in &b.notes {
        out.push_str(&format!("  {note}\n"));
    }
    if let Err(reason) = &b.usable {
        out.push_str(&format!("  [FAIL] cannot create a VM: {reason}\n"));
    }
    for c in &b.checks {
        let mark = if c.ok { "[ok]  " } else { "[FAIL]" };
        out.push_str(&format!("  {mark} {}: {}\n", c.name, c.detail));
    }
    if let Some(rate) = b.exits_per_sec {
        out.push_str(&format!("  exits per second: {rate:.0}\n"));
    }
    if verbose && !b.probe_console.is_empty() {
        out.push_str("  probe console:\n");
        for line in b.probe_console.lines() {
            out.push_str(&format!("    | {line}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::backend::BackendKind;
    use vmm::doctor::Check;

    fn backend(kind: BackendKind, usable: Result<(), String>, checks: Vec<Check>) -> BackendReport {
        BackendReport {
            backend: kind,
            built: true,
            usable,
            checks,
            exits_per_sec: Some(1234.4),
            kernel_loop_ns: None,
            notes: vec!["module: kvm_pvm".into()],
            probe_console: "probe: start\n".into(),
        }
    }

    #[test]
    fn renders_checks_and_the_default() {
        let report = DoctorReport {
            kvm: backend(
                BackendKind::Kvm,
                Ok(()),
                vec![Check {
                    name: "user-mode SYSCALL reaches ring 0",
                    ok: false,
                    detail: "ring 3".into(),
                }],
            ),
            emu: backend(BackendKind::Emu, Err("not built in".into()), vec![]),
            default_backend: Some(BackendKind::Emu),
            reason: "kvm is not sound here".into(),
        };
        let text = render(&report, true);
        assert!(
            text.contains("kvm: usable for tiny guests, not sound"),
            "{text}"
        );
        assert!(text.contains("[FAIL] user-mode SYSCALL reaches ring 0: ring 3"));
        assert!(text.contains("exits per second: 1234"));
        assert!(text.contains("    | probe: start"));
        assert!(text.contains("emu: unusable"));
        assert!(text.ends_with("default backend: emu: kvm is not sound here\n"));
    }
}
