//! Fuzz the VM-entry checks with arbitrary VMCS12 images: L1 controls every
//! bit of VMCS12, so no image may panic the checks, and the verdict must not
//! depend on anything but the image, the capabilities and the context.
#![no_main]

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::{EntryContext, check_vm_entry};
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let caps = VmxCapabilities::bochs_skylake_x();
    // Start from a valid image half the time, so mutations reach the later
    // (guest-state) checks instead of failing on the first control check.
    let (mut image, rest) = match data.split_first() {
        Some((selector, rest)) if selector & 1 == 1 => {
            (hv_arch_vmx::checks::baseline::long_mode_guest(&caps), rest)
        }
        Some((_, rest)) => (VmcsImage::new(), rest),
        None => return,
    };
    // Each 10-byte chunk: a field index (2 bytes) and a value (8 bytes).
    for chunk in rest.chunks_exact(10) {
        let index = usize::from(u16::from_le_bytes([chunk[0], chunk[1]])) % VmcsField::COUNT;
        let value = u64::from_le_bytes(chunk[2..10].try_into().expect("8 bytes"));
        image.set(VmcsField::ALL[index], value);
    }
    let context = EntryContext::new(46, 0x1000);
    let first = check_vm_entry(&image, &caps, &context);
    let second = check_vm_entry(&image.clone(), &caps, &context);
    assert_eq!(
        first, second,
        "the checks are a pure function of their inputs"
    );
});
