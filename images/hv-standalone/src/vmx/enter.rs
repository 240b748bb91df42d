//! The VM-entry stub: the one place where hv-standalone enters a guest.
//!
//! VMLAUNCH and VMRESUME load only what the VMCS holds (SDM 27.3); the
//! general-purpose registers other than RSP and the x87/SSE state are the
//! hypervisor's to switch (SDM 25.4: they are not in the guest-state
//! area). The stub does that around the instruction and returns to its
//! caller at the next VM exit, as if VMLAUNCH/VMRESUME were a call:
//!
//! 1. save the callee-saved registers and the context pointer on the stack;
//! 2. FXSAVE the host's x87/SSE state, FXRSTOR the guest's;
//! 3. VMWRITE `HOST_RSP` (this stack) and `HOST_RIP` (the exit landing);
//! 4. load the guest's GPRs and VMLAUNCH or VMRESUME;
//! 5. at the exit landing (RSP = `HOST_RSP`), store the guest's GPRs and
//!    x87/SSE state, restore the host's, pop, return `0`.
//!
//! If the instruction fails instead (`VMfailInvalid`/`VMfailValid`, SDM
//! 31.2), its CF and ZF are captured right after it in the same asm, the
//! host state is restored and the failure is returned: nothing ran.
//!
//! The stub is a `global_asm!` function with the System V ABI spelled out,
//! so its stack discipline does not depend on the compiler: it returns on
//! both paths with RSP and every callee-saved register as it found them.

use core::arch::global_asm;
use core::mem::offset_of;

use hv_arch_vmx::instructions::{VmFail, status_from_flags};
use hv_arch_vmx::vmcs::VmcsField;

/// An `FXSAVE64` area: 512 bytes, 16-byte aligned (SDM Vol. 1 10.5.1).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub(crate) struct FxsaveArea(pub(crate) [u8; 512]);

impl FxsaveArea {
    /// The state after `FNINIT` and a default MXCSR: FCW 0x37F (every x87
    /// exception masked), empty x87 stack, MXCSR 0x1F80 (every SSE
    /// exception masked). SDM Vol. 1 8.1.5, 10.2.3.
    pub(crate) const fn initial() -> Self {
        let mut bytes = [0u8; 512];
        // FCW at byte 0.
        bytes[0] = 0x7f;
        bytes[1] = 0x03;
        // MXCSR at byte 24.
        bytes[24] = 0x80;
        bytes[25] = 0x1f;
        Self(bytes)
    }
}

impl core::fmt::Debug for FxsaveArea {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let fcw = u16::from_le_bytes([self.0[0], self.0[1]]);
        let mxcsr = u32::from_le_bytes([self.0[24], self.0[25], self.0[26], self.0[27]]);
        f.debug_struct("FxsaveArea")
            .field("fcw", &format_args!("{fcw:#x}"))
            .field("mxcsr", &format_args!("{mxcsr:#x}"))
            .finish_non_exhaustive()
    }
}

/// What a guest has that the VMCS does not hold: its general-purpose
/// registers and its x87/SSE state, plus the host's x87/SSE state while
/// the guest runs.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct GuestContext {
    /// RAX..R15 in the SDM's order (0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX,
    /// 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8..15 = R8..R15; SDM Table
    /// 28-3). Index 4 is neither loaded nor stored: RSP is `GUEST_RSP`.
    pub(crate) gprs: [u64; 16],
    /// The guest's x87/SSE state.
    pub(crate) fpu: FxsaveArea,
    /// The host's x87/SSE state while the guest runs.
    host_fpu: FxsaveArea,
}

// The stub addresses the fields by these offsets; FXSAVE needs 16-byte
// alignment.
const GPRS: usize = offset_of!(GuestContext, gprs);
const GUEST_FPU: usize = offset_of!(GuestContext, fpu);
const HOST_FPU: usize = offset_of!(GuestContext, host_fpu);
const _: () = assert!(GPRS == 0);
const _: () = assert!(GUEST_FPU.is_multiple_of(16) && HOST_FPU.is_multiple_of(16));

impl GuestContext {
    /// Zeroed registers and the initial x87/SSE state.
    pub(crate) const fn new() -> Self {
        Self {
            gprs: [0; 16],
            fpu: FxsaveArea::initial(),
            host_fpu: FxsaveArea::initial(),
        }
    }
}

impl Default for GuestContext {
    fn default() -> Self {
        Self::new()
    }
}

