//! The VMX instructions as `unsafe fn` (SDM Vol. 3C chapter 31, "VMX
//! Instruction Reference"), and the VMXON and VMCS regions they point at.
//!
//! # Status reporting (SDM 31.2)
//!
//! Most VMX instructions report their outcome in RFLAGS:
//!
//! | outcome          | flags            | meaning                                      |
//! |------------------|------------------|----------------------------------------------|
//! | `VMsucceed`      | CF = 0, ZF = 0   | the instruction did its work                 |
//! | `VMfailInvalid`  | CF = 1           | failure, and there is no current VMCS to hold an error number |
//! | `VMfailValid`    | ZF = 1           | failure; the error number is in the VM-instruction error field of the current VMCS |
//!
//! Every wrapper captures CF and ZF with `setc`/`setz` in the *same* `asm!`
//! block as the VMX instruction, directly after it: no compiler-generated
//! code can run in between and change the flags. On `VMfailValid` the wrapper
//! then reads the VM-instruction error field (VMREAD of encoding 0x4400) and
//! decodes it into [`VmInstructionError`]; if that read itself fails the
//! wrapper says so ([`VmFail::ValidUnreadable`]) rather than guessing a number.
//!
//! # Operands
//!
//! VMXON, VMCLEAR and VMPTRLD take a memory operand that *holds* a 64-bit
//! physical address; the wrappers take the physical address as a `u64` and
//! pass the instruction a pointer to it. INVEPT and INVVPID take their
//! 128-bit descriptor by reference. VMREAD and VMWRITE use their register
//! forms (64-bit registers; the field encoding is zero-extended, as SDM 31.3
//! VMREAD/VMWRITE require bits 63:32 of the encoding operand to be 0).
//!
//! # Common safety conditions
//!
//! Every instruction here but VMXON raises #UD outside VMX operation (VMXON
//! raises it when CR4.VMXE = 0), and in VMX root operation at CPL > 0 raises #GP(0)
//! (VMFUNC instead raises #UD anywhere but VMX non-root operation). A #UD or
//! #GP in a kernel is a crash, hence `unsafe`. Virtual-8086 and compatibility
//! mode (#UD) cannot occur: this code is 64-bit. Executed in VMX non-root
//! operation (hv running as an L1 guest), all but VMFUNC cause a VM exit
//! (VMREAD/VMWRITE may instead use a shadow VMCS), and what happens next is
//! up to the VMM that receives it; the `# Safety` sections describe VMX root
//! operation unless they say otherwise. The asm of these wrappers never
//! pushes or pops and leaves RSP unchanged (`options(nostack)`).

use core::arch::asm;
use core::mem::{offset_of, size_of};

use crate::instruction_error::VmInstructionError;
use crate::invalidation::{InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};
use crate::vmcs::{FieldAccess, VmcsField};

/// Why a VMX instruction failed (SDM 31.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VmFail {
    /// `VMfailInvalid` (CF = 1): the instruction failed and there is no current
    /// VMCS (or the current-VMCS pointer is not valid), so no error number
    /// was recorded.
    #[error("VMfailInvalid: failed with no current VMCS to record an error number")]
    Invalid,
    /// `VMfailValid` (ZF = 1): the instruction failed and recorded this error
    /// number in the VM-instruction error field of the current VMCS.
    #[error("VMfailValid: {0}")]
    Valid(VmInstructionError),
    /// `VMfailValid` (ZF = 1), but the VMREAD of the VM-instruction error field
    /// that followed failed as well, so the error number is not known.
    /// Architecturally this should not happen: `VMfailValid` implies a current
    /// VMCS, and that field is always readable.
    #[error("VMfailValid, and the VM-instruction error field could not be read")]
    ValidUnreadable,
    /// VMLAUNCH or VMRESUME returned to the instruction after it with neither
    /// CF nor ZF set. Not architectural: a successful VM entry continues at
    /// `HOST_RIP` after the next VM exit, never after the instruction. Reported
    /// instead of being mistaken for a success or a made-up error number.
    #[error("VM entry instruction fell through with neither CF nor ZF set")]
    NoStatusFlags,
}

/// The outcome an instruction reported in RFLAGS, before any error number is
/// read (SDM 31.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Status {
    /// CF = 0 and ZF = 0.
    Succeed,
    /// CF = 1. Checked first: `VMfailInvalid` clears every other flag, so a set
    /// CF always means `VMfailInvalid`.
    FailInvalid,
    /// CF = 0 and ZF = 1.
    FailValid,
}

impl Status {
    /// Classifies the CF and ZF bytes stored by `setc`/`setz` (0 or 1).
    const fn from_flags(carry: u8, zero: u8) -> Self {
        if carry != 0 {
            Self::FailInvalid
        } else if zero != 0 {
            Self::FailValid
        } else {
            Self::Succeed
        }
    }
}

