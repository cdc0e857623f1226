//! The guest agent as PID 1 of the real guest kernel, running a busybox-based container
//! image (built with the images crate, booted from its squashfs on /dev/vda): service
//! output line by line, image config and compose overrides, exec, read-file, SDK lines,
//! exit statuses, zombie reaping, restart, bad input, and determinism.
#![cfg(feature = "emu")]

mod common;

use common::agent::*;
use detvm_protocol::frame;
use detvm_protocol::message::{
    AgentMessage, ExecRequest, HostMessage, Stream, MAX_LINE, PROTOCOL_VERSION, TRUNCATED_MARKER,
};
use detvm_protocol::spec::{HostEntry, Overrides, ServiceSpec};

fn boot() -> Guest {
    let mut g = Guest::boot(&GuestConfig::new(busybox_image()));
    match g.until("Hello", |m| matches!(m, AgentMessage::Hello { .. })) {
        AgentMessage::Hello {
            protocol_version, ..
        } => assert_eq!(protocol_version, PROTOCOL_VERSION),
        _ => unreachable!(),
    }
    g
}

fn out(line: &str) -> AgentMessage {
    AgentMessage::Output {
        stream: Stream::Stdout,
        line: line.into(),
    }
}

/// Every message from `Started` on, without `Hello`.
fn after_start(messages: &[AgentMessage]) -> Vec<AgentMessage> {
    let i = messages
        .iter()
        .position(|m| matches!(m, AgentMessage::Started { .. }))
        .expect("Started");
    messages[i + 1..].to_vec()
}

fn service_spec(overrides: &Overrides) -> ServiceSpec {
    let mut spec = busybox_image().spec(overrides);
    spec.hosts = vec![
        HostEntry {
            name: "web".into(),
            ip: "10.0.0.2".into(),
        },
        HostEntry {
            name: "db".into(),
            ip: "10.0.0.3".into(),
        },
    ];
    spec.dns = vec!["nameserver 10.0.0.1".into()];
    spec
}

#[test]
fn service_output_arrives_line_by_line_then_its_exit_status() {
    let mut g = boot();
    let script = "echo out; echo err >&2; printf 'a\\nb\\nno-newline'; exit 3";
    g.start(service_spec(&shell(script)));
    g.until("Exited", |m| matches!(m, AgentMessage::Exited { .. }));
    let wall = g.booted_at.elapsed();
    let messages = g.finish();
    eprintln!("boot to exit: {wall:?} wall");
    assert_eq!(
        after_start(&messages),
        vec![
            out("out"),
            AgentMessage::Output {
                stream: Stream::Stderr,
                line: "err".into()
            },
            out("a"),
            out("b"),
            out("no-newline"),
            AgentMessage::Exited {
                code: Some(3),
                signal: None
            },
        ]
    );
}

#[test]
fn image_config_applies_user_workdir_env_and_hostname() {
    let mut g = boot();
    g.start(service_spec(&Overrides::default()));
    g.until("Exited", |m| matches!(m, AgentMessage::Exited { .. }));
    let messages = g.finish();
    assert_eq!(
        after_start(&messages),
        vec![
            out("id 1000 1000 1000 50"),
            out("pwd /srv/app"),
            out("env FROM_IMAGE=image SHARED=image FROM_COMPOSE= HOME=/home/alice HOSTNAME=web"),
            out("args "),
            AgentMessage::Exited {
                code: Some(0),
                signal: None
            },
        ]
    );
}

#[test]
fn compose_overrides_replace_env_workdir_user_and_command() {
    let mut g = boot();
    let overrides = Overrides {
        command: Some(strings(&["one", "two words"])),
        environment: strings(&["SHARED=compose", "FROM_COMPOSE=yes"]),
        working_dir: Some("/var/new/dir".into()),
        user: Some("4242:staff".into()),
        ..Overrides::default()
    };
    let mut spec = service_spec(&overrides);
    spec.hostname = "renamed".into();
    g.start(spec);
    g.until("Exited", |m| matches!(m, AgentMessage::Exited { .. }));
    let messages = g.finish();
    assert_eq!(
        after_start(&messages),
        vec![
            out("id 4242 50 50"),
            out("pwd /var/new/dir"),
            out("env FROM_IMAGE=image SHARED=compose FROM_COMPOSE=yes HOME=/ HOSTNAME=renamed"),
            out("args one two words"),
            AgentMessage::Exited {
                code: Some(0),
                signal: None
            },
        ]
    );
}

