//! The one CPU model every detvm guest sees, on every host and backend (DESIGN point 4).
//!
//! A family-6 GenuineIntel part with what Unicorn's TCG really executes (SSE..SSE4.2,
//! POPCNT, AES, PCLMULQDQ, MOVBE, BMI1/2, XSAVE for x87+SSE state only, no AVX), NX, LM,
//! SYSCALL and 1 GiB pages. Hidden because they leak host time or randomness or are not
//! emulated: RDTSCP, RDPID, invariant TSC, TSC-deadline, x2APIC, RDRAND, RDSEED,
//! MONITOR/MWAIT, WAITPKG, TSX, the PMU (leaf 0xA is zero), APERF/MPERF, SYSENTER and every
//! hypervisor leaf (no hypervisor bit, nothing at 0x4000_0000).
//!
//! CPUID.01H:EDX.TSC stays set on purpose: the guest kernel sets CR4.TSD so that user-mode
//! RDTSC traps, and KVM treats CR4.TSD as reserved when CPUID has no TSC. The VMM keeps the
//! kernel itself off the TSC with command-line options.
//!
//! Leaves that depend on live state are completed by the backend: CPUID.01H:ECX.OSXSAVE
//! (bit 27) mirrors CR4.OSXSAVE ([`OSXSAVE_BIT`]); KVM does that itself.

/// The MSRs of the model that hold guest state, which backends read, write and snapshot
/// (the TSC and its relatives read virtual time and are the VMM's): SYSENTER CS/ESP/EIP,
/// PAT, EFER, STAR, LSTAR, CSTAR, SFMASK, FS/GS base, kernel GS base.
pub const STATE_MSRS: [u32; 12] = [
    0x174,
    0x175,
    0x176,
    0x277,
    0xc000_0080,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0100,
    0xc000_0101,
    0xc000_0102,
];

/// CPUID.01H:ECX bit the backend sets at run time when CR4.OSXSAVE is set.
pub const OSXSAVE_BIT: u32 = 1 << 27;

/// Highest basic leaf.
pub const MAX_BASIC_LEAF: u32 = 0x16;
/// Highest extended leaf.
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;

const VENDOR: &[u8; 12] = b"GenuineIntel";
const BRAND: &[u8; 48] = b"detvm deterministic x86-64 CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

// CPUID.01H:EDX
const EDX1: u32 = (1 << 0) // FPU
    | (1 << 2) // DE
    | (1 << 3) // PSE
    | (1 << 4) // TSC (kept, see module docs)
    | (1 << 5) // MSR
    | (1 << 6) // PAE
    | (1 << 8) // CX8
    | (1 << 9) // APIC (xAPIC only)
    | (1 << 13) // PGE
    | (1 << 15) // CMOV
    | (1 << 16) // PAT
    | (1 << 17) // PSE36
    | (1 << 19) // CLFLUSH
    | (1 << 23) // MMX
    | (1 << 24) // FXSR
    | (1 << 25) // SSE
    | (1 << 26); // SSE2
const EDX1_HTT: u32 = 1 << 28;

// CPUID.01H:ECX (no MONITOR, x2APIC, TSC-deadline, AVX, RDRAND, hypervisor)
const ECX1: u32 = (1 << 0) // SSE3
    | (1 << 1) // PCLMULQDQ
    | (1 << 9) // SSSE3
    | (1 << 13) // CX16
    | (1 << 19) // SSE4.1
    | (1 << 20) // SSE4.2
    | (1 << 22) // MOVBE
    | (1 << 23) // POPCNT
    | (1 << 25) // AES
    | (1 << 26); // XSAVE

// CPUID.07H.0:EBX (no HLE, RTM, RDSEED, AVX2, INVPCID, MPX)
const EBX7: u32 = (1 << 3) // BMI1
    | (1 << 8) // BMI2
    | (1 << 9) // ERMS
    | (1 << 19); // ADX

// CPUID.80000001H
const ECX_EXT1: u32 = (1 << 0) // LAHF/SAHF in 64-bit mode
    | (1 << 5); // LZCNT (ABM)
const EDX_EXT1: u32 = (1 << 11) // SYSCALL
    | (1 << 20) // NX
    | (1 << 26) // 1 GiB pages
    | (1 << 29); // LM (no RDTSCP: bit 27 clear)

/// XSAVE components: x87 and SSE only (TCG has no AVX).
const XCR0_SUPPORTED: u32 = 0x3;
/// Legacy region (512) + XSAVE header (64).
const XSAVE_SIZE: u32 = 576;

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Bits needed to number `count` items (x2APIC topology shift).
fn shift_for(count: u32) -> u32 {
    32 - count.max(1).saturating_sub(1).leading_zeros()
}

