//! Faults added while the world runs, on worlds of tiny freestanding guests (no Linux):
//! their effect, their events, their validation, and that a fault scheduled or
//! injected at run time is the same run as the same fault in the plan.
#![cfg(feature = "emu")]

use super::super::node::Node;
use super::super::*;
use crate::boot::long_mode_entry_state;
use crate::machine::VmConfig;

/// Where the guest is loaded and entered.
const LOAD_ADDR: u64 = 0x10_0000;

/// Prints "x" on the serial port every 40 000 instructions (40 µs of virtual time on
/// `emu`), forever, with interrupts off: a node that is visibly alive, cheaply.
#[rustfmt::skip]
const PRINTER: &[u8] = &[
    0xba, 0xf8, 0x03, 0x00, 0x00, //        mov  edx, 0x3f8
    0xb0, b'x',                   // loop:  mov  al, 'x'
    0xee,                         //        out  dx, al
    0xb0, b'\n',                  //        mov  al, '\n'
    0xee,                         //        out  dx, al
    0xb9, 0x20, 0x4e, 0x00, 0x00, //        mov  ecx, 20000
    0xff, 0xc9,                   // spin:  dec  ecx
    0x75, 0xfc,                   //        jnz  spin
    0xeb, 0xef,                   //        jmp  loop
];

const NAMES: [&str; 3] = ["a", "b", "c"];

/// A world of printer nodes built as `World::new` builds one (nodes booted at time 0
/// in order, then the plan queued), but on flat guests: no restart can boot them again.
fn printers(plan: FaultPlan) -> World {
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    plan.validate(&names).expect("a valid plan");
    let mut w = World::new(WorldConfig {
        seed: 5,
        nodes: Vec::new(),
        network: NetworkConfig::default(),
        faults: FaultPlan::default(),
    })
    .expect("an empty world");
    for (i, name) in names.into_iter().enumerate() {
        let mut vm = VmConfig::new("/nonexistent/vmlinux".into());
        vm.memory = 32 << 20;
        let mut node = Node::new(i, name, vm);
        let mut config = node.config.clone();
        config.seed = Node::boot_seed(w.seed, &node.name, 0);
        let entry = long_mode_entry_state(LOAD_ADDR, 0);
        node.vm = Some(Vm::boot_flat(&config, PRINTER, LOAD_ADDR, entry).expect("boot"));
        node.state = NodeState::Running;
        w.nodes.push(node);
        w.state_change(i, VirtualTime::ZERO, NodeChange::Booted);
    }
    for f in &plan.faults {
        w.queue.push(
            VirtualTime(f.at.nanos_u64()),
            Action::Apply(f.fault.clone()),
        );
    }
    w.plan = plan;
    w
}

fn ms(n: u64) -> VirtualTime {
    VirtualTime::from_millis(n)
}

fn run(w: &mut World, until: VirtualTime) -> Vec<WorldEvent> {
    let mut events = Vec::new();
    w.run_until(until, &mut |e| events.push(e)).expect("run");
    events
}

/// When `node` printed its lines.
fn lines(events: &[WorldEvent], node: &str) -> Vec<VirtualTime> {
    events
        .iter()
        .filter(|e| e.node == node && matches!(e.kind, EventKind::Console { .. }))
        .map(|e| e.time)
        .collect()
}

/// Everything but console lines, as (time, node, kind).
fn others(events: &[WorldEvent]) -> Vec<(VirtualTime, &str, &EventKind)> {
    events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::Console { .. }))
        .map(|e| (e.time, e.node.as_str(), &e.kind))
        .collect()
}

fn pause_b() -> Fault {
    Fault::Pause {
        node: "b".into(),
        duration: Span::from_millis(3),
    }
}

fn kill_c() -> Fault {
    Fault::Kill {
        node: "c".into(),
        restart_after: None,
    }
}

fn partition_a() -> Fault {
    Fault::Partition {
        groups: vec![vec!["a".into()]],
        one_way: false,
        duration: Some(Span::from_millis(1)),
    }
}

fn applied(fault: Fault) -> EventKind {
    EventKind::FaultApplied { fault }
}

fn healed(fault: Fault) -> EventKind {
    EventKind::FaultHealed { fault }
}

fn state(state: NodeChange) -> EventKind {
    EventKind::State { state }
}

#[test]
fn an_injected_pause_stops_the_node_until_it_heals() {
    let mut w = printers(FaultPlan::default());
    run(&mut w, ms(2));
    let decisions = w.trace().decisions();
    w.inject(pause_b()).unwrap();
    assert_eq!(w.node_state("b"), Some(NodeState::Paused));
    assert_eq!(
        w.trace().decisions(),
        decisions + 2,
        "the fault and the state change are decisions of the world trace"
    );
    let events = run(&mut w, ms(8));
    assert_eq!(
        others(&events),
        [
            (ms(2), "b", &applied(pause_b())),
            (ms(2), "b", &state(NodeChange::Paused)),
            (ms(5), "b", &healed(pause_b())),
            (ms(5), "b", &state(NodeChange::Resumed)),
        ]
    );
    let paused = |t: &VirtualTime| *t > ms(2) && *t < ms(5);
    assert!(
        !lines(&events, "b").iter().any(paused),
        "b printed while paused"
    );
    assert!(lines(&events, "b").iter().any(|t| *t > ms(5)), "b resumed");
    assert!(
        lines(&events, "a").iter().any(paused),
        "a went on meanwhile"
    );
    assert_eq!(w.node_state("b"), Some(NodeState::Running));
}