#[test]
fn exec_and_read_file_reach_into_the_running_container() {
    let mut g = boot();
    g.start(service_spec(&shell("echo ready; exec sleep 1000000")));
    g.output("ready");

    let ls = g.exec(1, &["ls", "/"]);
    assert_eq!(ls.code, Some(0), "{ls:?}");
    for dir in ["bin", "etc", "proc", "run", "srv", "usr"] {
        assert!(ls.stdout.iter().any(|l| l == dir), "no /{dir}: {ls:?}");
    }
    assert!(
        !ls.stdout.iter().any(|l| l == "init"),
        "the initramfs shows: {ls:?}"
    );

    // The service's user by default, another on request.
    let id = g.exec(2, &["id"]);
    assert_eq!(
        id.stdout,
        ["uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice)"]
    );
    let root = g
        .exec_request(ExecRequest {
            id: 3,
            argv: strings(&["sh", "-c", "id -u; pwd; echo $SHARED $EXTRA"]),
            env: strings(&["EXTRA=given"]),
            working_dir: "/etc".into(),
            user: "root".into(),
        })
        .unwrap();
    assert_eq!(root.stdout, ["0", "/etc", "image given"]);

    // Exit statuses and stderr of exec'd commands.
    let failing = g.exec(4, &["sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(
        (failing.stderr, failing.code),
        (strings(&["oops"]), Some(7))
    );

    // Network and names from the kernel command line and the spec.
    let net = g.exec(
        5,
        &[
            "sh",
            "-c",
            "hostname; ip addr show eth0; ip route; ip link show lo",
        ],
    );
    let text = net.stdout.join("\n");
    assert_eq!(net.stdout[0], "web");
    assert!(text.contains("inet 10.0.0.2/24"), "{text}");
    assert!(text.contains("default via 10.0.0.1 dev eth0"), "{text}");
    assert!(text.contains("LOOPBACK,UP"), "{text}");
    let hosts = String::from_utf8(g.read_file(6, "/etc/hosts").unwrap()).unwrap();
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.contains("10.0.0.2\tweb\n10.0.0.3\tdb\n"), "{hosts}");
    let resolv = g.read_file(7, "/etc/resolv.conf").unwrap();
    assert_eq!(resolv, b"nameserver 10.0.0.1\n");
    let passwd = g.read_file(8, "/etc/passwd").unwrap();
    assert!(passwd.starts_with(b"root:x:0:0:"));
    // Mounts inside the container.
    let mounts = g.exec(9, &["cat", "/proc/mounts"]).stdout.join("\n") + "\n";
    for fs in [
        " / overlay ",
        " /proc proc ",
        " /sys sysfs ",
        " /sys/fs/cgroup cgroup2 ",
        " /dev devtmpfs ",
        " /dev/pts devpts ",
        " /dev/shm tmpfs ",
        " /run tmpfs ",
    ] {
        assert!(mounts.contains(fs), "no{fs}in\n{mounts}");
    }
    g.finish();
}

#[test]
fn sdk_json_lines_arrive_intact_from_the_service_and_from_exec() {
    let mut g = boot();
    g.start(service_spec(&Overrides {
        entrypoint: Some(strings(&["/usr/local/bin/sdk-writer"])),
        ..Overrides::default()
    }));
    g.until("Exited", |m| matches!(m, AgentMessage::Exited { .. }));
    let exec = g.exec(11, &["sdk-writer"]);
    assert_eq!(exec.stdout, ["sdk written to /run/detvm/sdk/exec-11.jsonl"]);
    let messages = g.finish();
    let sdk: Vec<(Option<u64>, String)> = messages
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Sdk { exec, line } => Some((*exec, line.clone())),
            _ => None,
        })
        .collect();
    let want: Vec<(Option<u64>, String)> = [None, Some(11)]
        .into_iter()
        .flat_map(|e| SDK_LINES.iter().map(move |l| (e, l.to_string())))
        .collect();
    assert_eq!(sdk, want);
    // The service's SDK lines come before its Exited.
    let service = after_start(&messages);
    let exited = service
        .iter()
        .position(|m| matches!(m, AgentMessage::Exited { .. }))
        .unwrap();
    assert!(
        service[..exited]
            .iter()
            .filter(|m| matches!(m, AgentMessage::Sdk { .. }))
            .count()
            == 2
    );
    assert!(service.contains(&out("sdk written to /run/detvm/sdk/service.jsonl")));
}