/// Leaves whose subleaf (ECX) selects different data; KVM needs
/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` on these.
pub fn subleaf_significant(leaf: u32) -> bool {
    matches!(leaf, 4 | 7 | 0xb | 0xd)
}

/// The table entry for (leaf, subleaf), or `None` where the table has none.
fn entry(leaf: u32, subleaf: u32, vcpu_index: u32, vcpu_count: u32) -> Option<[u32; 4]> {
    let count = vcpu_count.max(1);
    let v: Vec<u32> = words(VENDOR).collect();
    Some(match (leaf, subleaf) {
        (0, _) => [MAX_BASIC_LEAF, v[0], v[2], v[1]],
        (1, _) => {
            // Family 6, model 0x1a (Nehalem class), stepping 5.
            let eax = 0x0001_06a5;
            let ebx = (vcpu_index << 24) | (count.min(255) << 16) | (8 << 8);
            let edx = if count > 1 { EDX1 | EDX1_HTT } else { EDX1 };
            [eax, ebx, ECX1, edx]
        }
        // One descriptor byte (AL = 1 round), all descriptors null: see leaf 4.
        (2, _) => [1, 0, 0, 0],
        (4, n) => {
            // (type, level, ways, size in KiB, shared by all vCPUs)
            let caches = [
                (1u32, 1u32, 8u32, 32u32, false),
                (2, 1, 8, 32, false),
                (3, 2, 8, 256, false),
                (3, 3, 16, 8192, true),
            ];
            let Some(&(kind, level, ways, kib, shared)) = caches.get(n as usize) else {
                return Some([0; 4]);
            };
            let sharing = if shared { (count - 1).min(0xfff) } else { 0 };
            let eax =
                kind | (level << 5) | (1 << 8) | (sharing << 14) | ((count - 1).min(63) << 26);
            let ebx = ((ways - 1) << 22) | 63;
            let sets = kib * 1024 / (ways * 64);
            [eax, ebx, sets - 1, 0]
        }
        // ARAT only: no APERF/MPERF (ECX bit 0), no turbo, no HWP.
        (6, _) => [1 << 2, 0, 0, 0],
        (7, 0) => [0, EBX7, 0, 0],
        (7, _) => [0; 4],
        // No architectural PMU.
        (0xa, _) => [0; 4],
        (0xb, 0) => [0, 1, 1 << 8, vcpu_index],
        (0xb, 1) => [shift_for(count), count, 1 | (2 << 8), vcpu_index],
        (0xb, n) => [0, 0, n & 0xff, vcpu_index],
        (0xd, 0) => [XCR0_SUPPORTED, XSAVE_SIZE, XSAVE_SIZE, 0],
        (0xd, _) => [0; 4],
        // TSC and core crystal clock: a 1 GHz crystal, TSC ratio 1/1. Linux then knows
        // the TSC frequency (no PIT calibration) and takes the LAPIC timer period from
        // the crystal (no LAPIC calibration); the platform's LAPIC runs at 1 GHz too.
        (0x15, _) => [1, 1, 1_000_000_000, 0],
        // Base, maximum and bus frequency in MHz.
        (0x16, _) => [1000, 1000, 1000, 0],
        (3 | 5 | 8 | 9 | 0xc | 0xe..=0x14, _) => [0; 4],
        (0x8000_0000, _) => [MAX_EXTENDED_LEAF, 0, 0, 0],
        (0x8000_0001, _) => [0, 0, ECX_EXT1, EDX_EXT1],
        (0x8000_0002..=0x8000_0004, _) => {
            let b: Vec<u32> = words(BRAND).collect();
            let i = (leaf - 0x8000_0002) as usize * 4;
            [b[i], b[i + 1], b[i + 2], b[i + 3]]
        }
        (0x8000_0005, _) => [0; 4],
        // L2: 256 KiB, 8-way (code 6), 64-byte lines.
        (0x8000_0006, _) => [0, 0, (256 << 16) | (6 << 12) | 64, 0],
        // No invariant TSC (EDX bit 8).
        (0x8000_0007, _) => [0; 4],
        // 40 physical, 48 linear address bits.
        (0x8000_0008, _) => [0x3028, 0, 0, 0],
        _ => return None,
    })
}

/// CPUID for (leaf, subleaf) on vCPU `vcpu_index` of `vcpu_count`: (eax, ebx, ecx, edx).
///
/// Leaves past the highest basic or extended leaf, including the whole hypervisor range
/// 0x4000_0000.., answer like Intel hardware and KVM with a GenuineIntel guest: with the
/// highest basic leaf's data. Gaps inside a range answer zeros.
pub fn cpuid(leaf: u32, subleaf: u32, vcpu_index: u32, vcpu_count: u32) -> [u32; 4] {
    if let Some(e) = entry(leaf, subleaf, vcpu_index, vcpu_count) {
        return e;
    }
    let in_range = matches!(leaf, 0..=MAX_BASIC_LEAF | 0x8000_0000..=MAX_EXTENDED_LEAF);
    if in_range {
        [0; 4]
    } else {
        entry(MAX_BASIC_LEAF, subleaf, vcpu_index, vcpu_count).unwrap_or([0; 4])
    }
}

/// Every (leaf, subleaf, [eax, ebx, ecx, edx]) of the model, for KVM_SET_CPUID2. Leaves in
/// [`subleaf_significant`] list each meaningful subleaf.
pub fn all_leaves(vcpu_index: u32, vcpu_count: u32) -> Vec<(u32, u32, [u32; 4])> {
    let subleaves = |leaf: u32| -> u32 {
        match leaf {
            4 => 5,
            7 => 1,
            0xb => 3,
            0xd => 2,
            _ => 1,
        }
    };
    let basic = 0..=MAX_BASIC_LEAF;
    let extended = 0x8000_0000..=MAX_EXTENDED_LEAF;
    basic
        .chain(extended)
        .flat_map(|leaf| (0..subleaves(leaf)).map(move |sub| (leaf, sub)))
        .map(|(leaf, sub)| (leaf, sub, cpuid(leaf, sub, vcpu_index, vcpu_count)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(v: u32, b: u32) -> bool {
        v & (1 << b) != 0
    }

    #[test]
    fn vendor_and_max_leaves() {
        let [max, b, c, d] = cpuid(0, 0, 0, 1);
        assert_eq!(max, MAX_BASIC_LEAF);
        let mut vendor = Vec::new();
        for w in [b, d, c] {
            vendor.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(&vendor, b"GenuineIntel");
        assert_eq!(cpuid(0x8000_0000, 0, 0, 1)[0], MAX_EXTENDED_LEAF);
        let family = (cpuid(1, 0, 0, 1)[0] >> 8) & 0xf;
        assert_eq!(family, 6);
    }

    #[test]
    fn hidden_features_are_clear() {
        let [_, _, ecx1, edx1] = cpuid(1, 0, 0, 4);
        assert!(
            bit(edx1, 4),
            "TSC stays visible (CR4.TSD must stay valid under KVM)"
        );
        for (b, name) in [
            (3, "MONITOR"),
            (21, "x2APIC"),
            (24, "TSC-deadline"),
            (28, "AVX"),
            (30, "RDRAND"),
            (31, "hypervisor"),
        ] {
            assert!(!bit(ecx1, b), "{name} must be hidden");
        }
        assert!(!bit(ecx1, 27), "OSXSAVE is dynamic, not in the table");
        let [_, ebx7, ecx7, edx7] = cpuid(7, 0, 0, 4);
        for (b, name) in [(4, "HLE"), (11, "RTM"), (18, "RDSEED"), (5, "AVX2")] {
            assert!(!bit(ebx7, b), "{name} must be hidden");
        }
        assert!(!bit(ecx7, 5), "WAITPKG");
        assert!(!bit(ecx7, 22), "RDPID");
        assert_eq!(edx7, 0);
        assert_eq!(cpuid(0xa, 0, 0, 4), [0; 4], "no PMU");
        assert!(!bit(cpuid(6, 0, 0, 4)[2], 0), "no APERF/MPERF");
        assert!(!bit(cpuid(0x8000_0001, 0, 0, 4)[3], 27), "RDTSCP");
        assert!(!bit(cpuid(0x8000_0007, 0, 0, 4)[3], 8), "invariant TSC");
        // No KVM signature anywhere in the hypervisor range.
        for leaf in [0x4000_0000, 0x4000_0001, 0x4000_0100] {
            let r = cpuid(leaf, 0, 0, 4);
            assert_ne!(r[1], u32::from_le_bytes(*b"KVMK"));
            assert_eq!(r, cpuid(MAX_BASIC_LEAF, 0, 0, 4));
        }
    }

    #[test]
    fn long_mode_features_present() {
        let [_, _, _, edx] = cpuid(0x8000_0001, 0, 0, 1);
        assert!(bit(edx, 29) && bit(edx, 20) && bit(edx, 11));
        let [_, _, ecx1, edx1] = cpuid(1, 0, 0, 1);
        assert!(bit(ecx1, 20) && bit(ecx1, 23) && bit(ecx1, 26));
        assert!(bit(edx1, 24) && bit(edx1, 0) && bit(edx1, 9));
    }

    #[test]
    fn topology_is_consistent() {
        for count in [1u32, 2, 3, 4, 8] {
            for index in 0..count {
                let ebx1 = cpuid(1, 0, index, count)[1];
                assert_eq!(ebx1 >> 24, index);
                assert_eq!((ebx1 >> 16) & 0xff, count);
                assert_eq!(cpuid(4, 0, index, count)[0] >> 26, count - 1);
                let l1 = cpuid(0xb, 1, index, count);
                assert_eq!(l1[1], count);
                assert!(1u32 << l1[0] >= count);
                assert_eq!(l1[3], index);
            }
        }
    }

    #[test]
    fn all_leaves_match_cpuid() {
        let leaves = all_leaves(1, 2);
        assert!(leaves.iter().any(|&(l, s, _)| l == 4 && s == 3));
        for (leaf, sub, regs) in leaves {
            assert_eq!(regs, cpuid(leaf, sub, 1, 2));
        }
    }
}
