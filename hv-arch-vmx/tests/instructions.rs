//! Proves, by disassembling this process's own machine code with iced-x86,
//! that each VMX instruction wrapper emits the intended instruction with the
//! intended operand forms, and that CF and ZF are captured (`setb`/`sete`)
//! straight after it with nothing in between that could change RFLAGS.
//!
//! The wrappers are never called: outside VMX operation they raise #UD.
//!
//! Function bounds come from the ELF symbol table of `/proc/self/exe`
//! (address and size of the wrapper's symbol), so the test decodes exactly
//! the wrapper's own bytes whatever the optimization level or code layout.
//! Within those bounds it follows control flow from the entry point
//! (recursive descent), so data or padding between blocks is never decoded.

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use hv_arch_vmx::instructions::{self, VmFail, VmcallRegisters};
use hv_arch_vmx::invalidation::{InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};
use hv_arch_vmx::vmcs::{FieldAccess, VmcsField};
use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Formatter, Instruction, IntelFormatter, MemorySize,
    Mnemonic, OpKind, Register,
};

/// A symbol with a name this test knows, to compute the load bias of the
/// position-independent executable: runtime address minus symbol value.
#[unsafe(no_mangle)]
pub extern "C" fn hv_arch_vmx_instructions_test_anchor() -> u64 {
    0x484f_5354
}

/// The parts of `/proc/self/exe`'s symbol table this test needs.
struct SymbolTable {
    /// Runtime address minus link-time symbol value.
    load_bias: u64,
    /// Link-time value -> size of every function symbol with a size.
    function_sizes: BTreeMap<u64, u64>,
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("fits in usize")
}

impl SymbolTable {
    /// Reads the ELF64 `.symtab` of the running executable.
    fn of_this_process() -> Self {
        const SHT_SYMTAB: u32 = 2;
        const STT_FUNC: u8 = 2;
        const SYMBOL_SIZE: usize = 24;
        let elf = std::fs::read("/proc/self/exe").expect("read /proc/self/exe");
        assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
        assert_eq!(elf[4], 2, "not ELF64");
        let section_headers = to_usize(read_u64(&elf, 0x28));
        let section_header_size = usize::from(read_u16(&elf, 0x3a));
        let section_count = usize::from(read_u16(&elf, 0x3c));
        let section = |index: usize| section_headers + index * section_header_size;
        let symtab = (0..section_count)
            .map(section)
            .find(|&header| read_u32(&elf, header + 4) == SHT_SYMTAB)
            .expect("the test binary has a .symtab (is it stripped?)");
        let symbols_at = to_usize(read_u64(&elf, symtab + 0x18));
        let symbols_len = to_usize(read_u64(&elf, symtab + 0x20));
        let strtab = section(to_usize(u64::from(read_u32(&elf, symtab + 0x28))));
        let strings_at = to_usize(read_u64(&elf, strtab + 0x18));

        let anchor_name = b"hv_arch_vmx_instructions_test_anchor";
        let mut anchor_value = None;
        let mut function_sizes = BTreeMap::new();
        for symbol in (symbols_at..symbols_at + symbols_len).step_by(SYMBOL_SIZE) {
            let name_at = strings_at + to_usize(u64::from(read_u32(&elf, symbol)));
            let info = elf[symbol + 4];
            let value = read_u64(&elf, symbol + 8);
            let size = read_u64(&elf, symbol + 16);
            if info & 0xf != STT_FUNC || value == 0 {
                continue;
            }
            if size > 0 {
                function_sizes.insert(value, size);
            }
            let name = &elf[name_at..];
            if name.starts_with(anchor_name) && name.get(anchor_name.len()) == Some(&0) {
                anchor_value = Some(value);
            }
        }
        let anchor_value = anchor_value.expect("anchor symbol in .symtab");
        let anchor_address = (hv_arch_vmx_instructions_test_anchor as *const ()).addr() as u64;
        Self {
            load_bias: anchor_address.wrapping_sub(anchor_value),
            function_sizes,
        }
    }

    /// Size in bytes of the function that starts at runtime `address`.
    fn size_of_function_at(&self, address: u64) -> u64 {
        *self
            .function_sizes
            .get(&address.wrapping_sub(self.load_bias))
            .unwrap_or_else(|| panic!("no function symbol starts at {address:#x}"))
    }
}

/// A wrapper's instructions, keyed by address, as reached from its entry.
struct Disassembly {
    name: &'static str,
    instructions: BTreeMap<u64, Instruction>,
}

