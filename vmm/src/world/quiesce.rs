//! Ending every fault at once, for checks that need a quiet system (the test
//! composer's `eventually_` commands).

use super::{Action, EventQueue, Fault, NodeState, World, WorldError};

impl World {
    /// Cancels every fault still planned and ends those in force now: lasting faults
    /// end as their duration would have ended them, then partitions heal, every node
    /// is unclogged, killed nodes restart and skewed clocks run true again. Each is an
    /// event at the current world time. Frame deliveries and host input stay queued.
    pub fn stop_faults(&mut self) -> Result<(), WorldError> {
        let now = self.now;
        let mut planned = std::mem::take(&mut self.queue);
        let mut ends = Vec::new();
        let mut kept = EventQueue::default();
        while let Some((t, action)) = planned.pop() {
            match action {
                Action::Apply(_) | Action::SwizzleStep { .. } => {}
                Action::End { id, fault } => ends.push((id, fault)),
                other => kept.push(t, other),
            }
        }
        self.queue = kept;
        for (id, fault) in ends {
            self.end(now, id, fault)?;
        }
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.apply(now, Fault::Heal {})?;
        self.apply(now, Fault::Unclog { nodes: names })?;
        for i in 0..self.nodes.len() {
            let node = self.nodes[i].name.clone();
            if self.nodes[i].state == NodeState::Killed {
                self.apply(now, Fault::Restart { node: node.clone() })?;
            }
            if self.nodes[i].clock.ppm() != 0 {
                let fault = Fault::ClockSkew {
                    node,
                    ppm: 0,
                    duration: None,
                };
                self.apply(now, fault)?;
            }
        }
        Ok(())
    }
}
