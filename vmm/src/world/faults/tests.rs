use super::*;

fn nodes() -> Vec<String> {
    ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
}

fn error_of(json: &str) -> String {
    match FaultPlan::from_json(json).and_then(|p| p.validate(&nodes())) {
        Ok(()) => panic!("{json} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_written_plan_parses_validates_and_prints() {
    let plan = FaultPlan::from_json(
        r#"{"faults": [
            {"at": "2s", "fault": {"type": "partition", "groups": [["a"], ["b"]], "duration": "3s"}},
            {"at": "2.5s", "fault": {"type": "loss", "probability": 0.2, "duration": "1s"}},
            {"at": "3s", "fault": {"type": "kill", "node": "c", "restart_after": "500ms"}},
            {"at": "4s", "fault": {"type": "clock_step", "node": "a", "delta": "-5s"}},
            {"at": "5s", "fault": {"type": "heal"}}
        ]}"#,
    )
    .unwrap();
    plan.validate(&nodes()).unwrap();
    let text = plan.to_string();
    assert!(text.starts_with("fault plan: 5 faults\n"), "{text}");
    assert!(
        text.contains("[0] at 2s: partition [a] | [b] | rest for 3s"),
        "{text}"
    );
    assert!(
        text.contains("[2] at 3s: kill c, restart after 500ms"),
        "{text}"
    );
    assert!(text.contains("[3] at 4s: clock step a by -5s"), "{text}");
    // Round trip through serde.
    let json = serde_json::to_string(&plan).unwrap();
    assert_eq!(FaultPlan::from_json(&json).unwrap(), plan);
}

#[test]
fn bad_plans_name_the_field() {
    let cases = [
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "pause", "node": "dbx", "duration": "1s"}}]}"#,
            "faults[0].node: unknown service \"dbx\" (the world has: a, b, c)",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "heal"}},
                           {"at": "1s", "fault": {"type": "pause", "node": "a", "duration": "-5s"}}]}"#,
            "faults[1].duration: -5s is negative",
        ),
        (
            r#"{"faults": [{"at": "-1s", "fault": {"type": "heal"}}]}"#,
            "faults[0].at: -1s is negative",
        ),
        (
            r#"{"faults": [{"at": "0", "fault": {"type": "heal"}}, {"at": "0", "fault": {"type": "heal"}},
                           {"at": "1s", "fault": {"type": "loss", "probability": 1.5, "duration": "1s"}}]}"#,
            "faults[2].probability: 1.5 is not in 0..=1",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "duplicate", "probability": -0.1, "duration": "1s"}}]}"#,
            "faults[0].probability: -0.1 is not in 0..=1",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "partition", "groups": [["a"], ["zz"]]}}]}"#,
            "faults[0].groups[1]: unknown service \"zz\"",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "partition", "groups": [["a"], ["a"]]}}]}"#,
            "faults[0].groups[1]: \"a\" is listed twice",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "kill", "node": "a", "restart_after": "-2s"}}]}"#,
            "faults[0].restart_after: -2s is negative",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "clock_skew", "node": "a", "ppm": 200000}}]}"#,
            "faults[0].ppm: 200000 is not in -100000..=100000",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "clock_skew", "node": "a", "ppm": -9223372036854775808}}]}"#,
            "faults[0].ppm: -9223372036854775808 is not in -100000..=100000",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "clog", "nodes": []}}]}"#,
            "faults[0].nodes: names no node",
        ),
    ];
    for (json, want) in cases {
        let got = error_of(json);
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
}

#[test]
fn malformed_plans_are_errors_not_panics() {
    for (json, want) in [
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "heal", "extra": 1}}]}"#,
            "unknown field",
        ),
        (
            r#"{"faults": [], "sneaky": true}"#,
            "unknown field `sneaky`",
        ),
        (
            r#"{"faults": [{"at": "1 fortnight", "fault": {"type": "heal"}}]}"#,
            "not a duration",
        ),
        (
            r#"{"faults": [{"at": "1s", "fault": {"type": "explode"}}]}"#,
            "unknown variant",
        ),
    ] {
        let got = error_of(json);
        assert!(got.starts_with("plan: ") && got.contains(want), "{got}");
    }
}

#[test]
fn swarm_is_deterministic_in_the_seed_and_valid() {
    let d = Span::from_secs(10);
    let a = FaultPlan::swarm(1, &nodes(), d);
    assert_eq!(a, FaultPlan::swarm(1, &nodes(), d));
    let mut distinct = BTreeSet::new();
    for seed in 0..50 {
        let plan = FaultPlan::swarm(seed, &nodes(), d);
        plan.validate(&nodes()).unwrap();
        assert!(!plan.faults.is_empty());
        assert!(plan.faults.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(plan.faults.iter().all(|f| f.at < d));
        distinct.insert(plan.to_string());
    }
    assert!(distinct.len() >= 45, "seeds give different plans");
    assert_ne!(a, FaultPlan::swarm(2, &nodes(), d));
}

#[test]
fn swizzle_clogs_one_by_one_then_unclogs_in_another_random_order() {
    let step = Span::from_millis(100);
    let mut rng = seed::stream(3, "test");
    let steps = swizzle_steps(&mut rng, &[0, 1, 2, 3, 4], step);
    assert_eq!(steps.len(), 10);
    let times: Vec<i64> = steps.iter().map(|s| s.0.as_nanos() / 100_000_000).collect();
    assert_eq!(times, (0..10).collect::<Vec<_>>());
    assert!(steps[..5].iter().all(|s| s.2) && steps[5..].iter().all(|s| !s.2));
    let clogs: BTreeSet<usize> = steps[..5].iter().map(|s| s.1).collect();
    assert_eq!(clogs.len(), 5, "every node clogged once");
    // Across seeds the orders vary.
    let orders: BTreeSet<Vec<usize>> = (0..20)
        .map(|s| {
            let mut rng = seed::stream(s, "test");
            swizzle_steps(&mut rng, &[0, 1, 2, 3, 4], step)
                .iter()
                .map(|x| x.1)
                .collect()
        })
        .collect();
    assert!(orders.len() > 15);
}