impl Disassembly {
    /// Decodes the function at `address` from this process's memory, following
    /// fall-through and direct branches that stay inside the function.
    fn of(name: &'static str, function: *const (), symbols: &SymbolTable) -> Self {
        let address = function.addr() as u64;
        let size = symbols.size_of_function_at(address);
        let mut code = vec![0; to_usize(size)];
        File::open("/proc/self/mem")
            .and_then(|memory| memory.read_exact_at(&mut code, address))
            .expect("read own code through /proc/self/mem");
        let end = address + size;
        let mut instructions = BTreeMap::new();
        let mut pending = vec![address];
        while let Some(ip) = pending.pop() {
            if ip < address || ip >= end || instructions.contains_key(&ip) {
                continue;
            }
            let offset = to_usize(ip - address);
            let mut decoder = Decoder::with_ip(64, &code[offset..], ip, DecoderOptions::NONE);
            let instruction = decoder.decode();
            assert!(
                !instruction.is_invalid(),
                "{name}: undecodable bytes at {ip:#x}"
            );
            match instruction.flow_control() {
                FlowControl::Next
                | FlowControl::Call
                | FlowControl::IndirectCall
                | FlowControl::XbeginXabortXend => pending.push(instruction.next_ip()),
                FlowControl::ConditionalBranch => {
                    pending.push(instruction.next_ip());
                    pending.push(instruction.near_branch_target());
                }
                // A direct jump outside the function is a tail call: not ours.
                FlowControl::UnconditionalBranch => {
                    pending.push(instruction.near_branch_target());
                }
                FlowControl::Return
                | FlowControl::IndirectBranch
                | FlowControl::Interrupt
                | FlowControl::Exception => {}
            }
            instructions.insert(ip, instruction);
        }
        Self { name, instructions }
    }

    /// The listing, for failure messages.
    fn listing(&self) -> String {
        let mut formatter = IntelFormatter::new();
        let mut listing = String::new();
        for (ip, instruction) in &self.instructions {
            let mut text = String::new();
            formatter.format(instruction, &mut text);
            writeln!(listing, "  {ip:016x}  {text}").expect("writing to a String");
        }
        listing
    }

    /// Every instruction with this mnemonic; asserts there is at least one.
    fn find(&self, mnemonic: Mnemonic) -> Vec<Instruction> {
        let found: Vec<_> = self
            .instructions
            .values()
            .filter(|i| i.mnemonic() == mnemonic)
            .copied()
            .collect();
        assert!(
            !found.is_empty(),
            "{}: no {mnemonic:?} instruction in\n{}",
            self.name,
            self.listing()
        );
        found
    }

    /// The instruction that executes after `instruction` when it does not
    /// branch: the next one, or the target of a direct jump there.
    fn straight_line_successor(&self, instruction: &Instruction) -> Option<Instruction> {
        let mut next = *self.instructions.get(&instruction.next_ip())?;
        while next.flow_control() == FlowControl::UnconditionalBranch {
            next = *self.instructions.get(&next.near_branch_target())?;
        }
        Some(next)
    }

    /// The instruction right before `instruction` in address order.
    fn predecessor(&self, instruction: &Instruction) -> Option<Instruction> {
        let (_, previous) = self.instructions.range(..instruction.ip()).next_back()?;
        (previous.next_ip() == instruction.ip()).then_some(*previous)
    }

    /// Asserts that after every `mnemonic` instruction, on the straight-line
    /// path, a `setb` (CF) and a `sete` (ZF) follow before any instruction
    /// that writes RFLAGS or transfers control.
    fn assert_status_captured_after(&self, mnemonic: Mnemonic) {
        for vmx in self.find(mnemonic) {
            let (mut saw_carry, mut saw_zero) = (false, false);
            let mut current = vmx;
            while !(saw_carry && saw_zero) {
                let next = self.straight_line_successor(&current).unwrap_or_else(|| {
                    panic!(
                        "{}: path after {mnemonic:?} at {:#x} ends before CF/ZF are captured\n{}",
                        self.name,
                        vmx.ip(),
                        self.listing()
                    )
                });
                match next.mnemonic() {
                    Mnemonic::Setb => {
                        assert_eq!(
                            next.op0_kind(),
                            OpKind::Register,
                            "{}: setb to memory",
                            self.name
                        );
                        saw_carry = true;
                    }
                    Mnemonic::Sete => {
                        assert_eq!(
                            next.op0_kind(),
                            OpKind::Register,
                            "{}: sete to memory",
                            self.name
                        );
                        saw_zero = true;
                    }
                    _ => {
                        assert_eq!(
                            next.rflags_modified(),
                            0,
                            "{}: instruction at {:#x} writes RFLAGS between {mnemonic:?} and \
                             the status capture\n{}",
                            self.name,
                            next.ip(),
                            self.listing()
                        );
                        assert_eq!(
                            next.flow_control(),
                            FlowControl::Next,
                            "{}: control leaves the straight line at {:#x} before the status \
                             capture\n{}",
                            self.name,
                            next.ip(),
                            self.listing()
                        );
                    }
                }
                current = next;
            }
        }
    }

