//! The CPUID table handed to KVM_SET_CPUID2.
//!
//! The shared model lives in `crate::cpu_model` (DESIGN point 4), written in another
//! branch; until it lands, [`model`] is a minimal local stand-in with the same signature
//! and the same headline values (GenuineIntel, signature 0x106a5, no hypervisor leaves).
//! At merge, the `use` below becomes `use crate::cpu_model::{all_leaves, subleaf_significant};`.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use self::model::{all_leaves, subleaf_significant};

/// The model's (leaf, subleaf, registers) for vCPU `index` of `count`: what a guest
/// should see when KVM_SET_CPUID2 works (the doctor compares).
pub fn model_leaves(index: u32, count: u32) -> Vec<(u32, u32, [u32; 4])> {
    all_leaves(index, count)
}

/// The CPUID entries of vCPU `index` of `count`, in KVM's form.
pub fn kvm_cpuid(index: u32, count: u32) -> Result<CpuId, String> {
    let entries: Vec<kvm_cpuid_entry2> = all_leaves(index, count)
        .into_iter()
        .map(|(function, index, [eax, ebx, ecx, edx])| kvm_cpuid_entry2 {
            function,
            index,
            flags: if subleaf_significant(function) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        })
        .collect();
    CpuId::from_entries(&entries).map_err(|e| format!("building the CPUID table: {e:?}"))
}

/// Stand-in for `crate::cpu_model` (see the module docs).
mod model {
    const MAX_BASIC_LEAF: u32 = 7;
    const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;

    /// FPU DE PSE TSC MSR PAE CX8 APIC PGE CMOV PAT PSE36 CLFLUSH MMX FXSR SSE SSE2.
    /// TSC stays: the guest kernel sets CR4.TSD, which KVM rejects without it.
    const EDX1: u32 = 0x078B_A37D;
    /// SSE3 SSSE3 CX16 SSE4.1 SSE4.2 POPCNT; no MONITOR, x2APIC, TSC-deadline,
    /// XSAVE, RDRAND or hypervisor bit.
    const ECX1: u32 = 0x0098_2201;
    /// SYSCALL NX 1GiB-pages LM; no RDTSCP.
    const EDX_EXT1: u32 = 0x2410_0800;

    pub fn subleaf_significant(leaf: u32) -> bool {
        matches!(leaf, 4 | 7 | 0xb | 0xd)
    }

    fn vendor() -> [u32; 3] {
        let b = b"GenuineIntel";
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        [w(0), w(4), w(8)]
    }

    pub fn all_leaves(vcpu_index: u32, vcpu_count: u32) -> Vec<(u32, u32, [u32; 4])> {
        let [v0, v1, v2] = vendor();
        let count = vcpu_count.clamp(1, 255);
        let ebx1 = (vcpu_index << 24) | (count << 16) | (8 << 8);
        let htt = if count > 1 { 1 << 28 } else { 0 };
        let mut leaves = vec![
            (0, 0, [MAX_BASIC_LEAF, v0, v2, v1]),
            (1, 0, [0x0001_06a5, ebx1, ECX1, EDX1 | htt]),
            (7, 0, [0, 0, 0, 0]),
            (0x8000_0000, 0, [MAX_EXTENDED_LEAF, 0, 0, 0]),
            (0x8000_0001, 0, [0, 0, 1, EDX_EXT1]),
            (0x8000_0008, 0, [0x3028, 0, 0, 0]),
        ];
        for leaf in (2..MAX_BASIC_LEAF).chain(0x8000_0002..MAX_EXTENDED_LEAF) {
            if !leaves.iter().any(|(l, _, _)| *l == leaf) {
                leaves.push((leaf, 0, [0; 4]));
            }
        }
        leaves.sort_by_key(|(l, s, _)| (*l, *s));
        leaves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_model_signature_and_no_hypervisor_leaves() {
        let cpuid = kvm_cpuid(1, 2).unwrap();
        let e = cpuid.as_slice();
        let leaf = |f: u32| e.iter().find(|x| x.function == f).copied();
        let l0 = leaf(0).unwrap();
        assert_eq!(l0.ebx.to_le_bytes(), *b"Genu");
        assert_eq!(
            leaf(1).unwrap().ebx >> 24,
            1,
            "initial APIC ID is the vCPU index"
        );
        assert_eq!(leaf(1).unwrap().ecx & (1 << 31), 0, "no hypervisor bit");
        assert!(leaf(0x4000_0000).is_none());
        assert_eq!(leaf(7).unwrap().flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
    }
}
