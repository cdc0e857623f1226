//! ACPI tables (RSDP, XSDT, FADT, FACS, DSDT, MADT, HPET) for the platform the
//! devices module emulates. Linux finds the RSDP through `boot_params.acpi_rsdp_addr`.

use acpi_tables::{aml, facs::FACS, fadt, rsdp::Rsdp, sdt::Sdt, xsdt::XSDT, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::error::BootError;
use crate::layout::{ACPI_ADDR, ACPI_MAX};

const OEM_ID: [u8; 6] = *b"DETVM ";
const OEM_TABLE: [u8; 8] = *b"DETVMPLT";

/// Port and MMIO addresses the tables announce; the platform devices serve them.
pub const PM1A_EVT_PORT: u16 = 0x600;
pub const PM1A_CNT_PORT: u16 = 0x604;
pub const PM_TMR_PORT: u16 = 0x608;
pub const RESET_PORT: u16 = 0xCF9;
pub const RESET_VALUE: u8 = 0x06;
/// SLP_TYP the DSDT's \_S5 announces; writing it with SLP_EN to PM1a_CNT powers off.
pub const S5_SLP_TYP: u8 = 5;
pub const SCI_IRQ: u16 = 9;
pub const LAPIC_ADDR: u32 = 0xFEE0_0000;
pub const IOAPIC_ADDR: u32 = 0xFEC0_0000;
pub const HPET_ADDR: u64 = 0xFED0_0000;
pub const RTC_CENTURY_REG: u8 = 0x32;

/// Writes every table below `ACPI_ADDR + ACPI_MAX` and returns the RSDP address.
pub fn write_tables(mem: &GuestMemoryMmap, vcpus: u8) -> Result<u64, BootError> {
    let mut next = ACPI_ADDR;
    let mut place = |bytes: &[u8]| -> Result<u64, BootError> {
        let at = next;
        next = (next + bytes.len() as u64 + 15) & !15;
        if next > ACPI_ADDR + ACPI_MAX {
            return Err(BootError::Layout(
                "ACPI tables do not fit their area".into(),
            ));
        }
        mem.write_slice(bytes, GuestAddress(at))
            .map_err(|e| BootError::Layout(format!("writing ACPI tables: {e}")))?;
        Ok(at)
    };

    // The RSDP goes first, so it sits at the 16-byte aligned start; its content comes last.
    let rsdp_addr = place(&[0u8; 36])?;
    let facs_addr = place(&aml_bytes(&FACS::new()))?;
    let dsdt_addr = place(&dsdt())?;
    let fadt_addr = place(&aml_bytes(&fadt_table(dsdt_addr, facs_addr)))?;
    let madt_addr = place(&madt(vcpus))?;
    let hpet_addr = place(&hpet())?;

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, 1);
    for table in [fadt_addr, madt_addr, hpet_addr] {
        xsdt.add_entry(table);
    }
    let xsdt_addr = place(&aml_bytes(&xsdt))?;
    mem.write_slice(
        &aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr)),
        GuestAddress(rsdp_addr),
    )
    .map_err(|e| BootError::Layout(format!("writing the RSDP: {e}")))?;
    Ok(rsdp_addr)
}

fn aml_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

fn fadt_table(dsdt: u64, facs: u64) -> fadt::FADT {
    let mut f = fadt::FADTBuilder::new(OEM_ID, OEM_TABLE, 1)
        .dsdt_64(dsdt)
        .firmware_ctrl_64(facs)
        .flag(fadt::Flags::ResetRegSup)
        .flag(fadt::Flags::PwrButton)
        .flag(fadt::Flags::SlpButton);
    f.sci_int = SCI_IRQ.into();
    f.pm1a_evt_blk = u32::from(PM1A_EVT_PORT).into();
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_PORT).into();
    f.pm_tmr_blk = u32::from(PM_TMR_PORT).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.pm_tmr_len = 4;
    f.century = RTC_CENTURY_REG;
    // IA-PC boot flags: no VGA (bit 2), MSI unsupported (bit 3); no 8042 (bit 1 clear).
    f.iapc_boot_arch = 0b1100.into();
    f.reset_reg = acpi_tables::gas::GAS::new(
        acpi_tables::gas::AddressSpace::SystemIo,
        8,
        0,
        acpi_tables::gas::AccessSize::ByteAccess,
        u64::from(RESET_PORT),
    );
    f.reset_value = RESET_VALUE;
    f.finalize()
}

