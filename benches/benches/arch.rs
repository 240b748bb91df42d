//! hv-arch-vmx costs that sit on the nested-entry path, each against the
//! floor it competes with, measured in the same run.
//!
//! - The full VM-entry checks on a VMCS12 against copying the VMCS12 image:
//!   hv-core copies VMCS12 on every VMPTRLD and VMCLEAR anyway, so the checks
//!   should cost the same order as that copy.
//! - Decoding a VMREAD/VMWRITE field operand against a plain array load.
//!
//! Run: `cargo bench -p hv-benches --bench arch`.

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::{EntryContext, baseline, check_vm_entry};
use hv_arch_vmx::vmcs::{FieldAccess, VmcsField};
use hv_benches::{report, time};
use std::hint::black_box;

fn main() {
    let caps = VmxCapabilities::bochs_skylake_x();
    let image = baseline::long_mode_guest(&caps);
    let context = EntryContext::new(46, 0x1000);
    assert_eq!(
        check_vm_entry(&image, &caps, &context),
        Ok(()),
        "the baseline must pass"
    );

    let copy = time(51, 20_000, || black_box(&image).clone());
    let checks = time(51, 20_000, || {
        check_vm_entry(black_box(&image), &caps, &context)
    });
    report(
        "VM-entry checks (passing VMCS12)",
        checks,
        "VMCS12 image copy",
        copy,
    );

    let encodings: Vec<u64> = VmcsField::ALL
        .iter()
        .map(|f| u64::from(f.encoding()))
        .collect();
    let mut i = 0;
    let load = time(51, 200_000, || {
        i = (i + 1) % encodings.len();
        black_box(encodings[i])
    });
    let mut j = 0;
    let decode = time(51, 200_000, || {
        j = (j + 1) % encodings.len();
        FieldAccess::decode(black_box(encodings[j])).map(|a| a.field.index())
    });
    report(
        "VMREAD/VMWRITE operand decode + index",
        decode,
        "array load",
        load,
    );
}
