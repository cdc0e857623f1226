//! virtio-rng (entropy device, ID 4): one request queue; every device-writable byte
//! the driver posts is filled from a ChaCha20 stream derived from the world seed
//! (`vm/virtio-rng`), so guest /dev/random follows the seed.

use std::convert::Infallible;
use std::io::Write;

use rand_chacha::rand_core::{Rng as _, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::device::{VirtioDevice, VirtioError};
use super::queue::{complete, next_request};
use crate::persist::Persist;
use crate::seed;

/// Most bytes handed out per request: bounds the work a guest can ask of one notify
/// (Linux asks for at most a page).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub struct Rng {
    // Boxed: the ChaCha buffer would make every `AnyDevice` 300 bytes.
    stream: Box<ChaCha20Rng>,
}

/// ChaCha state as (key, position): enough to resume the exact stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub key: [u8; 32],
    /// Position in 32-bit words (a `u128`, stored as two halves for JSON).
    pub word_pos_lo: u64,
    pub word_pos_hi: u64,
}

impl Rng {
    /// The device of the VM whose world seed is `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Rng {
            stream: Box::new(seed::stream(seed, "vm/virtio-rng")),
        }
    }
}

impl Persist for Rng {
    type State = RngState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> RngState {
        let pos = self.stream.get_word_pos();
        RngState {
            key: self.stream.get_seed(),
            word_pos_lo: pos as u64,
            word_pos_hi: (pos >> 64) as u64,
        }
    }

    fn restore((): (), state: &RngState) -> Result<Self, Infallible> {
        let mut stream = ChaCha20Rng::from_seed(state.key);
        stream.set_word_pos(u128::from(state.word_pos_lo) | (u128::from(state.word_pos_hi) << 64));
        Ok(Rng {
            stream: Box::new(stream),
        })
    }
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[64]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<bool, VirtioError> {
        let Some(queue) = queues.get_mut(index) else {
            return Ok(false);
        };
        let mut used = false;
        while let Some(mut req) = next_request(queue, mem)? {
            // Device-readable buffers in the chain are ignored (wrong direction).
            let n = req.writer.available_bytes().min(MAX_REQUEST_BYTES);
            let mut bytes = vec![0u8; n];
            self.stream.fill_bytes(&mut bytes);
            req.writer
                .write_all(&bytes)
                .map_err(|e| VirtioError::Memory(e.to_string()))?;
            complete(queue, mem, req.head, n as u32)?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{Driver, WRITE};

    fn read_random(seed: u64, lens: &[u32]) -> Vec<Vec<u8>> {
        let mut d = Driver::new(Rng::from_seed(seed));
        lens.iter()
            .map(|&len| {
                let buf = d.buffer(len as usize);
                d.submit(0, &[(buf, len, WRITE)]);
                assert!(d.notify(0));
                let (_, used_len) = d.pop_used(0).expect("completed");
                assert_eq!(used_len, len);
                d.read(buf, len as usize)
            })
            .collect()
    }

    #[test]
    fn fills_buffers_from_the_seeded_stream() {
        let a = read_random(1, &[16, 64]);
        assert_eq!(a, read_random(1, &[16, 64]));
        assert_ne!(a, read_random(2, &[16, 64]));
        assert_ne!(a[0], vec![0; 16]);
        // The bytes are the stream's, in order, across requests.
        let mut expected = vec![0u8; 80];
        seed::stream(1, "vm/virtio-rng").fill_bytes(&mut expected);
        assert_eq!([a[0].clone(), a[1].clone()].concat(), expected);
    }

    #[test]
    fn readable_buffers_get_nothing() {
        let mut d = Driver::new(Rng::from_seed(1));
        let buf = d.buffer(16);
        d.submit(0, &[(buf, 16, 0)]);
        d.notify(0);
        assert_eq!(d.pop_used(0), Some((0, 0)));
        assert_eq!(d.read(buf, 16), vec![0; 16]);
    }

    #[test]
    fn huge_requests_are_capped() {
        let mut d = Driver::new(Rng::from_seed(1));
        let buf = d.buffer(48 * 1024);
        // Two 48 KiB descriptors over one buffer: 96 KiB asked, 64 KiB given.
        d.submit(0, &[(buf, 48 * 1024, WRITE), (buf, 48 * 1024, WRITE)]);
        d.notify(0);
        assert_eq!(d.pop_used(0), Some((0, MAX_REQUEST_BYTES as u32)));
    }

    #[test]
    fn buffer_outside_ram_breaks_the_device() {
        let mut d = Driver::new(Rng::from_seed(1));
        let buf = d.buffer(4);
        d.submit(0, &[(buf, 1 << 30, WRITE)]);
        d.notify(0);
        assert!(d.broken());
        assert_eq!(d.pop_used(0), None);
    }

    #[test]
    fn state_round_trip_resumes_the_stream() {
        let mut a = Rng::from_seed(9);
        let mut skip = [0u8; 37];
        a.stream.fill_bytes(&mut skip);
        let Ok(mut b) = crate::persist::round_trip(&a, ());
        let (mut x, mut y) = ([0u8; 64], [0u8; 64]);
        a.stream.fill_bytes(&mut x);
        b.stream.fill_bytes(&mut y);
        assert_eq!(x, y);
    }
}
