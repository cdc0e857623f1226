//! The trace hash (DESIGN point 11): every decision point folds into a running hash,
//! checkpointed every N decisions so two runs can be compared and the first
//! divergence named.

use serde::{Deserialize, Serialize};

use crate::clock::VirtualTime;

/// One decision point, as folded into the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub vcpu: u32,
    pub rip: u64,
    pub time: VirtualTime,
    pub instructions: u64,
    /// Kind-specific detail: the port, the address, the injected vector.
    pub detail: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionKind {
    PioRead,
    PioWrite,
    MmioRead,
    MmioWrite,
    Halt,
    Inject,
    Budget,
    Wake,
    Stop,
    // World decisions (`vcpu` holds the node index): a VM ran to a time, a frame was
    // delivered or dropped, a fault applied, a node changed state.
    WorldRun,
    WorldDeliver,
    WorldDrop,
    WorldFault,
    WorldState,
}

/// A checkpoint: the hash after `decisions` decisions, with the last one's moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub decisions: u64,
    pub hash: u64,
    pub last: Decision,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceHash {
    hash: u64,
    decisions: u64,
    every: u64,
    checkpoints: Vec<Checkpoint>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl TraceHash {
    /// `every`: decisions between checkpoints (0 = no checkpoints).
    pub fn new(every: u64) -> Self {
        TraceHash {
            hash: FNV_OFFSET,
            decisions: 0,
            every,
            checkpoints: Vec::new(),
        }
    }

    pub fn record(&mut self, d: Decision) {
        let words = [
            d.kind as u64,
            u64::from(d.vcpu),
            d.rip,
            d.time.as_nanos(),
            d.instructions,
            d.detail,
        ];
        for word in words {
            for byte in word.to_le_bytes() {
                self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
            }
        }
        self.decisions += 1;
        if self.every != 0 && self.decisions.is_multiple_of(self.every) {
            self.checkpoints.push(Checkpoint {
                decisions: self.decisions,
                hash: self.hash,
                last: d,
            });
        }
    }

    pub fn value(&self) -> u64 {
        self.hash
    }

    pub fn decisions(&self) -> u64 {
        self.decisions
    }

    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }
}

/// Where two runs first differ, to the checkpoint granularity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// Identical hashes and decision counts.
    None,
    /// The runs agree up to `agreed` (if any) and differ at checkpoint `at`.
    At {
        agreed: Option<Checkpoint>,
        left: Checkpoint,
        right: Checkpoint,
    },
    /// One run has more checkpoints, or the final hashes differ after the last one.
    AfterLastCheckpoint { agreed: Option<Checkpoint> },
}

pub fn first_divergence(left: &TraceHash, right: &TraceHash) -> Divergence {
    let mut agreed = None;
    for (l, r) in left.checkpoints.iter().zip(&right.checkpoints) {
        if l != r {
            return Divergence::At {
                agreed,
                left: *l,
                right: *r,
            };
        }
        agreed = Some(*l);
    }
    if left.hash == right.hash && left.decisions == right.decisions {
        Divergence::None
    } else {
        Divergence::AfterLastCheckpoint { agreed }
    }
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let moment = |c: &Checkpoint| {
            format!(
                "decision {} at {} (vCPU {}, RIP {:#x}, {} instructions, {:?} {:#x})",
                c.decisions,
                c.last.time,
                c.last.vcpu,
                c.last.rip,
                c.last.instructions,
                c.last.kind,
                c.last.detail
            )
        };
        match self {
            Divergence::None => write!(f, "no divergence"),
            Divergence::At {
                agreed,
                left,
                right,
            } => {
                match agreed {
                    Some(c) => writeln!(f, "runs agree up to {}", moment(c))?,
                    None => writeln!(f, "runs differ before the first checkpoint")?,
                }
                writeln!(f, "first differing checkpoint, left:  {}", moment(left))?;
                write!(f, "first differing checkpoint, right: {}", moment(right))
            }
            Divergence::AfterLastCheckpoint { agreed: Some(c) } => {
                write!(f, "runs agree up to {} and differ after it", moment(c))
            }
            Divergence::AfterLastCheckpoint { agreed: None } => {
                write!(f, "runs differ before the first checkpoint")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(rip: u64) -> Decision {
        Decision {
            kind: DecisionKind::PioWrite,
            vcpu: 0,
            rip,
            time: VirtualTime(rip * 10),
            instructions: rip,
            detail: 0x3f8,
        }
    }

    #[test]
    fn same_decisions_same_hash() {
        let (mut a, mut b) = (TraceHash::new(4), TraceHash::new(4));
        for rip in 0..100 {
            a.record(decision(rip));
            b.record(decision(rip));
        }
        assert_eq!(a.value(), b.value());
        assert_eq!(first_divergence(&a, &b), Divergence::None);
    }

    #[test]
    fn names_the_first_differing_checkpoint() {
        let (mut a, mut b) = (TraceHash::new(4), TraceHash::new(4));
        for rip in 0..100 {
            a.record(decision(rip));
            b.record(decision(if rip == 37 { 1000 } else { rip }));
        }
        assert_ne!(a.value(), b.value());
        match first_divergence(&a, &b) {
            Divergence::At {
                agreed: Some(c),
                left,
                ..
            } => {
                assert_eq!(c.decisions, 36);
                assert_eq!(left.decisions, 40);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