/// VMREAD, register form, of the `u32` encoding `$encoding`; evaluates to
/// `(value, carry, zero)` with CF and ZF captured right after the VMREAD.
///
/// A macro rather than a function so that every wrapper contains its own
/// VMREAD whatever the optimization level. Expands to an `asm!` block: use it
/// inside `unsafe`, in VMX operation at CPL0. The register form writes no
/// memory; bits 63:32 of the encoding operand are 0 as SDM 31.3 requires.
macro_rules! vmread_asm {
    ($encoding:expr) => {{
        let encoding: u64 = u64::from($encoding);
        let value: u64;
        let carry: u8;
        let zero: u8;
        asm!(
            "vmread {value}, {encoding}",
            "setc {carry}",
            "setz {zero}",
            encoding = in(reg) encoding,
            value = out(reg) value,
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
        (value, carry, zero)
    }};
}

/// VMWRITE, register form, of `$value: u64` to the `u32` encoding
/// `$encoding`; evaluates to `(carry, zero)` captured right after the
/// VMWRITE. A macro for the same reason as `vmread_asm!`; use inside
/// `unsafe`, in VMX operation at CPL0. VMWRITE changes only the current
/// VMCS, which Rust code never accesses directly.
macro_rules! vmwrite_asm {
    ($encoding:expr, $value:expr) => {{
        let encoding: u64 = u64::from($encoding);
        let value: u64 = $value;
        let carry: u8;
        let zero: u8;
        asm!(
            "vmwrite {encoding}, {value}",
            "setc {carry}",
            "setz {zero}",
            encoding = in(reg) encoding,
            value = in(reg) value,
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
        (carry, zero)
    }};
}

/// Turns the flags captured after a VMX instruction into a result, reading
/// the VM-instruction error field on `VMfailValid`.
///
/// # Safety
///
/// `carry` and `zero` must be CF and ZF as captured directly after a VMX
/// instruction executed by this logical processor (so it is in VMX operation
/// at CPL0, and on `VMfailValid` has a current VMCS).
#[inline]
unsafe fn check(carry: u8, zero: u8) -> Result<(), VmFail> {
    match Status::from_flags(carry, zero) {
        Status::Succeed => Ok(()),
        Status::FailInvalid => Err(VmFail::Invalid),
        // SAFETY: the caller guarantees a VMX instruction just ran on this
        // processor at CPL0 in VMX operation and reported VMfailValid.
        Status::FailValid => Err(unsafe { read_instruction_error() }),
    }
}

/// Turns CF and ZF captured right after a VMX instruction that ran in the
/// caller's own `asm!` (an entry stub that must also switch registers, for
/// example) into that instruction's result, reading the VM-instruction error
/// field on `VMfailValid` (SDM 31.2).
///
/// # Errors
///
/// The [`VmFail`] the flags report.
///
/// # Safety
///
/// `carry` and `zero` must be CF and ZF as captured directly after a VMX
/// instruction executed by this logical processor (so it is in VMX operation
/// at CPL0, and on `VMfailValid` has a current VMCS), with no VMX instruction
/// in between.
pub unsafe fn status_from_flags(carry: u8, zero: u8) -> Result<(), VmFail> {
    // SAFETY: forwarded from the caller.
    unsafe { check(carry, zero) }
}

/// Reads and decodes the VM-instruction error field after a `VMfailValid`
/// (SDM 31.4: the error number is in the 32-bit field at encoding 0x4400).
///
/// # Safety
///
/// The processor must be in VMX operation at CPL0 (VMREAD raises #UD/#GP
/// otherwise).
#[inline]
unsafe fn read_instruction_error() -> VmFail {
    // SAFETY: the caller guarantees VMX operation at CPL0.
    let (value, carry, zero) = unsafe { vmread_asm!(VmcsField::VmInstructionError.encoding()) };
    match Status::from_flags(carry, zero) {
        // The field is 32 bits wide: VMREAD zero-extends it (SDM 31.3).
        Status::Succeed => VmFail::Valid(VmInstructionError::from_number(value as u32)),
        Status::FailInvalid | Status::FailValid => VmFail::ValidUnreadable,
    }
}

/// VMXON: enters VMX root operation (SDM 31.3 VMXON).
///
/// `vmxon_region_pa` is the physical address of the VMXON region (see
/// [`VmxonRegion`]); the instruction reads it from memory, so the wrapper
/// hands it a pointer to a copy on its stack.
///
/// # Errors
///
/// - [`VmFail::Invalid`] if the address is not 4 KiB aligned, exceeds the
///   physical-address width, or the region's revision identifier is wrong
///   (outside VMX operation there is never a current VMCS).
/// - [`VmFail::Valid`] with error 15, "VMXON executed in VMX root operation",
///   when already in VMX root operation with a current VMCS (without one:
///   [`VmFail::Invalid`]).
///
/// # Safety
///
/// - CPL0, 64-bit mode, CR4.VMXE = 1 (else #UD), and CR0/CR4 satisfy the
///   fixed bits of `IA32_VMX_CR0_FIXED0`/1 and `IA32_VMX_CR4_FIXED0`/1 (else #GP).
/// - `IA32_FEATURE_CONTROL` is locked with VMXON enabled outside SMX (or inside
///   SMX, if in SMX operation) (else #GP); A20M is not active.
/// - `vmxon_region_pa` is 4 KiB aligned, within the physical-address width
///   (32 bits if `IA32_VMX_BASIC` bit 48 is set), and names memory owned by the
///   caller, at least `IA32_VMX_BASIC` bits 44:32 bytes long (a [`VmxonRegion`]
///   is always enough), whose first 32 bits hold the VMCS revision
///   identifier of `IA32_VMX_BASIC` bits 30:0 with bit 31 clear.
/// - From now until VMXOFF the processor owns that memory: software must not
///   read, write or free it (SDM 25.11.5), and no Rust reference to it may be
///   used in the meantime.
pub unsafe fn vmxon(vmxon_region_pa: u64) -> Result<(), VmFail> {
    let carry: u8;
    let zero: u8;
    // SAFETY: the caller upholds the conditions above. The memory operand
    // is a live local; VMXON reads it and may use the region at the address
    // it holds, which the caller gave to the processor.
    unsafe {
        asm!(
            "vmxon qword ptr [{pointer}]",
            "setc {carry}",
            "setz {zero}",
            pointer = in(reg) &raw const vmxon_region_pa,
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
    }
    // SAFETY: flags captured directly after VMXON.
    unsafe { check(carry, zero) }
}

/// VMXOFF: leaves VMX operation (SDM 31.3 VMXOFF).
///
/// # Errors
///
/// [`VmFail::Valid`] with error 23, "VMXOFF under dual-monitor treatment of
/// SMIs and SMM" ([`VmFail::Invalid`] in that case when there is no current
/// VMCS).
///
/// # Safety
///
/// - VMX root operation at CPL0 (else #UD or #GP).
/// - After success the VMXON region and every VMCS region may be reused by
///   software. VMCSs that are still active lose any data the processor has
///   cached and not written back: VMCLEAR each active VMCS first if its
///   contents matter (SDM 25.11.1, 25.11.3).
/// - Nothing that runs afterwards relies on being in VMX operation (further
///   VMX instructions raise #UD).
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let carry: u8;
    let zero: u8;
    // SAFETY: the caller guarantees VMX root operation at CPL0.
    unsafe {
        asm!(
            "vmxoff",
            "setc {carry}",
            "setz {zero}",
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
    }
    // SAFETY: flags captured directly after VMXOFF.
    unsafe { check(carry, zero) }
}

/// VMCLEAR: makes the VMCS at `vmcs_region_pa` inactive, not current and
/// clear, writing any cached VMCS data back to it (SDM 31.3 VMCLEAR).
///
/// # Errors
///
/// [`VmFail::Valid`] with error 2, "VMCLEAR with invalid physical address",
/// or 3, "VMCLEAR with VMXON pointer"; [`VmFail::Invalid`] for the same
/// causes when there is no current VMCS.
///
/// # Safety
///
/// - VMX root operation at CPL0 (else #UD or #GP).
/// - If the address is valid (4 KiB aligned, within the physical-address
///   width, not the VMXON pointer) the processor *writes* VMCS data and the
///   launch state into the region there: it must be memory the caller owns
///   as a VMCS region (see [`VmcsRegion`]) that no live Rust reference
///   expects unchanged.
pub unsafe fn vmclear(vmcs_region_pa: u64) -> Result<(), VmFail> {
    let carry: u8;
    let zero: u8;
    // SAFETY: the caller upholds the conditions above; the operand is a live
    // local holding the address.
    unsafe {
        asm!(
            "vmclear qword ptr [{pointer}]",
            "setc {carry}",
            "setz {zero}",
            pointer = in(reg) &raw const vmcs_region_pa,
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
    }
    // SAFETY: flags captured directly after VMCLEAR.
    unsafe { check(carry, zero) }
}

/// VMPTRLD: makes the VMCS at `vmcs_region_pa` current and active (SDM 31.3
/// VMPTRLD).
///
/// # Errors
///
/// [`VmFail::Valid`] with error 9, "VMPTRLD with invalid physical address",
/// 10, "VMPTRLD with VMXON pointer", or 11, "VMPTRLD with incorrect VMCS
/// revision identifier" (also when the shadow-VMCS indicator is set and the
/// processor does not support VMCS shadowing); [`VmFail::Invalid`] for the
/// same causes when there is no current VMCS.
///
/// # Safety
///
/// - VMX root operation at CPL0 (else #UD or #GP).
/// - The address names memory the caller owns as a VMCS region whose first
///   32 bits hold the revision identifier of `IA32_VMX_BASIC` (see
///   [`VmcsRegion`]). While that VMCS is active (until VMCLEAR) the processor
///   may read and write the region at any time: software must not access or
///   free it (SDM 25.11.1), and no Rust reference to it may be used.
pub unsafe fn vmptrld(vmcs_region_pa: u64) -> Result<(), VmFail> {
    let carry: u8;
    let zero: u8;
    // SAFETY: the caller upholds the conditions above; the operand is a live
    // local holding the address.
    unsafe {
        asm!(
            "vmptrld qword ptr [{pointer}]",
            "setc {carry}",
            "setz {zero}",
            pointer = in(reg) &raw const vmcs_region_pa,
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
    }
    // SAFETY: flags captured directly after VMPTRLD.
    unsafe { check(carry, zero) }
}

/// The current-VMCS pointer value that means "no current VMCS" (SDM 31.3
/// VMPTRST, 25.11.2: VMCLEAR of the current VMCS sets the pointer to all
/// ones).
pub const NO_CURRENT_VMCS: u64 = u64::MAX;

/// VMPTRST: the physical address of the current VMCS, or `None` when there
/// is none (the processor stores [`NO_CURRENT_VMCS`]) (SDM 31.3 VMPTRST).
///
/// VMPTRST always reports `VMsucceed`, so there is no error to return.
///
/// # Safety
///
/// VMX root operation at CPL0 (else #UD or #GP). The processor writes 8
/// bytes to a local of this function; nothing else.
pub unsafe fn vmptrst() -> Option<u64> {
    let mut pointer: u64 = NO_CURRENT_VMCS;
    // SAFETY: the caller guarantees VMX root operation at CPL0; the memory
    // operand is a live, writable, 8-byte-aligned local.
    unsafe {
        asm!(
            "vmptrst qword ptr [{pointer}]",
            pointer = in(reg) &raw mut pointer,
            options(nostack),
        );
    }
    if pointer == NO_CURRENT_VMCS {
        None
    } else {
        Some(pointer)
    }
}

/// VMREAD: reads a field of the current VMCS (SDM 31.3 VMREAD). The value is
/// zero-extended from the field's width.
///
/// # Errors
///
/// [`VmFail::Invalid`] when there is no current VMCS; [`VmFail::Valid`] with
/// error 12, "VMREAD/VMWRITE from/to unsupported VMCS component", for a field
/// this processor does not implement.
///
/// # Safety
///
/// VMX operation at CPL0 (else #UD or #GP). Reading has no side effects.
/// (In VMX non-root operation with VMCS shadowing this reads the shadow VMCS,
/// or causes a VM exit.)
pub unsafe fn vmread(field: VmcsField) -> Result<u64, VmFail> {
    // SAFETY: the caller guarantees VMX operation at CPL0.
    let (value, carry, zero) = unsafe { vmread_asm!(field.encoding()) };
    // SAFETY: flags captured directly after VMREAD.
    unsafe { check(carry, zero) }.map(|()| value)
}

/// VMREAD of a field access, which may name the HIGH half (bits 63:32) of a
/// 64-bit field (SDM 25.11.2); as [`vmread`] otherwise.
///
/// # Errors
///
/// As [`vmread`].
///
/// # Safety
///
/// As [`vmread`].
pub unsafe fn vmread_access(access: FieldAccess) -> Result<u64, VmFail> {
    // SAFETY: the caller guarantees VMX operation at CPL0.
    let (value, carry, zero) = unsafe { vmread_asm!(access.encoding()) };
    // SAFETY: flags captured directly after VMREAD.
    unsafe { check(carry, zero) }.map(|()| value)
}

/// VMWRITE: writes a field of the current VMCS (SDM 31.3 VMWRITE). Bits of
/// `value` beyond the field's width are ignored by the processor.
///
/// # Errors
///
/// [`VmFail::Invalid`] when there is no current VMCS; [`VmFail::Valid`] with
/// error 12, "VMREAD/VMWRITE from/to unsupported VMCS component", or 13,
/// "VMWRITE to read-only VMCS component" (VM-exit information fields, unless
/// `IA32_VMX_MISC` bit 29 allows it).
///
/// # Safety
///
/// VMX operation at CPL0 (else #UD or #GP). The write itself touches only
/// the current VMCS; what the new value *means* (host RIP/RSP, bitmap and
/// EPT addresses, ...) becomes a condition of the next [`vmlaunch`] or
/// [`vmresume`].
pub unsafe fn vmwrite(field: VmcsField, value: u64) -> Result<(), VmFail> {
    // SAFETY: the caller guarantees VMX operation at CPL0.
    let (carry, zero) = unsafe { vmwrite_asm!(field.encoding(), value) };
    // SAFETY: flags captured directly after VMWRITE.
    unsafe { check(carry, zero) }
}

/// VMWRITE of a field access, which may name the HIGH half of a 64-bit field
/// (SDM 25.11.2); as [`vmwrite`] otherwise.
///
/// # Errors
///
/// As [`vmwrite`].
///
/// # Safety
///
/// As [`vmwrite`].
pub unsafe fn vmwrite_access(access: FieldAccess, value: u64) -> Result<(), VmFail> {
    // SAFETY: the caller guarantees VMX operation at CPL0.
    let (carry, zero) = unsafe { vmwrite_asm!(access.encoding(), value) };
    // SAFETY: flags captured directly after VMWRITE.
    unsafe { check(carry, zero) }
}

/// VMLAUNCH: launches the guest of the current VMCS (SDM 31.3 VMLAUNCH,
/// chapter 27).
///
/// Returns only on failure. On success execution continues in the guest, and
/// at the next VM exit (or a VM-entry failure while loading guest state, exit
/// reason bit 31, SDM 27.8) at `HOST_RIP` with RSP = `HOST_RSP` of the current
/// VMCS — never after this call.
///
/// # Errors (the return value)
///
/// [`VmFail::Invalid`] without a current VMCS; [`VmFail::Valid`] with error 4,
/// "VMLAUNCH with non-clear VMCS", 7, "VM entry with invalid control
/// field(s)", 8, "VM entry with invalid host-state field(s)", or 26, "VM
/// entry with events blocked by MOV SS", among others of SDM 31.4 (16-18 and
/// 25 concern the dual-monitor treatment of SMIs).
///
/// # Safety
///
/// - VMX root operation at CPL0 (else #UD or #GP) with a current VMCS.
/// - On success this call does not return. This wrapper pushes nothing and
///   does not change RSP (`nostack`); the RSP at the VMLAUNCH instruction is
///   whatever the compiler chose for this frame and is not known to the
///   caller. Therefore `HOST_RSP` and `HOST_RIP` must name a stack and code that
///   are valid on their own, and the frames of this call and its callers are
///   abandoned as if by `longjmp`: no destructor of a value in them runs, and
///   nothing may later return into them or use references into them.
/// - General-purpose registers other than RSP are not part of the guest-state
///   area (SDM 25.4): the guest starts with whatever values the compiler left
///   in RAX..R15, which may be host pointers. Use this wrapper only for guests
///   that set up their own registers (such as tests and simple boot stubs);
///   a run loop that needs guest GPRs needs its own entry stub.
/// - Every host-state field must describe a state in which running the code
///   at `HOST_RIP` is sound, and every physical address in the VMCS (bitmaps,
///   EPTP, virtual-APIC page, MSR areas, ...) must name memory owned by the
///   caller for that use.
pub unsafe fn vmlaunch() -> VmFail {
    let carry: u8;
    let zero: u8;
    // SAFETY: the caller upholds the conditions above. On success control
    // leaves for the guest and never returns here; on failure the flags are
    // captured right after VMLAUNCH.
    unsafe {
        asm!(
            "vmlaunch",
            "setc {carry}",
            "setz {zero}",
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
    }
    // SAFETY: flags captured directly after VMLAUNCH.
    unsafe { entry_failure(carry, zero) }
}

/// VMRESUME: resumes the guest of the current, launched VMCS (SDM 31.3
/// VMRESUME, chapter 27).
///
/// Returns only on failure; on success execution continues at `HOST_RIP` after
/// the next VM exit, as for [`vmlaunch`].
///
/// # Errors (the return value)
///
/// As [`vmlaunch`], with error 5, "VMRESUME with non-launched VMCS", or 6,
/// "VMRESUME after VMXOFF", instead of 4.
///
/// # Safety
///
/// As [`vmlaunch`].
pub unsafe fn vmresume() -> VmFail {
    let carry: u8;
    let zero: u8;
    // SAFETY: as in `vmlaunch`.
    unsafe {
        asm!(
            "vmresume",
            "setc {carry}",
            "setz {zero}",
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
    }
    // SAFETY: flags captured directly after VMRESUME.
    unsafe { entry_failure(carry, zero) }
}

/// The failure a VM-entry instruction reported by falling through.
///
/// # Safety
///
/// As [`check`].
#[inline]
unsafe fn entry_failure(carry: u8, zero: u8) -> VmFail {
    // SAFETY: forwarded from the caller.
    match unsafe { check(carry, zero) } {
        Err(failure) => failure,
        Ok(()) => VmFail::NoStatusFlags,
    }
}

/// INVEPT: invalidates EPT-derived translations (SDM 31.3 INVEPT, 29.4.3.1).
///
/// # Errors
///
/// [`VmFail::Valid`] with error 28, "Invalid operand to INVEPT/INVVPID", for
/// an unsupported type or (single-context) an invalid EPTP;
/// [`VmFail::Invalid`] for the same causes when there is no current VMCS.
///
/// # Safety
///
/// VMX root operation at CPL0, and the processor supports INVEPT
/// (`IA32_VMX_PROCBASED_CTLS2` allows "enable EPT" and `IA32_VMX_EPT_VPID_CAP`
/// bit 20 is set), else #UD or #GP. Invalidation only drops cached
/// translations; it does not change memory.
pub unsafe fn invept(
    invalidation: InveptType,
    descriptor: &InveptDescriptor,
) -> Result<(), VmFail> {
    let carry: u8;
    let zero: u8;
    // SAFETY: the caller upholds the conditions above; the descriptor is a
    // live, 16-byte-aligned 128-bit value the instruction only reads.
    unsafe {
        asm!(
            "invept {invalidation}, xmmword ptr [{descriptor}]",
            "setc {carry}",
            "setz {zero}",
            invalidation = in(reg) invalidation.raw(),
            descriptor = in(reg) core::ptr::from_ref(descriptor),
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack, readonly),
        );
    }
    // SAFETY: flags captured directly after INVEPT.
    unsafe { check(carry, zero) }
}

/// INVVPID: invalidates translations tagged with a VPID (SDM 31.3 INVVPID,
/// 29.4.3.3).
///
/// # Errors
///
/// [`VmFail::Valid`] with error 28, "Invalid operand to INVEPT/INVVPID", for
/// an unsupported type, VPID 0 with a type that needs a VPID, reserved
/// descriptor bits set, or (individual-address) a non-canonical address;
/// [`VmFail::Invalid`] for the same causes when there is no current VMCS.
///
/// # Safety
///
/// VMX root operation at CPL0, and the processor supports INVVPID
/// (`IA32_VMX_PROCBASED_CTLS2` allows "enable VPID" and `IA32_VMX_EPT_VPID_CAP`
/// bit 32 is set), else #UD or #GP. Invalidation only drops cached
/// translations; it does not change memory.
pub unsafe fn invvpid(
    invalidation: InvvpidType,
    descriptor: &InvvpidDescriptor,
) -> Result<(), VmFail> {
    let carry: u8;
    let zero: u8;
    // SAFETY: the caller upholds the conditions above; the descriptor is a
    // live, 16-byte-aligned 128-bit value the instruction only reads.
    unsafe {
        asm!(
            "invvpid {invalidation}, xmmword ptr [{descriptor}]",
            "setc {carry}",
            "setz {zero}",
            invalidation = in(reg) invalidation.raw(),
            descriptor = in(reg) core::ptr::from_ref(descriptor),
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack, readonly),
        );
    }
    // SAFETY: flags captured directly after INVVPID.
    unsafe { check(carry, zero) }
}

/// The registers a VMCALL passes to and receives from the hypervisor. Which
/// register means what is the hypercall ABI's business, not VMX's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct VmcallRegisters {
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
}

/// VMCALL: calls the hypervisor (SDM 31.3 VMCALL). Loads RAX, RBX, RCX, RDX,
/// RSI and RDI from `registers`, executes VMCALL, and returns those six
/// registers as they are afterwards.
///
/// In VMX non-root operation VMCALL causes a VM exit (exit reason 18) and
/// the hypervisor answers in the registers. In VMX root operation it is not
/// a hypercall: it reports `VMfailValid`(1), "VMCALL executed in VMX root
/// operation" (or activates the dual-monitor treatment of SMIs and SMM),
/// which this wrapper does not decode; outside VMX operation it raises #UD.
///
/// RBX is reserved by LLVM and cannot be an `asm!` operand, so the asm swaps
/// it with a scratch register around the VMCALL and restores it.
///
/// # Safety
///
/// - VMX non-root operation (or VMX root at CPL0, where it only fails);
///   otherwise #UD or #GP.
/// - The hypervisor handling the exit must preserve every register other
///   than these six and RFLAGS, return with RFLAGS.DF clear and RSP
///   unchanged, and must not change memory the program relies on except as
///   the hypercall ABI and the caller agree.
pub unsafe fn vmcall(registers: VmcallRegisters) -> VmcallRegisters {
    let mut out = registers;
    // SAFETY: the caller upholds the conditions above. RBX is exchanged with
    // a scratch register before and after VMCALL, so LLVM's RBX is intact
    // when the block ends; XCHG does not touch the stack.
    unsafe {
        asm!(
            "xchg {rbx_value}, rbx",
            "vmcall",
            "xchg {rbx_value}, rbx",
            rbx_value = inout(reg) out.rbx,
            inout("rax") out.rax,
            inout("rcx") out.rcx,
            inout("rdx") out.rdx,
            inout("rsi") out.rsi,
            inout("rdi") out.rdi,
            options(nostack),
        );
    }
    out
}

/// The VM function number of EPTP switching, the only VM function the SDM
/// defines (SDM 26.5.6.3).
pub const VMFUNC_EPTP_SWITCHING: u32 = 0;

/// VMFUNC: invokes VM function `function` (EAX) with argument `index` (ECX)
/// from VMX non-root operation (SDM 31.3 VMFUNC, 26.5.6). For EPTP switching
/// ([`VMFUNC_EPTP_SWITCHING`]) `index` selects an entry of the EPTP list.
///
/// VMFUNC reports no status in RFLAGS: it either performs the function, or
/// causes a VM exit (exit reason 59) when the function is not enabled in the
/// VM-function controls or its arguments are invalid (for EPTP switching:
/// index ≥ 512, or an invalid EPTP in the list), or raises #UD.
///
/// # Safety
///
/// - VMX non-root operation with the "enable VM functions" control set and
///   `function` < 64 (else #UD).
/// - For EPTP switching, the selected EPT must map this code, the stack and
///   every page the program uses so that the program keeps working: from
///   Rust's point of view memory may change arbitrarily when the
///   guest-physical mapping changes.
/// - If a VM exit results, the hypervisor must return with all registers,
///   RSP and memory preserved.
pub unsafe fn vmfunc(function: u32, index: u32) {
    // SAFETY: the caller upholds the conditions above. Memory is not marked
    // untouched: a new EPTP changes what memory reads return.
    unsafe {
        asm!(
            "vmfunc",
            in("eax") function,
            in("ecx") index,
            options(nostack),
        );
    }
}

/// Bit 31 of the first dword of a VMCS region: the shadow-VMCS indicator
/// (SDM 25.2).
const SHADOW_VMCS_INDICATOR: u32 = 1 << 31;

/// Bits 30:0 of the first dword: the VMCS revision identifier (SDM 25.2).
const REVISION_ID_MASK: u32 = !SHADOW_VMCS_INDICATOR;

/// A revision identifier wider than the 31 bits the regions hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("VMCS revision identifier {0:#x} sets bit 31; IA32_VMX_BASIC bits 30:0 give it")]
pub struct RevisionIdTooWide(pub u32);

/// The VMXON region: 4 KiB, 4 KiB aligned, whose first dword holds the VMCS
/// revision identifier (bits 30:0, bit 31 clear) (SDM 25.11.5). Its size
/// covers every implementation (`IA32_VMX_BASIC` bits 44:32 are at most 4096).
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct VmxonRegion {
    /// Bits 30:0: revision identifier; bit 31: must be 0.
    revision_id: u32,
    /// Implementation-specific; owned by the processor during VMX operation.
    data: [u8; 4092],
}

const _: () = assert!(size_of::<VmxonRegion>() == 4096);
const _: () = assert!(align_of::<VmxonRegion>() == 4096);
const _: () = assert!(offset_of!(VmxonRegion, revision_id) == 0);
const _: () = assert!(offset_of!(VmxonRegion, data) == 4);

impl VmxonRegion {
    /// A zeroed region carrying `revision_id` (`IA32_VMX_BASIC` bits 30:0).
    ///
    /// # Errors
    ///
    /// [`RevisionIdTooWide`] if bit 31 is set; VMXON would fail with
    /// `VMfailInvalid` on such a region.
    pub const fn new(revision_id: u32) -> Result<Self, RevisionIdTooWide> {
        if revision_id & SHADOW_VMCS_INDICATOR != 0 {
            return Err(RevisionIdTooWide(revision_id));
        }
        Ok(Self {
            revision_id,
            data: [0; 4092],
        })
    }

    /// The revision identifier in the first dword.
    pub const fn revision_id(&self) -> u32 {
        self.revision_id
    }
}

/// A VMCS region (SDM 25.2, Table 25-1): 4 KiB, 4 KiB aligned.
///
/// | bytes  | contents                                                       |
/// |--------|----------------------------------------------------------------|
/// | 0-3    | bits 30:0 VMCS revision identifier, bit 31 shadow-VMCS indicator |
/// | 4-7    | VMX-abort indicator                                            |
/// | 8-4095 | VMCS data (implementation-specific format)                     |
///
/// Software initializes the header, then hands the region to the processor
/// with VMCLEAR and VMPTRLD, and must use VMREAD/VMWRITE from then on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct VmcsRegion {
    /// Bits 30:0: revision identifier; bit 31: shadow-VMCS indicator.
    revision_and_shadow: u32,
    /// VMX-abort indicator, written by the processor on a VMX abort.
    abort_indicator: u32,
    /// Implementation-specific VMCS data.
    data: [u8; 4088],
}

const _: () = assert!(size_of::<VmcsRegion>() == 4096);
const _: () = assert!(align_of::<VmcsRegion>() == 4096);
const _: () = assert!(offset_of!(VmcsRegion, revision_and_shadow) == 0);
const _: () = assert!(offset_of!(VmcsRegion, abort_indicator) == 4);
const _: () = assert!(offset_of!(VmcsRegion, data) == 8);

impl VmcsRegion {
    /// A zeroed ordinary (non-shadow) VMCS region carrying `revision_id`
    /// (`IA32_VMX_BASIC` bits 30:0).
    ///
    /// # Errors
    ///
    /// [`RevisionIdTooWide`] if bit 31 is set: that bit is the shadow-VMCS
    /// indicator, not part of the identifier.
    pub const fn new(revision_id: u32) -> Result<Self, RevisionIdTooWide> {
        if revision_id & SHADOW_VMCS_INDICATOR != 0 {
            return Err(RevisionIdTooWide(revision_id));
        }
        Ok(Self {
            revision_and_shadow: revision_id,
            abort_indicator: 0,
            data: [0; 4088],
        })
    }

    /// The revision identifier (bits 30:0 of the first dword).
    pub const fn revision_id(&self) -> u32 {
        self.revision_and_shadow & REVISION_ID_MASK
    }

    /// The shadow-VMCS indicator (bit 31 of the first dword): whether this is
    /// a shadow VMCS (SDM 25.10).
    pub const fn is_shadow(&self) -> bool {
        self.revision_and_shadow & SHADOW_VMCS_INDICATOR != 0
    }

    /// Sets or clears the shadow-VMCS indicator; only meaningful before the
    /// region is given to VMPTRLD.
    pub const fn set_shadow(&mut self, shadow: bool) {
        if shadow {
            self.revision_and_shadow |= SHADOW_VMCS_INDICATOR;
        } else {
            self.revision_and_shadow &= REVISION_ID_MASK;
        }
    }

    /// The VMX-abort indicator (bytes 4-7): nonzero after a VMX abort, with
    /// the abort reason (SDM 28.7).
    pub const fn abort_indicator(&self) -> u32 {
        self.abort_indicator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_sdm_31_2() {
        assert_eq!(Status::from_flags(0, 0), Status::Succeed);
        assert_eq!(Status::from_flags(1, 0), Status::FailInvalid);
        assert_eq!(Status::from_flags(0, 1), Status::FailValid);
        // VMfailInvalid clears ZF, so both set cannot be VMfailValid.
        assert_eq!(Status::from_flags(1, 1), Status::FailInvalid);
    }

    #[test]
    fn vmcs_region_header() {
        let mut region = VmcsRegion::new(0x2b).unwrap();
        assert_eq!(region.revision_id(), 0x2b);
        assert!(!region.is_shadow());
        region.set_shadow(true);
        assert!(region.is_shadow());
        assert_eq!(region.revision_id(), 0x2b);
        assert_eq!(region.revision_and_shadow, 0x8000_002b);
        region.set_shadow(false);
        assert_eq!(region.revision_and_shadow, 0x2b);
        assert_eq!(region.abort_indicator(), 0);
        assert_eq!(
            VmcsRegion::new(0x8000_0001),
            Err(RevisionIdTooWide(0x8000_0001))
        );
    }

    #[test]
    fn vm_fail_display_names_the_error_number() {
        use std::string::ToString;
        let valid = VmFail::Valid(VmInstructionError::from_number(12));
        let text = valid.to_string();
        assert!(text.starts_with("VMfailValid"), "{text}");
        assert!(text.contains("12"), "{text}");
        assert!(VmFail::Invalid.to_string().starts_with("VMfailInvalid"));
        assert_ne!(
            VmFail::ValidUnreadable.to_string(),
            VmFail::Invalid.to_string()
        );
    }

    #[test]
    fn no_current_vmcs_is_all_ones() {
        // SDM 31.3 VMPTRST: FFFFFFFF_FFFFFFFFH when there is no current VMCS.
        assert_eq!(NO_CURRENT_VMCS, 0xffff_ffff_ffff_ffff);
    }

    #[test]
    fn vmxon_region_header() {
        let region = VmxonRegion::new(0x7fff_ffff).unwrap();
        assert_eq!(region.revision_id(), 0x7fff_ffff);
        assert_eq!(VmxonRegion::new(1 << 31), Err(RevisionIdTooWide(1 << 31)));
    }
}
