//! Each VM's local virtual time against world time: the World schedules, delivers and
//! applies faults in world time, and a VM runs in its own (`Vm::now`).
//!
//! The map is linear from a base point: `world = world_base + (local - local_base) /
//! rate` with `rate = 1 + ppm / 1e6`. A VM with positive skew runs fast: more local
//! nanoseconds (guest instructions and timer ticks alike) pass per world nanosecond, so
//! its clocks drift ahead of its peers'. A restarted VM starts at local 0 on a new base.
//! Rebasing at a point of the old map keeps the map continuous when the skew changes.
//!
//! Rounding: `to_world` rounds down and `to_local` up, so `to_world(l) >= w` exactly
//! when `l >= to_local(w)`: a VM run to `to_local(w)` has reached world time `w`.

use serde::{Deserialize, Serialize};

use crate::clock::VirtualTime;

const PPM: i128 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockMap {
    world_base: u64,
    local_base: u64,
    ppm: i64,
}

impl ClockMap {
    /// A VM powered on at world time `world_base`, its local clock at 0.
    pub fn starting_at(world_base: VirtualTime) -> Self {
        ClockMap {
            world_base: world_base.as_nanos(),
            local_base: 0,
            ppm: 0,
        }
    }

    pub fn ppm(&self) -> i64 {
        self.ppm
    }

    fn rate(&self) -> i128 {
        PPM + i128::from(self.ppm)
    }

    pub fn to_world(&self, local: VirtualTime) -> VirtualTime {
        if local.as_nanos() == u64::MAX {
            return local;
        }
        let dl = i128::from(local.as_nanos()) - i128::from(self.local_base);
        let dw = (dl * PPM).div_euclid(self.rate());
        saturate(i128::from(self.world_base) + dw)
    }

    pub fn to_local(&self, world: VirtualTime) -> VirtualTime {
        if world.as_nanos() == u64::MAX {
            return world;
        }
        let dw = i128::from(world.as_nanos()) - i128::from(self.world_base);
        let r = self.rate();
        let dl = (dw * r + (PPM - 1)).div_euclid(PPM); // ceiling
        saturate(i128::from(self.local_base) + dl)
    }

    /// From world time `world` on, the local clock runs at `ppm` parts per million
    /// faster (or, negative, slower) than world time.
    pub fn rebase(&mut self, world: VirtualTime, ppm: i64) {
        let local = self.to_local(world);
        *self = ClockMap {
            world_base: world.as_nanos(),
            local_base: local.as_nanos(),
            ppm,
        };
    }
}

fn saturate(x: i128) -> VirtualTime {
    VirtualTime(x.clamp(0, i128::from(u64::MAX - 1)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_shifted_by_the_power_on_time() {
        let m = ClockMap::starting_at(VirtualTime(5_000));
        assert_eq!(m.to_world(VirtualTime(0)), VirtualTime(5_000));
        assert_eq!(m.to_local(VirtualTime(7_000)), VirtualTime(2_000));
        assert_eq!(m.to_world(VirtualTime(u64::MAX)), VirtualTime(u64::MAX));
    }

    #[test]
    fn skew_runs_the_local_clock_fast_or_slow() {
        let mut m = ClockMap::starting_at(VirtualTime::ZERO);
        m.rebase(VirtualTime(1_000_000_000), 1_000); // +1000 ppm from 1 s on
        assert_eq!(
            m.to_local(VirtualTime(2_000_000_000)),
            VirtualTime(2_001_000_000)
        );
        m.rebase(VirtualTime(2_000_000_000), -1_000);
        assert_eq!(
            m.to_local(VirtualTime(3_000_000_000)),
            VirtualTime(3_000_000_000)
        );
        assert_eq!(
            m.to_world(VirtualTime(2_001_000_000)),
            VirtualTime(2_000_000_000)
        );
    }

    #[test]
    fn rounding_keeps_run_limits_exact() {
        let mut m = ClockMap::starting_at(VirtualTime(3));
        m.rebase(VirtualTime(10), 333_333);
        for w in 10..2_000u64 {
            let l = m.to_local(VirtualTime(w));
            assert!(m.to_world(l) >= VirtualTime(w), "{w}");
            assert!(
                m.to_world(VirtualTime(l.as_nanos() - 1)) < VirtualTime(w),
                "{w}"
            );
        }
    }
}
