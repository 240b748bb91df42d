//! Processor state shared by every part of hv-core: the L1 vCPU as VMX
//! emulation sees it ([`L1Cpu`]), a VM exit as any engine reports it
//! ([`Exit`]), and L1's memory and paging ([`L1Access`]).

use hv_arch_vmx::exit::{ExitReason, ExitReasonWord};
use hv_arch_vmx::interruption::InterruptionInfo;
use hv_arch_vmx::registers::{Cr0, Cr4, Efer, Rflags};
use hv_mmu::addr::L1Gpa;
use hv_mmu::env::NotL1Memory;

/// The 16 general-purpose registers, indexed as VMX instruction information
/// and exit qualifications number them (0 = RAX ... 15 = R15, SDM Table 28-3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gprs(pub [u64; 16]);

impl Gprs {
    /// Register `index` (masked to 0..16).
    pub const fn get(&self, index: u8) -> u64 {
        self.0[(index & 15) as usize]
    }

    /// Sets register `index` (masked to 0..16).
    pub const fn set(&mut self, index: u8, value: u64) {
        self.0[(index & 15) as usize] = value;
    }
}

/// A segment register as the processor holds it (selector and the hidden
/// descriptor cache), in the VMCS's access-rights format (SDM 25.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit, in bytes.
    pub limit: u32,
    /// Access rights (type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13, D/B 14,
    /// G 15, unusable 16).
    pub access_rights: u32,
}

impl Segment {
    /// Descriptor privilege level (bits 6:5).
    pub const fn dpl(&self) -> u8 {
        ((self.access_rights >> 5) & 3) as u8
    }

    /// The L bit (bit 13): 64-bit code segment.
    pub const fn long_mode(&self) -> bool {
        self.access_rights & (1 << 13) != 0
    }

    /// The unusable bit (bit 16).
    pub const fn unusable(&self) -> bool {
        self.access_rights & (1 << 16) != 0
    }
}

/// The L1 vCPU state that VMX emulation and exit reflection read and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L1Cpu {
    /// General-purpose registers.
    pub gprs: Gprs,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// `IA32_EFER`.
    pub efer: u64,
    /// CS (its DPL is the CPL, and its L bit selects 64-bit mode).
    pub cs: Segment,
    /// SS.
    pub ss: Segment,
    /// DS.
    pub ds: Segment,
    /// ES.
    pub es: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
}

impl L1Cpu {
    /// The current privilege level: SS.DPL, which equals CS.DPL except in
    /// corner cases the SDM resolves in SS's favour (SDM Vol. 3A 5.5).
    pub const fn cpl(&self) -> u8 {
        self.ss.dpl()
    }

    /// CR0 as a bit set.
    pub const fn cr0(&self) -> Cr0 {
        Cr0::from_bits_retain(self.cr0)
    }

    /// CR4 as a bit set.
    pub const fn cr4(&self) -> Cr4 {
        Cr4::from_bits_retain(self.cr4)
    }

    /// `IA32_EFER` as a bit set.
    pub const fn efer(&self) -> Efer {
        Efer::from_bits_retain(self.efer)
    }

    /// RFLAGS as a bit set.
    pub const fn rflags(&self) -> Rflags {
        Rflags::from_bits_retain(self.rflags)
    }

    /// IA-32e mode (EFER.LMA).
    pub const fn in_ia32e_mode(&self) -> bool {
        self.efer().contains(Efer::LMA)
    }

    /// 64-bit mode: IA-32e mode with CS.L = 1.
    pub const fn in_64bit_mode(&self) -> bool {
        self.in_ia32e_mode() && self.cs.long_mode()
    }

    /// Virtual-8086 mode (RFLAGS.VM).
    pub const fn in_virtual_8086_mode(&self) -> bool {
        self.rflags().contains(Rflags::VM)
    }
}

/// A VM exit as any engine reports it: the VM-exit information fields of
/// the SDM (25.9), engine-neutral. Fields the exit does not define are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    /// The exit-reason field (basic reason and flags).
    pub reason: ExitReasonWord,
    /// Exit qualification.
    pub qualification: u64,
    /// Guest-linear address (when the exit defines one).
    pub guest_linear_address: u64,
    /// Guest-physical address (EPT violations and misconfigurations).
    pub guest_physical_address: u64,
    /// VM-exit interruption information.
    pub interruption_info: InterruptionInfo,
    /// VM-exit interruption error code.
    pub interruption_error_code: u32,
    /// IDT-vectoring information.
    pub idt_vectoring_info: InterruptionInfo,
    /// IDT-vectoring error code.
    pub idt_vectoring_error_code: u32,
    /// VM-exit instruction length.
    pub instruction_length: u32,
    /// VM-exit instruction information.
    pub instruction_info: u32,
}

impl Exit {
    /// An exit with basic reason `reason` and every other field 0.
    pub const fn new(reason: ExitReason) -> Self {
        Self {
            reason: ExitReasonWord::new(reason),
            qualification: 0,
            guest_linear_address: 0,
            guest_physical_address: 0,
            interruption_info: InterruptionInfo::from_raw(0),
            interruption_error_code: 0,
            idt_vectoring_info: InterruptionInfo::from_raw(0),
            idt_vectoring_error_code: 0,
            instruction_length: 0,
            instruction_info: 0,
        }
    }
}

/// A page fault L1's own paging raised while hv-core accessed L1 memory on
/// L1's behalf (a VMX instruction's memory operand); hv-core injects it
/// into L1 as #PF with this address and error code (SDM Vol. 3A 4.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("#PF at {address:#x}, error code {error_code:#x}")]
pub struct PageFault {
    /// The faulting linear address (CR2).
    pub address: u64,
    /// The page-fault error code.
    pub error_code: u32,
}

/// L1's memory and paging, as VMX emulation and exit reflection need them.
///
/// Every address here comes from L1 (VMCS pointers, bitmap addresses,
/// memory operands), so failures are ordinary results, never panics.
pub trait L1Access {
    /// Reads `buf.len()` bytes of L1 physical memory at `gpa`.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when any byte is outside L1 memory.
    fn read_bytes(&self, gpa: L1Gpa, buf: &mut [u8]) -> Result<(), NotL1Memory>;

    /// Writes `buf` to L1 physical memory at `gpa`.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when any byte is outside L1 memory.
    fn write_bytes(&mut self, gpa: L1Gpa, buf: &[u8]) -> Result<(), NotL1Memory>;

    /// Translates `linear` through L1's current paging for a data read
    /// (`write == false`) or write at L1's current privilege level. The
    /// translation is valid for the rest of the 4-KiB page.
    ///
    /// # Errors
    ///
    /// The [`PageFault`] L1's paging raises.
    fn translate(&self, cpu: &L1Cpu, linear: u64, write: bool) -> Result<L1Gpa, PageFault>;
}
