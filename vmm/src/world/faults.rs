//! The fault plan: plain data, written by a user (JSON or YAML through serde) or drawn
//! from the seed in swarm style (TigerBeetle's VOPR: each seed enables a random subset
//! of fault kinds, then draws times and parameters), validated against the node names,
//! and printed in full at the start of a run.

use std::collections::BTreeSet;
use std::fmt;

use rand_chacha::rand_core::Rng;
use serde::{Deserialize, Serialize};

use super::span::Span;
use crate::seed;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    #[serde(default)]
    pub faults: Vec<ScheduledFault>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// World virtual time at which the fault starts.
    pub at: Span,
    pub fault: Fault,
}

/// One fault. Durations are optional where the fault can also be ended by another one
/// (`heal`, `unclog`, `restart`); a fault with a duration heals itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Nodes in different groups cannot reach each other; nodes in no group form one
    /// more group together. `one_way`: only frames from the first group to the others
    /// are dropped.
    Partition {
        groups: Vec<Vec<String>>,
        #[serde(default, skip_serializing_if = "is_false")]
        one_way: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<Span>,
    },
    /// Ends every partition.
    Heal {},
    /// Frames from and to these nodes are held (not lost) until they are unclogged.
    Clog {
        nodes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<Span>,
    },
    Unclog {
        nodes: Vec<String>,
    },
    /// Clogs the nodes one by one in a random order, `step` apart, then unclogs them
    /// one by one in another random order (FoundationDB's swizzle-clog).
    SwizzleClog {
        nodes: Vec<String>,
        step: Span,
    },
    /// For `duration`, each frame is lost with `probability` (or the network's base
    /// loss, if higher).
    Loss {
        probability: f64,
        duration: Span,
    },
    Duplicate {
        probability: f64,
        duration: Span,
    },
    /// Reordered frames take an extra delay of up to the network's `reorder_delay`.
    Reorder {
        probability: f64,
        duration: Span,
    },
    /// The VM is not scheduled for `duration`; then its clocks jump to world time.
    Pause {
        node: String,
        duration: Span,
    },
    /// Power cut: the VM is gone, its disks keep only flushed writes. With
    /// `restart_after`, it boots again then.
    Kill {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restart_after: Option<Span>,
    },
    /// Boots a killed or powered-off node again.
    Restart {
        node: String,
    },
    /// The VM's wall clock (RTC, and inside the guest through the agent) jumps.
    ClockStep {
        node: String,
        delta: Span,
    },
    /// The VM's clocks run `ppm` parts per million fast (or slow, negative).
    ClockSkew {
        node: String,
        ppm: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<Span>,
    },
}

impl Fault {
    /// The one node this fault acts on (pause, kill, restart, clock step, clock skew);
    /// `None` for the network's faults, which act on links and are the world's events.
    pub fn node(&self) -> Option<&str> {
        match self {
            Fault::Pause { node, .. }
            | Fault::Kill { node, .. }
            | Fault::Restart { node }
            | Fault::ClockStep { node, .. }
            | Fault::ClockSkew { node, .. } => Some(node),
            Fault::Partition { .. }
            | Fault::Heal {}
            | Fault::Clog { .. }
            | Fault::Unclog { .. }
            | Fault::SwizzleClog { .. }
            | Fault::Loss { .. }
            | Fault::Duplicate { .. }
            | Fault::Reorder { .. } => None,
        }
    }

