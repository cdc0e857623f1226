//! Platform-level tests: devices wired together as Linux drives them.

use super::*;
use crate::devices::ns_of_tick;
use crate::devices::pit::PIT_HZ;
use crate::persist::round_trip;

const EPOCH_2038: i64 = 2_147_483_640;

fn platform(vcpus: usize) -> Platform {
    Platform::new(PlatformConfig {
        vcpus,
        rtc_epoch_unix_secs: EPOCH_2038,
    })
}

fn out(p: &mut Platform, now: u64, port: u16, v: u8) -> PlatformEvent {
    p.pio_write(VirtualTime(now), 0, port, &[v])
}

fn inb(p: &mut Platform, now: u64, port: u16) -> u8 {
    let mut d = [0u8];
    p.pio_read(VirtualTime(now), 0, port, &mut d);
    d[0]
}

fn w32(p: &mut Platform, now: u64, cpu: usize, addr: u64, v: u32) -> PlatformEvent {
    let (hit, ev) = p.mmio_write(VirtualTime(now), cpu, addr, &v.to_le_bytes());
    assert!(hit);
    ev
}

fn r32(p: &mut Platform, now: u64, cpu: usize, addr: u64) -> u32 {
    let mut d = [0u8; 4];
    assert!(p.mmio_read(VirtualTime(now), cpu, addr, &mut d));
    u32::from_le_bytes(d)
}

fn route(p: &mut Platform, pin: u32, low: u32, dest: u8) {
    w32(p, 0, 0, IOAPIC_BASE, 0x11 + 2 * pin);
    w32(p, 0, 0, IOAPIC_BASE + 0x10, u32::from(dest) << 24);
    w32(p, 0, 0, IOAPIC_BASE, 0x10 + 2 * pin);
    w32(p, 0, 0, IOAPIC_BASE + 0x10, low);
}

fn lapic_enable(p: &mut Platform, cpu: usize) {
    w32(p, 0, cpu, LAPIC_BASE + 0xF0, 0x1FF);
}

/// Linux's init_8259A: vectors 0x30 (master) and 0x38 (slave), all lines unmasked.
fn pic_init(p: &mut Platform) {
    for (port, v) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01)] {
        out(p, 0, port, v);
    }
    for (port, v) in [
        (0xA0, 0x11),
        (0xA1, 0x38),
        (0xA1, 0x02),
        (0xA1, 0x01),
        (0x21, 0),
        (0xA1, 0),
    ] {
        out(p, 0, port, v);
    }
}

/// Channel 0, mode 2, LSB then MSB: Linux's periodic PIT tick.
fn pit_periodic(p: &mut Platform, count: u16) -> PlatformEvent {
    out(p, 0, 0x43, 0x34);
    out(p, 0, 0x40, count as u8);
    out(p, 0, 0x40, (count >> 8) as u8)
}

#[test]
fn pit_irq0_reaches_lapic_through_ioapic_pin2() {
    let mut p = platform(2);
    lapic_enable(&mut p, 0);
    route(&mut p, 2, 0x30, 0);
    assert_eq!(
        pit_periodic(&mut p, 1193),
        PlatformEvent::InterruptsChanged,
        "deadline moved"
    );
    let due = VirtualTime(ns_of_tick(1193, PIT_HZ));
    assert_eq!(p.next_deadline(VirtualTime::ZERO), Some(due));
    p.advance(VirtualTime(due.0 - 1));
    assert!(!p.pending_interrupt(0));
    p.advance(due);
    assert!(p.pending_interrupt(0) && !p.pending_interrupt(1));
    assert_eq!(p.acknowledge_interrupt(0), Some(0x30));
    assert!(!p.pending_interrupt(0));
    assert_eq!(
        w32(&mut p, due.0, 0, LAPIC_BASE + 0xB0, 0),
        PlatformEvent::None
    );
    let next = p.next_deadline(due).unwrap();
    assert_eq!(next, VirtualTime(ns_of_tick(2 * 1193, PIT_HZ)));
    p.advance(next);
    assert_eq!(p.acknowledge_interrupt(0), Some(0x30));
}