#[test]
fn zombies_are_reaped_and_signal_deaths_reported() {
    let mut g = boot();
    // Each inner shell leaves a background child to PID 1 and exits.
    let script = "for i in 1 2 3 4 5; do sh -c 'sleep 0 &'; done; sleep 1; echo spawned; \
                  exec sleep 1000000";
    g.start(service_spec(&shell(script)));
    g.output("spawned");
    let states = g.exec(1, &["sh", "-c", "cat /proc/[0-9]*/stat | awk '{print $3}'"]);
    assert!(states.stdout.len() >= 3, "{states:?}");
    assert!(
        !states.stdout.iter().any(|s| s == "Z"),
        "zombies: {states:?}"
    );
    // Restart kills the service, reports it, and runs it again.
    g.send(&HostMessage::RestartService);
    match g.until("Exited", |m| matches!(m, AgentMessage::Exited { .. })) {
        AgentMessage::Exited { code, signal } => assert_eq!((code, signal), (None, Some(9))),
        _ => unreachable!(),
    }
    g.until("Started", |m| matches!(m, AgentMessage::Started { .. }));
    g.output("spawned");
    // A service killed by a signal.
    let killed = g.exec(2, &["sh", "-c", "kill -9 $(pidof sleep)"]);
    assert_eq!(killed.code, Some(0));
    match g.until("Exited", |m| matches!(m, AgentMessage::Exited { .. })) {
        AgentMessage::Exited { code, signal } => assert_eq!((code, signal), (None, Some(9))),
        _ => unreachable!(),
    }
    g.finish();
}

