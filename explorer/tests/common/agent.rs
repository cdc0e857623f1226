//! Booting the guest agent with a container image: the agent initramfs, test images built
//! with the images crate (busybox + files, and the Debian etcd example), and a `Guest`
//! that runs the VM in virtual-time slices and speaks the protocol.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use detvm_images::build::{self, BuildOptions, FileSpec, Spec};
use detvm_images::{ImageConfig, Store};
use detvm_protocol::boot_params::BootParams;
use detvm_protocol::channel::AgentChannel;
use detvm_protocol::message::{AgentMessage, ExecRequest, HostMessage, Stream};
use detvm_protocol::spec::{resolve, ImageRun, Overrides, ServiceSpec};
use vmm::clock::VirtualTime;
use vmm::devices::virtio::blk::DiskBacking;
use vmm::devices::virtio::{BlockConfig, VirtioDeviceConfig};
use vmm::machine::{Outcome, Vm, VmConfig};

/// Virtual time between host turns (reading output, pushing input).
pub const STEP: VirtualTime = VirtualTime(10_000_000);
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// The agent initramfs, built (and cached) by `guest-agent/build-initramfs.sh`.
pub fn agent_initramfs() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(super::repo_root().join("guest-agent/build-initramfs.sh"))
            .env(
                "DETVM_AGENT_TARGET_DIR",
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-agent"),
            )
            .output()
            .unwrap_or_else(|e| panic!("cannot run build-initramfs.sh: {e}"));
        assert!(
            out.status.success(),
            "build-initramfs.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("a path").trim())
    })
    .clone()
}

/// An image ready to boot: its squashfs root filesystem and its run config.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub rootfs: PathBuf,
    pub config: ImageRun,
}

impl TestImage {
    /// The spec for this image with `overrides` (Docker's rules, on the host).
    pub fn spec(&self, overrides: &Overrides) -> ServiceSpec {
        resolve(&self.config, overrides).expect("a runnable spec")
    }
}

pub fn image_run(c: &ImageConfig) -> ImageRun {
    ImageRun {
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
    }
}

fn store() -> Store {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "agent-store-{}",
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default()
    ));
    Store::open(dir).expect("open the image store")
}

/// What the busybox test image holds besides busybox (path, mode, contents).
const BUSYBOX_FILES: &[(&str, u32, &str)] = &[
    (
        "/etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    (
        "/etc/group",
        0o644,
        "root:x:0:\nstaff:x:50:alice\nalice:x:1000:\nnobody:x:65534:\n",
    ),
    (
        "/usr/local/bin/show-config",
        0o755,
        "#!/bin/sh\necho \"id $(id -u) $(id -g) $(id -G)\"\necho \"pwd $(pwd)\"\n\
         echo \"env FROM_IMAGE=$FROM_IMAGE SHARED=$SHARED FROM_COMPOSE=$FROM_COMPOSE HOME=$HOME HOSTNAME=$HOSTNAME\"\n\
         echo \"args $*\"\n",
    ),
    (
        "/usr/local/bin/sdk-writer",
        0o755,
        // Like the Rust SDK: File::create (truncate), then one line in several writes.
        "#!/bin/sh\nout=\"$ANTITHESIS_SDK_LOCAL_OUTPUT\"\n\
         printf '%s\\n' '{\"antithesis_sdk\":{\"language\":{\"name\":\"sh\"},\"sdk_version\":\"0.0.0\"}}' > \"$out\"\n\
         printf '%s' '{\"antithesis_assert\":{\"id\":\"reached\",\"message\":\"ünï \\\"q\\\"\",' >> \"$out\"\n\
         printf '%s\\n' '\"condition\":true,\"details\":{\"n\":1}}}' >> \"$out\"\n\
         echo \"sdk written to $out\"\n",
    ),
    ("/usr/local/bin/not-executable", 0o644, "#!/bin/sh\necho never\n"),
];

