//! What a World is built from, and its errors.

use serde::{Deserialize, Serialize};

use super::faults::{check_not_negative, check_probability, FaultPlan, PlanError};
use super::span::Span;
use crate::clock::VirtualTime;
use crate::machine::{VmConfig, VmError};

/// One VM of the world. The World assigns its MAC (52:54:00:00:00:NN, NN = index + 1,
/// on the first virtio-net device, added if the config has none) and derives its
/// `seed` from the world seed (per node name and boot), so `vm.seed` is ignored.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The compose service name; events and faults address nodes by it.
    pub name: String,
    pub vm: VmConfig,
}

#[derive(Debug, Clone)]
pub struct WorldConfig {
    pub seed: u64,
    pub nodes: Vec<NodeConfig>,
    pub network: NetworkConfig,
    pub faults: FaultPlan,
}

/// The switch's base behaviour; fault windows can raise loss, duplication and
/// reordering for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Every frame takes at least this long; also the scheduler's lookahead, so
    /// larger values let each VM run longer between switches.
    pub min_latency: Span,
    /// Extra delay per frame, uniform in 0..=jitter. Links stay FIFO: a frame never
    /// overtakes an earlier one on the same link unless it is reordered.
    pub jitter: Span,
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    /// A reordered frame takes up to this much extra delay and may be overtaken.
    pub reorder_delay: Span,
    /// Frames held by clogs beyond this are dropped.
    pub max_held_frames: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            min_latency: Span::from_micros(200),
            jitter: Span::from_micros(50),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Span::from_millis(1),
            max_held_frames: 4096,
        }
    }
}

impl NetworkConfig {
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.min_latency < Span::from_micros(1) {
            return Err(PlanError::new(
                "network.min_latency",
                format!(
                    "{} is below 1us (it is the scheduler's lookahead: it must be positive)",
                    self.min_latency
                ),
            ));
        }
        check_not_negative("network.jitter", self.jitter)?;
        check_not_negative("network.reorder_delay", self.reorder_delay)?;
        check_probability("network.loss", self.loss)?;
        check_probability("network.duplicate", self.duplicate)?;
        check_probability("network.reorder", self.reorder)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("invalid world: {0}")]
    Plan(#[from] PlanError),
    #[error("node {node} at {time}: {source}")]
    Vm {
        node: String,
        time: VirtualTime,
        #[source]
        source: VmError,
    },
    #[error("node {node} at {time}: cannot restart its devices: {message}")]
    Restart {
        node: String,
        time: VirtualTime,
        message: String,
    },
    /// A fault injected or scheduled at run time that does not fit the world.
    #[error("invalid fault: {0}")]
    Fault(PlanError),
    #[error("no node is named {0:?}")]
    UnknownNode(String),
    #[error("node {node}: {message}")]
    Send { node: String, message: String },
}
