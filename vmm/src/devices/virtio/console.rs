//! virtio-console (ID 3), single port, no MULTIPORT: the agent channel. The guest
//! sees `/dev/hvc0`; the host side is two byte queues. Framing is the protocol
//! crate's job.
//!
//! Queue 0 (receiveq) carries host → guest bytes into buffers the driver posts: they
//! are delivered when the driver posts buffers (its notify) and at every exit
//! ([`VirtioDevice::poll`]). Queue 1 (transmitq) carries guest → host bytes, taken
//! at the driver's notify.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::device::{VirtioDevice, VirtioError};
use super::queue::{complete, next_request, unpop};
use crate::persist::Persist;

const RX: usize = 0;
const TX: usize = 1;
/// Most bytes taken from one transmit chain; the rest of a longer chain is dropped
/// (Linux sends at most a page per chain).
pub const MAX_TX_CHAIN: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Console {
    input: VecDeque<u8>,
    output: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleState {
    pub input: Vec<u8>,
    pub output: Vec<u8>,
}

impl Console {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues bytes for the guest; they arrive at the next exit with RX buffers posted.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes);
    }

    /// Bytes the guest wrote since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Host bytes not yet delivered.
    pub fn pending_input(&self) -> usize {
        self.input.len()
    }

    fn deliver(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, VirtioError> {
        let mut used = false;
        while !self.input.is_empty() {
            let Some(mut req) = next_request(queue, mem)? else {
                break;
            };
            let n = req.writer.available_bytes().min(self.input.len());
            if n == 0 {
                // A chain with no writable bytes cannot carry input: give it back empty.
                complete(queue, mem, req.head, 0)?;
                used = true;
                continue;
            }
            let (a, b) = self.input.as_slices();
            let chunk: Vec<u8> = a.iter().chain(b).take(n).copied().collect();
            if let Err(e) = req.writer.write_all(&chunk) {
                unpop(queue);
                return Err(VirtioError::Memory(e.to_string()));
            }
            self.input.drain(..n);
            complete(queue, mem, req.head, n as u32)?;
            used = true;
        }
        Ok(used)
    }

    fn transmit(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, VirtioError> {
        let mut used = false;
        while let Some(req) = next_request(queue, mem)? {
            let mut reader = req.reader.take(MAX_TX_CHAIN as u64);
            reader
                .read_to_end(&mut self.output)
                .map_err(|e| VirtioError::Memory(e.to_string()))?;
            complete(queue, mem, req.head, 0)?;
            used = true;
        }
        Ok(used)
    }
}

impl Persist for Console {
    type State = ConsoleState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> ConsoleState {
        ConsoleState {
            input: self.input.iter().copied().collect(),
            output: self.output.clone(),
        }
    }

    fn restore((): (), state: &ConsoleState) -> Result<Self, Infallible> {
        Ok(Console {
            input: state.input.iter().copied().collect(),
            output: state.output.clone(),
        })
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[64, 64]
    }

    fn features(&self) -> u64 {
        0
    }

    /// cols, rows, max_nr_ports, emerg_wr: all zero without the features that use them.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<bool, VirtioError> {
        match (index, queues) {
            (RX, [rx, ..]) => self.deliver(mem, rx),
            (TX, [_, tx, ..]) => self.transmit(mem, tx),
            _ => Ok(false),
        }
    }

    fn poll(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue]) -> Result<bool, VirtioError> {
        match queues.get_mut(RX) {
            Some(rx) => self.deliver(mem, rx),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{Driver, WRITE};
    use crate::persist::round_trip;

    #[test]
    fn guest_output_reaches_the_host() {
        let mut d = Driver::new(Console::new());
        let (a, b) = (d.buffer(5), d.buffer(6));
        d.write(a, b"hello");
        d.write(b, b" world");
        d.submit(1, &[(a, 5, 0), (b, 6, 0)]);
        assert!(d.notify(1));
        assert_eq!(d.pop_used(1), Some((0, 0)));
        assert_eq!(d.device().take_output(), b"hello world");
        assert!(d.device().take_output().is_empty());
    }

    #[test]
    fn host_input_waits_for_buffers_then_arrives_at_an_exit() {
        let mut d = Driver::new(Console::new());
        d.device().push_input(b"ping!");
        assert!(!d.poll(), "no buffer posted yet");
        let buf = d.buffer(3);
        d.submit(0, &[(buf, 3, WRITE)]);
        assert!(d.notify(0), "posting a buffer delivers what is queued");
        assert_eq!(d.pop_used(0), Some((0, 3)));
        assert_eq!(d.read(buf, 3), b"pin");
        assert_eq!(d.device().pending_input(), 2);
        d.ack();
        let buf2 = d.buffer(8);
        d.submit(0, &[(buf2, 8, WRITE)]);
        // The driver's notify may not come; the exit-time poll delivers anyway.
        assert!(d.poll());
        assert_eq!(d.pop_used(0), Some((1, 2)));
        assert_eq!(d.read(buf2, 2), b"g!");
    }

    #[test]
    fn input_queued_before_driver_ok_arrives_with_it() {
        let mut d = Driver::raw(Console::new());
        d.device().push_input(b"early");
        d.handshake();
        let buf = d.buffer(8);
        d.submit(0, &[(buf, 8, WRITE)]);
        assert!(d.poll());
        assert_eq!(d.read(buf, 5), b"early");
    }

    #[test]
    fn wrong_direction_buffers_do_not_stall_the_queue() {
        let mut d = Driver::new(Console::new());
        d.device().push_input(b"x");
        let (ro, rw) = (d.buffer(4), d.buffer(4));
        d.submit(0, &[(ro, 4, 0)]);
        d.submit(0, &[(rw, 4, WRITE)]);
        d.notify(0);
        assert_eq!(d.pop_used(0), Some((0, 0)));
        assert_eq!(d.pop_used(0), Some((1, 1)));
        // Writable buffers on the transmit queue carry nothing.
        d.submit(1, &[(rw, 4, WRITE)]);
        d.notify(1);
        assert!(d.device().take_output().is_empty());
        assert!(!d.broken());
    }

    #[test]
    fn state_round_trip() {
        let mut c = Console::new();
        c.push_input(b"in");
        c.output.extend(b"out");
        let Ok(r) = round_trip(&c, ());
        assert_eq!(r.state(), c.state());
    }
}
