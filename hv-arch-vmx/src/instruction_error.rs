//! VM-instruction error numbers (SDM Vol. 3C 31.4, Table 31-1): why a VMX
//! instruction failed with `VMfailValid`.

use core::fmt;

/// Defines [`VmInstructionError`] from one table: variant, number, SDM text.
macro_rules! instruction_errors {
    ($( $variant:ident = $number:literal, $text:literal; )*) => {
        /// A VM-instruction error number, read from the VM-instruction error
        /// field after `VMfailValid` (SDM 31.4, Table 31-1).
        ///
        /// The reserved numbers 14, 21 and 27, 0 and anything above 28 are kept
        /// as [`VmInstructionError::Unknown`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum VmInstructionError {
            $(
                #[doc = concat!(stringify!($number), ": ", $text, ".")]
                $variant,
            )*
            /// A number the SDM does not define.
            Unknown(u32),
        }

        impl VmInstructionError {
            /// Every defined error, in numeric order.
            pub const ALL: &'static [Self] = &[$( Self::$variant, )*];

            /// The error for `number` (total).
            pub const fn from_number(number: u32) -> Self {
                match number {
                    $( $number => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// The error number.
            pub const fn number(self) -> u32 {
                match self {
                    $( Self::$variant => $number, )*
                    Self::Unknown(number) => number,
                }
            }

            /// The SDM's description.
            pub const fn text(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Unknown(_) => "unknown VM-instruction error",
                }
            }
        }
    };
}

instruction_errors! {
    VmcallInVmxRoot = 1, "VMCALL executed in VMX root operation";
    VmclearInvalidAddress = 2, "VMCLEAR with invalid physical address";
    VmclearVmxonPointer = 3, "VMCLEAR with VMXON pointer";
    VmlaunchNonClearVmcs = 4, "VMLAUNCH with non-clear VMCS";
    VmresumeNonLaunchedVmcs = 5, "VMRESUME with non-launched VMCS";
    VmresumeAfterVmxoff = 6, "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)";
    EntryInvalidControlFields = 7, "VM entry with invalid control field(s)";
    EntryInvalidHostStateFields = 8, "VM entry with invalid host-state field(s)";
    VmptrldInvalidAddress = 9, "VMPTRLD with invalid physical address";
    VmptrldVmxonPointer = 10, "VMPTRLD with VMXON pointer";
    VmptrldIncorrectRevision = 11, "VMPTRLD with incorrect VMCS revision identifier";
    UnsupportedVmcsComponent = 12, "VMREAD/VMWRITE from/to unsupported VMCS component";
    VmwriteReadOnlyComponent = 13, "VMWRITE to read-only VMCS component";
    VmxonInVmxRoot = 15, "VMXON executed in VMX root operation";
    EntryInvalidExecutiveVmcsPointer = 16, "VM entry with invalid executive-VMCS pointer";
    EntryNonLaunchedExecutiveVmcs = 17, "VM entry with non-launched executive VMCS";
    EntryExecutiveVmcsPointerNotVmxonPointer = 18,
        "VM entry with executive-VMCS pointer not VMXON pointer (when attempting to deactivate the dual-monitor treatment of SMIs and SMM)";
    VmcallNonClearVmcs = 19,
        "VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment of SMIs and SMM)";
    VmcallInvalidExitControls = 20, "VMCALL with invalid VM-exit control fields";
    VmcallIncorrectMsegRevision = 22,
        "VMCALL with incorrect MSEG revision identifier (when attempting to activate the dual-monitor treatment of SMIs and SMM)";
    VmxoffUnderDualMonitor = 23, "VMXOFF under dual-monitor treatment of SMIs and SMM";
    VmcallInvalidSmmMonitorFeatures = 24,
        "VMCALL with invalid SMM-monitor features (when attempting to activate the dual-monitor treatment of SMIs and SMM)";
    EntryInvalidExecutiveExecutionControls = 25,
        "VM entry with invalid VM-execution control fields in executive VMCS (when attempting to return from SMM)";
    EntryEventsBlockedByMovSs = 26, "VM entry with events blocked by MOV SS";
    InvalidInveptInvvpidOperand = 28, "Invalid operand to INVEPT/INVVPID";
}

impl fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VM-instruction error {}: {}", self.number(), self.text())
    }
}

impl core::error::Error for VmInstructionError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn numbers_and_texts() {
        assert_eq!(
            VmInstructionError::from_number(7).text(),
            "VM entry with invalid control field(s)"
        );
        assert_eq!(
            VmInstructionError::from_number(8).text(),
            "VM entry with invalid host-state field(s)"
        );
        assert_eq!(
            VmInstructionError::from_number(12).text(),
            "VMREAD/VMWRITE from/to unsupported VMCS component"
        );
        assert_eq!(
            VmInstructionError::from_number(13).text(),
            "VMWRITE to read-only VMCS component"
        );
        assert_eq!(
            VmInstructionError::from_number(28).text(),
            "Invalid operand to INVEPT/INVVPID"
        );
        assert_eq!(
            VmInstructionError::from_number(26),
            VmInstructionError::EntryEventsBlockedByMovSs
        );
        assert_eq!(
            VmInstructionError::from_number(5),
            VmInstructionError::VmresumeNonLaunchedVmcs
        );
    }

    #[test]
    fn reserved_numbers_are_unknown_and_all_round_trips() {
        for number in [0, 14, 21, 27, 29, u32::MAX] {
            assert_eq!(
                VmInstructionError::from_number(number),
                VmInstructionError::Unknown(number)
            );
        }
        assert_eq!(VmInstructionError::ALL.len(), 25);
        for &error in VmInstructionError::ALL {
            assert_eq!(VmInstructionError::from_number(error.number()), error);
        }
        for number in 0..64 {
            assert_eq!(VmInstructionError::from_number(number).number(), number);
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            VmInstructionError::EntryInvalidControlFields.to_string(),
            "VM-instruction error 7: VM entry with invalid control field(s)"
        );
        assert_eq!(
            VmInstructionError::Unknown(14).to_string(),
            "VM-instruction error 14: unknown VM-instruction error"
        );
    }
}
