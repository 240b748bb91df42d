//! `hv explain eptp` and `hv explain ept-entry`.

use super::{ExplainError, Explanation, Facts, parse_number};
use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::ept::{EptEntry, EptLevel, EptWalkContext, Eptp};

/// Physical-address width used for reserved-bit checks: the architectural
/// maximum, so only bits reserved on every processor are reported.
const MAXPHYADDR: u8 = 52;

/// What the validity checks are measured against, stated in the output.
const REFERENCE: &str = "Bochs corei7_skylake_x capability MSRs, MAXPHYADDR 52";

fn memory_type_text(bits: u8) -> String {
    match hv_arch_vmx::ept::EptMemoryType::from_bits(bits) {
        Some(memory_type) => format!("{memory_type:?} ({bits})"),
        None => format!("reserved ({bits})"),
    }
}

/// Explains an EPT pointer (SDM 25.6.11) and whether it passes the VM-entry
/// check on EPTPs (SDM 27.2.1.1).
///
/// # Errors
///
/// [`ExplainError::NotANumber`] for malformed input.
pub fn eptp(value: &str) -> Result<Explanation, ExplainError> {
    let eptp = Eptp::from_raw(parse_number(value)?);
    let caps = VmxCapabilities::bochs_skylake_x();
    let mut facts = Facts::new(format!("EPTP {:#x}", eptp.raw()));
    facts
        .hex("value", "value", eptp.raw())
        .fact(
            "memory_type",
            "paging-structure memory type",
            memory_type_text(eptp.memory_type_bits()),
            eptp.memory_type_bits(),
        )
        .fact(
            "walk_levels",
            "page-walk length",
            format_args!("{} levels", eptp.walk_levels()),
            eptp.walk_levels(),
        )
        .flag(
            "accessed_dirty",
            "accessed/dirty flags enabled",
            eptp.accessed_dirty_enabled(),
        )
        .flag(
            "supervisor_shadow_stack",
            "supervisor shadow-stack enforcement",
            eptp.supervisor_shadow_stack(),
        )
        .hex("root", "root table address", eptp.root_address());
    match eptp.validate(&caps, MAXPHYADDR) {
        Ok(()) => facts.fact(
            "valid",
            "VM-entry check (SDM 27.2.1.1)",
            format_args!("passes ({REFERENCE})"),
            true,
        ),
        Err(error) => facts
            .fact(
                "valid",
                "VM-entry check (SDM 27.2.1.1)",
                format_args!("FAILS: {error} ({REFERENCE})"),
                false,
            )
            .fact("error", "error", error, error.to_string()),
    };
    Ok(facts.finish())
}

/// Explains an EPT paging-structure entry at `level` (SDM 29.3.2) and
/// whether it is misconfigured (SDM 29.3.3.1).
///
/// # Errors
///
/// [`ExplainError::NotANumber`] for malformed input and
/// [`ExplainError::BadLevel`] for a level outside 1..=5.
pub fn ept_entry(value: &str, level: u8) -> Result<Explanation, ExplainError> {
    let entry = EptEntry::from_raw(parse_number(value)?);
    let level = EptLevel::from_number(level).ok_or(ExplainError::BadLevel(level))?;
    let caps = VmxCapabilities::bochs_skylake_x();
    let context = EptWalkContext::from_capabilities(&caps, MAXPHYADDR, false);
    let mut facts = Facts::new(format!("EPT {} {:#x}", level.name(), entry.raw()));
    facts
        .hex("value", "value", entry.raw())
        .fact(
            "level",
            "level",
            format_args!("{} ({})", level.number(), level.name()),
            level.number(),
        )
        .flag("present", "present", entry.is_present(false))
        .flag("read", "read", entry.is_readable())
        .flag("write", "write", entry.is_writable())
        .flag(
            "execute",
            "execute (supervisor with mode-based control)",
            entry.is_executable(),
        )
        .flag(
            "user_execute",
            "user execute (mode-based control only)",
            entry.is_user_executable(),
        )
        .flag("accessed", "accessed", entry.accessed());
    let leaf = entry.is_leaf(level);
    facts.flag("leaf", "maps a page (leaf)", leaf);
    if leaf {
        let size = entry.page_size(level).unwrap_or(0);
        facts
            .fact(
                "page_size",
                "page size",
                format_args!("{} KiB", size / 1024),
                size,
            )
            .hex("frame", "page frame", entry.page_frame(level).unwrap_or(0))
            .fact(
                "memory_type",
                "memory type",
                memory_type_text(entry.memory_type_bits()),
                entry.memory_type_bits(),
            )
            .flag("ignore_pat", "ignore PAT", entry.ignore_pat())
            .flag("dirty", "dirty", entry.dirty())
            .flag(
                "sub_page_write",
                "sub-page write permissions",
                entry.sub_page_write_permissions(),
            );
    } else {
        facts.hex("table", "next table address", entry.address());
    }
    facts
        .flag(
            "verify_guest_paging",
            "verify guest paging",
            entry.verify_guest_paging(),
        )
        .flag(
            "paging_write_access",
            "paging-write access",
            entry.paging_write_access(),
        )
        .flag(
            "supervisor_shadow_stack",
            "supervisor shadow stack",
            entry.supervisor_shadow_stack(),
        )
        .flag("suppress_ve", "suppress #VE", entry.suppress_ve());
    match entry.misconfiguration(level, &context) {
        None => facts.fact(
            "misconfigured",
            "EPT misconfiguration (SDM 29.3.3.1)",
            format_args!("no ({REFERENCE})"),
            false,
        ),
        Some(why) => facts
            .fact(
                "misconfigured",
                "EPT misconfiguration (SDM 29.3.3.1)",
                format_args!("YES: {why} ({REFERENCE})"),
                true,
            )
            .fact("misconfiguration", "reason", why, why.to_string()),
    };
    Ok(facts.finish())
}