    /// The wrapper never reads RFLAGS with PUSHF (the status must come from
    /// the instruction's own asm block).
    fn assert_no_pushf(&self) {
        for instruction in self.instructions.values() {
            assert!(
                !matches!(
                    instruction.mnemonic(),
                    Mnemonic::Pushf | Mnemonic::Pushfd | Mnemonic::Pushfq | Mnemonic::Lahf
                ),
                "{}: reads RFLAGS separately at {:#x}",
                self.name,
                instruction.ip()
            );
        }
    }
}

/// The symbol table, read once.
fn symbols() -> &'static SymbolTable {
    static SYMBOLS: OnceLock<SymbolTable> = OnceLock::new();
    SYMBOLS.get_or_init(SymbolTable::of_this_process)
}

/// Asserts a single 64-bit memory operand (the "m64" of VMXON, VMCLEAR,
/// VMPTRLD, VMPTRST; SDM 31.3).
fn assert_m64_operand(name: &str, instruction: &Instruction) {
    assert_eq!(instruction.op_count(), 1, "{name}: operand count");
    assert_eq!(
        instruction.op0_kind(),
        OpKind::Memory,
        "{name}: operand is not memory"
    );
    assert_eq!(
        instruction.memory_size(),
        MemorySize::UInt64,
        "{name}: operand is not m64"
    );
}

/// Asserts "r64, m128": a 64-bit type register and a 128-bit descriptor
/// (INVEPT, INVVPID; SDM 31.3).
fn assert_r64_m128_operands(name: &str, instruction: &Instruction) {
    assert_eq!(instruction.op_count(), 2, "{name}: operand count");
    assert_eq!(
        instruction.op0_kind(),
        OpKind::Register,
        "{name}: type is not a register"
    );
    assert!(
        instruction.op0_register().is_gpr64(),
        "{name}: type register is not 64-bit"
    );
    assert_eq!(
        instruction.op1_kind(),
        OpKind::Memory,
        "{name}: descriptor is not memory"
    );
    assert_eq!(
        instruction.memory_size(),
        MemorySize::UInt128,
        "{name}: descriptor is not m128"
    );
}

/// Asserts two 64-bit general-purpose register operands (register forms of
/// VMREAD and VMWRITE).
fn assert_two_gpr64_operands(name: &str, instruction: &Instruction) {
    assert_eq!(instruction.op_count(), 2, "{name}: operand count");
    for operand in 0..2 {
        assert_eq!(
            instruction.op_kind(operand),
            OpKind::Register,
            "{name}: operand {operand}"
        );
        assert!(
            instruction.op_register(operand).is_gpr64(),
            "{name}: operand {operand} is not a 64-bit register"
        );
    }
}

/// Checks one wrapper whose instruction takes a single m64 and reports status.
fn check_m64_with_status(name: &'static str, function: *const (), mnemonic: Mnemonic) {
    let code = Disassembly::of(name, function, symbols());
    for instruction in code.find(mnemonic) {
        assert_m64_operand(name, &instruction);
    }
    code.assert_status_captured_after(mnemonic);
    code.assert_no_pushf();
}

#[test]
fn vmxon_emits_vmxon_m64_and_captures_status() {
    let function: unsafe fn(u64) -> Result<(), VmFail> = instructions::vmxon;
    check_m64_with_status("vmxon", function as *const (), Mnemonic::Vmxon);
}

#[test]
fn vmclear_emits_vmclear_m64_and_captures_status() {
    let function: unsafe fn(u64) -> Result<(), VmFail> = instructions::vmclear;
    check_m64_with_status("vmclear", function as *const (), Mnemonic::Vmclear);
}

#[test]
fn vmptrld_emits_vmptrld_m64_and_captures_status() {
    let function: unsafe fn(u64) -> Result<(), VmFail> = instructions::vmptrld;
    check_m64_with_status("vmptrld", function as *const (), Mnemonic::Vmptrld);
}

