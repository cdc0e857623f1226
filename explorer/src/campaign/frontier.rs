//! The frontier: moments that may be branched from, each with energy. A moment's energy
//! starts at its branch's novelty score (plus one, so a moment that found nothing new
//! but still was kept can be picked) and halves each time it is chosen (an AFL-style
//! power schedule). Picks are proportional to energy, except that one pick in
//! `explore_one_in` is uniform over the frontier, so low-energy moments are not starved.

use rand_chacha::rand_core::Rng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// Serde: part of a campaign's saved state; the energy is kept by its bits, so a
/// resumed campaign picks exactly as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moment {
    /// The timeline this moment ends (`T0` is the root).
    pub timeline: u64,
    pub vtime_ns: u64,
    #[serde(with = "f64_bits")]
    pub energy: f64,
}

mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(x.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frontier {
    pub moments: Vec<Moment>,
}

/// One pick in this many is uniform instead of by energy.
pub const EXPLORE_ONE_IN: u64 = 5;

impl Frontier {
    pub fn push(&mut self, timeline: u64, vtime_ns: u64, score: f64) {
        self.moments.push(Moment {
            timeline,
            vtime_ns,
            energy: 1.0 + score,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.moments.is_empty()
    }

    /// Picks a moment (its timeline) and spends half its energy.
    pub fn pick(&mut self, rng: &mut ChaCha20Rng) -> Option<u64> {
        if self.moments.is_empty() {
            return None;
        }
        let index = if rng.next_u64().is_multiple_of(EXPLORE_ONE_IN) {
            (rng.next_u64() % self.moments.len() as u64) as usize
        } else {
            let total: f64 = self.moments.iter().map(|m| m.energy).sum();
            // 53 random bits as a fraction in [0, 1).
            let mut x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let mut chosen = self.moments.len() - 1;
            for (i, m) in self.moments.iter().enumerate() {
                if x < m.energy {
                    chosen = i;
                    break;
                }
                x -= m.energy;
            }
            chosen
        };
        let m = &mut self.moments[index];
        m.energy /= 2.0;
        Some(m.timeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn energy_decides_and_is_spent() {
        let mut f = Frontier::default();
        f.push(1, 10, 0.0);
        f.push(2, 20, 30.0);
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let picks: Vec<u64> = (0..20).filter_map(|_| f.pick(&mut rng)).collect();
        let twos = picks.iter().filter(|&&t| t == 2).count();
        assert!(twos > 5, "the energetic moment is picked more: {picks:?}");
        assert!(
            picks.contains(&1),
            "the other one too, eventually: {picks:?}"
        );
        assert!(f.moments[1].energy < 31.0);
    }

    #[test]
    fn the_same_seed_picks_the_same() {
        let run = || {
            let mut f = Frontier::default();
            for t in 0..5 {
                f.push(t, t * 10, t as f64);
            }
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            (0..30).filter_map(|_| f.pick(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