#[test]
fn pit_irq0_reaches_cpu0_through_pic_when_lapic_is_off() {
    let mut p = platform(2);
    pic_init(&mut p);
    pit_periodic(&mut p, 1193);
    let due = p.next_deadline(VirtualTime::ZERO).unwrap();
    p.advance(due);
    assert!(p.pending_interrupt(0) && !p.pending_interrupt(1));
    assert_eq!(p.acknowledge_interrupt(0), Some(0x30));
    assert_eq!(
        out(&mut p, due.0, 0x20, 0x20),
        PlatformEvent::None,
        "EOI, nothing else pending"
    );
    // LAPIC on with LINT0 masked: the PIC no longer reaches the CPU; ExtINT LINT0 does.
    lapic_enable(&mut p, 0);
    let next = p.next_deadline(due).unwrap();
    p.advance(next);
    assert!(!p.pending_interrupt(0));
    assert_eq!(
        w32(&mut p, next.0, 0, LAPIC_BASE + 0x350, 0x700),
        PlatformEvent::InterruptsChanged
    );
    assert_eq!(p.acknowledge_interrupt(0), Some(0x30));
    // ExtINT through IOAPIC pin 2: the PIC's vector lands in the LAPIC's IRR.
    w32(&mut p, next.0, 0, LAPIC_BASE + 0x350, 0x1_0700);
    out(&mut p, next.0, 0x20, 0x20);
    route(&mut p, 2, 0x700, 0);
    let next = p.next_deadline(next).unwrap();
    p.advance(next);
    assert_eq!(p.acknowledge_interrupt(0), Some(0x30));
    assert!(!p.pending_interrupt(0));
}

#[test]
fn hpet_legacy_replacement_takes_over_irq0_and_irq8() {
    let mut p = platform(1);
    pic_init(&mut p);
    pit_periodic(&mut p, 10);
    out(&mut p, 0, 0x70, 0x0B);
    out(&mut p, 0, 0x71, 0x42); // RTC periodic interrupt on
    w32(&mut p, 0, 0, HPET_BASE + 0x10, 3); // enable + legacy replacement
    w32(&mut p, 0, 0, HPET_BASE + 0x100, (1 << 2) | (1 << 8)); // timer 0: INT_ENB, 32-bit
    w32(&mut p, 0, 0, HPET_BASE + 0x108, 1_000); // 100 us
    assert_eq!(
        p.next_deadline(VirtualTime::ZERO),
        Some(VirtualTime(100_000)),
        "PIT/RTC muted"
    );
    p.advance(VirtualTime(99_999));
    assert!(!p.pending_interrupt(0), "PIT edges do not reach IRQ0");
    p.advance(VirtualTime(100_000));
    assert_eq!(p.acknowledge_interrupt(0), Some(0x30));
    out(&mut p, 100_000, 0x20, 0x20);
    p.advance(VirtualTime(5_000_000));
    assert!(!p.pending_interrupt(0), "RTC is off IRQ8 too");
    // Legacy off: the RTC's pending flag (reg C unread) reaches IRQ8 through the slave.
    w32(&mut p, 5_000_000, 0, HPET_BASE + 0x10, 1);
    assert_eq!(p.acknowledge_interrupt(0), Some(0x38));
    out(&mut p, 5_000_000, 0xA0, 0x20);
    out(&mut p, 5_000_000, 0x20, 0x20);
    // And the PIT drives IRQ0 again from its next edge (10 ticks apart).
    let next = p.next_deadline(VirtualTime(5_000_000)).unwrap();
    assert!(next.0 - 5_000_000 <= 8_400);
    p.advance(next);
    assert_eq!(p.acknowledge_interrupt(0), Some(0x30));
}

#[test]
fn serial_console_and_thre_interrupt() {
    let mut p = platform(1);
    pic_init(&mut p);
    p.pio_write(VirtualTime::ZERO, 0, 0x3F8, b"h");
    out(&mut p, 0, 0x3F8, b'i');
    assert_eq!(p.take_console_output(), b"hi");
    assert_eq!(
        out(&mut p, 0, 0x3F9, 0x02),
        PlatformEvent::InterruptsChanged
    );
    assert_eq!(p.acknowledge_interrupt(0), Some(0x34));
    assert_eq!(inb(&mut p, 0, 0x3FA), 0x02);
    out(&mut p, 0, 0x20, 0x20);
    assert!(!p.pending_interrupt(0));
    // Writing THR makes THR empty again: a new edge on IRQ4.
    assert_eq!(
        out(&mut p, 0, 0x3F8, b'!'),
        PlatformEvent::InterruptsChanged
    );
    assert_eq!(p.acknowledge_interrupt(0), Some(0x34));
    // Input with the data-ready interrupt.
    out(&mut p, 0, 0x20, 0x20);
    out(&mut p, 0, 0x3F9, 0x01);
    p.push_console_input(b"k");
    assert!(p.pending_interrupt(0));
    assert_eq!(inb(&mut p, 0, 0x3F8), b'k');
}

