//! Turning a checked compose file into a World: images resolved to root filesystems,
//! one VM per service with the agent as PID 1, addresses, and the run spec each agent
//! gets once it says hello.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use detvm_images::Store;
use detvm_protocol::boot_params::BootParams;
use detvm_protocol::spec::{self, HostEntry, ImageRun, Mount, MountSource, Overrides, ServiceSpec};
use vmm::backend::BackendKind;
use vmm::devices::virtio::blk::DiskBacking;
use vmm::devices::virtio::{BlockConfig, VirtioDeviceConfig};
use vmm::machine::VmConfig;
use vmm::world::{NodeConfig, WorldConfig};

use super::RunError;
use crate::compose::{Compose, Service};
use crate::observer::Observer;

/// What the runner needs per service besides its VM.
#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub service: Service,
    pub spec: ServiceSpec,
}

/// Addresses on detvm's one flat network: 10.0.0.2, 10.0.0.3, … in service order.
pub fn service_ip(index: usize) -> Ipv4Addr {
    let n = index as u32 + 2;
    Ipv4Addr::new(10, 0, (n >> 8) as u8, (n & 0xff) as u8)
}

/// Runs a repository script that prints a path on its last stdout line.
fn script_path(repo: &Path, script: &str, what: &str) -> Result<PathBuf, RunError> {
    let out = Command::new(repo.join(script))
        .output()
        .map_err(|e| RunError::Setup(format!("cannot run {script} ({what}): {e}")))?;
    if !out.status.success() {
        return Err(RunError::Setup(format!(
            "{script} ({what}) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").trim();
    Ok(PathBuf::from(last))
}

/// The guest kernel (vmlinux) and the agent initramfs, built on first use. The two
/// scripts run at once: each hashes its sources to find its build (a third of a
/// second or more on a loaded host), which every run and cold moment waits for.
pub fn guest_files(repo: &Path) -> Result<(PathBuf, PathBuf), RunError> {
    let (kernel, initrd) = std::thread::scope(|s| {
        let kernel = s.spawn(|| script_path(repo, "images/kernel/build.sh", "the guest kernel"));
        let initrd = script_path(repo, "guest-agent/build-initramfs.sh", "the guest agent");
        (kernel.join().expect("the kernel script's thread"), initrd)
    });
    Ok((kernel?.join("vmlinux"), initrd?))
}

/// Every service's image from the store, running `x-detvm.prepare` once if one is missing.
pub fn resolve_images(
    compose: &Compose,
    store: &Store,
    home: &Path,
    observer: &mut dyn Observer,
) -> Result<Vec<(PathBuf, ImageRun)>, RunError> {
    let missing = |store: &Store| {
        compose
            .services
            .iter()
            .filter(|s| store.resolve(&s.image).is_err())
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    if !missing(store).is_empty() {
        if let Some(script) = &compose.settings.prepare {
            observer.info(&format!(
                "images missing ({}); running {}",
                missing(store).join(", "),
                script.display()
            ));
            // The script loads into this run's store with this very detvm.
            let home = std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf());
            let mut command = Command::new(script);
            command.env("DETVM_HOME", home);
            if let Ok(exe) = std::env::current_exe() {
                command.env("DETVM", exe);
            }
            let status = command
                .status()
                .map_err(|e| RunError::Setup(format!("cannot run {}: {e}", script.display())))?;
            if !status.success() {
                return Err(RunError::Setup(format!(
                    "{} (x-detvm.prepare) failed with {status}",
                    script.display()
                )));
            }
        }
    }
    let mut out = Vec::new();
    for s in &compose.services {
        let image = store.resolve(&s.image).map_err(|e| {
            RunError::Input(format!(
                "{}:{}: services.{}.image: `{}` is not in the image store ({e}); load it with `detvm image load FILE` or build it with `detvm image build SPEC`",
                compose.path.display(),
                s.line,
                s.name,
                s.image
            ))
        })?;
        let rootfs = store
            .rootfs(&image)
            .map_err(|e| RunError::Setup(format!("root filesystem of `{}`: {e}", s.image)))?;
        let c = &image.config;
        out.push((
            rootfs,
            ImageRun {
                entrypoint: c.entrypoint.clone(),
                cmd: c.cmd.clone(),
                env: c.env.clone(),
                working_dir: c.working_dir.clone(),
                user: c.user.clone(),
            },
        ));
    }
    Ok(out)
}

/// A named volume used by two services: each VM has its own disks, so the services
/// would not see each other's writes as they would under Docker. Refused, not faked.
pub fn refuse_unsupported(compose: &Compose) -> Result<(), RunError> {
    let mut users: Vec<(&str, &str)> = Vec::new();
    for s in &compose.services {
        for v in &s.volumes {
            if let Some((_, other)) = users.iter().find(|(name, _)| *name == v.name) {
                return Err(RunError::Input(format!(
                    "{}:{}: services.{}.volumes: volume `{}` is also used by `{other}`; in detvm each service's volume is its own disk, so shared volumes are not supported",
                    compose.path.display(),
                    s.line,
                    s.name,
                    v.name
                )));
            }
            users.push((&v.name, &s.name));
        }
    }
    Ok(())
}

/// A fresh ext4 file system in `path`, byte-identical on every run: fixed UUID and
/// hash seed (from the service and volume names) and a fixed clock for mke2fs.
fn format_volume(path: &Path, size: u64, service: &str, volume: &str) -> Result<(), RunError> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let fail = |what: String| RunError::Setup(format!("volume `{volume}` of `{service}`: {what}"));
    let file = std::fs::File::create(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    file.set_len(size)
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let mut h = DefaultHasher::new();
    (service, volume).hash(&mut h);
    let x = h.finish();
    let uuid = |tag: u64| {
        let v = x ^ tag;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            v >> 32,
            (v >> 16) & 0xffff,
            v & 0xfff,
            tag & 0xfff,
            v & 0xffff_ffff_ffff
        )
    };
    let out = Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-U", &uuid(1)])
        .arg("-E")
        .arg(format!(
            "hash_seed={},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
            uuid(2)
        ))
        .arg(path)
        .output()
        .map_err(|e| fail(format!("cannot run mke2fs (Debian package e2fsprogs): {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "mke2fs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

#[derive(Clone)]
pub struct WorldPlan {
    pub config: WorldConfig,
    pub services: Vec<ServicePlan>,
}

#[allow(clippy::too_many_arguments)]
pub fn world_config(
    compose: &Compose,
    images: Vec<(PathBuf, ImageRun)>,
    kernel: &Path,
    initrd: &Path,
    backend: BackendKind,
    seed: u64,
    epoch: i64,
    faults: vmm::world::FaultPlan,
    volumes_dir: &Path,
) -> Result<WorldPlan, RunError> {
    let hosts: Vec<HostEntry> = compose
        .services
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let ip = service_ip(i).to_string();
            let mut names = vec![s.name.clone()];
            if s.hostname != s.name {
                names.push(s.hostname.clone());
            }
            names.into_iter().map(move |name| HostEntry {
                name,
                ip: ip.clone(),
            })
        })
        .collect();
    let mut nodes = Vec::new();
    let mut services = Vec::new();
    for (i, (s, (rootfs, image))) in compose.services.iter().zip(images).enumerate() {
        let overrides = Overrides {
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            environment: s
                .environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            working_dir: s.working_dir.clone(),
            user: s.user.clone(),
        };
        let mut spec = spec::resolve(&image, &overrides).map_err(|e| {
            RunError::Input(format!(
                "{}:{}: services.{}: {e}",
                compose.path.display(),
                s.line,
                s.name
            ))
        })?;
        spec.hostname = s.hostname.clone();
        spec.hosts = hosts.clone();
        let mut disks = Vec::new();
        for (index, volume) in s.volumes.iter().enumerate() {
            let serial = format!("detvm-vol{index}");
            let path = volumes_dir.join(format!("{}-{}.ext4", s.name, volume.name));
            format_volume(&path, s.volume_size, &s.name, &volume.name)?;
            disks.push(VirtioDeviceConfig::Block(BlockConfig {
                backing: DiskBacking::File(path),
                read_only: volume.read_only,
                id: serial.clone(),
            }));
            spec.mounts.push(Mount {
                source: MountSource::Disk { serial },
                target: volume.target.clone(),
                read_only: volume.read_only,
            });
        }
        for target in &s.tmpfs {
            spec.mounts.push(Mount {
                source: MountSource::Tmpfs,
                target: target.clone(),
                read_only: false,
            });
        }
        let ip = service_ip(i);
        let boot = BootParams {
            hostname: Some(s.hostname.clone()),
            ip: Some((ip, 24)),
            gateway: None,
        };
        let mut vm = VmConfig::new(kernel.to_path_buf());
        vm.initrd = Some(initrd.to_path_buf());
        vm.cmdline = format!("quiet {}", boot.to_cmdline());
        vm.memory = s.memory;
        vm.vcpus = s.vcpus;
        vm.backend = backend;
        vm.epoch_unix_secs = epoch;
        vm.seed = seed;
        vm.devices = vec![
            VirtioDeviceConfig::Console,
            VirtioDeviceConfig::Block(BlockConfig {
                backing: DiskBacking::File(rootfs),
                read_only: true,
                id: "rootfs".into(),
            }),
        ];
        vm.devices.extend(disks);
        nodes.push(NodeConfig {
            name: s.name.clone(),
            vm,
        });
        services.push(ServicePlan {
            service: s.clone(),
            spec,
        });
    }
    Ok(WorldPlan {
        config: WorldConfig {
            seed,
            nodes,
            network: Default::default(),
            faults,
        },
        services,
    })
}
