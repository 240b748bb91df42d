//! VMREAD and VMWRITE of typed [`VmcsField`](hv_arch_vmx::vmcs::VmcsField)s
//! on the current VMCS: hv-arch-vmx's wrappers, which capture the status
//! flags in the same `asm!` block and decode `VMfailValid`.

#[allow(unused_imports, reason = "used by the runner and L0")]
pub(crate) use hv_arch_vmx::instructions::{vmread as read, vmwrite as write};