#[test]
fn ipis_init_sipi_fixed() {
    let mut p = platform(2);
    lapic_enable(&mut p, 0);
    lapic_enable(&mut p, 1);
    w32(&mut p, 0, 0, LAPIC_BASE + 0x310, 1 << 24);
    assert_eq!(
        w32(&mut p, 0, 0, LAPIC_BASE + 0x300, 0xC500),
        PlatformEvent::InterruptsChanged
    );
    assert_eq!(
        w32(&mut p, 0, 0, LAPIC_BASE + 0x300, 0x8500),
        PlatformEvent::None
    );
    assert_eq!(
        r32(&mut p, 0, 1, LAPIC_BASE + 0xF0),
        0xFF,
        "INIT reset the target APIC"
    );
    w32(&mut p, 0, 0, LAPIC_BASE + 0x300, 0x0698);
    assert_eq!(
        p.take_cpu_requests(),
        vec![(1, CpuRequest::Init), (1, CpuRequest::Startup(0x98))]
    );
    assert!(p.take_cpu_requests().is_empty());
    lapic_enable(&mut p, 1);
    assert_eq!(
        w32(&mut p, 0, 0, LAPIC_BASE + 0x300, 0x00FD),
        PlatformEvent::InterruptsChanged
    );
    assert!(p.pending_interrupt(1) && !p.pending_interrupt(0));
    assert_eq!(p.acknowledge_interrupt(1), Some(0xFD));
    // Each vCPU sees its own APIC at the same address.
    assert_eq!(r32(&mut p, 0, 1, LAPIC_BASE + 0x20), 1 << 24);
    assert_eq!(r32(&mut p, 0, 0, LAPIC_BASE + 0x20), 0);
}

#[test]
fn level_gsi_is_redelivered_after_eoi_while_asserted() {
    let mut p = platform(1);
    lapic_enable(&mut p, 0);
    route(&mut p, 20, 0x8050, 0);
    p.set_irq(20, true);
    assert_eq!(p.acknowledge_interrupt(0), Some(0x50));
    assert_eq!(
        w32(&mut p, 0, 0, LAPIC_BASE + 0xB0, 0),
        PlatformEvent::InterruptsChanged
    );
    assert_eq!(p.acknowledge_interrupt(0), Some(0x50));
    p.set_irq(20, false);
    assert_eq!(w32(&mut p, 0, 0, LAPIC_BASE + 0xB0, 0), PlatformEvent::None);
    assert!(!p.pending_interrupt(0));
}

#[test]
fn lapic_timer_programming_moves_the_deadline() {
    let mut p = platform(1);
    lapic_enable(&mut p, 0);
    w32(&mut p, 0, 0, LAPIC_BASE + 0x3E0, 0xB);
    w32(&mut p, 0, 0, LAPIC_BASE + 0x320, 0xEC);
    assert_eq!(
        w32(&mut p, 1_000, 0, LAPIC_BASE + 0x380, 5_000),
        PlatformEvent::InterruptsChanged
    );
    assert_eq!(
        p.next_deadline(VirtualTime(1_000)),
        Some(VirtualTime(6_000))
    );
    assert_eq!(
        p.next_deadline(VirtualTime(7_000)),
        Some(VirtualTime(7_000)),
        "overdue: now"
    );
    p.advance(VirtualTime(7_000));
    assert_eq!(p.acknowledge_interrupt(0), Some(0xEC));
    assert_eq!(p.next_deadline(VirtualTime(7_000)), None);
}

#[test]
fn power_off_reset_and_unknown_ports() {
    let mut p = platform(1);
    assert_eq!(
        p.pio_write(VirtualTime::ZERO, 0, 0x604, &[0x00, 0x34]),
        PlatformEvent::PowerOff
    );
    assert_eq!(out(&mut p, 0, 0xCF9, 0x02), PlatformEvent::None);
    assert_eq!(out(&mut p, 0, 0xCF9, 0x06), PlatformEvent::Reset);
    assert_eq!(out(&mut p, 0, 0x64, 0xFE), PlatformEvent::Reset);
    assert_eq!(inb(&mut p, 0, 0x64), 0);
    assert_eq!(p.unknown_port_accesses(), 0);
    // PCI configuration mechanism #1 probe: no PCI here, and no reset.
    assert_eq!(
        p.pio_write(VirtualTime::ZERO, 0, 0xCF8, &0x8000_0000u32.to_le_bytes()),
        PlatformEvent::None
    );
    let mut d = [0u8; 4];
    p.pio_read(VirtualTime::ZERO, 0, 0xCF8, &mut d);
    assert_eq!(d, [0xFF; 4]);
    assert_eq!(p.unknown_port_accesses(), 2);
    out(&mut p, 0, 0x80, 0x12);
    assert_eq!(inb(&mut p, 0, 0xED), 0xFF);
    assert_eq!(p.unknown_port_accesses(), 2, "0x80/0xED are silent");
    let mut d = [0u8; 4];
    p.pio_read(VirtualTime(1_000_000_000), 0, 0x608, &mut d);
    assert_eq!(u32::from_le_bytes(d), 3_579_545, "PM timer as one dword");
    assert!(!p.mmio_read(VirtualTime::ZERO, 0, 0xFEB0_0000, &mut d));
    assert_eq!(
        p.mmio_write(VirtualTime::ZERO, 0, 0xFED0_0400, &d),
        (false, PlatformEvent::None)
    );
}

