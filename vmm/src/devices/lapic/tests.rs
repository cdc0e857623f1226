//! LAPIC unit tests: registers, priorities, timer expiries, IPI routing, garbage.

use super::*;
use crate::persist::round_trip;

fn w(l: &mut Lapic, now: u64, off: u64, v: u32) -> Option<LapicEvent> {
    l.write(VirtualTime(now), off, &v.to_le_bytes())
}

fn r(l: &Lapic, now: u64, off: u64) -> u32 {
    let mut d = [0u8; 4];
    l.read(VirtualTime(now), off, &mut d);
    u32::from_le_bytes(d)
}

fn enabled(id: u8) -> Lapic {
    let mut l = Lapic::new(id);
    w(&mut l, 0, 0xF0, 0x1FF);
    l
}

#[test]
fn reset_values() {
    let l = Lapic::new(3);
    assert_eq!(r(&l, 0, 0x20), 0x0300_0000);
    assert_eq!(r(&l, 0, 0x30), 0x50014);
    assert_eq!(r(&l, 0, 0xE0), 0xFFFF_FFFF);
    assert_eq!(r(&l, 0, 0xF0), 0xFF);
    assert_eq!(r(&l, 0, 0x350), LVT_MASKED);
    assert!(l.accepts_pic_interrupts());
}

#[test]
fn priority_delivery_and_eoi() {
    let mut l = enabled(0);
    l.accept_irq(0x41, false);
    l.accept_irq(0x62, true);
    l.accept_irq(0x35, false);
    assert_eq!(l.acknowledge(), Some(0x62));
    assert_eq!(r(&l, 0, 0xA0), 0x60, "PPR is the in-service class");
    assert_eq!(l.pending_vector(), None, "0x41 is below class 6");
    l.accept_irq(0x71, false);
    assert_eq!(l.acknowledge(), Some(0x71));
    assert_eq!(w(&mut l, 0, 0xB0, 0), None, "edge EOI");
    assert_eq!(w(&mut l, 0, 0xB0, 0), Some(LapicEvent::LevelEoi(0x62)));
    w(&mut l, 0, 0x80, 0x50); // TPR blocks class 4 and below
    assert_eq!(l.pending_vector(), None);
    w(&mut l, 0, 0x80, 0x30);
    assert_eq!(l.acknowledge(), Some(0x41));
    assert_eq!(r(&l, 0, 0x100 + 0x20), 1 << 1, "ISR bit of 0x41");
    // Software-disabled: IRR latches, nothing delivered.
    w(&mut l, 0, 0xF0, 0xFF);
    assert_eq!(l.pending_vector(), None);
    assert_eq!(r(&l, 0, 0x320), LVT_MASKED);
}

#[test]
fn timer_oneshot_expires_at_exact_time() {
    let mut l = enabled(0);
    w(&mut l, 1000, 0x3E0, 0x3); // divide by 16
    w(&mut l, 1000, 0x320, 0xEC); // one-shot, vector 0xEC
    w(&mut l, 1000, 0x380, 625); // 625 * 16 ns = 10 us
    assert_eq!(l.next_deadline(), Some(VirtualTime(11_000)));
    assert_eq!(r(&l, 6_000, 0x390), 313);
    assert!(!l.advance(VirtualTime(10_999)));
    assert!(l.advance(VirtualTime(11_000)));
    assert_eq!(l.pending_vector(), Some(0xEC));
    assert_eq!(l.next_deadline(), None);
    assert_eq!(r(&l, 12_000, 0x390), 0);
}

#[test]
fn timer_periodic_reloads() {
    let mut l = enabled(0);
    w(&mut l, 0, 0x3E0, 0xB); // divide by 1
    w(&mut l, 0, 0x320, LVT_PERIODIC | 0xEC);
    w(&mut l, 0, 0x380, 1_000_000); // 1 ms
    for k in 1..=3u64 {
        assert_eq!(l.next_deadline(), Some(VirtualTime(k * 1_000_000)));
        assert!(l.advance(VirtualTime(k * 1_000_000)));
        assert_eq!(l.acknowledge(), Some(0xEC));
        w(&mut l, 0, 0xB0, 0);
    }
    assert_eq!(r(&l, 3_250_000, 0x390), 750_000);
    // A long gap coalesces into one interrupt and keeps the phase.
    assert!(l.advance(VirtualTime(9_500_000)));
    assert_eq!(l.next_deadline(), Some(VirtualTime(10_000_000)));
    // Changing the divider mid-count keeps the count.
    w(&mut l, 9_500_000, 0x3E0, 0x0); // divide by 2
    assert_eq!(r(&l, 9_500_000, 0x390), 500_000);
    assert_eq!(l.next_deadline(), Some(VirtualTime(10_500_000)));
    w(&mut l, 0, 0x380, 0);
    assert_eq!(l.next_deadline(), None);
}

fn icr(l: &mut Lapic, lo: u32) -> IcrCommand {
    match w(l, 0, 0x300, lo) {
        Some(LapicEvent::Ipi(c)) => c,
        other => panic!("{other:?}"),
    }
}

