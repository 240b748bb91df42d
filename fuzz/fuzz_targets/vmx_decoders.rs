//! Fuzz every decoder of values a guest can make the processor report or
//! that L1 hands to VMX instructions: VMREAD/VMWRITE field operands, exit
//! qualifications, VM-exit instruction information, EPT entries and EPTPs.
#![no_main]

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::ept::{EptEntry, EptLevel, EptWalkContext, Eptp};
use hv_arch_vmx::exit::{
    ControlRegisterAccessQualification, EptViolationQualification, IoQualification,
    VmxInstructionInfo,
};
use hv_arch_vmx::vmcs::FieldAccess;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, u32, u8)| {
    let (value, info, level) = input;
    if let Ok(access) = FieldAccess::decode(value) {
        assert_eq!(u64::from(access.encoding()), value);
    }
    let _ = ControlRegisterAccessQualification::from_raw(value).decode();
    let _ = IoQualification::from_raw(value).size();
    let _ = EptViolationQualification::from_raw(value).linear_access_kind();
    let info = VmxInstructionInfo::from_raw(info);
    let _ = info.vmread_vmwrite();
    let _ = info.invalidation();
    let _ = info.descriptor_table();
    let _ = info.ldtr_tr();
    let caps = VmxCapabilities::bochs_skylake_x();
    let _ = Eptp::from_raw(value).validate(&caps, 46);
    let mode_based_execute = level & 0x80 != 0;
    if let Some(level) = EptLevel::from_number(level % 6) {
        let context = EptWalkContext::from_capabilities(&caps, 46, mode_based_execute);
        let _ = EptEntry::from_raw(value).misconfiguration(level, &context);
    }
});