unsafe extern "sysv64" {
    /// The stub below. Returns 0 after a VM exit; otherwise bit 0 is set
    /// and bits 1 and 2 are CF and ZF as VMLAUNCH/VMRESUME left them (or as
    /// the failed VMWRITE of the host RSP/RIP left them).
    fn hv_vmx_enter(context: *mut GuestContext, resume: u64) -> u64;
}

global_asm!(
    r#"
    .pushsection .text.hv_vmx_enter, "ax"
    .global hv_vmx_enter
    .balign 16
hv_vmx_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    /* The context pointer: [rsp] at the exit landing. */
    push rdi
    fxsave64 [rdi + {host_fpu}]
    fxrstor64 [rdi + {guest_fpu}]
    mov rax, {host_rsp}
    vmwrite rax, rsp
    jbe 3f
    lea rdx, [rip + 2f]
    mov rax, {host_rip}
    vmwrite rax, rdx
    jbe 3f
    /* ZF = (resume == 0) survives the MOVs below. */
    test rsi, rsi
    mov rax, [rdi + 0]
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8, [rdi + 64]
    mov r9, [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    jnz 1f
    vmlaunch
    jmp 3f
1:
    vmresume
3:
    /* The entry (or a VMWRITE before it) failed: CF/ZF say how. */
    setc cl
    setz dl
    movzx ecx, cl
    movzx edx, dl
    lea eax, [rcx * 2 + 1]
    lea eax, [rax + rdx * 4]
    pop rdi
    fxrstor64 [rdi + {host_fpu}]
    jmp 4f

2:
    /* VM exit: RSP = HOST_RSP, [rsp] = the context pointer. */
    xchg rdi, [rsp]
    mov [rdi + 0], rax
    mov [rdi + 8], rcx
    mov [rdi + 16], rdx
    mov [rdi + 24], rbx
    mov [rdi + 40], rbp
    mov [rdi + 48], rsi
    mov [rdi + 64], r8
    mov [rdi + 72], r9
    mov [rdi + 80], r10
    mov [rdi + 88], r11
    mov [rdi + 96], r12
    mov [rdi + 104], r13
    mov [rdi + 112], r14
    mov [rdi + 120], r15
    pop rax
    mov [rdi + 56], rax
    fxsave64 [rdi + {guest_fpu}]
    fxrstor64 [rdi + {host_fpu}]
    xor eax, eax
4:
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
    .popsection
"#,
    host_fpu = const HOST_FPU,
    guest_fpu = const GUEST_FPU,
    host_rsp = const VmcsField::HostRsp.encoding(),
    host_rip = const VmcsField::HostRip.encoding(),
);

/// Enters the guest of the current VMCS and returns at its next VM exit,
/// with the guest's GPRs and x87/SSE state stored in `context`.
///
/// `resume` selects VMRESUME (the VMCS was launched) over VMLAUNCH.
///
/// # Errors
///
/// The [`VmFail`] of VMLAUNCH/VMRESUME (or of the VMWRITE of `HOST_RSP` or
/// `HOST_RIP` just before it): nothing was entered and `context` is
/// unchanged. A VM-entry failure during guest-state loading is not an
/// error here: it is a VM exit with bit 31 of the exit reason set (SDM
/// 27.8).
///
/// # Safety
///
/// VMX root operation at CPL 0 with a current VMCS whose host-state area
/// (except `HOST_RSP`/`HOST_RIP`, which this function writes) describes
/// the running CPU ([`super::host::write_host_state`]), whose controls and
/// guest state the caller vouches for, and every physical address in which
/// (EPTP, bitmaps, ...) names memory owned by the caller for that use.
/// Interrupts must be disabled.
pub(crate) unsafe fn enter_guest(context: &mut GuestContext, resume: bool) -> Result<(), VmFail> {
    // SAFETY: the caller upholds the VMX conditions; the stub follows the
    // System V ABI, returns on both paths and only touches `context`.
    let status = unsafe { hv_vmx_enter(core::ptr::from_mut(context), u64::from(resume)) };
    if status == 0 {
        return Ok(());
    }
    let carry = u8::from(status & 2 != 0);
    let zero = u8::from(status & 4 != 0);
    // SAFETY: CF and ZF were captured right after the failing VMX
    // instruction on this CPU, with no VMX instruction since.
    match unsafe { status_from_flags(carry, zero) } {
        Err(failure) => Err(failure),
        Ok(()) => Err(VmFail::NoStatusFlags),
    }
}
