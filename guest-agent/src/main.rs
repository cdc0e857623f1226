//! detvm's guest agent: PID 1 in every detvm guest. It mounts /dev, /proc and /sys,
//! opens the virtio console (/dev/hvc0) and says `Hello`, runs the command given by
//! `detvm.run=` on the kernel command line (see `detvm_protocol::run_arg`) with its
//! output forwarded line by line, reports how it ended, and powers the machine off.
//! Every failure becomes an `Error` message followed by power-off; PID 1 never exits.

mod console;
mod service;
mod sys;

use detvm_protocol::message::{AgentMessage, PROTOCOL_VERSION};
use detvm_protocol::run_arg;

use console::Console;

/// Without a console there is nowhere to report to: say it on stderr (the kernel's
/// console, if any) and power off.
fn fatal(message: &str) -> ! {
    eprintln!("detvm guest-agent: {message}");
    sys::power_off()
}

fn command() -> Result<Vec<Vec<u8>>, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {e}"))?;
    let value = run_arg::find(&cmdline)
        .ok_or_else(|| format!("no {} on the kernel command line", run_arg::PARAM))?;
    run_arg::decode(value)
}

fn main() {
    std::panic::set_hook(Box::new(|info| fatal(&format!("panic: {info}"))));
    for (fstype, target) in [("devtmpfs", "/dev"), ("proc", "/proc"), ("sysfs", "/sys")] {
        if let Err(e) = sys::mount(fstype, target) {
            fatal(&format!("cannot mount {fstype} on {target}: {e}"));
        }
    }
    let (mut console, mut host_in) = match Console::open(console::DEVICE) {
        Ok(c) => c,
        Err(e) => fatal(&format!("cannot open {}: {e}", console::DEVICE)),
    };
    let hello = AgentMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let result = console
        .send(&hello)
        .map_err(|e| format!("console: {e}"))
        .and_then(|()| command())
        .and_then(|argv| service::run(&argv, &mut console, &mut host_in));
    let last = match result {
        Ok(service::End::Exited { code, signal }) => Some(AgentMessage::Exited { code, signal }),
        Ok(service::End::PowerOffRequested) => None,
        Err(message) => Some(AgentMessage::Error { message }),
    };
    if let Some(m) = last {
        if let Err(e) = console.send(&m) {
            eprintln!("detvm guest-agent: cannot send {m:?}: {e}");
        }
    }
    sys::power_off()
}
