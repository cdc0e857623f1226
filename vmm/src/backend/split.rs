//! Exactness torture for a counting backend (`emu`): one [`Vcpu::run`] of budget B is
//! executed as several shorter runs whose budgets are drawn from a seed, with device
//! accesses renumbered from the start of the whole run. If the backend counts exactly and
//! keeps no state between runs besides the CPU's, the core sees what one run would have
//! shown: the same accesses at the same instruction numbers, the same exit, the same count.
//! So a whole guest run, trace hash included, must not change (explorer's `torture_emu`
//! test and `scripts/torture-emu.sh`; `VmConfig::split_runs` turns it on).
//!
//! The pieces are drawn from (seed, vCPU, instructions retired so far) alone, so a VM
//! restored from a snapshot draws the same ones. Stretches of the instruction stream are
//! single-stepped, others cut into short or medium runs or left whole, so pieces end
//! right before, inside and right after exception and interrupt delivery.

use crate::vcpu::{GuestIo, IoFlow, Vcpu, VcpuError, VcpuExit};

/// Instructions in one stretch that shares a way of cutting (a power of two).
const STRETCH: u64 = 1 << 12;

/// Runs `budget` instructions of `vcpu` as seeded pieces; see the module documentation.
pub fn run_split(
    vcpu: &mut dyn Vcpu,
    io: &mut dyn GuestIo,
    budget: u64,
    seed: u64,
    cpu: usize,
) -> Result<VcpuExit, VcpuError> {
    let mut done = 0;
    loop {
        let retired = vcpu.instructions_retired();
        let piece = piece_budget(seed, cpu, retired, done == 0).min(budget - done);
        let mut shifted = Renumbered { io: &mut *io, done };
        let exit = vcpu.run(&mut shifted, piece)?;
        let ran = vcpu.instructions_retired() - retired;
        let inexact = match exit {
            VcpuExit::BudgetExhausted => ran != piece,
            _ => ran > piece,
        };
        if inexact {
            let rip = vcpu.regs().map_or(0, |r| r.rip);
            return Err(VcpuError::Backend {
                backend: "split-runs",
                rip,
                reason: format!("a run with a budget of {piece} retired {ran} and ended {exit:?}"),
            });
        }
        done += ran;
        if exit != VcpuExit::BudgetExhausted || done >= budget {
            return Ok(exit);
        }
    }
}

/// The budget of the next piece: 1, 1..=8, 1..=512 or unlimited, by stretch; the first
/// piece of a run (where the core may just have injected an interrupt) is often short.
fn piece_budget(seed: u64, cpu: usize, retired: u64, first: bool) -> u64 {
    let at = mix(mix(seed, cpu as u64), retired);
    if first && at.is_multiple_of(2) {
        return 1 + (at >> 8) % 4;
    }
    match mix(mix(seed, cpu as u64 ^ 0x5354), retired / STRETCH) % 16 {
        0 => 1,
        1..=3 => 1 + (at >> 8) % 8,
        4..=7 => 1 + (at >> 8) % 512,
        _ => u64::MAX,
    }
}

/// SplitMix64 of `a` and `b`.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Passes accesses on, numbered from the start of the whole run.
struct Renumbered<'a> {
    io: &'a mut dyn GuestIo,
    done: u64,
}

impl GuestIo for Renumbered<'_> {
    fn pio_read(&mut self, insns: u64, port: u16, data: &mut [u8]) {
        self.io.pio_read(self.done + insns, port, data)
    }
    fn pio_write(&mut self, insns: u64, port: u16, data: &[u8]) -> IoFlow {
        self.io.pio_write(self.done + insns, port, data)
    }
    fn mmio_read(&mut self, insns: u64, addr: u64, data: &mut [u8]) {
        self.io.mmio_read(self.done + insns, addr, data)
    }
    fn mmio_write(&mut self, insns: u64, addr: u64, data: &[u8]) -> IoFlow {
        self.io.mmio_write(self.done + insns, addr, data)
    }
    fn rdtsc(&mut self, insns: u64) -> u64 {
        self.io.rdtsc(self.done + insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_the_seed_and_cover_every_kind() {
        let draw = |seed| -> Vec<u64> {
            (0..64 * STRETCH)
                .step_by(97)
                .map(|r| piece_budget(seed, 0, r, false))
                .collect()
        };
        let a = draw(1);
        assert_eq!(a, draw(1));
        assert_ne!(a, draw(2));
        assert!(a.contains(&1));
        assert!(a.iter().any(|&p| (2..=8).contains(&p)));
        assert!(a.iter().any(|&p| (9..=512).contains(&p)));
        assert!(a.contains(&u64::MAX));
    }
}
