//! One VM of the World: its configuration (kept for restarts), the running `Vm`, its
//! state, its clock map, and the decoders that turn its console bytes into events.

use detvm_protocol::frame::Decoder;
use detvm_protocol::message::{bounded_line, decode_agent, MAX_LINE};
use serde::{Deserialize, Serialize};

use super::clock_map::ClockMap;
use super::events::{EventKind, WorldEvent};
use crate::clock::VirtualTime;
use crate::devices::virtio::{VirtioDeviceConfig, VirtioDevices};
use crate::machine::{Vm, VmConfig, VmError};
use crate::seed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Running,
    /// Not scheduled; frames to it wait in its NIC's receive queue.
    Paused,
    /// Powered off by a kill fault; a restart boots it again.
    Killed,
    /// The guest powered off, halted for good or triple-faulted.
    Stopped,
}

/// The MAC of node `index`: 52:54:00:00:00:NN with NN = index + 1.
pub fn node_mac(index: usize) -> [u8; 6] {
    [
        0x52,
        0x54,
        0,
        0,
        (((index + 1) >> 8) & 0xff) as u8,
        ((index + 1) & 0xff) as u8,
    ]
}

/// The RTC's epoch for a boot at world time `at`: the world's epoch plus the time since
/// (a restarted machine's battery clock kept running) plus the clock steps it was given.
/// Whole seconds, as an RTC counts.
pub fn boot_epoch(epoch_unix_secs: i64, at: VirtualTime, wall_steps_ns: i64) -> i64 {
    let since_ns = i128::from(at.as_nanos()) + i128::from(wall_steps_ns);
    epoch_unix_secs + since_ns.div_euclid(1_000_000_000) as i64
}

/// Bytes of a console line kept until its newline: what `bounded_line` reads (it keeps
/// [`MAX_LINE`] and marks longer lines) plus a `\r` to strip, so a guest that never ends
/// its line costs bounded memory and the event is the same as for the whole line.
const SERIAL_LINE_KEPT: usize = MAX_LINE + 2;

pub(super) struct Node {
    pub name: String,
    pub config: VmConfig,
    pub vm: Option<Vm>,
    pub state: NodeState,
    pub clock: ClockMap,
    /// Boots so far (the first is 0); each boot has its own seed.
    pub boots: u32,
    /// Devices kept across a kill for the next boot (disks with their flushed data).
    pub carried: Option<VirtioDevices>,
    /// Trace hashes of earlier boots, in order.
    pub past_traces: Vec<u64>,
    /// Clock steps applied to this node so far: a later boot's RTC keeps them.
    pub wall_steps_ns: i64,
    pub serial_line: Vec<u8>,
    pub agent: Decoder,
}

impl Node {
    pub fn new(index: usize, name: String, mut config: VmConfig) -> Self {
        let mac = node_mac(index);
        match config
            .devices
            .iter_mut()
            .find(|d| matches!(d, VirtioDeviceConfig::Net { .. }))
        {
            Some(VirtioDeviceConfig::Net { mac: m }) => *m = mac,
            _ => config.devices.push(VirtioDeviceConfig::Net { mac }),
        }
        Node {
            name,
            config,
            vm: None,
            state: NodeState::Stopped,
            clock: ClockMap::starting_at(VirtualTime::ZERO),
            boots: 0,
            carried: None,
            past_traces: Vec::new(),
            wall_steps_ns: 0,
            serial_line: Vec::new(),
            agent: Decoder::new(),
        }
    }

    /// The VM seed of boot number `boot`, derived from the world seed by name.
    pub fn boot_seed(world_seed: u64, name: &str, boot: u32) -> u64 {
        use rand_chacha::rand_core::Rng;
        seed::stream(world_seed, &format!("world/node/{name}/boot/{boot}")).next_u64()
    }

    /// Boots (again) at world time `at`, with the carried devices if any.
    pub fn boot(&mut self, world_seed: u64, at: VirtualTime) -> Result<(), VmError> {
        let mut config = self.config.clone();
        config.seed = Self::boot_seed(world_seed, &self.name, self.boots);
        config.epoch_unix_secs = boot_epoch(self.config.epoch_unix_secs, at, self.wall_steps_ns);
        let vm = match self.carried.take() {
            Some(devices) => Vm::boot_with_devices(&config, devices)?,
            None => Vm::boot(&config)?,
        };
        let ppm = self.clock.ppm();
        self.clock = ClockMap::starting_at(at);
        self.clock.rebase(at, ppm);
        self.vm = Some(vm);
        self.state = NodeState::Running;
        self.agent = Decoder::new();
        Ok(())
    }

