use super::*;

fn options(device: &str) -> DoctorOptions {
    DoctorOptions {
        kvm_device: PathBuf::from(device),
    }
}

#[test]
fn no_kvm_device_falls_back_to_emu_with_the_reason() {
    let report = run(&options("/nonexistent/kvm"));
    let reason = report.kvm.usable.clone().unwrap_err();
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(!report.kvm.sound());
    assert!(
        report.reason.contains("does not exist"),
        "{}",
        report.reason
    );
    let expected = cfg!(feature = "emu").then_some(BackendKind::Emu);
    assert_eq!(report.default_backend, expected);
}

#[test]
fn a_device_that_is_not_kvm_is_reported() {
    let report = run(&options("/dev/null"));
    let reason = report.kvm.usable.unwrap_err();
    assert!(reason.contains("not a KVM device"), "{reason}");
}

#[test]
fn this_host_is_probed() {
    let report = run(&DoctorOptions::default());
    eprintln!(
        "{report:#?}\nkvm probe console:\n{}",
        report.kvm.probe_console
    );
    if let Err(reason) = &report.kvm.usable {
        eprintln!("kvm unusable here: {reason}");
        return;
    }
    assert!(
        report.kvm.checks[0].ok,
        "the probe guest must run: {report:#?}"
    );
    assert!(report.kvm.exits_per_sec.is_some_and(|r| r > 0.0));
    if host::vendor_module() == Some("kvm_pvm") {
        // DESIGN.md's measured PVM facts.
        assert!(!report.kvm.sound());
        let problems = report.kvm.problems().join("\n");
        assert!(problems.contains("ring 3"), "{problems}");
        assert!(problems.contains("KVM_SET_CPUID2"), "{problems}");
        assert_ne!(report.default_backend, Some(BackendKind::Kvm));
    }
    assert_eq!(
        report.default_backend == Some(BackendKind::Kvm),
        report.kvm.sound()
    );
}
