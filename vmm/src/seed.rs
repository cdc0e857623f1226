//! One master seed derives every sub-seed (TigerBeetle's VOPR style): a stream is
//! named by a label such as `vm/db/boot-rng`, so adding a new consumer never shifts
//! the values an existing one draws.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// The 32-byte ChaCha key for `label` under `seed`.
pub fn derive_key(seed: u64, label: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"detvm-seed-v1\0");
    hasher.update(seed.to_le_bytes());
    hasher.update(label.as_bytes());
    hasher.finalize().into()
}

/// A deterministic random stream for one consumer.
pub fn stream(seed: u64, label: &str) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(derive_key(seed, label))
}

/// `n` bytes from the stream named `label`.
pub fn bytes<const N: usize>(seed: u64, label: &str) -> [u8; N] {
    let mut out = [0u8; N];
    stream(seed, label).fill_bytes(&mut out);
    out
}

/// A stream's exact position, for snapshots: (key, stream number, word position).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamState {
    pub key: [u8; 32],
    pub stream: u64,
    /// Position in 32-bit words (a `u128`, kept as two halves for JSON).
    pub word_pos_lo: u64,
    pub word_pos_hi: u64,
}

impl StreamState {
    pub fn of(rng: &ChaCha20Rng) -> Self {
        let pos = rng.get_word_pos();
        StreamState {
            key: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos_lo: pos as u64,
            word_pos_hi: (pos >> 64) as u64,
        }
    }

    pub fn resume(&self) -> ChaCha20Rng {
        let mut rng = ChaCha20Rng::from_seed(self.key);
        rng.set_stream(self.stream);
        rng.set_word_pos(u128::from(self.word_pos_lo) | (u128::from(self.word_pos_hi) << 64));
        rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_state_resumes_mid_block() {
        let mut a = stream(3, "x");
        a.next_u32();
        let saved = StreamState::of(&a);
        let mut b = saved.resume();
        for _ in 0..40 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn streams_follow_seed_and_label() {
        let a: [u8; 16] = bytes(7, "vm/0/boot-rng");
        assert_eq!(a, bytes::<16>(7, "vm/0/boot-rng"));
        assert_ne!(a, bytes::<16>(8, "vm/0/boot-rng"));
        assert_ne!(a, bytes::<16>(7, "vm/1/boot-rng"));
    }
}
