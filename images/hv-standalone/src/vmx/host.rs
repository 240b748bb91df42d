//! The host-state area (SDM 25.5) from the running CPU: what a VM exit
//! loads (SDM 28.5), so that the exit lands in hv-standalone's own
//! environment. `HOST_RSP` and `HOST_RIP` are written by the entry stub
//! ([`super::enter`]) at every entry.

use core::arch::asm;

use hv_arch_vmx::instructions::VmFail;
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use hv_freestanding::cpu::{read_cr0, read_cr3, read_cr4};

use super::rdmsr;

const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
const IA32_PAT: u32 = 0x277;
const IA32_EFER: u32 = 0xC000_0080;
const IA32_FS_BASE: u32 = 0xC000_0100;
const IA32_GS_BASE: u32 = 0xC000_0101;

/// A descriptor-table register as SGDT/SIDT store it.
#[repr(C, packed)]
struct TableRegister {
    limit: u16,
    base: u64,
}

fn sgdt() -> TableRegister {
    let mut table = TableRegister { limit: 0, base: 0 };
    // SAFETY: SGDT stores 10 bytes into `table`.
    unsafe { asm!("sgdt [{}]", in(reg) &raw mut table, options(nostack, preserves_flags)) };
    table
}

fn sidt() -> TableRegister {
    let mut table = TableRegister { limit: 0, base: 0 };
    // SAFETY: SIDT stores 10 bytes into `table`.
    unsafe { asm!("sidt [{}]", in(reg) &raw mut table, options(nostack, preserves_flags)) };
    table
}

macro_rules! selector {
    ($register:literal) => {{
        let value: u16;
        // SAFETY: reading a segment selector has no side effect.
        unsafe {
            asm!(concat!("mov {0:x}, ", $register), out(reg) value, options(nomem, nostack, preserves_flags));
        }
        value
    }};
}

fn task_register() -> u16 {
    let value: u16;
    // SAFETY: STR only reads the task register.
    unsafe { asm!("str {0:x}", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The base of the 64-bit TSS descriptor `selector` names in the GDT at
/// `gdt_base` (SDM Vol. 3A 8.2.3, Figure 8-4).
///
/// # Safety
///
/// `gdt_base` must be the loaded GDT and `selector` the loaded TR.
unsafe fn tss_base(gdt_base: u64, selector: u16) -> u64 {
    let descriptor = (gdt_base + u64::from(selector & !7)) as *const u64;
    // SAFETY: the loaded TR names a 16-byte descriptor inside the GDT.
    let (low, high) = unsafe {
        (
            descriptor.read_unaligned(),
            descriptor.add(1).read_unaligned(),
        )
    };
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
}

/// Every host-state field except `HOST_RSP` and `HOST_RIP`, as the running
/// CPU holds it now. hv-standalone's selectors have RPL 0 and TI 0, as
/// SDM 27.2.3 requires; they are written unmasked so that a violation
/// fails the entry loudly instead of naming another descriptor.
pub(crate) fn host_state_image() -> VmcsImage {
    let gdtr = sgdt();
    let idtr = sidt();
    let tr = task_register();
    let mut image = VmcsImage::new();
    image.set(VmcsField::HostCr0, read_cr0());
    image.set(VmcsField::HostCr3, read_cr3());
    image.set(VmcsField::HostCr4, read_cr4());
    image.set(VmcsField::HostEsSelector, u64::from(selector!("es")));
    image.set(VmcsField::HostCsSelector, u64::from(selector!("cs")));
    image.set(VmcsField::HostSsSelector, u64::from(selector!("ss")));
    image.set(VmcsField::HostDsSelector, u64::from(selector!("ds")));
    image.set(VmcsField::HostFsSelector, u64::from(selector!("fs")));
    image.set(VmcsField::HostGsSelector, u64::from(selector!("gs")));
    image.set(VmcsField::HostTrSelector, u64::from(tr));
    let gdt_base = gdtr.base;
    // SAFETY: SGDT and STR just read the loaded GDT and TR.
    image.set(VmcsField::HostTrBase, unsafe { tss_base(gdt_base, tr) });
    image.set(VmcsField::HostGdtrBase, gdt_base);
    image.set(VmcsField::HostIdtrBase, idtr.base);
    // SAFETY: these MSRs exist on every processor with VMX (SDM Vol. 4
    // Table 2-2: SYSENTER since P6, PAT, EFER and FS/GS base in 64-bit
    // mode).
    unsafe {
        image.set(VmcsField::HostFsBase, rdmsr(IA32_FS_BASE));
        image.set(VmcsField::HostGsBase, rdmsr(IA32_GS_BASE));
        image.set(VmcsField::HostSysenterCs, rdmsr(IA32_SYSENTER_CS));
        image.set(VmcsField::HostSysenterEsp, rdmsr(IA32_SYSENTER_ESP));
        image.set(VmcsField::HostSysenterEip, rdmsr(IA32_SYSENTER_EIP));
        image.set(VmcsField::HostPat, rdmsr(IA32_PAT));
        image.set(VmcsField::HostEfer, rdmsr(IA32_EFER));
    }
    image
}

/// The host-state fields [`write_host_state`] writes.
const HOST_FIELDS: [VmcsField; 20] = [
    VmcsField::HostCr0,
    VmcsField::HostCr3,
    VmcsField::HostCr4,
    VmcsField::HostEsSelector,
    VmcsField::HostCsSelector,
    VmcsField::HostSsSelector,
    VmcsField::HostDsSelector,
    VmcsField::HostFsSelector,
    VmcsField::HostGsSelector,
    VmcsField::HostTrSelector,
    VmcsField::HostTrBase,
    VmcsField::HostGdtrBase,
    VmcsField::HostIdtrBase,
    VmcsField::HostFsBase,
    VmcsField::HostGsBase,
    VmcsField::HostSysenterCs,
    VmcsField::HostSysenterEsp,
    VmcsField::HostSysenterEip,
    VmcsField::HostPat,
    VmcsField::HostEfer,
];

/// Writes every host-state field except `HOST_RSP`/`HOST_RIP` into the
/// current VMCS from the running CPU. `HOST_IA32_PAT`/`HOST_IA32_EFER` are
/// loaded at exits only if the exit controls say so.
///
/// # Errors
///
/// The VMWRITE that failed.
///
/// # Safety
///
/// VMX root operation at CPL 0 with a current VMCS.
pub(crate) unsafe fn write_host_state() -> Result<(), VmFail> {
    let image = host_state_image();
    for field in HOST_FIELDS {
        // SAFETY: the caller guarantees VMX root operation and a current
        // VMCS; host-state fields change nothing until the next exit.
        unsafe { super::fields::write(field, image.get(field))? };
    }
    Ok(())
}