    /// Takes the VM down: a power cut (`crash`: unflushed disk writes are lost) or a
    /// clean stop. Its devices are kept for the next boot.
    pub fn take_down(&mut self, world_seed: u64, crash: bool) -> Result<(), String> {
        if let Some(mut vm) = self.vm.take() {
            if crash {
                vm.virtio().crash_disks();
            }
            self.boots += 1;
            let seed = Self::boot_seed(world_seed, &self.name, self.boots);
            let devices = vm
                .virtio()
                .power_cycled(seed, &self.config.devices)
                .map_err(|e| e.to_string())?;
            self.carried = Some(devices);
            self.past_traces.push(vm.trace().value());
        }
        Ok(())
    }

    /// Turns console bytes into events at `time`: serial lines and agent messages.
    pub fn collect_output(&mut self, time: VirtualTime, serial: &[u8], out: &mut Vec<WorldEvent>) {
        let event = |kind| WorldEvent {
            time,
            node: self.name.clone(),
            kind,
        };
        for &b in serial {
            if b == b'\n' {
                let line = std::mem::take(&mut self.serial_line);
                let line = bounded_line(line.strip_suffix(b"\r").unwrap_or(&line));
                out.push(event(EventKind::Console { line }));
            } else if self.serial_line.len() < SERIAL_LINE_KEPT {
                self.serial_line.push(b);
            }
        }
        let agent_bytes = self
            .vm
            .as_mut()
            .and_then(|vm| vm.virtio().console_mut())
            .map(|c| c.take_output())
            .unwrap_or_default();
        if agent_bytes.is_empty() {
            return;
        }
        self.agent.push(&agent_bytes);
        while let Some(frame) = self.agent.next_frame() {
            let kind = match frame
                .map_err(|e| e.to_string())
                .and_then(|payload| decode_agent(&payload).map_err(|e| e.to_string()))
            {
                Ok(message) => EventKind::Agent { message },
                Err(error) => EventKind::AgentUndecodable { error },
            };
            out.push(event(kind));
        }
    }

    /// Emits a partial last console line (the VM is going down).
    pub fn flush_line(&mut self, time: VirtualTime, out: &mut Vec<WorldEvent>) {
        if !self.serial_line.is_empty() {
            self.collect_output(time, b"\n", out);
        }
    }

    /// The combined trace value of every boot so far.
    pub fn trace_values(&self) -> impl Iterator<Item = u64> + '_ {
        self.past_traces
            .iter()
            .copied()
            .chain(self.vm.as_ref().map(|vm| vm.trace().value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_line_without_end_costs_bounded_memory() {
        let mut node = Node::new(0, "a".into(), VmConfig::new("unused".into()));
        for line in [
            vec![b'x'; 3 * MAX_LINE],
            [vec![b'y'; MAX_LINE], b"\r".to_vec()].concat(),
            [vec![b'z'; MAX_LINE + 1], b"\r".to_vec()].concat(),
        ] {
            let mut events = Vec::new();
            for chunk in line.chunks(4096) {
                node.collect_output(VirtualTime::ZERO, chunk, &mut events);
            }
            assert!(node.serial_line.len() <= SERIAL_LINE_KEPT);
            node.collect_output(VirtualTime::ZERO, b"\n", &mut events);
            let whole = bounded_line(line.strip_suffix(b"\r").unwrap_or(&line));
            assert!(
                matches!(&events[..], [WorldEvent { kind: EventKind::Console { line }, .. }] if *line == whole)
            );
        }
    }

    #[test]
    fn a_restart_keeps_the_wall_clock_running() {
        let epoch = 1_700_000_000;
        assert_eq!(boot_epoch(epoch, VirtualTime::ZERO, 0), epoch);
        let at = VirtualTime::from_millis(12_900);
        assert_eq!(boot_epoch(epoch, at, 0), epoch + 12);
        assert_eq!(boot_epoch(epoch, at, 90_000_000_000), epoch + 102);
        assert_eq!(boot_epoch(epoch, at, -30_000_000_000), epoch - 18);
    }
}
