//! The run configuration: what the launcher asked this boot to do.
//!
//! `hv standalone` patches a 16-byte record ("HVCF", in the loader,
//! `boot.rs`) in the disk image; the image reads it after boot. As L0 in
//! nested mode it copies the loader into L1's memory, so L1 reads the same
//! record. Unpatched (GRUB, or a disk made by hand) it says "probe only".

use core::fmt;

/// What this boot does after the VMX probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunMode {
    /// The probe only.
    Probe,
    /// L0 runs the L2 workloads itself on the real VMX.
    OneLevel,
    /// L0 runs this image as L1 under hv-core; L1 runs the workloads.
    Nested,
}

/// An illegal thing the workload hypervisor does on purpose, to check it
/// gets the SDM's answer and that L0 keeps running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IllegalCase {
    /// VMXON in VMX root operation.
    VmxonTwice,
    /// VMLAUNCH with a must-be-1 control bit cleared.
    VmlaunchBadControl,
    /// An EPT entry naming memory beyond MAXPHYADDR.
    Ept12Outside,
}

impl IllegalCase {
    /// The name the launcher uses.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::VmxonTwice => "vmxon-twice",
            Self::VmlaunchBadControl => "vmlaunch-bad-control",
            Self::Ept12Outside => "ept12-outside",
        }
    }

    /// The record's number for this case (1..=3).
    pub(crate) const fn number(self) -> u8 {
        match self {
            Self::VmxonTwice => 1,
            Self::VmlaunchBadControl => 2,
            Self::Ept12Outside => 3,
        }
    }

    /// The case with record number `number`.
    pub(crate) const fn from_number(number: u64) -> Option<Self> {
        match number {
            1 => Some(Self::VmxonTwice),
            2 => Some(Self::VmlaunchBadControl),
            3 => Some(Self::Ept12Outside),
            _ => None,
        }
    }
}

/// The EPT02 policy L0 runs hv-core with (nested mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PolicyChoice {
    /// hv: roots kept across switches.
    Hv,
    /// Behaves like KVM.
    Kvm,
    /// Behaves like Xen.
    Xen,
    /// Flush at every nested entry.
    FlushAlways,
}

impl PolicyChoice {
    /// hv-mmu's policy.
    pub(crate) const fn policy(self) -> hv_mmu::Policy {
        match self {
            Self::Hv => hv_mmu::Policy::Hv,
            Self::Kvm => hv_mmu::Policy::Kvm,
            Self::Xen => hv_mmu::Policy::Xen,
            Self::FlushAlways => hv_mmu::Policy::FlushAlways,
        }
    }
}

/// The decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunConfig {
    /// What to do.
    pub(crate) mode: RunMode,
    /// Number of L2 workloads (1..=8).
    pub(crate) l2_count: u8,
    /// hv-core's policy (nested mode).
    pub(crate) policy: PolicyChoice,
    /// An illegal case to run before the workloads.
    pub(crate) illegal: Option<IllegalCase>,
    /// Round-robin slices over the workloads.
    pub(crate) slices: u32,
}

/// Why the record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// The record does not start with "HVCF".
    BadMagic,
    /// A field has a value outside its range.
    BadField(&'static str, u64),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => f.write_str("run config record has no HVCF magic"),
            Self::BadField(name, value) => {
                write!(f, "run config: {name} = {value} is out of range")
            }
        }
    }
}

/// Most L2 workloads (one VPID and one EPT each).
pub(crate) const MAX_L2: u8 = 8;

impl RunConfig {
    /// Decodes the 16-byte record.
    pub(crate) fn decode(record: [u8; 16]) -> Result<Self, ConfigError> {
        if record[0..4] != *b"HVCF" {
            return Err(ConfigError::BadMagic);
        }
        let mode = match record[4] {
            0 => RunMode::Probe,
            1 => RunMode::OneLevel,
            2 => RunMode::Nested,
            other => return Err(ConfigError::BadField("mode", other.into())),
        };
        let l2_count = record[5];
        if l2_count == 0 || l2_count > MAX_L2 {
            return Err(ConfigError::BadField("l2_count", l2_count.into()));
        }
        let policy = match record[6] {
            0 => PolicyChoice::Hv,
            1 => PolicyChoice::Kvm,
            2 => PolicyChoice::Xen,
            3 => PolicyChoice::FlushAlways,
            other => return Err(ConfigError::BadField("policy", other.into())),
        };
        let illegal = match record[7] {
            0 => None,
            other => Some(
                IllegalCase::from_number(other.into())
                    .ok_or(ConfigError::BadField("l1_illegal", other.into()))?,
            ),
        };
        let reserved = u32::from_le_bytes([record[12], record[13], record[14], record[15]]);
        if reserved != 0 {
            return Err(ConfigError::BadField("reserved", reserved.into()));
        }
        let slices = u32::from_le_bytes([record[8], record[9], record[10], record[11]]);
        if slices == 0 {
            return Err(ConfigError::BadField("slices", 0));
        }
        Ok(Self {
            mode,
            l2_count,
            policy,
            illegal,
            slices,
        })
    }
}

unsafe extern "C" {
    /// The record in the loader (boot.rs).
    static hv_run_config: [u8; 16];
}

/// The loader's record, as the disk (or L0) wrote it.
pub(crate) fn run_config() -> Result<RunConfig, ConfigError> {
    // SAFETY: the loader stays in memory (nothing reuses 0x7E00..) and the
    // record is plain bytes; volatile because the disk, not the compiler,
    // decided them.
    let record = unsafe { (&raw const hv_run_config).read_volatile() };
    RunConfig::decode(record)
}

/// The address and length of the loader region L0 copies into L1's memory
/// (boot sector and loader: the record lives there).
pub(crate) fn loader_region() -> (u64, u64) {
    unsafe extern "C" {
        static __stage2_end: u8;
    }
    let end = (&raw const __stage2_end) as u64;
    (0x7C00, end - 0x7C00)
}
