//! L2-exit reflection: decide whether L1 asked for an exit L2 took, and
//! if so deliver it to L1 as a processor would (SDM Vol. 3C chapters 26
//! and 28).
//!
//! - [`l1_wants_exit`] (in `decide`): the exit rules of SDM 26.1-26.3
//!   evaluated on VMCS12, reading the I/O and MSR bitmaps from L1 memory
//!   ([`bitmaps`]).
//! - [`deliver_exit_to_l1`] (in `deliver`): write the exit-information
//!   fields and L2's state into VMCS12, store L2's MSRs, then load L1's
//!   host state and MSRs (SDM 28.2-28.6), or report a VMX abort (28.7).
//! - [`deliver_entry_failure`]: the VM-entry-failure exit of SDM 27.8 for
//!   a nested VMLAUNCH/VMRESUME whose VMCS12 guest state fails the checks.
//!
//! # Decision table
//!
//! "Reflect iff X" means [`Decision::ReflectToL1`] when X holds in VMCS12,
//! else [`Decision::HandleInL0`] with [`L0Reason::NotRequested`].
//! Secondary and tertiary controls count as 0 when their "activate" bit is
//! clear (SDM 25.6.2).
//!
//! | exit (basic reason) | decision | SDM |
//! |---|---|---|
//! | exception (0) | reflect iff its exception-bitmap bit is set | 26.2 |
//! | #PF (0, vector 14) | `(PFEC & mask) == match` ? bit 14 : !bit 14 | 26.2 |
//! | NMI (0, type NMI) | reflect iff "NMI exiting" | 26.2 |
//! | external interrupt (1) | reflect iff "external-interrupt exiting" | 26.2 |
//! | triple fault, INIT, SIPI, task switch (2, 3, 4, 9) | reflect | 26.2 |
//! | CPUID, GETSEC, INVD, XSETBV (10, 11, 13, 55) | reflect | 26.1.2 |
//! | VMCALL..VMXON, INVEPT, INVVPID (18-27, 50, 53) | reflect (see limits) | 26.1.2 |
//! | SEAMCALL, TDCALL (76, 77) | reflect | 26.1.2 |
//! | I/O SMI, other SMI, RSM (5, 6, 17) | L0 ([`L0Reason::L0Feature`]) | - |
//! | interrupt / NMI window (7, 8) | reflect iff the window-exiting control | 26.2 |
//! | HLT, INVLPG, RDPMC, RDTSC, MWAIT, MONITOR, MOV DR | reflect iff its exiting control | 26.1.3 |
//! | RDTSCP (51) | "enable RDTSCP" and "RDTSC exiting"; #UD note without enable | 26.1.3 |
//! | PAUSE (40) | reflect iff "PAUSE exiting"; else L0 (PAUSE-loop exiting is L0's) | 26.1.3 |
//! | CR access (28) | MOV to CR0/CR4: source differs from the read shadow in a masked bit | 26.1.3 |
//! | | MOV to CR3: "CR3-load exiting" and not one of the first *count* targets | 26.1.3 |
//! | | MOV from CR3: "CR3-store exiting"; MOV to/from CR8: CR8 load/store exiting | 26.1.3 |
//! | | CLTS: TS set in both mask and shadow; LMSW: mask/shadow on bits 3:0, PE only 0->1 | 26.1.3 |
//! | I/O (30) | bitmaps A/B per byte (wraparound past FFFFH exits), else "unconditional I/O exiting" | 26.1.3 |
//! | RDMSR, WRMSR (31, 32) | always without "use MSR bitmaps"; outside both ranges always; else the bit | 26.1.3 |
//! | entry failures (33, 34, 41, or bit 31) | L0 ([`L0Reason::EntryFailure`]) | - |
//! | MTF (37) | reflect iff "monitor trap flag" | 26.2 |
//! | TPR below threshold (43) | reflect iff "use TPR shadow" and not "virtual-interrupt delivery" | 30.1.2 |
//! | APIC access (44) | reflect iff "virtualize APIC accesses" | 26.1.3 |
//! | virtualized EOI (45) | reflect iff "virtual-interrupt delivery" and the EOI-exit-bitmap bit | 30.1.4 |
//! | APIC write (56) | reflect iff "APIC-register virtualization" or "virtual-interrupt delivery" | 30.4.3.3 |
//! | GDTR/IDTR, LDTR/TR access (46, 47) | reflect iff "descriptor-table exiting" | 26.1.3 |
//! | EPT violation / misconfig (48, 49) | [`Decision::EptFault`] with EPT on in VMCS12, else L0 | 26.3 |
//! | preemption timer (52) | reflect iff VMCS12 activates the timer, else L0 | 26.5.1 |
//! | WBINVD, RDRAND, RDSEED (54, 57, 61) | reflect iff its secondary exiting control | 26.1.3 |
//! | INVPCID (58) | "enable INVPCID" and "INVLPG exiting"; #UD note without enable | 26.1.3 |
//! | VMFUNC (59) | L0 emulates VM functions ([`L0Reason::EmulatedByL0`]), like KVM | 26.5.6 |
//! | ENCLS, ENCLV (60, 70) | enable control and bit EAX (63 for EAX >= 63) of the leaf bitmap | 26.1.3 |
//! | PCONFIG (65) | "enable PCONFIG" and bit EAX of the PCONFIG-exiting bitmap | 26.1.3 |
//! | PML full (62) | reflect iff "enable PML" | 29.3.6 |
//! | XSAVES, XRSTORS (63, 64) | enable control and EDX:EAX & `IA32_XSS` & XSS-exiting bitmap != 0 | 26.1.3 |
//! | SPP event (66) | reflect iff "sub-page write permissions" | - |
//! | UMWAIT, TPAUSE (67, 68) | "enable user wait and pause" and "RDTSC exiting" | 26.1.3 |
//! | LOADIWKEY (69) | reflect iff "LOADIWKEY exiting" (tertiary) | 26.1.3 |
//! | ENQCMD(S) PASID failure (72, 73) | reflect iff "PASID translation" | - |
//! | bus lock (74), instruction timeout (75) | reflect iff its secondary control | - |
//! | RDMSRLIST, WRMSRLIST (78, 79) | reflect iff "enable MSR-list instructions" (per-MSR bitmap check not modelled) | - |
//! | URDMSR, UWRMSR, RDMSR/WRMSRNS immediate (80, 81, 84, 85) | reflect (KVM's default for exits L0 does not model) | - |
//! | undefined numbers | L0 ([`L0Reason::UnknownReason`]), never a panic | - |
//!
//! A bitmap address in VMCS12 that is not L1 memory makes the access exit
//! (KVM's rule): L1 gets an exit it may not have wanted, but L0 never runs
//! an access L1 might have wanted to see.
//!
//! # Limits
//!
//! - External interrupts and NMIs: the caller asks only about events that
//!   belong to L1 (virtual interrupts/NMIs for L1's vCPU); host interrupts
//!   are L0's before this function is called.
//! - VMREAD/VMWRITE always reflect: hv does not offer VMCS shadowing to L1,
//!   so the VMREAD/VMWRITE-bitmap rule never applies.
//! - TPR shadow: MOV to/from CR8 looks at the CR8 exiting controls only; the
//!   virtualization of a CR8 access that does not exit is the processor's.
//! - The preemption-timer and PML-full rules assume L0 already took the
//!   exits it caused itself (its own deadline, its own PML log).

pub mod bitmaps;
mod decide;
mod deliver;

pub use bitmaps::MsrAccessKind;
pub use decide::{Decision, L0Reason, L2Context, ReflectError, l1_wants_exit};
pub use deliver::{
    DeliveryError, DescriptorTableRegister, EntryFailure, L1SystemRegisters, L2Exited, MsrAccess,
    MsrAreaFault, MsrFault, VmxAbort, deliver_entry_failure, deliver_exit_to_l1,
};