    /// Checks the fault against the world's node names: known, distinct nodes, no
    /// negative duration, probabilities in 0..=1. An error names the field under `path`
    /// (`faults[2].node`, for `path` = `faults[2]`).
    pub fn validate(&self, nodes: &[String], path: &str) -> Result<(), PlanError> {
        let path = |field: &str| format!("{path}.{field}");
        let node = |field: &str, name: &str| {
            if nodes.iter().any(|n| n == name) {
                Ok(())
            } else {
                Err(PlanError::new(
                    path(field),
                    format!(
                        "unknown service {name:?} (the world has: {})",
                        nodes.join(", ")
                    ),
                ))
            }
        };
        let node_list = |field: &str, names: &[String]| {
            if names.is_empty() {
                return Err(PlanError::new(path(field), "names no node"));
            }
            let mut seen = BTreeSet::new();
            for (k, name) in names.iter().enumerate() {
                node(&format!("{field}[{k}]"), name)?;
                if !seen.insert(name) {
                    return Err(PlanError::new(
                        path(&format!("{field}[{k}]")),
                        format!("{name:?} is listed twice"),
                    ));
                }
            }
            Ok(())
        };
        let optional = |field: &str, d: &Option<Span>| match d {
            Some(d) => check_not_negative(&path(field), *d),
            None => Ok(()),
        };
        if let Some(n) = self.node() {
            node("node", n)?;
        }
        match self {
            Fault::Partition {
                groups, duration, ..
            } => {
                if groups.is_empty() {
                    return Err(PlanError::new(path("groups"), "names no group"));
                }
                let all: Vec<String> = groups.iter().flatten().cloned().collect();
                node_list("groups", &all)?;
                if let Some(g) = groups.iter().position(Vec::is_empty) {
                    return Err(PlanError::new(path(&format!("groups[{g}]")), "is empty"));
                }
                optional("duration", duration)
            }
            Fault::Heal {} | Fault::Restart { .. } | Fault::ClockStep { .. } => Ok(()),
            Fault::Clog { nodes, duration } => {
                node_list("nodes", nodes)?;
                optional("duration", duration)
            }
            Fault::Unclog { nodes } => node_list("nodes", nodes),
            Fault::SwizzleClog { nodes, step } => {
                node_list("nodes", nodes)?;
                check_not_negative(&path("step"), *step)
            }
            Fault::Loss {
                probability,
                duration,
            }
            | Fault::Duplicate {
                probability,
                duration,
            }
            | Fault::Reorder {
                probability,
                duration,
            } => {
                check_probability(&path("probability"), *probability)?;
                check_not_negative(&path("duration"), *duration)
            }
            Fault::Pause { duration, .. } => check_not_negative(&path("duration"), *duration),
            Fault::Kill { restart_after, .. } => optional("restart_after", restart_after),
            Fault::ClockSkew { ppm, duration, .. } => {
                // `unsigned_abs`: `abs` of i64::MIN overflows (and wraps to a negative
                // number that passed this bound in release builds).
                if ppm.unsigned_abs() > MAX_SKEW_PPM.unsigned_abs() {
                    return Err(PlanError::new(
                        path("ppm"),
                        format!("{ppm} is not in -{MAX_SKEW_PPM}..={MAX_SKEW_PPM}"),
                    ));
                }
                optional("duration", duration)
            }
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Largest clock skew a plan may ask for: 10%.
pub const MAX_SKEW_PPM: i64 = 100_000;

/// A plan that does not fit the world, named by its field: `faults[2].probability: 1.5
/// is not in 0..=1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlanError {
    pub path: String,
    pub message: String,
}

impl PlanError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Checks that a probability is a number in 0..=1.
pub fn check_probability(path: &str, p: f64) -> Result<(), PlanError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(PlanError::new(path, format!("{p} is not in 0..=1")))
    }
}

/// Checks that a span is not negative.
pub fn check_not_negative(path: &str, span: Span) -> Result<(), PlanError> {
    if span.is_negative() {
        Err(PlanError::new(
            path,
            format!("{span} is negative; durations and times must be 0 or more"),
        ))
    } else {
        Ok(())
    }
}

impl FaultPlan {
    /// Parses a plan from JSON, then nothing else: call [`FaultPlan::validate`].
    pub fn from_json(text: &str) -> Result<FaultPlan, PlanError> {
        serde_json::from_str(text).map_err(|e| PlanError::new("plan", e.to_string()))
    }

    /// Checks every fault against the world's node names; an error names the field,
    /// e.g. `faults[2].node`.
    pub fn validate(&self, nodes: &[String]) -> Result<(), PlanError> {
        for (i, f) in self.faults.iter().enumerate() {
            let path = format!("faults[{i}]");
            check_not_negative(&format!("{path}.at"), f.at)?;
            f.fault.validate(nodes, &path)?;
        }
        Ok(())
    }

