//! Memory operands of L1's VMX instructions: from the VM-exit instruction
//! information and exit qualification to bytes in L1 memory.
//!
//! 1. Effective address: base + index * scale + displacement, modulo the
//!    address size (SDM 28.2.1 "the displacement is in the exit
//!    qualification", 28.2.5 Table 28-9/28-14/28-15).
//! 2. Segmentation (SDM Vol. 3A 3.4.5.1, 5.3, 5.4; SDM Vol. 3C chapter 31
//!    "Protected Mode Exceptions" / "64-Bit Mode Exceptions" of every VMX
//!    instruction): outside 64-bit mode a null (unusable) segment, a write
//!    to a code or read-only data segment, a read from an execute-only code
//!    segment, or an offset outside the limit gives #GP(0), or #SS(0) for
//!    SS; in 64-bit mode only FS and GS have a base, and a non-canonical
//!    address gives #GP(0), or #SS(0) for SS.
//! 3. Paging: each page the operand touches is translated through
//!    [`L1Access::translate`]; all pages are translated before any byte is
//!    accessed, so a #PF leaves memory unchanged (an operand crosses at most
//!    one page boundary).

use hv_arch_vmx::exit::{MemoryOperand, SegmentRegister, VmxInstructionQualification};
use hv_arch_vmx::invalidation::LinearAddressWidth;
use hv_mmu::addr::L1Gpa;
use hv_mmu::env::NotL1Memory;

use super::Fault;
use crate::state::{L1Access, L1Cpu, Segment};

/// The largest memory operand of a VMX instruction: the 128-bit
/// INVEPT/INVVPID descriptor.
pub const MAX_OPERAND_SIZE: usize = 16;

/// Bytes per page for splitting an operand at page boundaries.
const PAGE_SIZE: u64 = 4096;

/// Whether an operand is read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// The instruction reads the operand (VMXON, VMCLEAR, VMPTRLD,
    /// VMWRITE, INVEPT, INVVPID).
    Read,
    /// The instruction writes the operand (VMPTRST, VMREAD).
    Write,
}

/// Why a memory operand could not be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum OperandError {
    /// An exception L1 must receive (#GP, #SS, #PF).
    #[error("the operand access raises {0:?}")]
    Fault(Fault),
    /// L1's paging maps the operand to an L1 physical address that no L1
    /// memory backs (e.g. MMIO); hv cannot complete the access.
    #[error(transparent)]
    NotL1Memory(#[from] NotL1Memory),
}

impl From<Fault> for OperandError {
    fn from(fault: Fault) -> Self {
        Self::Fault(fault)
    }
}

/// A memory operand located in L1's linear address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearOperand {
    /// The linear address of the first byte.
    pub linear: u64,
    /// Whether linear addresses wrap at 4 GiB (outside IA-32e mode) rather
    /// than at 2^64.
    pub wraps_at_4g: bool,
}

impl LinearOperand {
    /// The linear address of byte `offset` of the operand.
    const fn byte(self, offset: u64) -> u64 {
        let address = self.linear.wrapping_add(offset);
        if self.wraps_at_4g {
            address & 0xffff_ffff
        } else {
            address
        }
    }
}

/// The effective address (offset in the segment) of `operand`: base +
/// index * scale + displacement, wrapped to the address size (SDM 28.2.5).
pub fn effective_address(
    cpu: &L1Cpu,
    operand: &MemoryOperand,
    qualification: VmxInstructionQualification,
) -> u64 {
    let displacement = qualification.displacement_masked(operand.address_size);
    operand.effective_address(displacement, |register| cpu.gprs.get(register.index()))
}

