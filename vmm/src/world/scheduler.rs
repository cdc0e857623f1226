//! Which VM runs next and how far (DESIGN points 7 and 8): a sequential conservative
//! simulation. The VM that can act earliest runs; it may run up to the horizon, the
//! earliest moment another VM's frame could reach it: every other VM's earliest
//! possible send time plus the minimum link latency (the lookahead).
//!
//! A VM whose vCPUs are all halted cannot send before it wakes, so its earliest send
//! is its next timer deadline or the next event addressed to it, not its current
//! time. That is what lets idle worlds jump ahead instead of crawling in
//! lookahead-sized steps.

use crate::clock::VirtualTime;

/// What the scheduler needs to know about one node, in world time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeView {
    /// When the node can next execute on its own: its current time if a vCPU can
    /// run, its next timer if all are halted; `None` if it is paused, down, or waits
    /// for input only.
    pub next_run: Option<VirtualTime>,
    /// The next queued event addressed to the node (a frame, host input).
    pub next_event: Option<VirtualTime>,
}

impl NodeView {
    /// The earliest world time at which this node could send anything.
    pub fn earliest_send(&self) -> Option<VirtualTime> {
        match (self.next_run, self.next_event) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The node to run next: the smallest `next_run`, ties to the lowest index.
pub fn pick(views: &[NodeView]) -> Option<(usize, VirtualTime)> {
    views
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.next_run.map(|t| (t, i)))
        .min()
        .map(|(t, i)| (i, t))
}

/// How far node `i` may run without missing a frame another node could still send it.
pub fn horizon(views: &[NodeView], i: usize, lookahead: u64) -> VirtualTime {
    views
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(_, v)| v.earliest_send())
        .min()
        .map_or(VirtualTime(u64::MAX), |t| t.saturating_add(lookahead))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(run: Option<u64>, event: Option<u64>) -> NodeView {
        NodeView {
            next_run: run.map(VirtualTime),
            next_event: event.map(VirtualTime),
        }
    }

    #[test]
    fn picks_the_earliest_and_breaks_ties_by_index() {
        let views = [
            view(Some(30), None),
            view(Some(10), None),
            view(Some(10), None),
        ];
        assert_eq!(pick(&views), Some((1, VirtualTime(10))));
        assert_eq!(pick(&[view(None, Some(5))]), None);
    }

    #[test]
    fn horizon_is_the_others_earliest_send_plus_lookahead() {
        let views = [
            view(Some(100), None),
            view(Some(150), None),
            view(Some(400), None),
        ];
        assert_eq!(horizon(&views, 0, 50), VirtualTime(200));
        assert_eq!(horizon(&views, 1, 50), VirtualTime(150));
    }

    #[test]
    fn an_idle_node_bounds_others_by_its_wake_or_its_next_event() {
        // Node 1 sleeps until 5 s, but a frame for it lands at 2 s: it could answer then.
        let views = [view(Some(1_000), None), view(Some(5_000), Some(2_000))];
        assert_eq!(horizon(&views, 0, 100), VirtualTime(2_100));
        // Without the frame, node 0 may run to node 1's wake-up.
        let views = [view(Some(1_000), None), view(Some(5_000), None)];
        assert_eq!(horizon(&views, 0, 100), VirtualTime(5_100));
    }

    #[test]
    fn nodes_that_cannot_send_do_not_bound_the_horizon() {
        let views = [view(Some(1_000), None), view(None, None)];
        assert_eq!(horizon(&views, 0, 100), VirtualTime(u64::MAX));
    }
}
