//! The VMCS field table: every field of the SDM, Appendix B.
//!
//! One line per field: Rust variant, encoding, SDM-style name, description,
//! declared width, declared kind. The macro checks at compile time that the
//! declared width and kind agree with the encoding bits.

use super::{FieldKind, Width};

macro_rules! vmcs_fields {
    ($(
        $(#[$group:meta])*
        $variant:ident = $encoding:literal, $name:ident, $text:literal, $width:ident, $kind:ident;
    )*) => {
        /// A VMCS field (SDM Appendix B). The discriminant is the encoding.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum VmcsField {
            $(
                $(#[$group])*
                #[doc = concat!("`", stringify!($name), "` (", stringify!($encoding), "): ", $text, ".")]
                $variant = $encoding,
            )*
        }

        impl VmcsField {
            /// Every field, sorted by encoding.
            pub const ALL: &'static [VmcsField] = &[$(VmcsField::$variant),*];

            /// The SDM-style name, e.g. `GUEST_CR0`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($name),)*
                }
            }

            /// What the field holds, in the SDM's words.
            pub const fn description(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// The field whose FULL encoding is `encoding`, if any. For operands
            /// of VMREAD/VMWRITE (which may name a HIGH half) use
            /// [`FieldAccess::decode`](super::FieldAccess::decode).
            pub const fn from_encoding(encoding: u32) -> Option<Self> {
                match encoding {
                    $($encoding => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        // The declared width and kind must be the ones the encoding names.
        const _: () = {
            $(
                assert!(
                    Width::of_encoding($encoding) as u8 == Width::$width as u8,
                    concat!("declared width disagrees with the encoding of ", stringify!($name)),
                );
                assert!(
                    FieldKind::of_encoding($encoding) as u8 == FieldKind::$kind as u8,
                    concat!("declared kind disagrees with the encoding of ", stringify!($name)),
                );
            )*
        };
    };
}

vmcs_fields! {
    // B.1.1 16-bit control fields.
    VirtualProcessorId = 0x0000, VIRTUAL_PROCESSOR_ID, "Virtual-processor identifier (VPID)", Bits16, Control;
    PostedInterruptNotificationVector = 0x0002, POSTED_INTR_NV, "Posted-interrupt notification vector", Bits16, Control;
    EptpIndex = 0x0004, EPTP_INDEX, "EPTP index", Bits16, Control;
    HlatPrefixSize = 0x0006, HLAT_PREFIX_SIZE, "HLAT prefix size", Bits16, Control;
    LastPidPointerIndex = 0x0008, LAST_PID_POINTER_INDEX, "Last PID-pointer index", Bits16, Control;
    VirtualTimerVector = 0x000a, VIRTUAL_TIMER_VECTOR, "Virtual-timer vector (APIC-timer virtualization)", Bits16, Control;
    // B.1.2 16-bit guest-state fields.
    GuestEsSelector = 0x0800, GUEST_ES_SELECTOR, "Guest ES selector", Bits16, Guest;
    GuestCsSelector = 0x0802, GUEST_CS_SELECTOR, "Guest CS selector", Bits16, Guest;
    GuestSsSelector = 0x0804, GUEST_SS_SELECTOR, "Guest SS selector", Bits16, Guest;
    GuestDsSelector = 0x0806, GUEST_DS_SELECTOR, "Guest DS selector", Bits16, Guest;
    GuestFsSelector = 0x0808, GUEST_FS_SELECTOR, "Guest FS selector", Bits16, Guest;
    GuestGsSelector = 0x080a, GUEST_GS_SELECTOR, "Guest GS selector", Bits16, Guest;
    GuestLdtrSelector = 0x080c, GUEST_LDTR_SELECTOR, "Guest LDTR selector", Bits16, Guest;
    GuestTrSelector = 0x080e, GUEST_TR_SELECTOR, "Guest TR selector", Bits16, Guest;
    GuestInterruptStatus = 0x0810, GUEST_INTR_STATUS, "Guest interrupt status (RVI and SVI)", Bits16, Guest;
    GuestPmlIndex = 0x0812, GUEST_PML_INDEX, "PML index", Bits16, Guest;
    GuestUinv = 0x0814, GUEST_UINV, "Guest UINV (user-interrupt notification vector)", Bits16, Guest;
    // B.1.3 16-bit host-state fields.
    HostEsSelector = 0x0c00, HOST_ES_SELECTOR, "Host ES selector", Bits16, Host;
    HostCsSelector = 0x0c02, HOST_CS_SELECTOR, "Host CS selector", Bits16, Host;
    HostSsSelector = 0x0c04, HOST_SS_SELECTOR, "Host SS selector", Bits16, Host;
    HostDsSelector = 0x0c06, HOST_DS_SELECTOR, "Host DS selector", Bits16, Host;
    HostFsSelector = 0x0c08, HOST_FS_SELECTOR, "Host FS selector", Bits16, Host;
    HostGsSelector = 0x0c0a, HOST_GS_SELECTOR, "Host GS selector", Bits16, Host;
    HostTrSelector = 0x0c0c, HOST_TR_SELECTOR, "Host TR selector", Bits16, Host;
    // B.2.1 64-bit control fields.
    IoBitmapA = 0x2000, IO_BITMAP_A, "Address of I/O bitmap A", Bits64, Control;
    IoBitmapB = 0x2002, IO_BITMAP_B, "Address of I/O bitmap B", Bits64, Control;
    MsrBitmap = 0x2004, MSR_BITMAP, "Address of MSR bitmaps", Bits64, Control;
    VmExitMsrStoreAddress = 0x2006, VM_EXIT_MSR_STORE_ADDR, "VM-exit MSR-store address", Bits64, Control;
    VmExitMsrLoadAddress = 0x2008, VM_EXIT_MSR_LOAD_ADDR, "VM-exit MSR-load address", Bits64, Control;
    VmEntryMsrLoadAddress = 0x200a, VM_ENTRY_MSR_LOAD_ADDR, "VM-entry MSR-load address", Bits64, Control;
    ExecutiveVmcsPointer = 0x200c, EXECUTIVE_VMCS_POINTER, "Executive-VMCS pointer", Bits64, Control;
    PmlAddress = 0x200e, PML_ADDRESS, "PML address", Bits64, Control;
    TscOffset = 0x2010, TSC_OFFSET, "TSC offset", Bits64, Control;
    VirtualApicAddress = 0x2012, VIRTUAL_APIC_PAGE_ADDR, "Virtual-APIC address", Bits64, Control;
    ApicAccessAddress = 0x2014, APIC_ACCESS_ADDR, "APIC-access address", Bits64, Control;
    PostedInterruptDescriptorAddress = 0x2016, POSTED_INTR_DESC_ADDR, "Posted-interrupt descriptor address", Bits64, Control;
    VmFunctionControls = 0x2018, VM_FUNCTION_CONTROL, "VM-function controls", Bits64, Control;
    EptPointer = 0x201a, EPT_POINTER, "EPT pointer (EPTP)", Bits64, Control;
    EoiExitBitmap0 = 0x201c, EOI_EXIT_BITMAP0, "EOI-exit bitmap 0", Bits64, Control;
    EoiExitBitmap1 = 0x201e, EOI_EXIT_BITMAP1, "EOI-exit bitmap 1", Bits64, Control;
    EoiExitBitmap2 = 0x2020, EOI_EXIT_BITMAP2, "EOI-exit bitmap 2", Bits64, Control;
    EoiExitBitmap3 = 0x2022, EOI_EXIT_BITMAP3, "EOI-exit bitmap 3", Bits64, Control;
    EptpListAddress = 0x2024, EPTP_LIST_ADDRESS, "EPTP-list address", Bits64, Control;
    VmreadBitmapAddress = 0x2026, VMREAD_BITMAP, "VMREAD-bitmap address", Bits64, Control;
    VmwriteBitmapAddress = 0x2028, VMWRITE_BITMAP, "VMWRITE-bitmap address", Bits64, Control;
    VirtualizationExceptionInfoAddress = 0x202a, VE_INFORMATION_ADDRESS, "Virtualization-exception information address", Bits64, Control;
    XssExitingBitmap = 0x202c, XSS_EXIT_BITMAP, "XSS-exiting bitmap", Bits64, Control;
    EnclsExitingBitmap = 0x202e, ENCLS_EXITING_BITMAP, "ENCLS-exiting bitmap", Bits64, Control;
    SubPagePermissionTablePointer = 0x2030, SPPT_POINTER, "Sub-page-permission-table pointer (SPPTP)", Bits64, Control;
    TscMultiplier = 0x2032, TSC_MULTIPLIER, "TSC multiplier", Bits64, Control;
    TertiaryProcBasedControls = 0x2034, TERTIARY_VM_EXEC_CONTROL, "Tertiary processor-based VM-execution controls", Bits64, Control;
    EnclvExitingBitmap = 0x2036, ENCLV_EXITING_BITMAP, "ENCLV-exiting bitmap", Bits64, Control;
    LowPasidDirectoryAddress = 0x2038, LOW_PASID_DIRECTORY_ADDRESS, "Low PASID directory address", Bits64, Control;
    HighPasidDirectoryAddress = 0x203a, HIGH_PASID_DIRECTORY_ADDRESS, "High PASID directory address", Bits64, Control;
    SharedEptPointer = 0x203c, SHARED_EPT_POINTER, "Shared-EPT pointer", Bits64, Control;
    PconfigExitingBitmap = 0x203e, PCONFIG_EXITING_BITMAP, "PCONFIG-exiting bitmap", Bits64, Control;
    HlatPointer = 0x2040, HLATP, "Hypervisor-managed linear-address translation pointer (HLATP)", Bits64, Control;
    PidPointerTableAddress = 0x2042, PID_POINTER_TABLE_ADDRESS, "PID-pointer table address", Bits64, Control;
    SecondaryVmExitControls = 0x2044, SECONDARY_VM_EXIT_CONTROLS, "Secondary VM-exit controls", Bits64, Control;
    SpecCtrlMask = 0x204a, IA32_SPEC_CTRL_MASK, "IA32_SPEC_CTRL mask", Bits64, Control;
    SpecCtrlShadow = 0x204c, IA32_SPEC_CTRL_SHADOW, "IA32_SPEC_CTRL shadow", Bits64, Control;
    GuestDeadlineShadow = 0x204e, GUEST_DEADLINE_SHADOW, "Guest deadline shadow (APIC-timer virtualization)", Bits64, Control;
    InjectedEventData = 0x2052, INJECTED_EVENT_DATA, "Injected-event data (FRED)", Bits64, Control;
    // B.2.2 64-bit read-only data fields.
    GuestPhysicalAddress = 0x2400, GUEST_PHYSICAL_ADDRESS, "Guest-physical address", Bits64, ReadOnly;
    MsrData = 0x2402, MSR_DATA, "MSR data (RDMSRLIST/WRMSRLIST)", Bits64, ReadOnly;
    OriginalEventData = 0x2404, ORIGINAL_EVENT_DATA, "Original-event data (FRED)", Bits64, ReadOnly;
    // B.2.3 64-bit guest-state fields.
    VmcsLinkPointer = 0x2800, VMCS_LINK_POINTER, "VMCS link pointer", Bits64, Guest;
    GuestDebugCtl = 0x2802, GUEST_IA32_DEBUGCTL, "Guest IA32_DEBUGCTL", Bits64, Guest;
    GuestPat = 0x2804, GUEST_IA32_PAT, "Guest IA32_PAT", Bits64, Guest;
    GuestEfer = 0x2806, GUEST_IA32_EFER, "Guest IA32_EFER", Bits64, Guest;
    GuestPerfGlobalCtrl = 0x2808, GUEST_IA32_PERF_GLOBAL_CTRL, "Guest IA32_PERF_GLOBAL_CTRL", Bits64, Guest;
    GuestPdpte0 = 0x280a, GUEST_PDPTE0, "Guest PDPTE0", Bits64, Guest;
    GuestPdpte1 = 0x280c, GUEST_PDPTE1, "Guest PDPTE1", Bits64, Guest;
    GuestPdpte2 = 0x280e, GUEST_PDPTE2, "Guest PDPTE2", Bits64, Guest;
    GuestPdpte3 = 0x2810, GUEST_PDPTE3, "Guest PDPTE3", Bits64, Guest;
    GuestBndcfgs = 0x2812, GUEST_IA32_BNDCFGS, "Guest IA32_BNDCFGS", Bits64, Guest;
    GuestRtitCtl = 0x2814, GUEST_IA32_RTIT_CTL, "Guest IA32_RTIT_CTL", Bits64, Guest;
    GuestLbrCtl = 0x2816, GUEST_IA32_LBR_CTL, "Guest IA32_LBR_CTL", Bits64, Guest;
    GuestPkrs = 0x2818, GUEST_IA32_PKRS, "Guest IA32_PKRS", Bits64, Guest;
    GuestFredConfig = 0x281a, GUEST_IA32_FRED_CONFIG, "Guest IA32_FRED_CONFIG", Bits64, Guest;
    GuestFredRsp1 = 0x281c, GUEST_IA32_FRED_RSP1, "Guest IA32_FRED_RSP1", Bits64, Guest;
    GuestFredRsp2 = 0x281e, GUEST_IA32_FRED_RSP2, "Guest IA32_FRED_RSP2", Bits64, Guest;
    GuestFredRsp3 = 0x2820, GUEST_IA32_FRED_RSP3, "Guest IA32_FRED_RSP3", Bits64, Guest;
    GuestFredStklvls = 0x2822, GUEST_IA32_FRED_STKLVLS, "Guest IA32_FRED_STKLVLS", Bits64, Guest;
    GuestFredSsp1 = 0x2824, GUEST_IA32_FRED_SSP1, "Guest IA32_FRED_SSP1", Bits64, Guest;
    GuestFredSsp2 = 0x2826, GUEST_IA32_FRED_SSP2, "Guest IA32_FRED_SSP2", Bits64, Guest;
    GuestFredSsp3 = 0x2828, GUEST_IA32_FRED_SSP3, "Guest IA32_FRED_SSP3", Bits64, Guest;
    GuestSpecCtrl = 0x282e, GUEST_IA32_SPEC_CTRL, "Guest IA32_SPEC_CTRL", Bits64, Guest;
    GuestDeadline = 0x2830, GUEST_DEADLINE, "Guest deadline (APIC-timer virtualization)", Bits64, Guest;
    // B.2.4 64-bit host-state fields.
    HostPat = 0x2c00, HOST_IA32_PAT, "Host IA32_PAT", Bits64, Host;
    HostEfer = 0x2c02, HOST_IA32_EFER, "Host IA32_EFER", Bits64, Host;
    HostPerfGlobalCtrl = 0x2c04, HOST_IA32_PERF_GLOBAL_CTRL, "Host IA32_PERF_GLOBAL_CTRL", Bits64, Host;
    HostPkrs = 0x2c06, HOST_IA32_PKRS, "Host IA32_PKRS", Bits64, Host;
    HostFredConfig = 0x2c08, HOST_IA32_FRED_CONFIG, "Host IA32_FRED_CONFIG", Bits64, Host;
    HostFredRsp1 = 0x2c0a, HOST_IA32_FRED_RSP1, "Host IA32_FRED_RSP1", Bits64, Host;
    HostFredRsp2 = 0x2c0c, HOST_IA32_FRED_RSP2, "Host IA32_FRED_RSP2", Bits64, Host;
    HostFredRsp3 = 0x2c0e, HOST_IA32_FRED_RSP3, "Host IA32_FRED_RSP3", Bits64, Host;
    HostFredStklvls = 0x2c10, HOST_IA32_FRED_STKLVLS, "Host IA32_FRED_STKLVLS", Bits64, Host;
    HostFredSsp1 = 0x2c12, HOST_IA32_FRED_SSP1, "Host IA32_FRED_SSP1", Bits64, Host;
    HostFredSsp2 = 0x2c14, HOST_IA32_FRED_SSP2, "Host IA32_FRED_SSP2", Bits64, Host;
    HostFredSsp3 = 0x2c16, HOST_IA32_FRED_SSP3, "Host IA32_FRED_SSP3", Bits64, Host;
    HostSpecCtrl = 0x2c1a, HOST_IA32_SPEC_CTRL, "Host IA32_SPEC_CTRL", Bits64, Host;
    // B.3.1 32-bit control fields.
    PinBasedControls = 0x4000, PIN_BASED_VM_EXEC_CONTROL, "Pin-based VM-execution controls", Bits32, Control;
    PrimaryProcBasedControls = 0x4002, CPU_BASED_VM_EXEC_CONTROL, "Primary processor-based VM-execution controls", Bits32, Control;
    ExceptionBitmap = 0x4004, EXCEPTION_BITMAP, "Exception bitmap", Bits32, Control;
    PageFaultErrorCodeMask = 0x4006, PAGE_FAULT_ERROR_CODE_MASK, "Page-fault error-code mask", Bits32, Control;
    PageFaultErrorCodeMatch = 0x4008, PAGE_FAULT_ERROR_CODE_MATCH, "Page-fault error-code match", Bits32, Control;
    Cr3TargetCount = 0x400a, CR3_TARGET_COUNT, "CR3-target count", Bits32, Control;
    PrimaryVmExitControls = 0x400c, VM_EXIT_CONTROLS, "Primary VM-exit controls", Bits32, Control;
    VmExitMsrStoreCount = 0x400e, VM_EXIT_MSR_STORE_COUNT, "VM-exit MSR-store count", Bits32, Control;
    VmExitMsrLoadCount = 0x4010, VM_EXIT_MSR_LOAD_COUNT, "VM-exit MSR-load count", Bits32, Control;
    VmEntryControls = 0x4012, VM_ENTRY_CONTROLS, "VM-entry controls", Bits32, Control;
    VmEntryMsrLoadCount = 0x4014, VM_ENTRY_MSR_LOAD_COUNT, "VM-entry MSR-load count", Bits32, Control;
    VmEntryInterruptionInfo = 0x4016, VM_ENTRY_INTR_INFO_FIELD, "VM-entry interruption-information field", Bits32, Control;
    VmEntryExceptionErrorCode = 0x4018, VM_ENTRY_EXCEPTION_ERROR_CODE, "VM-entry exception error code", Bits32, Control;
    VmEntryInstructionLength = 0x401a, VM_ENTRY_INSTRUCTION_LEN, "VM-entry instruction length", Bits32, Control;
    TprThreshold = 0x401c, TPR_THRESHOLD, "TPR threshold", Bits32, Control;
    SecondaryProcBasedControls = 0x401e, SECONDARY_VM_EXEC_CONTROL, "Secondary processor-based VM-execution controls", Bits32, Control;
    PleGap = 0x4020, PLE_GAP, "PAUSE-loop exiting gap", Bits32, Control;
    PleWindow = 0x4022, PLE_WINDOW, "PAUSE-loop exiting window", Bits32, Control;
    InstructionTimeoutControl = 0x4024, INSTRUCTION_TIMEOUT_CONTROL, "Instruction-timeout control", Bits32, Control;
    // B.3.2 32-bit read-only data fields.
    VmInstructionError = 0x4400, VM_INSTRUCTION_ERROR, "VM-instruction error", Bits32, ReadOnly;
    ExitReason = 0x4402, VM_EXIT_REASON, "Exit reason", Bits32, ReadOnly;
    VmExitInterruptionInfo = 0x4404, VM_EXIT_INTR_INFO, "VM-exit interruption information", Bits32, ReadOnly;
    VmExitInterruptionErrorCode = 0x4406, VM_EXIT_INTR_ERROR_CODE, "VM-exit interruption error code", Bits32, ReadOnly;
    IdtVectoringInfo = 0x4408, IDT_VECTORING_INFO_FIELD, "IDT-vectoring information field", Bits32, ReadOnly;
    IdtVectoringErrorCode = 0x440a, IDT_VECTORING_ERROR_CODE, "IDT-vectoring error code", Bits32, ReadOnly;
    VmExitInstructionLength = 0x440c, VM_EXIT_INSTRUCTION_LEN, "VM-exit instruction length", Bits32, ReadOnly;
    VmxInstructionInfo = 0x440e, VMX_INSTRUCTION_INFO, "VM-exit instruction information", Bits32, ReadOnly;
    // B.3.3 32-bit guest-state fields.
    GuestEsLimit = 0x4800, GUEST_ES_LIMIT, "Guest ES limit", Bits32, Guest;
    GuestCsLimit = 0x4802, GUEST_CS_LIMIT, "Guest CS limit", Bits32, Guest;
    GuestSsLimit = 0x4804, GUEST_SS_LIMIT, "Guest SS limit", Bits32, Guest;
    GuestDsLimit = 0x4806, GUEST_DS_LIMIT, "Guest DS limit", Bits32, Guest;
    GuestFsLimit = 0x4808, GUEST_FS_LIMIT, "Guest FS limit", Bits32, Guest;
    GuestGsLimit = 0x480a, GUEST_GS_LIMIT, "Guest GS limit", Bits32, Guest;
    GuestLdtrLimit = 0x480c, GUEST_LDTR_LIMIT, "Guest LDTR limit", Bits32, Guest;
    GuestTrLimit = 0x480e, GUEST_TR_LIMIT, "Guest TR limit", Bits32, Guest;
    GuestGdtrLimit = 0x4810, GUEST_GDTR_LIMIT, "Guest GDTR limit", Bits32, Guest;
    GuestIdtrLimit = 0x4812, GUEST_IDTR_LIMIT, "Guest IDTR limit", Bits32, Guest;
    GuestEsAccessRights = 0x4814, GUEST_ES_AR_BYTES, "Guest ES access rights", Bits32, Guest;
    GuestCsAccessRights = 0x4816, GUEST_CS_AR_BYTES, "Guest CS access rights", Bits32, Guest;
    GuestSsAccessRights = 0x4818, GUEST_SS_AR_BYTES, "Guest SS access rights", Bits32, Guest;
    GuestDsAccessRights = 0x481a, GUEST_DS_AR_BYTES, "Guest DS access rights", Bits32, Guest;
    GuestFsAccessRights = 0x481c, GUEST_FS_AR_BYTES, "Guest FS access rights", Bits32, Guest;
    GuestGsAccessRights = 0x481e, GUEST_GS_AR_BYTES, "Guest GS access rights", Bits32, Guest;
    GuestLdtrAccessRights = 0x4820, GUEST_LDTR_AR_BYTES, "Guest LDTR access rights", Bits32, Guest;
    GuestTrAccessRights = 0x4822, GUEST_TR_AR_BYTES, "Guest TR access rights", Bits32, Guest;
    GuestInterruptibilityState = 0x4824, GUEST_INTERRUPTIBILITY_INFO, "Guest interruptibility state", Bits32, Guest;
    GuestActivityState = 0x4826, GUEST_ACTIVITY_STATE, "Guest activity state", Bits32, Guest;
    GuestSmbase = 0x4828, GUEST_SMBASE, "Guest SMBASE", Bits32, Guest;
    GuestSysenterCs = 0x482a, GUEST_SYSENTER_CS, "Guest IA32_SYSENTER_CS", Bits32, Guest;
    VmxPreemptionTimerValue = 0x482e, VMX_PREEMPTION_TIMER_VALUE, "VMX-preemption timer value", Bits32, Guest;
    // B.3.4 32-bit host-state field.
    HostSysenterCs = 0x4c00, HOST_IA32_SYSENTER_CS, "Host IA32_SYSENTER_CS", Bits32, Host;
    // B.4.1 Natural-width control fields.
    Cr0GuestHostMask = 0x6000, CR0_GUEST_HOST_MASK, "CR0 guest/host mask", Natural, Control;
    Cr4GuestHostMask = 0x6002, CR4_GUEST_HOST_MASK, "CR4 guest/host mask", Natural, Control;
    Cr0ReadShadow = 0x6004, CR0_READ_SHADOW, "CR0 read shadow", Natural, Control;
    Cr4ReadShadow = 0x6006, CR4_READ_SHADOW, "CR4 read shadow", Natural, Control;
    Cr3TargetValue0 = 0x6008, CR3_TARGET_VALUE0, "CR3-target value 0", Natural, Control;
    Cr3TargetValue1 = 0x600a, CR3_TARGET_VALUE1, "CR3-target value 1", Natural, Control;
    Cr3TargetValue2 = 0x600c, CR3_TARGET_VALUE2, "CR3-target value 2", Natural, Control;
    Cr3TargetValue3 = 0x600e, CR3_TARGET_VALUE3, "CR3-target value 3", Natural, Control;
    // B.4.2 Natural-width read-only data fields.
    ExitQualification = 0x6400, EXIT_QUALIFICATION, "Exit qualification", Natural, ReadOnly;
    IoRcx = 0x6402, IO_RCX, "I/O RCX", Natural, ReadOnly;
    IoRsi = 0x6404, IO_RSI, "I/O RSI", Natural, ReadOnly;
    IoRdi = 0x6406, IO_RDI, "I/O RDI", Natural, ReadOnly;
    IoRip = 0x6408, IO_RIP, "I/O RIP", Natural, ReadOnly;
    GuestLinearAddress = 0x640a, GUEST_LINEAR_ADDRESS, "Guest-linear address", Natural, ReadOnly;
    // B.4.3 Natural-width guest-state fields.
    GuestCr0 = 0x6800, GUEST_CR0, "Guest CR0", Natural, Guest;
    GuestCr3 = 0x6802, GUEST_CR3, "Guest CR3", Natural, Guest;
    GuestCr4 = 0x6804, GUEST_CR4, "Guest CR4", Natural, Guest;
    GuestEsBase = 0x6806, GUEST_ES_BASE, "Guest ES base", Natural, Guest;
    GuestCsBase = 0x6808, GUEST_CS_BASE, "Guest CS base", Natural, Guest;
    GuestSsBase = 0x680a, GUEST_SS_BASE, "Guest SS base", Natural, Guest;
    GuestDsBase = 0x680c, GUEST_DS_BASE, "Guest DS base", Natural, Guest;
    GuestFsBase = 0x680e, GUEST_FS_BASE, "Guest FS base", Natural, Guest;
    GuestGsBase = 0x6810, GUEST_GS_BASE, "Guest GS base", Natural, Guest;
    GuestLdtrBase = 0x6812, GUEST_LDTR_BASE, "Guest LDTR base", Natural, Guest;
    GuestTrBase = 0x6814, GUEST_TR_BASE, "Guest TR base", Natural, Guest;
    GuestGdtrBase = 0x6816, GUEST_GDTR_BASE, "Guest GDTR base", Natural, Guest;
    GuestIdtrBase = 0x6818, GUEST_IDTR_BASE, "Guest IDTR base", Natural, Guest;
    GuestDr7 = 0x681a, GUEST_DR7, "Guest DR7", Natural, Guest;
    GuestRsp = 0x681c, GUEST_RSP, "Guest RSP", Natural, Guest;
    GuestRip = 0x681e, GUEST_RIP, "Guest RIP", Natural, Guest;
    GuestRflags = 0x6820, GUEST_RFLAGS, "Guest RFLAGS", Natural, Guest;
    GuestPendingDebugExceptions = 0x6822, GUEST_PENDING_DBG_EXCEPTIONS, "Guest pending debug exceptions", Natural, Guest;
    GuestSysenterEsp = 0x6824, GUEST_SYSENTER_ESP, "Guest IA32_SYSENTER_ESP", Natural, Guest;
    GuestSysenterEip = 0x6826, GUEST_SYSENTER_EIP, "Guest IA32_SYSENTER_EIP", Natural, Guest;
    GuestSCet = 0x6828, GUEST_S_CET, "Guest IA32_S_CET", Natural, Guest;
    GuestSsp = 0x682a, GUEST_SSP, "Guest SSP", Natural, Guest;
    GuestInterruptSspTableAddress = 0x682c, GUEST_INTR_SSP_TABLE, "Guest IA32_INTERRUPT_SSP_TABLE_ADDR", Natural, Guest;
    // B.4.4 Natural-width host-state fields.
    HostCr0 = 0x6c00, HOST_CR0, "Host CR0", Natural, Host;
    HostCr3 = 0x6c02, HOST_CR3, "Host CR3", Natural, Host;
    HostCr4 = 0x6c04, HOST_CR4, "Host CR4", Natural, Host;
    HostFsBase = 0x6c06, HOST_FS_BASE, "Host FS base", Natural, Host;
    HostGsBase = 0x6c08, HOST_GS_BASE, "Host GS base", Natural, Host;
    HostTrBase = 0x6c0a, HOST_TR_BASE, "Host TR base", Natural, Host;
    HostGdtrBase = 0x6c0c, HOST_GDTR_BASE, "Host GDTR base", Natural, Host;
    HostIdtrBase = 0x6c0e, HOST_IDTR_BASE, "Host IDTR base", Natural, Host;
    HostSysenterEsp = 0x6c10, HOST_IA32_SYSENTER_ESP, "Host IA32_SYSENTER_ESP", Natural, Host;
    HostSysenterEip = 0x6c12, HOST_IA32_SYSENTER_EIP, "Host IA32_SYSENTER_EIP", Natural, Host;
    HostRsp = 0x6c14, HOST_RSP, "Host RSP", Natural, Host;
    HostRip = 0x6c16, HOST_RIP, "Host RIP", Natural, Host;
    HostSCet = 0x6c18, HOST_S_CET, "Host IA32_S_CET", Natural, Host;
    HostSsp = 0x6c1a, HOST_SSP, "Host SSP", Natural, Host;
    HostInterruptSspTableAddress = 0x6c1c, HOST_INTR_SSP_TABLE, "Host IA32_INTERRUPT_SSP_TABLE_ADDR", Natural, Host;
}