/// The DSDT only declares \_S5, so Linux's ACPI power-off knows which SLP_TYP to write.
fn dsdt() -> Vec<u8> {
    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE, 1);
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &aml::ZERO, &aml::ZERO]),
    );
    s5.to_aml_bytes(&mut dsdt);
    dsdt.update_checksum();
    dsdt.as_slice().to_vec()
}

/// MADT: one LAPIC per vCPU, the IOAPIC, and the ISA overrides a PC has.
fn madt(vcpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(*b"APIC", 44, 4, OEM_ID, OEM_TABLE, 1);
    madt.write_u32(36, LAPIC_ADDR);
    madt.write_u32(40, 1); // PCAT_COMPAT: the 8259s exist (masked once the IOAPIC is used)
    for cpu in 0..vcpus {
        // Type 0, length 8: ACPI processor id, APIC id, flags (enabled).
        madt.append_slice(&[0, 8, cpu, cpu, 1, 0, 0, 0]);
    }
    // Type 1, length 12: IOAPIC id 0 (after the LAPIC ids would be cleaner, but Linux
    // renumbers as needed), address, GSI base 0.
    let mut ioapic = vec![1, 12, vcpus, 0];
    ioapic.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    madt.append_slice(&ioapic);
    // Type 2, length 10: ISA IRQ 0 (PIT) is GSI 2; the SCI (IRQ 9) is level, active high.
    madt.append_slice(&interrupt_override(0, 2, 0));
    madt.append_slice(&interrupt_override(
        SCI_IRQ as u8,
        u32::from(SCI_IRQ),
        0b1101,
    ));
    // Type 4, length 6: LINT1 of every processor is NMI.
    madt.append_slice(&[4, 6, 0xFF, 0, 0, 1]);
    madt.update_checksum();
    madt.as_slice().to_vec()
}

fn interrupt_override(irq: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut entry = vec![2, 10, 0, irq];
    entry.extend_from_slice(&gsi.to_le_bytes());
    entry.extend_from_slice(&flags.to_le_bytes());
    entry
}

/// HPET description table: one 3-timer block, legacy replacement capable, 10 MHz.
fn hpet() -> Vec<u8> {
    let mut hpet = Sdt::new(*b"HPET", 56, 1, OEM_ID, OEM_TABLE, 1);
    // Event timer block id: vendor 0x8086, legacy capable (bit 15), 64-bit counter
    // (bit 13), 3 comparators (number - 1 in bits 8..12), revision 1.
    hpet.write_u32(36, 0x8086_A201);
    // Base address as a GAS in system memory.
    hpet.write_bytes(40, &[0, 64, 0, 0]);
    hpet.write_u64(44, HPET_ADDR);
    hpet.write_u8(52, 0); // HPET number
    hpet.write_u16(53, 0x80); // minimum clock tick in periodic mode
    hpet.write_u8(55, 0); // no page protection
    hpet.update_checksum();
    hpet.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn read_table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let mut bytes = vec![0; len as usize];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        bytes
    }

    #[test]
    fn tables_are_linked_and_checksummed() {
        let ram = crate::memory::GuestRam::new(64 << 20).unwrap();
        let mem = ram.memory();
        let rsdp = write_tables(mem, 2).unwrap();
        let mut head = [0u8; 36];
        mem.read_slice(&mut head, GuestAddress(rsdp)).unwrap();
        assert_eq!(&head[..8], b"RSD PTR ");
        assert!(checksum_ok(&head[..20]) && checksum_ok(&head));
        let xsdt_addr = u64::from_le_bytes(head[24..32].try_into().unwrap());
        let xsdt = read_table(mem, xsdt_addr);
        assert!(checksum_ok(&xsdt));
        let mut signatures = Vec::new();
        for entry in xsdt[36..].chunks(8) {
            let table = read_table(mem, u64::from_le_bytes(entry.try_into().unwrap()));
            assert!(checksum_ok(&table), "bad checksum in {:?}", &table[..4]);
            signatures.push(String::from_utf8_lossy(&table[..4]).into_owned());
        }
        assert_eq!(signatures, ["FACP", "APIC", "HPET"]);
    }
}