#[test]
fn vmptrst_emits_vmptrst_m64() {
    // VMPTRST always reports VMsucceed (SDM 31.3), so there is no status.
    let function: unsafe fn() -> Option<u64> = instructions::vmptrst;
    let code = Disassembly::of("vmptrst", function as *const (), symbols());
    for instruction in code.find(Mnemonic::Vmptrst) {
        assert_m64_operand("vmptrst", &instruction);
    }
    code.assert_no_pushf();
}

/// Checks one wrapper whose instruction has no operands and reports status.
fn check_no_operands_with_status(name: &'static str, function: *const (), mnemonic: Mnemonic) {
    let code = Disassembly::of(name, function, symbols());
    for instruction in code.find(mnemonic) {
        assert_eq!(instruction.op_count(), 0, "{name}: operand count");
    }
    code.assert_status_captured_after(mnemonic);
    code.assert_no_pushf();
}

#[test]
fn vmxoff_emits_vmxoff_and_captures_status() {
    let function: unsafe fn() -> Result<(), VmFail> = instructions::vmxoff;
    check_no_operands_with_status("vmxoff", function as *const (), Mnemonic::Vmxoff);
}

#[test]
fn vmlaunch_emits_vmlaunch_and_captures_status() {
    let function: unsafe fn() -> VmFail = instructions::vmlaunch;
    check_no_operands_with_status("vmlaunch", function as *const (), Mnemonic::Vmlaunch);
}

#[test]
fn vmresume_emits_vmresume_and_captures_status() {
    let function: unsafe fn() -> VmFail = instructions::vmresume;
    check_no_operands_with_status("vmresume", function as *const (), Mnemonic::Vmresume);
}

#[test]
fn vm_entry_wrappers_do_not_move_the_stack_around_the_entry() {
    // HOST_RSP is independent of the caller's RSP; the wrappers must not push
    // or adjust RSP between the entry instruction and the status capture.
    for (name, function, mnemonic) in [
        (
            "vmlaunch",
            instructions::vmlaunch as unsafe fn() -> VmFail,
            Mnemonic::Vmlaunch,
        ),
        (
            "vmresume",
            instructions::vmresume as unsafe fn() -> VmFail,
            Mnemonic::Vmresume,
        ),
    ] {
        let code = Disassembly::of(name, function as *const (), symbols());
        for entry in code.find(mnemonic) {
            let mut current = entry;
            for _ in 0..2 {
                current = code
                    .straight_line_successor(&current)
                    .expect("capture follows");
                assert!(
                    matches!(current.mnemonic(), Mnemonic::Setb | Mnemonic::Sete),
                    "{name}: {:?} right after the entry instruction",
                    current.mnemonic()
                );
            }
        }
    }
}

/// Checks a VMREAD or VMWRITE wrapper.
fn check_register_form(name: &'static str, function: *const (), mnemonic: Mnemonic) {
    let code = Disassembly::of(name, function, symbols());
    for instruction in code.find(mnemonic) {
        assert_two_gpr64_operands(name, &instruction);
    }
    code.assert_status_captured_after(mnemonic);
    code.assert_no_pushf();
}

#[test]
fn vmread_emits_register_form_and_captures_status() {
    let function: unsafe fn(VmcsField) -> Result<u64, VmFail> = instructions::vmread;
    check_register_form("vmread", function as *const (), Mnemonic::Vmread);
    let function: unsafe fn(FieldAccess) -> Result<u64, VmFail> = instructions::vmread_access;
    check_register_form("vmread_access", function as *const (), Mnemonic::Vmread);
}

#[test]
fn vmwrite_emits_register_form_and_captures_status() {
    let function: unsafe fn(VmcsField, u64) -> Result<(), VmFail> = instructions::vmwrite;
    check_register_form("vmwrite", function as *const (), Mnemonic::Vmwrite);
    let function: unsafe fn(FieldAccess, u64) -> Result<(), VmFail> = instructions::vmwrite_access;
    check_register_form("vmwrite_access", function as *const (), Mnemonic::Vmwrite);
}

#[test]
fn invept_emits_r64_m128_and_captures_status() {
    let function: unsafe fn(InveptType, &InveptDescriptor) -> Result<(), VmFail> =
        instructions::invept;
    let code = Disassembly::of("invept", function as *const (), symbols());
    for instruction in code.find(Mnemonic::Invept) {
        assert_r64_m128_operands("invept", &instruction);
    }
    code.assert_status_captured_after(Mnemonic::Invept);
    code.assert_no_pushf();
}