#[test]
fn rtc_reads_the_2038_epoch() {
    let mut p = platform(1);
    let t = 8_000_000_000;
    let regs: Vec<u8> = [0x32, 9, 8, 7, 4, 2, 0]
        .iter()
        .map(|i| {
            out(&mut p, t, 0x70, *i);
            inb(&mut p, t, 0x71)
        })
        .collect();
    assert_eq!(regs, [0x20, 0x38, 0x01, 0x19, 0x03, 0x14, 0x08]);
    p.set_cmos_byte(0x34, 0x80);
    out(&mut p, t, 0x70, 0x34);
    assert_eq!(inb(&mut p, t, 0x71), 0x80);
}

#[test]
fn garbage_never_panics() {
    let mut p = platform(3);
    let mut x: u64 = 42;
    let mut now = 0u64;
    let ranges = Platform::MMIO_RANGES;
    for _ in 0..200_000 {
        crate::devices::next_garbage(&mut x);
        now = if x & 31 == 0 {
            now / 2
        } else {
            now.wrapping_add((x >> 46) % 20_000)
        };
        let t = VirtualTime(now);
        let cpu = ((x >> 20) % 4) as usize; // includes a vCPU that does not exist
        let len = [0, 1, 2, 3, 4, 8][((x >> 30) % 6) as usize];
        let val = (x >> 13).wrapping_mul(x).to_le_bytes();
        let (base, size) = ranges[((x >> 36) % 3) as usize];
        let addr = base + (x >> 40) % (size + 16);
        // Keep away from power-off and reset so the run goes on.
        let port = match ((x >> 50) % 0x700) as u16 {
            0xCF9 | 0x64 | 0x604 | 0x605 => 0x3F8,
            pt => pt,
        };
        match (x >> 4) % 6 {
            0 => _ = p.pio_write(t, cpu, port, &val[..len]),
            1 => p.pio_read(t, cpu, port, &mut [0u8; 8][..len]),
            2 => _ = p.mmio_write(t, cpu, addr, &val[..len]),
            3 => _ = p.mmio_read(t, cpu, addr, &mut [0u8; 8][..len]),
            4 => p.set_irq(((x >> 24) % 40) as u32, x & 0x100 != 0),
            _ => {
                p.advance(t);
                p.next_deadline(t);
                p.pending_interrupt(cpu);
                p.acknowledge_interrupt(cpu);
            }
        }
    }
    p.take_cpu_requests();
    p.take_console_output();
    p.advance(VirtualTime(u64::MAX));
}

#[test]
fn state_round_trip() {
    let mut p = platform(2);
    pic_init(&mut p);
    lapic_enable(&mut p, 0);
    route(&mut p, 2, 0x30, 0);
    pit_periodic(&mut p, 1193);
    out(&mut p, 0, 0x3F8, b'x');
    p.push_console_input(b"in");
    p.set_irq(9, true);
    w32(&mut p, 0, 0, LAPIC_BASE + 0x300, 0x4_00F1); // self IPI
    p.pio_read(VirtualTime::ZERO, 0, 0x1234, &mut [0]);
    let Ok(mut q) = round_trip(&p, ());
    assert_eq!(q.state(), p.state());
    let t = VirtualTime(5_000_000);
    assert_eq!(q.next_deadline(t), p.next_deadline(t));
    q.advance(t);
    p.advance(t);
    assert_eq!(q.acknowledge_interrupt(0), p.acknowledge_interrupt(0));
    assert_eq!(q.take_console_output(), p.take_console_output());
    assert_eq!(q.state(), p.state());
}