/// Locates an operand of `size` bytes: effective address, then the segment
/// checks of the current mode (see the module documentation).
///
/// # Errors
///
/// [`Fault::GeneralProtection`] or [`Fault::StackFault`] for a segment or
/// canonicality violation.
pub fn locate(
    cpu: &L1Cpu,
    operand: &MemoryOperand,
    qualification: VmxInstructionQualification,
    size: usize,
    access: Access,
    width: LinearAddressWidth,
) -> Result<LinearOperand, Fault> {
    let offset = effective_address(cpu, operand, qualification);
    let segment = segment(cpu, operand.segment);
    // SDM: faults on SS-relative operands are #SS(0), all others #GP(0).
    let fault = if operand.segment == SegmentRegister::Ss {
        Fault::StackFault
    } else {
        Fault::GeneralProtection
    };
    let last = (size as u64).saturating_sub(1);
    if cpu.in_64bit_mode() {
        // SDM Vol. 3A 3.4.4: in 64-bit mode only FS and GS have a base.
        let base = match operand.segment {
            SegmentRegister::Fs | SegmentRegister::Gs => segment.base,
            _ => 0,
        };
        let linear = base.wrapping_add(offset);
        // SDM 31.3 "64-Bit Mode Exceptions": #GP(0)/#SS(0) if the memory
        // address is in a non-canonical form (checked for every byte).
        if !width.is_canonical(linear) || !width.is_canonical(linear.wrapping_add(last)) {
            return Err(fault);
        }
        return Ok(LinearOperand {
            linear,
            wraps_at_4g: false,
        });
    }
    check_segment(&segment, offset, last, access).map_err(|()| fault)?;
    Ok(LinearOperand {
        linear: segment.base.wrapping_add(offset) & 0xffff_ffff,
        wraps_at_4g: !cpu.in_ia32e_mode(),
    })
}

/// The segment register `register` of `cpu`.
const fn segment(cpu: &L1Cpu, register: SegmentRegister) -> Segment {
    match register {
        SegmentRegister::Es => cpu.es,
        SegmentRegister::Cs => cpu.cs,
        SegmentRegister::Ss => cpu.ss,
        SegmentRegister::Ds => cpu.ds,
        SegmentRegister::Fs => cpu.fs,
        SegmentRegister::Gs => cpu.gs,
    }
}

// Segment access-rights type bits (SDM Vol. 3A 3.4.5.1, Table 3-1).
const TYPE_CODE: u32 = 1 << 3;
/// Data: writable; code: readable.
const TYPE_WRITABLE_OR_READABLE: u32 = 1 << 1;
/// Data only: expand-down.
const TYPE_EXPAND_DOWN: u32 = 1 << 2;
/// Descriptor type: code or data (not system).
const DESCRIPTOR_CODE_OR_DATA: u32 = 1 << 4;
/// D/B flag: for an expand-down data segment, upper bound 4 GiB - 1.
const DEFAULT_BIG: u32 = 1 << 14;

/// The protected-mode checks on bytes `offset..=offset + last` of
/// `segment` (SDM Vol. 3A 5.3 limit checking, 5.4 type checking).
fn check_segment(segment: &Segment, offset: u64, last: u64, access: Access) -> Result<(), ()> {
    let rights = segment.access_rights;
    // A null selector leaves the register unusable: any access is #GP(0)
    // (#SS(0) for SS); a system descriptor cannot be in a data register.
    if segment.unusable() || rights & DESCRIPTOR_CODE_OR_DATA == 0 {
        return Err(());
    }
    let is_code = rights & TYPE_CODE != 0;
    let writable_or_readable = rights & TYPE_WRITABLE_OR_READABLE != 0;
    let permitted = match (is_code, access) {
        // Code segments are never writable, execute-only ones not readable;
        // data segments are always readable, writable only if marked so.
        (true, Access::Write) => false,
        (true, Access::Read) | (false, Access::Write) => writable_or_readable,
        (false, Access::Read) => true,
    };
    if !permitted {
        return Err(());
    }
    let end = offset.saturating_add(last);
    let limit = u64::from(segment.limit);
    if !is_code && rights & TYPE_EXPAND_DOWN != 0 {
        // Expand-down: valid offsets are limit + 1 up to 0xFFFF (B = 0) or
        // 0xFFFF_FFFF (B = 1).
        let upper = if rights & DEFAULT_BIG != 0 {
            0xffff_ffff
        } else {
            0xffff
        };
        if offset <= limit || end > upper {
            return Err(());
        }
    } else if end > limit {
        return Err(());
    }
    Ok(())
}

