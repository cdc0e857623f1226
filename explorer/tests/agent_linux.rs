//! The guest agent as PID 1 of the real guest kernel: it says Hello on the virtio
//! console, runs the `detvm.run=` command, forwards its output line by line, reports
//! how it ended, and powers off; failures become an Error message, and the host can
//! ask it to power off.
#![cfg(feature = "emu")]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use detvm_protocol::frame::Decoder;
use detvm_protocol::message::{
    decode_agent, encode_host, AgentMessage, HostMessage, Stream, PROTOCOL_VERSION,
};
use detvm_protocol::run_arg;
use vmm::clock::VirtualTime;
use vmm::devices::virtio::VirtioDeviceConfig;
use vmm::machine::{Outcome, Vm, VmConfig};

const MAX_VIRTUAL: VirtualTime = VirtualTime(120_000_000_000);
const STEP: VirtualTime = VirtualTime(10_000_000);

/// The agent initramfs, built (and cached) by `guest-agent/build-initramfs.sh`.
fn agent_initramfs() -> PathBuf {
    let out = Command::new(common::repo_root().join("guest-agent/build-initramfs.sh"))
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
}

struct Run {
    outcome: Outcome,
    messages: Vec<AgentMessage>,
    serial: String,
    wall: Duration,
}

/// Boots the agent with `argv` as `detvm.run=`; `answer` sees every message as it
/// arrives and may return a host message to send back.
fn run_agent(argv: &[&str], mut answer: impl FnMut(&AgentMessage) -> Option<HostMessage>) -> Run {
    let mut config = VmConfig::new(common::guest_kernel_dir().join("vmlinux"));
    config.initrd = Some(agent_initramfs());
    config.seed = 1;
    config.cmdline = format!("quiet {}{}", run_arg::PARAM, run_arg::encode(argv));
    config.devices = vec![VirtioDeviceConfig::Console];
    let start = Instant::now();
    let mut vm = Vm::boot(&config).expect("boot");
    let mut serial = Vec::new();
    let mut decoder = Decoder::new();
    let mut messages = Vec::new();
    let mut limit = VirtualTime::ZERO;
    loop {
        limit = limit.saturating_add(STEP.as_nanos()).min(MAX_VIRTUAL);
        let outcome = vm
            .run(limit, &mut |b| serial.extend_from_slice(b))
            .expect("run");
        let console = vm.virtio().console_mut().expect("console device");
        decoder.push(&console.take_output());
        while let Some(frame) = decoder.next_frame() {
            let payload = frame.expect("a well-formed frame");
            let message = decode_agent(&payload).expect("a well-formed message");
            if let Some(reply) = answer(&message) {
                console.push_input(&encode_host(&reply).unwrap());
            }
            messages.push(message);
        }
        if outcome != Outcome::TimeLimit || limit >= MAX_VIRTUAL {
            return Run {
                outcome,
                messages,
                serial: String::from_utf8_lossy(&serial).into_owned(),
                wall: start.elapsed(),
            };
        }
    }
}

fn hello() -> AgentMessage {
    AgentMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn output(stream: Stream, line: &str) -> AgentMessage {
    AgentMessage::Output {
        stream,
        line: line.to_string(),
    }
}

#[test]
fn agent_runs_the_command_and_reports_output_and_exit() {
    let r = run_agent(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], |_| {
        None
    });
    eprintln!("agent run: {:?} wall", r.wall);
    assert_eq!(r.outcome, Outcome::PowerOff, "{}", r.serial);
    assert_eq!(
        r.messages,
        vec![
            hello(),
            output(Stream::Stdout, "out"),
            output(Stream::Stderr, "err"),
            AgentMessage::Exited {
                code: Some(3),
                signal: None
            },
        ],
        "{}",
        r.serial
    );
}

#[test]
fn agent_reports_a_missing_binary_and_powers_off() {
    let r = run_agent(&["/no/such/binary"], |_| None);
    eprintln!("agent run: {:?} wall", r.wall);
    assert_eq!(r.outcome, Outcome::PowerOff, "{}", r.serial);
    assert_eq!(r.messages.len(), 2, "{:?}", r.messages);
    assert_eq!(r.messages[0], hello());
    match &r.messages[1] {
        AgentMessage::Error { message } => {
            assert!(message.contains("/no/such/binary"), "{message}")
        }
        other => panic!("expected an Error, got {other:?}"),
    }
}

#[test]
fn agent_powers_off_when_the_host_asks() {
    let r = run_agent(&["/bin/sh", "-c", "echo ready; exec sleep 1000"], |m| {
        (*m == output(Stream::Stdout, "ready")).then_some(HostMessage::PowerOff)
    });
    eprintln!("agent run: {:?} wall", r.wall);
    assert_eq!(r.outcome, Outcome::PowerOff, "{}", r.serial);
    assert_eq!(
        r.messages,
        vec![hello(), output(Stream::Stdout, "ready")],
        "{}",
        r.serial
    );
}

#[test]
fn agent_reports_a_non_executable_file_and_a_signal_death() {
    let r = run_agent(&["/proc/cmdline"], |_| None);
    assert_eq!(r.outcome, Outcome::PowerOff, "{}", r.serial);
    assert!(
        matches!(&r.messages[..], [h, AgentMessage::Error { message }]
            if *h == hello() && message.contains("/proc/cmdline")),
        "{:?}",
        r.messages
    );
    let r = run_agent(&["/bin/sh", "-c", "kill -9 $$"], |_| None);
    assert_eq!(r.outcome, Outcome::PowerOff, "{}", r.serial);
    assert_eq!(
        r.messages,
        vec![
            hello(),
            AgentMessage::Exited {
                code: None,
                signal: Some(9)
            }
        ],
        "{}",
        r.serial
    );
}
