//! detvm's guest agent: PID 1 in every detvm guest. It mounts its file systems, says
//! `Hello` on the virtio console (/dev/hvc0), sets the hostname and network from the
//! kernel command line (`detvm_protocol::boot_params`), mounts the container root (the
//! image's squashfs on /dev/vda under a tmpfs overlay), then serves the host: `Start`
//! runs the service, `Exec` and `ReadFile` reach into the container, `PowerOff` ends.
//! Failures become `Error` messages and the agent stays up; PID 1 never exits.

mod agent;
mod console;
mod files;
mod lines;
mod net;
mod process;
mod rootfs;
mod sdk;
mod sys;
mod user;
mod volumes;

use detvm_protocol::boot_params::BootParams;
use detvm_protocol::message::{AgentMessage, PROTOCOL_VERSION};

use console::Console;

/// Without a console there is nowhere to report to: say it on stderr (the kernel's
/// console, if any) and power off.
fn fatal(message: &str) -> ! {
    eprintln!("detvm guest-agent: {message}");
    sys::power_off()
}

/// Hostname and network from the kernel command line; returns the hostname.
fn configure_from_cmdline(errors: &mut Vec<String>) -> String {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = BootParams::parse(&cmdline).unwrap_or_else(|e| {
        errors.push(format!("kernel command line: {e}"));
        BootParams::default()
    });
    let hostname = params.hostname.clone().unwrap_or_else(|| "detvm".into());
    if let Err(e) = sys::sethostname(&hostname) {
        errors.push(format!("cannot set the hostname {hostname:?}: {e}"));
    }
    if let Err(e) = net::configure(&params) {
        errors.push(format!(
            "network setup: {e} (is a virtio-net device attached?)"
        ));
    }
    hostname
}

fn main() {
    std::panic::set_hook(Box::new(|info| fatal(&format!("panic: {info}"))));
    let mut errors = Vec::new();
    if let Err(e) = sys::mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755") {
        fatal(&format!("{e}"));
    }
    sys::ensure_std_fds();
    if let Err(e) = rootfs::mount_agent_fs() {
        errors.push(format!("agent file systems: {e}"));
    }
    let (console, host_in) = match Console::open(console::DEVICE) {
        Ok(c) => c,
        Err(e) => fatal(&format!("cannot open {}: {e}", console::DEVICE)),
    };
    let mut console = console;
    let hello = AgentMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    if let Err(e) = console.send(&hello) {
        fatal(&format!("console: {e}"));
    }
    let sigchld = match sys::sigchld_fd() {
        Ok(fd) => fd,
        Err(e) => fatal(&format!("signalfd: {e}")),
    };
    let hostname = configure_from_cmdline(&mut errors);
    let root_error = rootfs::mount_container_root().err();
    errors.extend(root_error.clone());
    let sdk = if root_error.is_none() {
        sdk::SdkWatch::new()
            .map_err(|e| errors.push(format!("cannot watch the SDK output folder: {e}")))
            .ok()
    } else {
        None
    };
    for message in errors {
        if let Err(e) = console.send(&AgentMessage::Error { message }) {
            fatal(&format!("console: {e}"));
        }
    }
    let mut agent = agent::Agent::new(console, host_in, sigchld, sdk, root_error, hostname);
    if let Err(e) = agent.run() {
        eprintln!("detvm guest-agent: console: {e}");
    }
    sys::power_off()
}
