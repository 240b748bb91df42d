//! The 64-bit IDT: 256 16-byte gate descriptors. (SDM Vol. 3A 7.14.1,
//! Figure 7-8)

use core::arch::asm;

/// The operand of `lgdt`/`lidt`: limit and linear base address.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorTablePointer {
    /// Size of the table in bytes, minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}

/// Vectors 0-31 whose exceptions push an error code (SDM Vol. 3A 7.15,
/// Table 7-1): #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX.
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// One IDT gate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<IdtEntry>() == 16);

impl IdtEntry {
    /// A not-present gate (delivering through it raises #NP, then #DF).
    pub const MISSING: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present 64-bit interrupt gate (type 0xE: IF cleared on entry),
    /// DPL 0, to `handler` in code segment `selector`, on IST stack `ist`
    /// (0 = no stack switch, 1..=7 = TSS IST entry).
    pub const fn interrupt_gate(handler: u64, selector: u16, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector,
            ist: ist & 0x7,
            type_attributes: 0x8e,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }

    /// The handler address this gate points at.
    pub const fn handler(&self) -> u64 {
        self.offset_low as u64 | (self.offset_middle as u64) << 16 | (self.offset_high as u64) << 32
    }

    /// The IST index (0 = none).
    pub const fn ist(&self) -> u8 {
        self.ist
    }
}

/// An IDT with all 256 vectors.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idt {
    /// The gates, by vector.
    pub entries: [IdtEntry; 256],
}

impl Idt {
    /// An IDT with every gate missing.
    pub const fn new() -> Self {
        Self {
            entries: [IdtEntry::MISSING; 256],
        }
    }

    /// Loads it with `lidt`.
    ///
    /// # Safety
    ///
    /// `self` must stay at its address and valid while loaded (`static`),
    /// and each present gate must point at a real handler.
    pub unsafe fn load(&self) {
        let pointer = DescriptorTablePointer {
            limit: (core::mem::size_of::<Self>() - 1) as u16,
            base: core::ptr::from_ref(self) as u64,
        };
        // SAFETY: the caller guarantees the table is valid and stays put.
        unsafe {
            asm!("lidt [{}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags));
        };
    }
}

impl Default for Idt {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_splits_the_handler_address() {
        let gate = IdtEntry::interrupt_gate(0x1122_3344_5566_7788, 0x08, 2);
        assert_eq!(gate.handler(), 0x1122_3344_5566_7788);
        assert_eq!(gate.ist(), 2);
        // SAFETY: IdtEntry is 16 bytes of plain old data.
        let bytes: [u8; 16] = unsafe { core::mem::transmute(gate) };
        assert_eq!(
            bytes,
            [
                0x88, 0x77, 0x08, 0, 2, 0x8e, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn error_code_vectors_match_the_sdm() {
        let with: Vec<u8> = (0..32).filter(|&v| exception_has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }
}