/// The L1 physical addresses of the (at most two) pieces of an operand of
/// `len` bytes at `operand`, translated for `access`.
fn translate_pieces(
    cpu: &L1Cpu,
    memory: &impl L1Access,
    operand: LinearOperand,
    len: usize,
    access: Access,
) -> Result<[(L1Gpa, usize); 2], Fault> {
    let mut pieces = [(L1Gpa::new(0), 0); 2];
    let mut done = 0usize;
    for piece in &mut pieces {
        if done >= len {
            break;
        }
        let linear = operand.byte(done as u64);
        let room = (PAGE_SIZE - (linear % PAGE_SIZE)) as usize;
        let piece_len = room.min(len - done);
        let gpa = memory
            .translate(cpu, linear, access == Access::Write)
            .map_err(Fault::PageFault)?;
        *piece = (gpa, piece_len);
        done += piece_len;
    }
    Ok(pieces)
}

/// Reads `buf.len()` (at most [`MAX_OPERAND_SIZE`]) bytes at `operand`.
///
/// # Errors
///
/// [`OperandError::Fault`] with the #PF L1's paging raises;
/// [`OperandError::NotL1Memory`] if a byte maps outside L1 memory.
pub fn read(
    cpu: &L1Cpu,
    memory: &impl L1Access,
    operand: LinearOperand,
    buf: &mut [u8],
) -> Result<(), OperandError> {
    let len = buf.len().min(MAX_OPERAND_SIZE);
    let pieces = translate_pieces(cpu, memory, operand, len, Access::Read)?;
    let mut done = 0;
    for (gpa, piece_len) in pieces {
        if piece_len == 0 {
            continue;
        }
        memory.read_bytes(gpa, &mut buf[done..done + piece_len])?;
        done += piece_len;
    }
    Ok(())
}

/// Writes `bytes` (at most [`MAX_OPERAND_SIZE`]) at `operand`; every page
/// is translated before the first byte is written.
///
/// # Errors
///
/// [`OperandError::Fault`] with the #PF L1's paging raises (a write
/// access); [`OperandError::NotL1Memory`] if a byte maps outside L1 memory.
pub fn write(
    cpu: &L1Cpu,
    memory: &mut impl L1Access,
    operand: LinearOperand,
    bytes: &[u8],
) -> Result<(), OperandError> {
    let len = bytes.len().min(MAX_OPERAND_SIZE);
    let pieces = translate_pieces(cpu, memory, operand, len, Access::Write)?;
    let mut done = 0;
    for (gpa, piece_len) in pieces {
        if piece_len == 0 {
            continue;
        }
        memory.write_bytes(gpa, &bytes[done..done + piece_len])?;
        done += piece_len;
    }
    Ok(())
}

/// Locates and reads an operand of `buf.len()` bytes.
///
/// # Errors
///
/// See [`locate`] and [`read()`].
pub fn read_operand(
    cpu: &L1Cpu,
    memory: &impl L1Access,
    operand: &MemoryOperand,
    qualification: VmxInstructionQualification,
    width: LinearAddressWidth,
    buf: &mut [u8],
) -> Result<(), OperandError> {
    let located = locate(cpu, operand, qualification, buf.len(), Access::Read, width)?;
    read(cpu, memory, located, buf)
}

/// Locates and writes an operand of `bytes.len()` bytes.
///
/// # Errors
///
/// See [`locate`] and [`write()`].
pub fn write_operand(
    cpu: &L1Cpu,
    memory: &mut impl L1Access,
    operand: &MemoryOperand,
    qualification: VmxInstructionQualification,
    width: LinearAddressWidth,
    bytes: &[u8],
) -> Result<(), OperandError> {
    let located = locate(
        cpu,
        operand,
        qualification,
        bytes.len(),
        Access::Write,
        width,
    )?;
    write(cpu, memory, located, bytes)
}