/// The two lines `sdk-writer` writes.
pub const SDK_LINES: [&str; 2] = [
    r#"{"antithesis_sdk":{"language":{"name":"sh"},"sdk_version":"0.0.0"}}"#,
    r#"{"antithesis_assert":{"id":"reached","message":"ünï \"q\"","condition":true,"details":{"n":1}}}"#,
];

/// busybox-static plus [`BUSYBOX_FILES`], with an image config of its own: entrypoint
/// `show-config`, env `FROM_IMAGE`/`SHARED`, working dir `/srv/app`, user `alice`.
pub fn busybox_image() -> &'static TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (i, (dest, mode, text)) in BUSYBOX_FILES.iter().enumerate() {
            let src = format!("f{i}");
            std::fs::write(dir.path().join(&src), text).unwrap();
            files.push(FileSpec {
                src: src.into(),
                dest: dest.to_string(),
                mode: Some(*mode),
            });
        }
        let spec = Spec {
            name: "detvm-test/agent-busybox:1".into(),
            debootstrap: None,
            files,
            config: ImageConfig {
                entrypoint: vec!["/usr/local/bin/show-config".into()],
                env: vec!["FROM_IMAGE=image".into(), "SHARED=image".into()],
                working_dir: "/srv/app".into(),
                user: "alice".into(),
                ..ImageConfig::default()
            },
            base_dir: dir.path().to_path_buf(),
        };
        let cache = dir.path().join("cache");
        let built = build::build(&spec, &BuildOptions { cache }).expect("build the busybox image");
        let store = store();
        built.load_into(&store).expect("load the busybox image");
        let image = store.resolve(&spec.name).unwrap();
        TestImage {
            rootfs: store.rootfs(&image).expect("squashfs of the busybox image"),
            config: image_run(&image.config),
        }
    })
}

/// The Debian etcd example (images/examples/etcd/image.toml), or why it cannot be built
/// here (no cached debootstrap layer and no root, no mksquashfs, …).
pub fn etcd_image() -> Result<TestImage, String> {
    let spec_path = super::repo_root().join("images/examples/etcd/image.toml");
    let spec = Spec::from_file(&spec_path).map_err(|e| e.to_string())?;
    let cache = match std::env::var_os("DETVM_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/detvm"),
    };
    let built = build::build(&spec, &BuildOptions { cache }).map_err(|e| e.to_string())?;
    let store = store();
    built.load_into(&store).map_err(|e| e.to_string())?;
    let image = store.resolve(&spec.name).map_err(|e| e.to_string())?;
    Ok(TestImage {
        rootfs: store.rootfs(&image).map_err(|e| e.to_string())?,
        config: image_run(&image.config),
    })
}

pub struct GuestConfig {
    pub rootfs: Option<PathBuf>,
    pub boot: BootParams,
    pub net: bool,
    pub memory: u64,
    pub seed: u64,
    /// Longest virtual time one wait may take.
    pub wait_limit: VirtualTime,
    pub step: VirtualTime,
}

impl GuestConfig {
    /// `image` on /dev/vda, hostname `web`, eth0 10.0.0.2/24 via 10.0.0.1 (virtio-net).
    pub fn new(image: &TestImage) -> GuestConfig {
        GuestConfig {
            rootfs: Some(image.rootfs.clone()),
            boot: BootParams::parse("detvm.hostname=web detvm.ip=10.0.0.2/24 detvm.gw=10.0.0.1")
                .unwrap(),
            net: true,
            memory: 256 << 20,
            seed: 1,
            wait_limit: VirtualTime(60_000_000_000),
            step: STEP,
        }
    }
}

/// What an `Exec` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

pub struct Guest {
    pub vm: Vm,
    channel: AgentChannel,
    pub messages: Vec<AgentMessage>,
    /// Frames from the agent that did not decode (there should be none).
    pub bad_frames: Vec<String>,
    serial: Vec<u8>,
    cursor: usize,
    outcome: Option<Outcome>,
    config_step: VirtualTime,
    wait_limit: VirtualTime,
    pub booted_at: Instant,
    /// Wall and virtual time when the first service `Output` arrived.
    pub first_output: Option<(Duration, VirtualTime)>,
}

