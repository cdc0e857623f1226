//! The network between the VMs' virtio-net devices: each frame from one node to
//! another is dropped, held, or delivered at a virtual time drawn from seeded streams
//! (one per concern, so changing the loss rate never shifts the latencies drawn).
//!
//! Order of judgement: a partition drops; a clog on either end holds the frame until
//! both ends are unclogged (then it is judged again); then loss, latency (min_latency
//! plus uniform jitter, FIFO per link), reordering (extra delay, may be overtaken) and
//! duplication (a second copy a little later) are drawn.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::rand_core::Rng;
use rand_chacha::ChaCha20Rng;

use super::config::NetworkConfig;
use super::events::DropReason;
use crate::clock::VirtualTime;
use crate::seed::{self, StreamState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Drop(DropReason),
    /// A clog holds it: call [`Switch::hold`].
    Hold,
    Deliver {
        at: VirtualTime,
        duplicate: Option<VirtualTime>,
    },
}

/// The fault windows that raise a probability for a while.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Window {
    Loss,
    Duplicate,
    Reorder,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldFrame {
    pub from: usize,
    pub to: usize,
    pub frame: Vec<u8>,
}

/// The snapshot form of [`Switch`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwitchState {
    pub config: NetworkConfig,
    pub partitions: Vec<(u64, Vec<(usize, usize)>)>,
    pub clogged: Vec<usize>,
    pub held: Vec<HeldFrame>,
    pub windows: Vec<(Window, u64, f64)>,
    pub last_arrival: Vec<((usize, usize), VirtualTime)>,
    /// latency, loss, duplicate, reorder.
    pub streams: [StreamState; 4],
}

pub struct Switch {
    config: NetworkConfig,
    /// Directed (from, to) pairs each partition blocks, by partition id.
    partitions: BTreeMap<u64, BTreeSet<(usize, usize)>>,
    clogged: BTreeSet<usize>,
    held: VecDeque<HeldFrame>,
    /// Active windows' probabilities by (kind, id).
    windows: BTreeMap<(Window, u64), f64>,
    /// Latest arrival scheduled on each directed link, for FIFO order.
    last_arrival: BTreeMap<(usize, usize), VirtualTime>,
    latency_rng: ChaCha20Rng,
    loss_rng: ChaCha20Rng,
    duplicate_rng: ChaCha20Rng,
    reorder_rng: ChaCha20Rng,
}

/// A uniform draw in 0..=max (always one draw, so stream positions do not depend on max).
fn uniform(rng: &mut ChaCha20Rng, max: u64) -> u64 {
    let x = rng.next_u64();
    if max == u64::MAX {
        x
    } else {
        x % (max + 1)
    }
}

/// True with probability `p` (always one draw).
fn chance(rng: &mut ChaCha20Rng, p: f64) -> bool {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    u < p
}

impl Switch {
    pub fn new(seed: u64, config: NetworkConfig) -> Self {
        Switch {
            config,
            partitions: BTreeMap::new(),
            clogged: BTreeSet::new(),
            held: VecDeque::new(),
            windows: BTreeMap::new(),
            last_arrival: BTreeMap::new(),
            latency_rng: seed::stream(seed, "world/net/latency"),
            loss_rng: seed::stream(seed, "world/net/loss"),
            duplicate_rng: seed::stream(seed, "world/net/duplicate"),
            reorder_rng: seed::stream(seed, "world/net/reorder"),
        }
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Everything, for a snapshot: held frames, partitions, windows, FIFO marks and the
    /// position of every stream.
    pub fn state(&self) -> SwitchState {
        SwitchState {
            config: self.config.clone(),
            partitions: self
                .partitions
                .iter()
                .map(|(id, pairs)| (*id, pairs.iter().copied().collect()))
                .collect(),
            clogged: self.clogged.iter().copied().collect(),
            held: self.held.iter().cloned().collect(),
            windows: self
                .windows
                .iter()
                .map(|((k, id), p)| (*k, *id, *p))
                .collect(),
            last_arrival: self.last_arrival.iter().map(|(l, t)| (*l, *t)).collect(),
            streams: [
                &self.latency_rng,
                &self.loss_rng,
                &self.duplicate_rng,
                &self.reorder_rng,
            ]
            .map(StreamState::of),
        }
    }

    pub fn from_state(s: &SwitchState) -> Self {
        let [latency, loss, duplicate, reorder] = &s.streams;
        Switch {
            config: s.config.clone(),
            partitions: s
                .partitions
                .iter()
                .map(|(id, pairs)| (*id, pairs.iter().copied().collect()))
                .collect(),
            clogged: s.clogged.iter().copied().collect(),
            held: s.held.iter().cloned().collect(),
            windows: s.windows.iter().map(|(k, id, p)| ((*k, *id), *p)).collect(),
            last_arrival: s.last_arrival.iter().copied().collect(),
            latency_rng: latency.resume(),
            loss_rng: loss.resume(),
            duplicate_rng: duplicate.resume(),
            reorder_rng: reorder.resume(),
        }
    }

    /// A fork's new network randomness: every stream restarts from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        let fresh = Switch::new(seed, self.config.clone());
        self.latency_rng = fresh.latency_rng;
        self.loss_rng = fresh.loss_rng;
        self.duplicate_rng = fresh.duplicate_rng;
        self.reorder_rng = fresh.reorder_rng;
    }

