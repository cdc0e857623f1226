//! The agent's event loop: one `poll` (no timeout; the guest's time is the VMM's) over the
//! console, SIGCHLD, the SDK files and every output pipe, handled in a fixed order each
//! round: service output, exec output (by id), SDK lines, reaping, then host messages.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{ChildStderr, ChildStdout};

use detvm_protocol::boot_params::check_hostname;
use detvm_protocol::frame::Decoder;
use detvm_protocol::message::{
    bounded_line, decode_host, AgentMessage, ExecRequest, HostMessage, Stream, MAX_LINE,
};
use detvm_protocol::spec::{env_key, ServiceSpec, SpecError, DEFAULT_PATH};

use crate::console::Console;
use crate::lines::Lines;
use crate::process::{self, Launch, MountNamespace};
use crate::rootfs::{self, ROOT};
use crate::sdk::{self, SdkWatch};
use crate::sys::{self, Ended};
use crate::user;
use crate::volumes;

const SERVICE_SDK: &str = "service.jsonl";

/// A running service or exec'd command.
struct Proc {
    pid: libc::pid_t,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out: Lines,
    err: Lines,
    status: Option<Ended>,
    sdk_file: String,
}

impl Proc {
    fn new(started: process::Started, sdk_file: String) -> Proc {
        Proc {
            pid: started.pid,
            stdout: Some(started.stdout),
            stderr: Some(started.stderr),
            out: Lines::new(MAX_LINE),
            err: Lines::new(MAX_LINE),
            status: None,
            sdk_file,
        }
    }

    fn done(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none() && self.status.is_some()
    }

    /// Reads what one pipe has; returns the complete lines (and the tail at EOF).
    fn read(&mut self, stream: Stream) -> Vec<(Stream, String)> {
        let (pipe, lines): (&mut dyn ReadPipe, &mut Lines) = match stream {
            Stream::Stdout => (&mut self.stdout, &mut self.out),
            Stream::Stderr => (&mut self.stderr, &mut self.err),
        };
        let mut chunk = [0u8; 4096];
        let got = match pipe.read_some(&mut chunk) {
            Some(0) | None => {
                pipe.close();
                lines.finish().into_iter().collect()
            }
            Some(n) => lines.feed(&chunk[..n]),
        };
        got.into_iter()
            .map(|l| (stream, bounded_line(&l.bytes)))
            .collect()
    }

    fn fds(&self) -> [i32; 2] {
        [
            self.stdout.as_ref().map_or(-1, |p| p.as_raw_fd()),
            self.stderr.as_ref().map_or(-1, |p| p.as_raw_fd()),
        ]
    }
}

trait ReadPipe {
    fn read_some(&mut self, buf: &mut [u8]) -> Option<usize>;
    fn close(&mut self);
}

impl<T: Read> ReadPipe for Option<T> {
    fn read_some(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.as_mut()?.read(buf).ok()
    }
    fn close(&mut self) {
        *self = None;
    }
}