    /// Swarm testing: this seed enables a random subset of fault kinds, then draws 1 to
    /// 8 faults of those kinds at random times within the first `duration` (from 10% to
    /// 80% of it, so most faults also end within it), with random parameters.
    /// Deterministic in (seed, nodes, duration).
    pub fn swarm(seed: u64, nodes: &[String], duration: Span) -> FaultPlan {
        let mut rng = seed::stream(seed, "world/faults/swarm");
        let mut kinds: Vec<SwarmKind> = SwarmKind::ALL
            .iter()
            .copied()
            .filter(|_| rng.next_u32().is_multiple_of(2))
            .collect();
        if kinds.is_empty() || nodes.is_empty() {
            kinds = vec![SwarmKind::Loss];
        }
        let total = duration.nanos_u64().max(1_000_000);
        let count = 1 + rng.next_u32() % 8;
        let mut faults: Vec<ScheduledFault> = (0..count)
            .map(|_| {
                let kind = kinds[rng.next_u32() as usize % kinds.len()];
                // Whole milliseconds, so the printed plan is easy to read and to edit.
                let ms = |rng: &mut rand_chacha::ChaCha20Rng, lo: u64, hi: u64| {
                    let (lo, hi) = (lo / 1_000_000, (hi / 1_000_000).max(lo / 1_000_000 + 1));
                    Span::from_millis((lo + rng.next_u64() % (hi - lo)) as i64)
                };
                let at = ms(&mut rng, total / 10, total * 8 / 10);
                let span = ms(&mut rng, total / 20, total / 4);
                let fault = kind.draw(&mut rng, nodes, span);
                ScheduledFault { at, fault }
            })
            .collect();
        faults.sort_by_key(|f| f.at);
        FaultPlan { faults }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwarmKind {
    Partition,
    OneWayPartition,
    Clog,
    SwizzleClog,
    Loss,
    Duplicate,
    Reorder,
    Pause,
    Kill,
    ClockStep,
    ClockSkew,
}

impl SwarmKind {
    const ALL: [SwarmKind; 11] = [
        SwarmKind::Partition,
        SwarmKind::OneWayPartition,
        SwarmKind::Clog,
        SwarmKind::SwizzleClog,
        SwarmKind::Loss,
        SwarmKind::Duplicate,
        SwarmKind::Reorder,
        SwarmKind::Pause,
        SwarmKind::Kill,
        SwarmKind::ClockStep,
        SwarmKind::ClockSkew,
    ];

    fn draw(self, rng: &mut rand_chacha::ChaCha20Rng, nodes: &[String], span: Span) -> Fault {
        let one = |rng: &mut rand_chacha::ChaCha20Rng| {
            nodes[rng.next_u32() as usize % nodes.len()].clone()
        };
        // A random non-empty subset, in node order.
        let some = |rng: &mut rand_chacha::ChaCha20Rng| {
            let pick: Vec<String> = nodes
                .iter()
                .filter(|_| rng.next_u32().is_multiple_of(2))
                .cloned()
                .collect();
            if pick.is_empty() {
                vec![one(rng)]
            } else {
                pick
            }
        };
        let probability = |rng: &mut rand_chacha::ChaCha20Rng| {
            f64::from(1 + rng.next_u32() % 50) / 100.0 // 0.01 to 0.50
        };
        match self {
            SwarmKind::Partition | SwarmKind::OneWayPartition => Fault::Partition {
                groups: vec![some(rng)],
                one_way: self == SwarmKind::OneWayPartition,
                duration: Some(span),
            },
            SwarmKind::Clog => Fault::Clog {
                nodes: some(rng),
                duration: Some(span),
            },
            SwarmKind::SwizzleClog => Fault::SwizzleClog {
                nodes: some(rng),
                step: Span::from_millis((span.as_nanos() / 4_000_000).max(1)),
            },
            SwarmKind::Loss => Fault::Loss {
                probability: probability(rng),
                duration: span,
            },
            SwarmKind::Duplicate => Fault::Duplicate {
                probability: probability(rng),
                duration: span,
            },
            SwarmKind::Reorder => Fault::Reorder {
                probability: probability(rng),
                duration: span,
            },
            SwarmKind::Pause => Fault::Pause {
                node: one(rng),
                duration: span,
            },
            SwarmKind::Kill => Fault::Kill {
                node: one(rng),
                restart_after: Some(span),
            },
            SwarmKind::ClockStep => {
                let secs = 1 + i64::from(rng.next_u32() % 3600);
                let sign = if rng.next_u32().is_multiple_of(2) {
                    1
                } else {
                    -1
                };
                Fault::ClockStep {
                    node: one(rng),
                    delta: Span::from_secs(sign * secs),
                }
            }
            SwarmKind::ClockSkew => Fault::ClockSkew {
                node: one(rng),
                ppm: i64::from(rng.next_u32() % 2001) - 1000,
                duration: Some(span),
            },
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| v.join(", ");
        let lasting = |d: &Option<Span>| d.map(|d| format!(" for {d}")).unwrap_or_default();
        match self {
            Fault::Partition {
                groups,
                one_way,
                duration,
            } => {
                let sides: Vec<String> = groups.iter().map(|g| format!("[{}]", list(g))).collect();
                let arrow = if *one_way {
                    " one-way from the first"
                } else {
                    ""
                };
                write!(
                    f,
                    "partition {} | rest{arrow}{}",
                    sides.join(" | "),
                    lasting(duration)
                )
            }
            Fault::Heal {} => write!(f, "heal all partitions"),
            Fault::Clog { nodes, duration } => {
                write!(f, "clog {}{}", list(nodes), lasting(duration))
            }
            Fault::Unclog { nodes } => write!(f, "unclog {}", list(nodes)),
            Fault::SwizzleClog { nodes, step } => {
                write!(f, "swizzle-clog {} every {step}", list(nodes))
            }
            Fault::Loss {
                probability,
                duration,
            } => write!(f, "loss {probability} for {duration}"),
            Fault::Duplicate {
                probability,
                duration,
            } => write!(f, "duplicate {probability} for {duration}"),
            Fault::Reorder {
                probability,
                duration,
            } => write!(f, "reorder {probability} for {duration}"),
            Fault::Pause { node, duration } => write!(f, "pause {node} for {duration}"),
            Fault::Kill {
                node,
                restart_after,
            } => match restart_after {
                Some(d) => write!(f, "kill {node}, restart after {d}"),
                None => write!(f, "kill {node}"),
            },
            Fault::Restart { node } => write!(f, "restart {node}"),
            Fault::ClockStep { node, delta } => write!(f, "clock step {node} by {delta}"),
            Fault::ClockSkew {
                node,
                ppm,
                duration,
            } => write!(f, "clock skew {node} {ppm:+} ppm{}", lasting(duration)),
        }
    }
}

impl fmt::Display for FaultPlan {
    /// The whole plan, one fault a line, as printed at the start of a run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fault plan: {} faults", self.faults.len())?;
        for (i, s) in self.faults.iter().enumerate() {
            writeln!(f, "  [{i}] at {}: {}", s.at, s.fault)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// The steps of a swizzle-clog, as (offset from its start, node, clog or unclog):
/// the nodes clogged one by one in a random order, `step` apart, then unclogged one
/// by one in another random order.
pub fn swizzle_steps(
    rng: &mut rand_chacha::ChaCha20Rng,
    nodes: &[usize],
    step: Span,
) -> Vec<(Span, usize, bool)> {
    let shuffled = |rng: &mut rand_chacha::ChaCha20Rng| {
        let mut v = nodes.to_vec();
        for i in (1..v.len()).rev() {
            v.swap(i, rng.next_u32() as usize % (i + 1));
        }
        v
    };
    let clog_order = shuffled(rng);
    let unclog_order = shuffled(rng);
    let at = |k: usize| Span::from_nanos(step.as_nanos().saturating_mul(k as i64));
    let n = nodes.len();
    clog_order
        .into_iter()
        .enumerate()
        .map(|(k, node)| (at(k), node, true))
        .chain(
            unclog_order
                .into_iter()
                .enumerate()
                .map(|(k, node)| (at(n + k), node, false)),
        )
        .collect()
}