#[test]
fn an_injected_kill_takes_the_node_down_and_a_partition_cuts_links() {
    let mut w = printers(FaultPlan::default());
    run(&mut w, ms(2));
    w.inject(kill_c()).unwrap();
    assert_eq!(w.node_state("c"), Some(NodeState::Killed));
    assert!(w.vm_mut("c").is_none(), "a killed node has no VM");
    assert!(w.switch.reachable(0, 1));
    w.inject(partition_a()).unwrap();
    assert!(!w.switch.reachable(0, 1) && !w.switch.reachable(1, 0));
    assert!(w.switch.reachable(1, 2), "b and c are on the same side");
    let events = run(&mut w, ms(4));
    assert_eq!(
        others(&events),
        [
            (ms(2), "c", &applied(kill_c())),
            (ms(2), "c", &state(NodeChange::Killed)),
            (ms(2), "world", &applied(partition_a())),
            (ms(3), "world", &healed(partition_a())),
        ]
    );
    assert!(lines(&events, "c").iter().all(|t| *t <= ms(2)));
    assert!(w.switch.reachable(0, 1), "the partition healed after 1 ms");
}

#[test]
fn a_fault_that_does_not_fit_the_world_is_refused_and_changes_nothing() {
    let mut w = printers(FaultPlan::default());
    run(&mut w, ms(1));
    let trace = w.trace_value();
    let err = |r: Result<(), WorldError>| r.unwrap_err().to_string();
    let unknown = Fault::Pause {
        node: "zz".into(),
        duration: Span::from_millis(1),
    };
    assert_eq!(
        err(w.inject(unknown.clone())),
        "invalid fault: fault.node: unknown service \"zz\" (the world has: a, b, c)"
    );
    assert_eq!(
        err(w.schedule(ms(3), unknown)),
        "invalid fault: fault.node: unknown service \"zz\" (the world has: a, b, c)"
    );
    let unknown_in_group = Fault::Clog {
        nodes: vec!["a".into(), "zz".into()],
        duration: None,
    };
    assert!(err(w.inject(unknown_in_group)).contains("fault.nodes[1]: unknown service"));
    let negative = Fault::Kill {
        node: "a".into(),
        restart_after: Some(Span::from_millis(-1)),
    };
    assert!(err(w.inject(negative)).starts_with("invalid fault: fault.restart_after: -1ms"));
    assert_eq!(
        err(w.schedule(VirtualTime::ZERO, pause_b())),
        "invalid fault: at: 0.000000000s is before the world's time 0.001000000s"
    );
    assert_eq!(w.trace_value(), trace);
    assert!(w.queue.is_empty());
    assert!(others(&run(&mut w, ms(2))).is_empty());
}

/// The same run three ways: every fault in the plan; the same faults scheduled after
/// the first step; the first one injected at its time and the others scheduled.
#[test]
fn faults_added_at_run_time_are_the_same_run_as_planned_ones() {
    // No two at the same time: at equal times, the order of scheduling decides.
    let faults = [
        (ms(1), pause_b()),
        (ms(2), partition_a()),
        (ms(5), kill_c()),
    ];
    let plan = FaultPlan {
        faults: faults
            .iter()
            .map(|(at, fault)| ScheduledFault {
                at: Span::from_nanos(at.as_nanos() as i64),
                fault: fault.clone(),
            })
            .collect(),
    };
    let finish = |mut w: World, mut events: Vec<WorldEvent>| {
        events.extend(run(&mut w, ms(6)));
        (events, w.trace_value())
    };

    let mut planned = printers(plan);
    let first = run(&mut planned, ms(1));
    let planned = finish(planned, first);

    let mut scheduled = printers(FaultPlan::default());
    let first = run(&mut scheduled, ms(1));
    for (at, fault) in &faults {
        scheduled.schedule(*at, fault.clone()).unwrap();
    }
    let scheduled = finish(scheduled, first);

    let mut injected = printers(FaultPlan::default());
    let first = run(&mut injected, ms(1));
    injected.inject(pause_b()).unwrap();
    for (at, fault) in &faults[1..] {
        injected.schedule(*at, fault.clone()).unwrap();
    }
    let injected = finish(injected, first);

    assert_eq!(
        others(&planned.0).len(),
        3 + 8,
        "3 boots; pause (2 events), partition and its end, the pause's end (2), kill (2)"
    );
    assert!(planned.0 == scheduled.0, "scheduled: other events");
    assert_eq!(planned.1, scheduled.1, "scheduled: other trace");
    assert!(planned.0 == injected.0, "injected: other events");
    assert_eq!(planned.1, injected.1, "injected: other trace");
}
