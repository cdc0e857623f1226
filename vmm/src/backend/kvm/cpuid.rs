//! The CPUID table handed to KVM_SET_CPUID2.
//!
//! The table is the shared model in `crate::cpu_model` (DESIGN point 4).

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use crate::cpu_model::{all_leaves, subleaf_significant};

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