fn targets(ls: &[Lapic], src: usize, c: &IcrCommand) -> Vec<usize> {
    route_ipi(ls, src, c).into_iter().map(|(t, _)| t).collect()
}

#[test]
fn ipi_routing() {
    let mut ls: Vec<Lapic> = (0..4).map(enabled).collect();
    // Linux's AP bring-up: INIT assert, INIT de-assert, SIPI to APIC 2.
    w(&mut ls[0], 0, 0x310, 2 << 24);
    assert_eq!(icr(&mut ls[0], 0xC500).kind, IpiKind::Init);
    assert_eq!(w(&mut ls[0], 0, 0x300, 0x8500), None, "de-assert");
    let sipi = icr(&mut ls[0], 0x0698);
    assert_eq!(route_ipi(&ls, 0, &sipi), vec![(2, IpiKind::Startup(0x98))]);
    assert_eq!(r(&ls[0], 0, 0x300) & 0x1000, 0, "delivery status idle");
    // Shorthands: all excluding self, self, all including self (an NMI).
    let c = icr(&mut ls[1], 0xC_00FD);
    assert_eq!(
        (targets(&ls, 1, &c), c.kind),
        (vec![0, 2, 3], IpiKind::Fixed(0xFD))
    );
    let c = icr(&mut ls[3], 0x4_00F0);
    assert_eq!(targets(&ls, 3, &c), vec![3]);
    let c = icr(&mut ls[3], 0x8_0400);
    assert_eq!(
        (targets(&ls, 3, &c), c.kind),
        (vec![0, 1, 2, 3], IpiKind::Nmi)
    );
    // Flat logical: LDR bits 1 << cpu; lowest priority picks the first.
    for (i, l) in ls.iter_mut().enumerate() {
        w(l, 0, 0xD0, 1 << (24 + i));
    }
    w(&mut ls[0], 0, 0x310, 0x0C << 24);
    let c = icr(&mut ls[0], 0x0830);
    assert_eq!(targets(&ls, 0, &c), vec![2, 3]);
    let c = icr(&mut ls[0], 0x0930);
    assert_eq!(
        (targets(&ls, 0, &c), c.kind),
        (vec![2], IpiKind::Fixed(0x30))
    );
    // Cluster logical: LDR = cluster << 4 | member bit; vCPUs 0, 1 form cluster 1.
    for (i, l) in ls.iter_mut().enumerate() {
        let ldr = ((1 + i as u32 / 2) << 4) | (1 << (i % 2));
        w(l, 0, 0xE0, 0x0FFF_FFFF);
        w(l, 0, 0xD0, ldr << 24);
    }
    w(&mut ls[0], 0, 0x310, 0x13 << 24);
    let c = icr(&mut ls[0], 0x0830);
    assert_eq!(targets(&ls, 0, &c), vec![0, 1]);
    // Illegal vector: nothing sent, ESR says so after a write latches it.
    assert_eq!(w(&mut ls[0], 0, 0x300, 0x0005), None);
    w(&mut ls[0], 0, 0x280, 0);
    assert_eq!(r(&ls[0], 0, 0x280), ESR_SEND_ILLEGAL);
}

#[test]
fn garbage_never_panics() {
    let mut l = enabled(1);
    let mut x: u64 = 3;
    let mut now = 0u64;
    for _ in 0..50_000 {
        crate::devices::next_garbage(&mut x);
        now = if x & 15 == 0 {
            now / 2
        } else {
            now.wrapping_add((x >> 44) % 5000)
        };
        let t = VirtualTime(now);
        let off = (x >> 8) % 0x1010;
        let len = [0, 1, 2, 3, 4, 8][((x >> 30) % 6) as usize];
        let val = (x >> 32).to_le_bytes();
        match (x >> 4) % 4 {
            0 => _ = l.write(t, off, &val[..len]),
            1 => _ = l.write(t, off & !0xF, &val[..4]),
            2 => l.read(t, off, &mut [0u8; 8][..len]),
            _ => {
                l.advance(t);
                l.acknowledge();
                l.next_deadline();
            }
        }
    }
    let mut d = [0xAA; 8];
    l.read(VirtualTime(u64::MAX), u64::MAX - 2, &mut d);
    assert_eq!(d, [0; 8]);
    l.advance(VirtualTime(u64::MAX));
}

#[test]
fn state_round_trip() {
    let mut l = enabled(2);
    w(&mut l, 0, 0x320, LVT_PERIODIC | 0xEC);
    w(&mut l, 0, 0x380, 5000);
    l.accept_irq(0x51, true);
    let Ok(mut q) = round_trip(&l, ());
    assert_eq!(q.state(), l.state());
    assert_eq!(q.next_deadline(), l.next_deadline());
    assert_eq!(r(&q, 1234, 0x390), r(&l, 1234, 0x390));
    assert_eq!(q.acknowledge(), l.acknowledge());
}
