//! The Debian etcd example image (images/examples/etcd/image.toml) run by the guest agent:
//! etcd starts as user `etcd` from the image config, its log lines arrive, and exec and
//! read-file work inside it. Skips (printing why) where the image cannot be built: no
//! cached debootstrap layer and no root, or no mksquashfs.
#![cfg(feature = "emu")]

mod common;

use common::agent::*;
use detvm_protocol::boot_params::BootParams;
use detvm_protocol::message::AgentMessage;
use detvm_protocol::spec::{HostEntry, Overrides};
use vmm::clock::VirtualTime;

#[test]
fn etcd_image_runs_etcd_as_its_user_and_answers_exec() {
    let t = std::time::Instant::now();
    let image = match etcd_image() {
        Ok(image) => image,
        Err(e) => {
            eprintln!("SKIP etcd_image_runs_etcd_as_its_user_and_answers_exec: {e}");
            return;
        }
    };
    eprintln!("etcd image ready in {:?}", t.elapsed());
    let mut config = GuestConfig::new(&image);
    config.memory = 512 << 20;
    config.boot = BootParams::parse("detvm.hostname=etcd detvm.ip=10.0.0.2/24").unwrap();
    config.wait_limit = VirtualTime(300_000_000_000);
    let mut g = Guest::boot(&config);
    g.hello();
    let mut spec = image.spec(&Overrides::default());
    spec.hosts = vec![HostEntry {
        name: "etcd".into(),
        ip: "10.0.0.2".into(),
    }];
    let pid = g.start(spec);
    let first = g.until("etcd's first line", |m| {
        matches!(m, AgentMessage::Output { .. })
    });
    let (wall, virt) = g.first_output.unwrap();
    eprintln!("first line after {wall:?} wall, {virt} virtual: {first:?}");
    g.until("etcd ready", |m| {
        matches!(m, AgentMessage::Output { line, .. } if line.contains("ready to serve client requests"))
    });
    eprintln!(
        "etcd ready after {:?} wall, {} virtual",
        g.booted_at.elapsed(),
        g.vm.now()
    );

    let id = g.exec(1, &["id"]);
    assert!(
        id.stdout.len() == 1 && id.stdout[0].starts_with("uid=") && id.stdout[0].contains("(etcd)"),
        "{id:?}"
    );
    let uid = id.stdout[0]
        .trim_start_matches("uid=")
        .split('(')
        .next()
        .unwrap()
        .to_string();
    let ls = g.exec(2, &["ls", "/"]);
    for dir in ["bin", "etc", "usr", "var"] {
        assert!(ls.stdout.iter().any(|l| l == dir), "{ls:?}");
    }
    let status =
        String::from_utf8(g.read_file(3, &format!("/proc/{pid}/status")).unwrap()).unwrap();
    assert!(status.contains("Name:\tetcd"), "{status}");
    assert!(status.contains(&format!("Uid:\t{uid}\t{uid}")), "{status}");
    let cwd = g.exec(4, &["readlink", &format!("/proc/{pid}/cwd")]);
    assert_eq!(cwd.stdout, ["/var/lib/etcd"]);
    g.finish();
}