fn readable(revents: libc::c_short) -> bool {
    revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

pub struct Agent {
    console: Console,
    host_in: File,
    decoder: Decoder,
    sigchld: OwnedFd,
    sdk: Option<SdkWatch>,
    /// Why there is no container root (then nothing can run).
    root_error: Option<String>,
    hostname: String,
    spec: Option<ServiceSpec>,
    service: Option<Proc>,
    restart_pending: bool,
    execs: BTreeMap<u64, Proc>,
    /// Container paths where volumes and tmpfs are mounted already.
    mounted: Vec<String>,
}

type Sent = io::Result<()>;

impl Agent {
    pub fn new(
        console: Console,
        host_in: File,
        sigchld: OwnedFd,
        sdk: Option<SdkWatch>,
        root_error: Option<String>,
        hostname: String,
    ) -> Agent {
        Agent {
            console,
            host_in,
            decoder: Decoder::new(),
            sigchld,
            sdk,
            root_error,
            hostname,
            spec: None,
            service: None,
            restart_pending: false,
            execs: BTreeMap::new(),
            mounted: Vec::new(),
        }
    }

    fn send(&mut self, m: AgentMessage) -> Sent {
        self.console.send(&m)
    }

    fn error(&mut self, message: String) -> Sent {
        self.send(AgentMessage::Error { message })
    }

    /// Runs until the host asks for power-off (Ok) or the console fails (Err).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            let mut fds = vec![
                self.host_in.as_raw_fd(),
                self.sigchld.as_raw_fd(),
                self.sdk.as_ref().map_or(-1, |s| s.fd()),
            ];
            fds.extend(self.service.as_ref().map_or([-1, -1], Proc::fds));
            let ids: Vec<u64> = self.execs.keys().copied().collect();
            for id in &ids {
                fds.extend(self.execs[id].fds());
            }
            let ready = sys::poll(&fds)?;
            if let Some(service) = &mut self.service {
                let mut lines = Vec::new();
                for (i, stream) in [(3, Stream::Stdout), (4, Stream::Stderr)] {
                    if readable(ready[i]) {
                        lines.extend(service.read(stream));
                    }
                }
                for (stream, line) in lines {
                    self.send(AgentMessage::Output { stream, line })?;
                }
            }
            for (k, id) in ids.iter().enumerate() {
                let mut lines = Vec::new();
                if let Some(p) = self.execs.get_mut(id) {
                    for (i, stream) in [(5 + 2 * k, Stream::Stdout), (6 + 2 * k, Stream::Stderr)] {
                        if readable(ready[i]) {
                            lines.extend(p.read(stream));
                        }
                    }
                }
                for (stream, line) in lines {
                    self.send(AgentMessage::ExecOutput {
                        id: *id,
                        stream,
                        line,
                    })?;
                }
            }
            if readable(ready[2]) {
                let items = self.sdk.as_mut().map(SdkWatch::pump).unwrap_or_default();
                for (file, item) in items {
                    let exec = self.exec_of_sdk_file(&file);
                    self.forward_sdk(exec, item)?;
                }
            }
            if readable(ready[1]) {
                sys::drain_fd(self.sigchld.as_raw_fd());
                self.reap();
            }
            self.finish_ended()?;
            if readable(ready[0]) && self.host_input()? {
                return Ok(());
            }
        }
    }

    fn exec_of_sdk_file(&self, file: &str) -> Option<u64> {
        self.execs
            .iter()
            .find(|(_, p)| p.sdk_file == file)
            .map(|(id, _)| *id)
    }

    fn forward_sdk(&mut self, exec: Option<u64>, item: sdk::SdkItem) -> Sent {
        match item {
            Ok(line) => self.send(AgentMessage::Sdk { exec, line }),
            Err(message) => self.error(message),
        }
    }

    fn reap(&mut self) {
        while let Some(ended) = sys::reap_one() {
            let procs = self.service.iter_mut().chain(self.execs.values_mut());
            for p in procs {
                if p.pid == ended.pid {
                    p.status = Some(ended);
                }
            }
            // Anything else was an orphan: reaped, nothing to report.
        }
    }

    /// Reports the service and exec'd commands that have ended (pipes closed, reaped),
    /// their last SDK lines first.
    fn finish_ended(&mut self) -> Sent {
        if self.service.as_ref().is_some_and(Proc::done) {
            let Some(service) = self.service.take() else {
                return Ok(());
            };
            let items = self
                .sdk
                .as_mut()
                .map(|s| s.finish(&service.sdk_file))
                .unwrap_or_default();
            for item in items {
                self.forward_sdk(None, item)?;
            }
            let status = service.status.unwrap_or(Ended {
                pid: 0,
                code: None,
                signal: None,
            });
            self.send(AgentMessage::Exited {
                code: status.code,
                signal: status.signal,
            })?;
            if std::mem::take(&mut self.restart_pending) {
                self.launch_service()?;
            }
        }
        let done: Vec<u64> = self
            .execs
            .iter()
            .filter(|(_, p)| p.done())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let Some(p) = self.execs.remove(&id) else {
                continue;
            };
            let items = self
                .sdk
                .as_mut()
                .map(|s| s.finish(&p.sdk_file))
                .unwrap_or_default();
            for item in items {
                self.forward_sdk(Some(id), item)?;
            }
            let status = p.status.unwrap_or(Ended {
                pid: 0,
                code: None,
                signal: None,
            });
            self.send(AgentMessage::ExecExited {
                id,
                code: status.code,
                signal: status.signal,
            })?;
        }
        Ok(())
    }

    /// Reads and handles host messages; true when the host asked for power-off.
    fn host_input(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        let n = self.host_in.read(&mut chunk)?;
        self.decoder.push(&chunk[..n]);
        while let Some(frame) = self.decoder.next_frame() {
            let message = frame
                .map_err(|e| e.to_string())
                .and_then(|p| decode_host(&p).map_err(|e| e.to_string()));
            match message {
                Ok(HostMessage::PowerOff) => {
                    if let Some(s) = &self.service {
                        sys::kill_group(s.pid);
                    }
                    for p in self.execs.values() {
                        sys::kill_group(p.pid);
                    }
                    return Ok(true);
                }
                Ok(HostMessage::Start(spec)) => self.start(spec)?,
                Ok(HostMessage::RestartService) => self.restart()?,
                Ok(HostMessage::Exec(req)) => self.exec(req)?,
                Ok(HostMessage::ReadFile { id, path }) => self.read_file(id, &path)?,
                Ok(HostMessage::StepClock { delta_ns }) => {
                    if let Err(e) = sys::step_realtime(delta_ns) {
                        self.error(format!("cannot step the clock: {e}"))?;
                    }
                }
                Err(e) => self.error(format!("bad host message, ignored: {e}"))?,
            }
        }
        Ok(false)
    }

    /// Runs `spec` unless a service is running (a failed or ended one may be replaced).
    fn start(&mut self, spec: ServiceSpec) -> Sent {
        if self.service.is_some() {
            return self.error(
                "Start: the service is running; send RestartService to run it again".into(),
            );
        }
        self.spec = Some(spec);
        self.launch_service()
    }

    fn restart(&mut self) -> Sent {
        if self.spec.is_none() {
            return self
                .error("RestartService before Start: there is no service to restart".into());
        }
        match &self.service {
            Some(s) => {
                self.restart_pending = true;
                sys::kill_group(s.pid);
                Ok(())
            }
            None => self.launch_service(),
        }
    }

    fn launch_service(&mut self) -> Sent {
        let Some(spec) = self.spec.clone() else {
            return Ok(());
        };
        match self.spawn_service(&spec) {
            Ok(p) => {
                let pid = p.pid as u32;
                self.service = Some(p);
                self.send(AgentMessage::Started { pid })
            }
            Err(e) => self.error(format!("the service did not start: {e}")),
        }
    }

    fn spawn_service(&mut self, spec: &ServiceSpec) -> Result<Proc, String> {
        if let Some(e) = &self.root_error {
            return Err(e.clone());
        }
        if spec.argv.is_empty() {
            return Err(SpecError::NoCommand.to_string());
        }
        check_env(&spec.env)?;
        if !spec.hostname.is_empty() {
            check_hostname(&spec.hostname)?;
            sys::sethostname(&spec.hostname)
                .map_err(|e| format!("cannot set the hostname: {e}"))?;
            self.hostname = spec.hostname.clone();
        }
        rootfs::write_etc(spec, &self.hostname)?;
        volumes::mount_all(&spec.mounts, &mut self.mounted)?;
        self.spawn_in_container(
            &spec.argv,
            spec.env.clone(),
            &spec.working_dir,
            &spec.user,
            SERVICE_SDK,
            MountNamespace::New,
        )
    }

    fn spawn_in_container(
        &mut self,
        argv: &[String],
        mut env: Vec<String>,
        working_dir: &str,
        user: &str,
        sdk_file: &str,
        mount_namespace: MountNamespace,
    ) -> Result<Proc, String> {
        if !working_dir.is_empty() && !working_dir.starts_with('/') {
            return Err(SpecError::RelativeWorkdir(working_dir.into()).to_string());
        }
        let root = File::open(ROOT).map_err(|e| format!("{ROOT}: {e}"))?;
        let read = |path| {
            crate::sys::open_in_root(&root, path)
                .and_then(|mut f| {
                    let mut s = String::new();
                    f.read_to_string(&mut s).map(|_| s)
                })
                .unwrap_or_default()
        };
        let identity = user::resolve(user, &read("/etc/passwd"), &read("/etc/group"))?;
        let mut defaults = vec![
            format!("PATH={DEFAULT_PATH}"),
            format!("HOSTNAME={}", self.hostname),
            format!("HOME={}", identity.home),
        ];
        if let Some(sdk) = &mut self.sdk {
            let path = sdk
                .add(sdk_file)
                .map_err(|e| format!("cannot create the SDK output file: {e}"))?;
            defaults.push(format!("{}={path}", sdk::ENV));
        }
        for d in defaults {
            if !env.iter().any(|e| env_key(e) == env_key(&d)) {
                env.push(d);
            }
        }
        let started = process::spawn(&Launch {
            argv,
            env: &env,
            working_dir,
            identity: &identity,
            mount_namespace,
        });
        match started {
            Ok(s) => Ok(Proc::new(s, sdk_file.to_string())),
            Err(e) => {
                if let Some(sdk) = &mut self.sdk {
                    sdk.finish(sdk_file);
                }
                Err(e)
            }
        }
    }

    fn exec(&mut self, req: ExecRequest) -> Sent {
        let id = req.id;
        let result = if self.execs.contains_key(&id) {
            Err(format!("exec id {id} is still running: use a new id"))
        } else {
            self.spawn_exec(&req)
        };
        match result {
            Ok(p) => {
                self.execs.insert(id, p);
                Ok(())
            }
            Err(message) => self.send(AgentMessage::ExecError { id, message }),
        }
    }

    fn spawn_exec(&mut self, req: &ExecRequest) -> Result<Proc, String> {
        if let Some(e) = &self.root_error {
            return Err(e.clone());
        }
        if req.argv.is_empty() {
            return Err("exec needs a command: argv is empty".into());
        }
        check_env(&req.env)?;
        let spec = self.spec.clone().unwrap_or_default();
        let mut env = spec.env.clone();
        for entry in &req.env {
            match env.iter_mut().find(|e| env_key(e) == env_key(entry)) {
                Some(existing) => existing.clone_from(entry),
                None => env.push(entry.clone()),
            }
        }
        let pick = |a: &str, b: &str| if a.is_empty() { b } else { a }.to_string();
        let working_dir = pick(&req.working_dir, &spec.working_dir);
        let user = pick(&req.user, &spec.user);
        let sdk_file = format!("exec-{}.jsonl", req.id);
        // Join the running service's mount namespace, as `docker exec` does.
        let service_ns = self
            .service
            .as_ref()
            .and_then(|s| File::open(format!("/proc/{}/ns/mnt", s.pid)).ok());
        let ns = match &service_ns {
            Some(f) => MountNamespace::Join(f.as_raw_fd()),
            None => MountNamespace::Agent,
        };
        self.spawn_in_container(&req.argv, env, &working_dir, &user, &sdk_file, ns)
    }

    fn read_file(&mut self, id: u64, path: &str) -> Sent {
        let result = match &self.root_error {
            Some(e) => Err(e.clone()),
            None => File::open(ROOT)
                .map_err(|e| format!("{ROOT}: {e}"))
                .and_then(|root| crate::files::read(&root, path)),
        };
        match result {
            Ok(data) => self.send(AgentMessage::File { id, data }),
            Err(message) => self.send(AgentMessage::FileError { id, message }),
        }
    }
}

fn check_env(env: &[String]) -> Result<(), String> {
    match env.iter().find(|e| env_key(e).is_none()) {
        Some(bad) => Err(SpecError::BadEnv(bad.clone()).to_string()),
        None => Ok(()),
    }
}
