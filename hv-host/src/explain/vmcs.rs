//! `hv explain vmcs`: VMCS fields by name or encoding.

use super::{ExplainError, Explanation, Facts, parse_number};
use hv_arch_vmx::vmcs::{FieldAccess, FieldPart, VmcsField, Width};
use serde_json::{Value, json};
use std::fmt::Write as _;

/// Explains one VMCS field given by SDM-style name (`GUEST_CR0`), Rust name
/// (`GuestCr0`) or encoding (`0x6800`, including HIGH encodings like
/// `0x201b`).
///
/// # Errors
///
/// [`ExplainError::UnknownField`] when nothing matches.
pub fn vmcs_field(query: &str) -> Result<Explanation, ExplainError> {
    let access = if let Ok(encoding) = parse_number(query) {
        FieldAccess::decode(encoding)
            .map_err(|error| ExplainError::UnknownField(query.to_owned(), error.to_string()))?
    } else {
        let field = VmcsField::from_name(query).ok_or_else(|| {
            ExplainError::UnknownField(
                query.to_owned(),
                "not a field name of SDM Appendix B".to_owned(),
            )
        })?;
        FieldAccess {
            field,
            part: FieldPart::Full,
        }
    };
    let field = access.field;
    let mut facts = Facts::new(format!(
        "{} ({:#06x}): {}",
        field.name(),
        access.encoding(),
        field.description()
    ));
    facts
        .fact("name", "name", field.name(), field.name())
        .fact(
            "encoding",
            "encoding",
            format_args!("{:#06x}", field.encoding()),
            field.encoding(),
        )
        .fact(
            "width",
            "width",
            width_text(field.width()),
            field.width().name(),
        )
        .fact("kind", "kind", field.kind().name(), field.kind().name())
        .fact(
            "description",
            "description",
            field.description(),
            field.description(),
        );
    if field.width() == Width::Bits64 {
        facts.fact(
            "high_encoding",
            "high half",
            format_args!("{:#06x} (bits 63:32)", field.encoding() | 1),
            field.encoding() | 1,
        );
    }
    if access.part == FieldPart::High {
        facts.fact("access", "access", "high half (bits 63:32)", "high");
    }
    if field.is_read_only() {
        facts.fact(
            "writable",
            "VMWRITE",
            "fails with error 13 unless IA32_VMX_MISC bit 29 allows writing exit-information fields",
            "only-with-misc-bit-29",
        );
    }
    Ok(facts.finish())
}

fn width_text(width: Width) -> &'static str {
    match width {
        Width::Bits16 => "16 bits",
        Width::Bits32 => "32 bits",
        Width::Bits64 => "64 bits (FULL and HIGH halves)",
        Width::Natural => "natural width (64 bits on Intel 64)",
    }
}

/// Every VMCS field: a table as text, or a JSON array of
/// `{name, encoding, width, kind}` objects.
pub fn vmcs_all() -> Explanation {
    let mut text = format!(
        "{:<38} {:>8}  {:<8} {:<10} description",
        "name", "encoding", "width", "kind"
    );
    let mut rows = Vec::with_capacity(VmcsField::COUNT);
    for field in VmcsField::ALL {
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "\n{:<38} {:>#8x}  {:<8} {:<10} {}",
            field.name(),
            field.encoding(),
            field.width().name(),
            field.kind().name(),
            field.description()
        );
        rows.push(json!({
            "name": field.name(),
            "encoding": field.encoding(),
            "width": field.width().name(),
            "kind": field.kind().name(),
            "description": field.description(),
        }));
    }
    let _ = write!(text, "\n{} fields", VmcsField::COUNT);
    Explanation {
        text,
        json: Value::Array(rows),
    }
}