#[test]
fn bad_input_gets_clear_errors_and_the_agent_stays_up() {
    let mut g = boot();
    // Host → agent garbage: random bytes, an oversized frame header, malformed JSON.
    g.push_raw(b"\x00\x13garbage\xff\xfe from a confused host");
    assert!(g.error("an error for garbage").contains("bad host message"));
    g.push_raw(b"dv\x01\x00\x00\x00\x20\x00"); // claims a 2 MiB payload
    let e = g.error("an error for an oversized frame");
    assert!(e.contains("over the 1048576-byte limit"), "{e}");
    g.push_raw(&frame::encode(br#"{"type":"start","argv":"not a list"}"#).unwrap());
    assert!(g.error("an error for bad JSON").contains("malformed"));

    let mut no_command = service_spec(&Overrides::default());
    no_command.argv.clear();
    g.send(&HostMessage::Start(no_command));
    let e = g.error("no entrypoint and no cmd");
    assert!(
        e.contains("image config has neither entrypoint nor cmd: set `command:` or `entrypoint:`"),
        "{e}"
    );
    let cases = [
        (
            strings(&["/no/such/binary"]),
            "",
            "`/no/such/binary` does not exist in the container",
        ),
        (
            strings(&["no-such-tool"]),
            "",
            "`no-such-tool` is not in the container's PATH",
        ),
        (
            strings(&["/usr/local/bin/not-executable"]),
            "",
            "is not executable",
        ),
        (
            strings(&["/bin/true"]),
            "nosuch",
            "user `nosuch` is not in the container's /etc/passwd",
        ),
    ];
    for (argv, user, want) in cases {
        let mut spec = service_spec(&Overrides::default());
        spec.argv = argv;
        spec.user = user.into();
        g.send(&HostMessage::Start(spec));
        let e = g.error(want);
        assert!(
            e.contains(want) && e.starts_with("the service did not start"),
            "{e}"
        );
    }
    // After failed starts, a good one runs.
    g.start(service_spec(&shell("exec sleep 1000000")));
    // Exec and read-file failures answer the request.
    let e = g
        .exec_request(ExecRequest {
            id: 1,
            argv: strings(&["/nope"]),
            user: "root".into(), // the last Start named a user that does not exist
            ..ExecRequest::default()
        })
        .unwrap_err();
    assert!(e.contains("`/nope` does not exist"), "{e}");
    let e = g.exec_request(ExecRequest::default()).unwrap_err();
    assert!(e.contains("argv is empty"), "{e}");
    let e = g.read_file(2, "/no/file").unwrap_err();
    assert!(e.contains("cannot open `/no/file`"), "{e}");
    let e = g.read_file(3, "/bin/busybox").unwrap_err();
    assert!(e.contains("over the 524288-byte limit of ReadFile"), "{e}");
    let e = g.read_file(4, "/etc").unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");

    // Agent → host bounds: an over-long output line is cut, an over-long SDK line dropped.
    let long = g.exec(
        5,
        &[
            "sh",
            "-c",
            "head -c 70000 /dev/zero | tr '\\0' a; echo; echo next",
        ],
    );
    assert_eq!(long.stdout.len(), 2, "{:?}", long.stdout.len());
    assert_eq!(long.stdout[0].len(), MAX_LINE + TRUNCATED_MARKER.len());
    assert!(long.stdout[0].ends_with(TRUNCATED_MARKER));
    assert_eq!(long.stdout[1], "next");
    g.exec(
        6,
        &["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a > $ANTITHESIS_SDK_LOCAL_OUTPUT; echo >> $ANTITHESIS_SDK_LOCAL_OUTPUT"],
    );
    let e = g.error("an error for an over-long SDK line");
    assert!(
        e.contains("an SDK line over 262144 bytes was dropped"),
        "{e}"
    );

    // Still up: a valid exec after all of that.
    let ok = g
        .exec_request(ExecRequest {
            id: 7,
            argv: strings(&["echo", "still here"]),
            user: "root".into(),
            ..ExecRequest::default()
        })
        .unwrap();
    assert_eq!((ok.stdout, ok.code), (strings(&["still here"]), Some(0)));
    g.finish();
}

#[test]
fn step_clock_moves_the_guest_wall_clock() {
    let mut g = boot();
    g.start(service_spec(&shell("exec sleep 1000000")));
    let before: i64 = g.exec(1, &["date", "+%s"]).stdout[0].parse().unwrap();
    g.send(&HostMessage::StepClock {
        delta_ns: 3_600_000_000_000,
    });
    let after: i64 = g.exec(2, &["date", "+%s"]).stdout[0].parse().unwrap();
    assert!(
        (3600..3700).contains(&(after - before)),
        "{before} → {after}"
    );
    g.finish();
}

/// One full scenario: service output, SDK lines, exec, read-file.
fn scenario(seed: u64) -> (u64, Vec<AgentMessage>) {
    let mut config = GuestConfig::new(busybox_image());
    config.seed = seed;
    let mut g = Guest::boot(&config);
    g.hello();
    g.start(service_spec(&shell(
        "echo start; sdk-writer; head -c 16 /dev/urandom | od -An -tx1; echo ready; exec sleep 1000000",
    )));
    g.output("ready");
    g.exec(1, &["ls", "/"]);
    g.read_file(2, "/etc/hosts").unwrap();
    g.power_off();
    assert!(g.bad_frames.is_empty());
    (g.vm.trace().value(), g.messages)
}

#[test]
fn same_seed_same_trace_and_messages_ten_times() {
    let (hash, messages) = scenario(7);
    assert!(messages
        .iter()
        .any(|m| matches!(m, AgentMessage::Sdk { .. })));
    for run in 1..10 {
        let (h, m) = scenario(7);
        assert_eq!(m, messages, "run {run}: messages differ");
        assert_eq!(h, hash, "run {run}: trace hash differs");
    }
    // Another seed changes what the guest sees (its random bytes).
    let (_, other) = scenario(8);
    assert_ne!(other, messages);
}
