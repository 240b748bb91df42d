//! What the model's guests do: scripted L1 and L2 actions.
//!
//! The model keeps one queue per level. `run(L1)` executes L1 actions until
//! one exits (a VMX instruction, CPUID, ...); memory writes by L1 do not
//! exit. `run(L2)` executes L2 actions until one exits; an access that
//! faults stays at the front of the queue and is retried after L0 or L1
//! handled the exit, as a processor restarts a faulting instruction.

/// An L1 VMX instruction with its operands. The model puts the operands
/// where the instruction information says they are (registers, or a memory
/// operand `[rbx]` in a scratch page of L1 memory) and reports the exit a
/// processor would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmxOp {
    /// VMXON with the region at `region` (memory operand holds the pointer).
    Vmxon {
        /// L1 physical address of the VMXON region.
        region: u64,
    },
    /// VMXOFF.
    Vmxoff,
    /// VMCLEAR of the VMCS at `pointer`.
    Vmclear {
        /// L1 physical address of the VMCS region.
        pointer: u64,
    },
    /// VMPTRLD of the VMCS at `pointer`.
    Vmptrld {
        /// L1 physical address of the VMCS region.
        pointer: u64,
    },
    /// VMPTRST to the scratch operand.
    Vmptrst,
    /// VMREAD of field `encoding` into RCX (register form).
    Vmread {
        /// The field encoding (RAX).
        encoding: u64,
    },
    /// VMWRITE of `value` (RCX) to field `encoding` (RAX), register form.
    Vmwrite {
        /// The field encoding (RAX).
        encoding: u64,
        /// The value (RCX).
        value: u64,
    },
    /// VMLAUNCH.
    Vmlaunch,
    /// VMRESUME.
    Vmresume,
    /// INVEPT of type `kind` (RAX) with descriptor `eptp` (bits 63:0; bits
    /// 127:64 are 0).
    Invept {
        /// The type register value (1 single-context, 2 global).
        kind: u64,
        /// The descriptor's EPTP.
        eptp: u64,
    },
    /// INVVPID of type `kind` (RAX) with descriptor `[vpid_word, linear]`.
    Invvpid {
        /// The type register value (0 individual, 1 single, 2 all, 3
        /// single retaining globals).
        kind: u64,
        /// Bits 63:0 of the descriptor (VPID in bits 15:0).
        vpid_word: u64,
        /// Bits 127:64: the linear address.
        linear: u64,
    },
    /// VMCALL.
    Vmcall,
    /// Any VMX-instruction exit with raw information fields, for fuzzing
    /// the decoding (reason, instruction information, qualification,
    /// length and RAX/RCX/RBX as given).
    Raw {
        /// The basic exit reason.
        reason: u16,
        /// VM-exit instruction information.
        instruction_info: u32,
        /// Exit qualification (displacement).
        qualification: u64,
        /// Instruction length.
        length: u32,
        /// RAX, RCX, RBX.
        registers: [u64; 3],
    },
}

/// What L1 does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L1Action {
    /// A VMX instruction (exits to L0).
    Vmx(VmxOp),
    /// L1 writes the 8-byte `value` at L1 physical address `gpa` (EPT12
    /// entries, VMCS12 bytes, anything): no exit, no notification.
    WriteL1 {
        /// L1 physical address (any alignment).
        gpa: u64,
        /// The value, little endian.
        value: u64,
    },
    /// L1 edits L2's page tables: the page map the model holds for L2 CR3
    /// `cr3` maps linear page `linear_page` to L2 physical page `gpa_page`
    /// (`None` unmaps). No exit; like any page-table write, L2 may keep
    /// using the old translation until an INVVPID (or L2's own INVLPG).
    WriteL2PageMap {
        /// The L2 CR3 the page map belongs to.
        cr3: u64,
        /// Linear page number.
        linear_page: u64,
        /// L2 physical page number, or `None` to unmap.
        gpa_page: Option<u64>,
        /// Whether L2's paging allows writes.
        writable: bool,
    },
    /// CPUID (exits unconditionally, reason 10).
    Cpuid,
    /// HLT (reason 12).
    Hlt,
}

/// What L2 does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L2Action {
    /// A data read at `linear`.
    Read {
        /// The linear address.
        linear: u64,
    },
    /// A data write at `linear`.
    Write {
        /// The linear address.
        linear: u64,
    },
    /// An instruction fetch at `linear`.
    Fetch {
        /// The linear address.
        linear: u64,
    },
    /// CPUID (reason 10).
    Cpuid,
    /// IN/OUT of `size` bytes (1, 2 or 4) at `port` (reason 30).
    Io {
        /// The port.
        port: u16,
        /// 1, 2 or 4 (other values become 1).
        size: u8,
        /// IN (true) or OUT.
        input: bool,
    },
    /// HLT (reason 12; exits only with "HLT exiting").
    Hlt,
}

impl L2Action {
    /// Whether this is a memory access (it exits only on an EPT violation).
    pub const fn is_memory_access(self) -> bool {
        matches!(
            self,
            Self::Read { .. } | Self::Write { .. } | Self::Fetch { .. }
        )
    }
}