#[test]
fn invvpid_emits_r64_m128_and_captures_status() {
    let function: unsafe fn(InvvpidType, &InvvpidDescriptor) -> Result<(), VmFail> =
        instructions::invvpid;
    let code = Disassembly::of("invvpid", function as *const (), symbols());
    for instruction in code.find(Mnemonic::Invvpid) {
        assert_r64_m128_operands("invvpid", &instruction);
    }
    code.assert_status_captured_after(Mnemonic::Invvpid);
    code.assert_no_pushf();
}

#[test]
fn vmcall_emits_vmcall_and_restores_rbx_around_it() {
    let function: unsafe fn(VmcallRegisters) -> VmcallRegisters = instructions::vmcall;
    let code = Disassembly::of("vmcall", function as *const (), symbols());
    for vmcall in code.find(Mnemonic::Vmcall) {
        assert_eq!(vmcall.op_count(), 0);
        let before = code
            .predecessor(&vmcall)
            .expect("an instruction right before VMCALL");
        let after = code
            .straight_line_successor(&vmcall)
            .expect("an instruction after VMCALL");
        let mut scratch = None;
        for swap in [before, after] {
            assert_eq!(
                swap.mnemonic(),
                Mnemonic::Xchg,
                "vmcall: RBX not swapped around VMCALL"
            );
            let registers = [swap.op0_register(), swap.op1_register()];
            assert!(
                registers.contains(&Register::RBX),
                "vmcall: XCHG does not involve RBX"
            );
            let other = if registers[0] == Register::RBX {
                registers[1]
            } else {
                registers[0]
            };
            assert!(
                other.is_gpr64() && other != Register::RBX,
                "vmcall: XCHG partner"
            );
            // Both swaps use the same scratch register, so RBX is restored.
            assert_eq!(
                *scratch.get_or_insert(other),
                other,
                "vmcall: different scratch registers"
            );
        }
    }
    code.assert_no_pushf();
}

#[test]
fn vmfunc_emits_vmfunc() {
    let function: unsafe fn(u32, u32) = instructions::vmfunc;
    let code = Disassembly::of("vmfunc", function as *const (), symbols());
    for instruction in code.find(Mnemonic::Vmfunc) {
        assert_eq!(instruction.op_count(), 0, "vmfunc: operand count");
    }
}

#[test]
fn disassembly_notices_a_missing_instruction() {
    // The checker itself can fail: VMCLEAR's wrapper holds no VMPTRLD.
    let function: unsafe fn(u64) -> Result<(), VmFail> = instructions::vmclear;
    let code = Disassembly::of("vmclear", function as *const (), symbols());
    let missing = std::panic::catch_unwind(|| code.find(Mnemonic::Vmptrld));
    assert!(missing.is_err());
}

/// A deliberately wrong wrapper (never called): it clobbers the flags with
/// `test` between VMPTRLD and the capture.
#[inline(never)]
unsafe fn flags_clobbered_before_capture(address: u64) -> (u8, u8) {
    let carry: u8;
    let zero: u8;
    // SAFETY: never executed; exists only to be disassembled.
    unsafe {
        std::arch::asm!(
            "vmptrld qword ptr [{pointer}]",
            "test {pointer}, {pointer}",
            "setc {carry}",
            "setz {zero}",
            pointer = in(reg) &raw const address,
            carry = out(reg_byte) carry,
            zero = out(reg_byte) zero,
            options(nostack),
        );
    }
    (carry, zero)
}

/// A deliberately wrong wrapper (never called): it captures only CF.
#[inline(never)]
unsafe fn zero_flag_not_captured() -> u8 {
    let carry: u8;
    // SAFETY: never executed; exists only to be disassembled.
    unsafe {
        std::arch::asm!("vmxoff", "setc {carry}", carry = out(reg_byte) carry, options(nostack));
    }
    carry
}

#[test]
fn status_check_rejects_wrong_wrappers() {
    let function: unsafe fn(u64) -> (u8, u8) = flags_clobbered_before_capture;
    let code = Disassembly::of("flags_clobbered", function as *const (), symbols());
    let clobbered = std::panic::catch_unwind(|| {
        code.assert_status_captured_after(Mnemonic::Vmptrld);
    });
    assert!(
        clobbered.is_err(),
        "a TEST between VMPTRLD and SETB went unnoticed"
    );

    let function: unsafe fn() -> u8 = zero_flag_not_captured;
    let code = Disassembly::of("zero_not_captured", function as *const (), symbols());
    let uncaptured = std::panic::catch_unwind(|| {
        code.assert_status_captured_after(Mnemonic::Vmxoff);
    });
    assert!(uncaptured.is_err(), "a missing SETE went unnoticed");
}
