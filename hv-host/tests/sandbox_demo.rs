mod sandbox_support;
use sandbox_support::require_kvm;

#[test]
fn probe() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = hv_host::sandbox::SandboxBuilder::from_path(hv_host::images::demo_guest())
        .host_function("host_add", |a: i64, b: i64| a + b)
        .build()
        .unwrap();
    eprintln!("{:?}", sandbox.functions());
    assert_eq!(sandbox.call::<String>("echo", ("hi",)).unwrap(), "hi");
    assert_eq!(sandbox.call::<i64>("add", (1i64, 2i64)).unwrap(), 3);
    assert_eq!(sandbox.call::<f64>("mul", (1.5f64, 2.0f64)).unwrap(), 3.0);
    assert_eq!(sandbox.call::<i64>("call_host", (1i64, 2i64)).unwrap(), 4);
    eprintln!("{:?}", sandbox.call::<u8>("touch_outside", (1u64 << 40,)));
}
