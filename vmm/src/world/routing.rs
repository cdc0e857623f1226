//! The World's network side: frames a VM sent go through the [`Switch`](super::switch::Switch) (partitions,
//! clogs, loss, latency) and come back as queued deliveries, which reach the receiver's
//! NIC at their time. Every verdict folds into the world trace and is reported as a
//! frame event.

use super::events::{DropReason, EventKind, FrameAction};
use super::node::{node_mac, NodeState};
use super::switch::{HeldFrame, Verdict};
use super::{Action, World, WorldError};
use crate::clock::VirtualTime;
use crate::trace::DecisionKind;

impl World {
    /// Routes a frame node `from` sent at `now` to its destination(s).
    pub(super) fn send_frame(&mut self, now: VirtualTime, from: usize, frame: Vec<u8>) {
        let (Some(dst), Some(et)) = (frame.get(0..6), frame.get(12..14)) else {
            return; // shorter than an Ethernet header: nothing to route
        };
        let ethertype = u16::from_be_bytes([et[0], et[1]]);
        let broadcast = dst[0] & 1 == 1;
        let targets: Vec<usize> = if broadcast {
            (0..self.nodes.len()).filter(|&j| j != from).collect()
        } else {
            (0..self.nodes.len())
                .filter(|&j| j != from && node_mac(j) == dst)
                .collect()
        };
        self.stats.frames_sent += 1;
        let src = self.nodes[from].name.clone();
        let dst_name = match (broadcast, targets.first()) {
            (true, _) => "broadcast".to_string(),
            (false, Some(&j)) => self.nodes[j].name.clone(),
            (false, None) => format!("{:02x?}", dst),
        };
        let frame_event = |action, dst: &str, reason| EventKind::Frame {
            action,
            src: src.clone(),
            dst: dst.to_string(),
            len: frame.len(),
            ethertype,
            reason,
        };
        self.emit(now, &src, frame_event(FrameAction::Sent, &dst_name, None));
        if targets.is_empty() {
            self.drop_frame(
                now,
                from,
                &frame_event(
                    FrameAction::Dropped,
                    &dst_name,
                    Some(DropReason::UnknownDestination),
                ),
            );
            return;
        }
        for to in targets {
            let to_name = self.nodes[to].name.clone();
            match self.switch.route(now, from, to) {
                Verdict::Drop(reason) => {
                    self.drop_frame(
                        now,
                        from,
                        &frame_event(FrameAction::Dropped, &to_name, Some(reason)),
                    );
                }
                Verdict::Hold => {
                    let held = HeldFrame {
                        from,
                        to,
                        frame: frame.clone(),
                    };
                    if self.switch.hold(held) {
                        self.emit(now, &src, frame_event(FrameAction::Held, &to_name, None));
                    } else {
                        self.drop_frame(
                            now,
                            from,
                            &frame_event(
                                FrameAction::Dropped,
                                &to_name,
                                Some(DropReason::ClogOverflow),
                            ),
                        );
                    }
                }
                Verdict::Deliver { at, duplicate } => {
                    self.record(
                        DecisionKind::WorldDeliver,
                        to,
                        at,
                        from as u64,
                        frame.len() as u64,
                    );
                    self.queue.push(
                        at,
                        Action::Deliver {
                            from,
                            to,
                            frame: frame.clone(),
                        },
                    );
                    if let Some(again) = duplicate {
                        self.emit(
                            now,
                            &src,
                            frame_event(FrameAction::Duplicated, &to_name, None),
                        );
                        self.queue.push(
                            again,
                            Action::Deliver {
                                from,
                                to,
                                frame: frame.clone(),
                            },
                        );
                    }
                }
            }
        }
    }

    /// Counts, traces and reports a frame that will not arrive.
    pub(super) fn drop_frame(&mut self, now: VirtualTime, from: usize, kind: &EventKind) {
        self.stats.frames_dropped += 1;
        self.record(DecisionKind::WorldDrop, from, now, 0, 0);
        let src = self.nodes[from].name.clone();
        self.emit(now, &src, kind.clone());
    }

    /// A frame reaches node `to` at `t`: its NIC queues it, or it is dropped when the
    /// node is down.
    pub(super) fn deliver(
        &mut self,
        t: VirtualTime,
        from: usize,
        to: usize,
        frame: Vec<u8>,
    ) -> Result<(), WorldError> {
        let ethertype = ethertype(&frame);
        let (src, dst) = (self.nodes[from].name.clone(), self.nodes[to].name.clone());
        let len = frame.len();
        let kind = |action, reason| EventKind::Frame {
            action,
            src: src.clone(),
            dst: dst.clone(),
            len,
            ethertype,
            reason,
        };
        let node = &mut self.nodes[to];
        let up = matches!(node.state, NodeState::Running | NodeState::Paused);
        match node.vm.as_mut().filter(|_| up) {
            Some(vm) => {
                // A paused VM's NIC queues the frame; the guest sees it on resume.
                if node.state == NodeState::Running {
                    // The receiver is idle up to `t` at least (it would have run
                    // first otherwise): move its clock to the delivery time.
                    vm.skip_to(node.clock.to_local(t));
                }
                if let Some(net) = vm.virtio().net_mut() {
                    net.push_rx_frame(frame.clone());
                }
                let event = kind(FrameAction::Delivered, None);
                self.stats.frames_delivered += 1;
                self.record(
                    DecisionKind::WorldDeliver,
                    to,
                    t,
                    from as u64,
                    frame.len() as u64,
                );
                self.emit(t, &dst, event);
            }
            None => {
                let event = kind(FrameAction::Dropped, Some(DropReason::NodeDown));
                self.drop_frame(t, from, &event);
            }
        }
        Ok(())
    }

    /// A frame a clog held is judged again at `t` (it may meet a partition or loss now).
    pub(super) fn route_again(&mut self, t: VirtualTime, held: HeldFrame) {
        let HeldFrame { from, to, frame } = held;
        match self.switch.route(t, from, to) {
            Verdict::Deliver { at, duplicate } => {
                self.record(
                    DecisionKind::WorldDeliver,
                    to,
                    at,
                    from as u64,
                    frame.len() as u64,
                );
                if let Some(again) = duplicate {
                    self.queue.push(
                        again,
                        Action::Deliver {
                            from,
                            to,
                            frame: frame.clone(),
                        },
                    );
                }
                self.queue.push(at, Action::Deliver { from, to, frame });
            }
            Verdict::Hold => {
                let _ = self.switch.hold(HeldFrame { from, to, frame });
            }
            Verdict::Drop(reason) => {
                let kind = EventKind::Frame {
                    action: FrameAction::Dropped,
                    src: self.nodes[from].name.clone(),
                    dst: self.nodes[to].name.clone(),
                    len: frame.len(),
                    ethertype: ethertype(&frame),
                    reason: Some(reason),
                };
                self.drop_frame(t, from, &kind);
            }
        }
    }
}

/// The EtherType of a frame (0 for a frame too short to have one).
fn ethertype(frame: &[u8]) -> u16 {
    frame
        .get(12..14)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}
