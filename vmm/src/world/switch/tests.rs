use super::*;

fn switch(config: NetworkConfig) -> Switch {
    Switch::new(7, config)
}

fn base() -> NetworkConfig {
    NetworkConfig::default()
}

fn arrival(v: Verdict) -> VirtualTime {
    match v {
        Verdict::Deliver { at, .. } => at,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[test]
fn latency_stays_within_min_plus_jitter_and_links_stay_fifo() {
    let mut s = switch(base());
    let (min, jitter) = (200_000, 50_000);
    let mut last = VirtualTime::ZERO;
    let mut spread = BTreeSet::new();
    for i in 0..2_000u64 {
        let now = VirtualTime(i * 1_000);
        let at = arrival(s.route(now, 0, 1));
        assert!(at.as_nanos() >= now.as_nanos() + min, "{i}");
        assert!(at.as_nanos() <= now.as_nanos() + min + jitter, "{i}");
        assert!(at >= last, "frame {i} overtook an earlier one");
        last = at;
        spread.insert(at.as_nanos() - now.as_nanos());
    }
    assert!(spread.len() > 100, "jitter varies the latency");
}

#[test]
fn loss_rate_follows_the_probability() {
    let mut s = switch(NetworkConfig {
        loss: 0.25,
        ..base()
    });
    let lost = (0..20_000)
        .filter(|i| s.route(VirtualTime(i * 10), 0, 1) == Verdict::Drop(DropReason::Lost))
        .count();
    assert!(
        (4_500..5_500).contains(&lost),
        "{lost} of 20000 lost at p=0.25"
    );
}

#[test]
fn windows_raise_probabilities_until_closed() {
    let mut s = switch(base());
    let count = |s: &mut Switch| {
        (0..2_000)
            .filter(|i| s.route(VirtualTime(i * 10), 0, 1) == Verdict::Drop(DropReason::Lost))
            .count()
    };
    assert_eq!(count(&mut s), 0);
    s.set_window(Window::Loss, 1, Some(1.0));
    assert_eq!(count(&mut s), 2_000);
    s.set_window(Window::Loss, 1, None);
    assert_eq!(count(&mut s), 0);
}

#[test]
fn duplication_and_reordering() {
    let mut s = switch(NetworkConfig {
        duplicate: 1.0,
        ..base()
    });
    match s.route(VirtualTime(0), 0, 1) {
        Verdict::Deliver {
            at,
            duplicate: Some(d),
        } => assert!(d > at),
        other => panic!("{other:?}"),
    }
    let mut s = switch(NetworkConfig {
        reorder: 0.5,
        ..base()
    });
    let arrivals: Vec<_> = (0..200u64)
        .map(|i| arrival(s.route(VirtualTime(i * 1_000), 0, 1)))
        .collect();
    assert!(
        arrivals.windows(2).any(|w| w[1] < w[0]),
        "some frames are overtaken"
    );
}

#[test]
fn partitions_symmetric_one_way_and_by_groups() {
    let mut s = switch(base());
    s.partition(1, &[vec![0], vec![1]], 3, false);
    assert!(!s.reachable(0, 1) && !s.reachable(1, 0));
    // Node 2 is in no listed group: a third side.
    assert!(!s.reachable(0, 2) && !s.reachable(2, 1));
    assert_eq!(
        s.route(VirtualTime(0), 0, 1),
        Verdict::Drop(DropReason::Partitioned)
    );
    s.heal(Some(1));
    assert!(s.reachable(0, 1) && s.reachable(2, 1));

    s.partition(2, &[vec![0]], 3, true);
    assert!(!s.reachable(0, 1) && !s.reachable(0, 2));
    assert!(s.reachable(1, 0) && s.reachable(2, 0) && s.reachable(1, 2));
    s.partition(3, &[vec![0, 1], vec![2]], 3, false);
    assert!(!s.reachable(1, 2) && s.reachable(1, 0));
    s.heal(None);
    assert!((0..3).all(|a| (0..3).all(|b| s.reachable(a, b))));
}

#[test]
fn clogs_hold_frames_until_both_ends_are_unclogged() {
    let mut s = switch(base());
    s.clog(1);
    s.clog(2);
    assert_eq!(s.route(VirtualTime(0), 0, 1), Verdict::Hold);
    assert_eq!(s.route(VirtualTime(0), 1, 0), Verdict::Hold);
    for (from, to, byte) in [(0, 1, 1u8), (1, 2, 2), (1, 0, 3)] {
        assert!(s.hold(HeldFrame {
            from,
            to,
            frame: vec![byte],
        }));
    }
    let released = s.unclog(1);
    let bytes: Vec<u8> = released.iter().map(|h| h.frame[0]).collect();
    assert_eq!(bytes, [1, 3], "in order; 1->2 waits for node 2");
    assert_eq!(s.held_frames(), 1);
    assert_eq!(s.unclog(2).len(), 1);
    assert!(matches!(
        s.route(VirtualTime(0), 0, 1),
        Verdict::Deliver { .. }
    ));
}

#[test]
fn held_frames_are_bounded() {
    let mut s = switch(NetworkConfig {
        max_held_frames: 2,
        ..base()
    });
    let f = || HeldFrame {
        from: 0,
        to: 1,
        frame: vec![],
    };
    assert!(s.hold(f()) && s.hold(f()));
    assert!(!s.hold(f()));
}

#[test]
fn same_seed_same_draws() {
    let run = |seed| {
        let mut s = Switch::new(
            seed,
            NetworkConfig {
                loss: 0.1,
                ..base()
            },
        );
        (0..100u64)
            .map(|i| s.route(VirtualTime(i * 100), 0, 1))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}