    fn probability(&self, kind: Window) -> f64 {
        let base = match kind {
            Window::Loss => self.config.loss,
            Window::Duplicate => self.config.duplicate,
            Window::Reorder => self.config.reorder,
        };
        self.windows
            .range((kind, 0)..=(kind, u64::MAX))
            .map(|(_, p)| *p)
            .fold(base, f64::max)
    }

    pub fn reachable(&self, from: usize, to: usize) -> bool {
        !self.partitions.values().any(|p| p.contains(&(from, to)))
    }

    /// Judges one frame from `from` to `to`, sent at `now`.
    pub fn route(&mut self, now: VirtualTime, from: usize, to: usize) -> Verdict {
        if !self.reachable(from, to) {
            return Verdict::Drop(DropReason::Partitioned);
        }
        if self.clogged.contains(&from) || self.clogged.contains(&to) {
            return Verdict::Hold;
        }
        let (p_loss, p_reorder, p_duplicate) = (
            self.probability(Window::Loss),
            self.probability(Window::Reorder),
            self.probability(Window::Duplicate),
        );
        let lost = chance(&mut self.loss_rng, p_loss);
        let jitter = uniform(&mut self.latency_rng, self.config.jitter.nanos_u64());
        let reordered = chance(&mut self.reorder_rng, p_reorder);
        let extra = uniform(&mut self.reorder_rng, self.config.reorder_delay.nanos_u64());
        let duplicated = chance(&mut self.duplicate_rng, p_duplicate);
        let dup_gap = 1 + uniform(&mut self.duplicate_rng, self.config.jitter.nanos_u64());
        if lost {
            return Verdict::Drop(DropReason::Lost);
        }
        let mut at = now.saturating_add(self.config.min_latency.nanos_u64() + jitter);
        let last = self.last_arrival.entry((from, to)).or_default();
        if reordered {
            // Later frames may overtake this one: it does not move the FIFO mark.
            at = at.saturating_add(extra);
        } else {
            at = at.max(*last);
            *last = at;
        }
        Verdict::Deliver {
            at,
            duplicate: duplicated.then(|| at.saturating_add(dup_gap)),
        }
    }

    /// Keeps a frame a clog holds; false if too many are held already (drop it).
    pub fn hold(&mut self, frame: HeldFrame) -> bool {
        if self.held.len() >= self.config.max_held_frames {
            return false;
        }
        self.held.push_back(frame);
        true
    }

    pub fn held_frames(&self) -> usize {
        self.held.len()
    }

    /// Blocks traffic between `groups` (node indices; `others` are every other node,
    /// taken together as one more group). `one_way`: only from the first group out.
    pub fn partition(&mut self, id: u64, groups: &[Vec<usize>], nodes: usize, one_way: bool) {
        let mut group_of = vec![groups.len(); nodes];
        for (g, members) in groups.iter().enumerate() {
            for &n in members {
                if let Some(slot) = group_of.get_mut(n) {
                    *slot = g;
                }
            }
        }
        let mut blocked = BTreeSet::new();
        for a in 0..nodes {
            for b in 0..nodes {
                let apart = group_of[a] != group_of[b];
                if apart && (!one_way || group_of[a] == 0) {
                    blocked.insert((a, b));
                }
            }
        }
        self.partitions.insert(id, blocked);
    }

    /// Ends partition `id`, or every partition.
    pub fn heal(&mut self, id: Option<u64>) {
        match id {
            Some(id) => {
                self.partitions.remove(&id);
            }
            None => self.partitions.clear(),
        }
    }

    pub fn clog(&mut self, node: usize) {
        self.clogged.insert(node);
    }

    /// Unclogs `node` and returns the held frames whose ends are now both unclogged,
    /// in the order they were held (judge each again with [`Switch::route`]).
    pub fn unclog(&mut self, node: usize) -> Vec<HeldFrame> {
        self.clogged.remove(&node);
        let (free, still): (Vec<HeldFrame>, Vec<HeldFrame>) = self
            .held
            .drain(..)
            .partition(|h| !self.clogged.contains(&h.from) && !self.clogged.contains(&h.to));
        self.held = still.into();
        free
    }

    pub fn is_clogged(&self, node: usize) -> bool {
        self.clogged.contains(&node)
    }

    /// Opens (`Some(p)`) or closes (`None`) a probability window.
    pub fn set_window(&mut self, kind: Window, id: u64, p: Option<f64>) {
        match p {
            Some(p) => {
                self.windows.insert((kind, id), p);
            }
            None => {
                self.windows.remove(&(kind, id));
            }
        }
    }
}

#[cfg(test)]
mod tests;
