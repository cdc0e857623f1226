//! The World's event queue (one timeline for frame deliveries, faults and host input)
//! and the public event stream it reports.

use std::collections::BTreeMap;

use detvm_protocol::message::AgentMessage;
use serde::{Deserialize, Serialize};

use super::faults::Fault;
use crate::clock::VirtualTime;

/// Events ordered by (time, insertion sequence): equal times keep insertion order,
/// so the order never depends on anything but what was queued before.
#[derive(Debug, Clone)]
pub struct EventQueue<E> {
    items: BTreeMap<(VirtualTime, u64), E>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            items: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    pub fn push(&mut self, time: VirtualTime, event: E) {
        self.items.insert((time, self.next_seq), event);
        self.next_seq += 1;
    }

    pub fn peek_time(&self) -> Option<VirtualTime> {
        self.items.keys().next().map(|(t, _)| *t)
    }

    pub fn pop(&mut self) -> Option<(VirtualTime, E)> {
        self.items.pop_first().map(|((t, _), e)| (t, e))
    }

    /// Events in the order they will be popped.
    pub fn iter(&self) -> impl Iterator<Item = (VirtualTime, &E)> {
        self.items.iter().map(|((t, _), e)| (*t, e))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<E: Clone> EventQueue<E> {
    /// (time, sequence, event) in pop order and the next sequence number: the queue's
    /// exact state, ties included.
    pub fn entries(&self) -> (Vec<(VirtualTime, u64, E)>, u64) {
        let items = self
            .items
            .iter()
            .map(|((t, seq), e)| (*t, *seq, e.clone()))
            .collect();
        (items, self.next_seq)
    }

    pub fn from_entries(entries: &[(VirtualTime, u64, E)], next_seq: u64) -> Self {
        EventQueue {
            items: entries
                .iter()
                .map(|(t, seq, e)| ((*t, *seq), e.clone()))
                .collect(),
            next_seq,
        }
    }
}

/// One thing that happened in the World, at a world virtual time, on one node (or on
/// `"world"` for the network-wide faults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldEvent {
    pub time: VirtualTime,
    pub node: String,
    pub kind: EventKind,
}

/// The node name of events that concern no single node.
pub const WORLD: &str = "world";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A line on the serial console (the kernel log, a busybox /init's output);
    /// stamped at the end of the run chunk that printed it (at most 1 ms late).
    Console {
        line: String,
    },
    /// A message from the guest agent on the virtio console.
    Agent {
        message: AgentMessage,
    },
    /// Bytes on the agent channel that were not a valid frame or message.
    AgentUndecodable {
        error: String,
    },
    /// A frame on the switch: `node` is the sender, except for `delivered` (the
    /// receiver). `dst` is a node name or `broadcast`.
    Frame {
        action: FrameAction,
        src: String,
        dst: String,
        len: usize,
        ethertype: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<DropReason>,
    },
    FaultApplied {
        fault: Fault,
    },
    /// The end of a fault with a duration (or an explicit heal/unclog/restart).
    FaultHealed {
        fault: Fault,
    },
    State {
        state: NodeChange,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameAction {
    Sent,
    Delivered,
    Dropped,
    /// A second copy was scheduled.
    Duplicated,
    /// Held while a clogged node is involved; delivered after the unclog.
    Held,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    Partitioned,
    Lost,
    /// The receiver is killed, powered off or halted.
    NodeDown,
    /// No node has the destination MAC.
    UnknownDestination,
    /// Too many frames held by clogs.
    ClogOverflow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum NodeChange {
    Booted,
    Paused,
    Resumed,
    Killed,
    Restarted,
    /// The guest powered off (ACPI).
    PoweredOff,
    /// The guest reset itself; it boots again at once, disks intact.
    Rebooted,
    /// Every vCPU halted with interrupts off (Linux's "System halted").
    Halted,
    TripleFault {
        vcpu: usize,
        rip: u64,
    },
}

impl std::fmt::Display for WorldEvent {
    /// One line: `12.000345000s db console: hello`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ", self.time, self.node)?;
        match &self.kind {
            EventKind::Console { line } => write!(f, "console: {line}"),
            EventKind::Agent { message } => write!(f, "agent: {message:?}"),
            EventKind::AgentUndecodable { error } => write!(f, "agent channel error: {error}"),
            EventKind::Frame {
                action,
                src,
                dst,
                len,
                ethertype,
                reason,
            } => {
                write!(
                    f,
                    "frame {action:?} {src} -> {dst} {len} bytes type {ethertype:#06x}"
                )?;
                match reason {
                    Some(r) => write!(f, " ({r:?})"),
                    None => Ok(()),
                }
            }
            EventKind::FaultApplied { fault } => write!(f, "fault: {fault}"),
            EventKind::FaultHealed { fault } => write!(f, "healed: {fault}"),
            EventKind::State { state } => write!(f, "state: {state:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_orders_by_time_then_insertion() {
        let mut q = EventQueue::default();
        q.push(VirtualTime(20), "b");
        q.push(VirtualTime(10), "a");
        q.push(VirtualTime(20), "c");
        q.push(VirtualTime(5), "first");
        assert_eq!(q.peek_time(), Some(VirtualTime(5)));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, e)| e).collect();
        assert_eq!(order, ["first", "a", "b", "c"]);
        assert!(q.is_empty());
    }

    #[test]
    fn events_serialize_with_a_type_tag() {
        let e = WorldEvent {
            time: VirtualTime(1),
            node: "db".into(),
            kind: EventKind::State {
                state: NodeChange::Booted,
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"time":1,"node":"db","kind":{"type":"state","state":{"change":"booted"}}}"#
        );
        assert_eq!(serde_json::from_str::<WorldEvent>(&json).unwrap(), e);
    }
}