impl Guest {
    pub fn boot(c: &GuestConfig) -> Guest {
        let mut config = VmConfig::new(super::guest_kernel_dir().join("vmlinux"));
        config.initrd = Some(agent_initramfs());
        config.seed = c.seed;
        config.memory = c.memory;
        config.cmdline = format!("quiet {}", c.boot.to_cmdline());
        config.devices = vec![VirtioDeviceConfig::Console];
        if let Some(rootfs) = &c.rootfs {
            config.devices.push(VirtioDeviceConfig::Block(BlockConfig {
                backing: DiskBacking::File(rootfs.clone()),
                read_only: true,
                id: "rootfs".into(),
            }));
        }
        if c.net {
            config
                .devices
                .push(VirtioDeviceConfig::Net { mac: GUEST_MAC });
        }
        let booted_at = Instant::now();
        Guest {
            vm: Vm::boot(&config).expect("boot"),
            channel: AgentChannel::new(),
            messages: Vec::new(),
            bad_frames: Vec::new(),
            serial: Vec::new(),
            cursor: 0,
            outcome: None,
            config_step: c.step,
            wait_limit: c.wait_limit,
            booted_at,
            first_output: None,
        }
    }

    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&self.serial).into_owned()
    }

    pub fn send(&mut self, m: &HostMessage) {
        let bytes = AgentChannel::encode(m).expect("encodable");
        self.push_raw(&bytes);
    }

    pub fn push_raw(&mut self, bytes: &[u8]) {
        let console = self.vm.virtio().console_mut().expect("console device");
        console.push_input(bytes);
    }

    /// Runs one slice; decodes what the agent sent. `Some` once the VM has ended.
    fn step(&mut self) -> Option<Outcome> {
        if self.outcome.is_some() {
            return self.outcome;
        }
        let limit = self.vm.now().saturating_add(self.config_step.as_nanos());
        let serial = &mut self.serial;
        let outcome = self
            .vm
            .run(limit, &mut |b| serial.extend_from_slice(b))
            .expect("run");
        let bytes = self.vm.virtio().console_mut().unwrap().take_output();
        for item in self.channel.push(&bytes) {
            match item {
                Ok(m) => {
                    if matches!(m, AgentMessage::Output { .. }) && self.first_output.is_none() {
                        self.first_output = Some((self.booted_at.elapsed(), self.vm.now()));
                    }
                    self.messages.push(m);
                }
                Err(e) => self.bad_frames.push(e.to_string()),
            }
        }
        if outcome != Outcome::TimeLimit {
            self.outcome = Some(outcome);
        }
        self.outcome
    }

    fn dump(&self) -> String {
        format!(
            "messages: {:#?}\nbad frames: {:?}\nserial:\n{}",
            self.messages,
            self.bad_frames,
            self.serial()
        )
    }

    /// Runs until a message after the last one waited for matches `pred`; returns it.
    pub fn until(&mut self, what: &str, pred: impl Fn(&AgentMessage) -> bool) -> AgentMessage {
        let deadline = self.vm.now().saturating_add(self.wait_limit.as_nanos());
        loop {
            if let Some(i) = self.messages[self.cursor..].iter().position(&pred) {
                self.cursor += i + 1;
                return self.messages[self.cursor - 1].clone();
            }
            if let Some(outcome) = self.step() {
                panic!("the VM ended ({outcome:?}) before {what}\n{}", self.dump());
            }
            if self.vm.now() >= deadline {
                panic!(
                    "no {what} within {:?} of virtual time\n{}",
                    self.wait_limit,
                    self.dump()
                );
            }
        }
    }

    pub fn hello(&mut self) {
        self.until("Hello", |m| matches!(m, AgentMessage::Hello { .. }));
    }

    /// Sends `Start` and waits for `Started`; returns the pid.
    pub fn start(&mut self, spec: ServiceSpec) -> u32 {
        self.send(&HostMessage::Start(spec));
        match self.until("Started or Error", |m| {
            matches!(m, AgentMessage::Started { .. } | AgentMessage::Error { .. })
        }) {
            AgentMessage::Started { pid } => pid,
            other => panic!("the service did not start: {other:?}\n{}", self.dump()),
        }
    }

    /// The next `Error` message's text.
    pub fn error(&mut self, what: &str) -> String {
        match self.until(what, |m| matches!(m, AgentMessage::Error { .. })) {
            AgentMessage::Error { message } => message,
            _ => unreachable!(),
        }
    }

    pub fn output(&mut self, line: &str) {
        self.until(
            &format!("output {line:?}"),
            |m| matches!(m, AgentMessage::Output { line: l, .. } if l == line),
        );
    }

    /// Runs `request` and waits for its end; `Err` carries an `ExecError`.
    pub fn exec_request(&mut self, request: ExecRequest) -> Result<ExecResult, String> {
        let id = request.id;
        let from = self.cursor;
        self.send(&HostMessage::Exec(request));
        let end = self.until(&format!("the end of exec {id}"), |m| {
            matches!(m, AgentMessage::ExecExited { id: i, .. } | AgentMessage::ExecError { id: i, .. } if *i == id)
        });
        let (code, signal) = match end {
            AgentMessage::ExecExited { code, signal, .. } => (code, signal),
            AgentMessage::ExecError { message, .. } => return Err(message),
            _ => unreachable!(),
        };
        self.cursor = from; // other messages in between stay visible to later waits
        let mut r = ExecResult {
            stdout: Vec::new(),
            stderr: Vec::new(),
            code,
            signal,
        };
        for m in &self.messages[from..] {
            if let AgentMessage::ExecOutput {
                id: i,
                stream,
                line,
            } = m
            {
                if *i == id {
                    match stream {
                        Stream::Stdout => r.stdout.push(line.clone()),
                        Stream::Stderr => r.stderr.push(line.clone()),
                    }
                }
            }
        }
        Ok(r)
    }

    pub fn exec(&mut self, id: u64, argv: &[&str]) -> ExecResult {
        self.exec_request(ExecRequest {
            id,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..ExecRequest::default()
        })
        .unwrap_or_else(|e| panic!("exec {argv:?} failed: {e}"))
    }

    /// `ReadFile`: the data, or the `FileError` text.
    pub fn read_file(&mut self, id: u64, path: &str) -> Result<Vec<u8>, String> {
        self.send(&HostMessage::ReadFile {
            id,
            path: path.into(),
        });
        match self.until(&format!("file {path}"), |m| {
            matches!(m, AgentMessage::File { id: i, .. } | AgentMessage::FileError { id: i, .. } if *i == id)
        }) {
            AgentMessage::File { data, .. } => Ok(data),
            AgentMessage::FileError { message, .. } => Err(message),
            _ => unreachable!(),
        }
    }

    /// Sends `PowerOff` and runs until the VM ends.
    pub fn power_off(&mut self) -> Outcome {
        self.send(&HostMessage::PowerOff);
        let deadline = self.vm.now().saturating_add(self.wait_limit.as_nanos());
        loop {
            if let Some(outcome) = self.step() {
                return outcome;
            }
            assert!(self.vm.now() < deadline, "no power-off\n{}", self.dump());
        }
    }

    /// Asserts the agent sent nothing undecodable and powers off cleanly.
    pub fn finish(mut self) -> Vec<AgentMessage> {
        let outcome = self.power_off();
        assert_eq!(outcome, Outcome::PowerOff, "{}", self.dump());
        assert!(self.bad_frames.is_empty(), "{}", self.dump());
        self.messages
    }
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Overrides that run `script` with `/bin/sh -c` instead of the image's entrypoint.
pub fn shell(script: &str) -> Overrides {
    Overrides {
        entrypoint: Some(strings(&["/bin/sh", "-c"])),
        command: Some(vec![script.to_string()]),
        ..Overrides::default()
    }
}
