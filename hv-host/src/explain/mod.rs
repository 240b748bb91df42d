//! `hv explain`: decode VMX values for a person debugging a hypervisor.
//!
//! Every explanation is built once as a list of labelled facts and rendered
//! either as text or as one JSON value, so the two never disagree.

mod ept;
mod exit;
mod vmcs;

pub use ept::{ept_entry, eptp};
pub use exit::{exit, vm_error};
pub use vmcs::{vmcs_all, vmcs_field};

use serde_json::{Map, Value};

/// A decoded value: what `hv explain` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Plain-text rendering, one fact per line.
    pub text: String,
    /// JSON rendering of the same facts.
    pub json: Value,
}

/// Why an `hv explain` input could not be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// The input is not a number in decimal, `0x` hex or `0b` binary.
    #[error("`{0}` is not a number (use decimal, 0x-prefixed hex or 0b-prefixed binary)")]
    NotANumber(String),
    /// The number does not fit the value's width.
    #[error("{value:#x} does not fit in {bits} bits")]
    TooWide {
        /// The value given.
        value: u64,
        /// The width it must fit.
        bits: u32,
    },
    /// No VMCS field has that name or encoding.
    #[error("no VMCS field is named or encoded `{0}`: {1}")]
    UnknownField(String, String),
    /// No exit reason has that name.
    #[error(
        "no VM-exit reason is named `{0}` (give a number 0..=65535 or a name such as `ept-violation`)"
    )]
    UnknownExitReason(String),
    /// An EPT level outside 1..=5.
    #[error("EPT level {0} does not exist (levels are 1 = PTE .. 4 = PML4E, 5 = PML5E)")]
    BadLevel(u8),
}

/// Parses a number written in decimal, `0x` hex or `0b` binary; `_`
/// separators are allowed.
///
/// # Errors
///
/// [`ExplainError::NotANumber`] for anything else.
pub fn parse_number(input: &str) -> Result<u64, ExplainError> {
    let cleaned: String = input.trim().chars().filter(|&c| c != '_').collect();
    let lower = cleaned.to_ascii_lowercase();
    let parsed = if let Some(hex) = lower.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else if let Some(bin) = lower.strip_prefix("0b") {
        u64::from_str_radix(bin, 2)
    } else {
        lower.parse::<u64>()
    };
    parsed.map_err(|_| ExplainError::NotANumber(input.to_owned()))
}

/// Parses a number that must fit in `bits` bits.
fn parse_bounded(input: &str, bits: u32) -> Result<u64, ExplainError> {
    let value = parse_number(input)?;
    if bits < 64 && value >> bits != 0 {
        return Err(ExplainError::TooWide { value, bits });
    }
    Ok(value)
}

/// Builds an [`Explanation`] from a title and labelled facts.
#[derive(Debug, Default)]
struct Facts {
    title: String,
    lines: Vec<String>,
    json: Map<String, Value>,
}

impl Facts {
    fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// Adds a fact shown as `label: text` and stored in JSON under `key`.
    fn fact(
        &mut self,
        key: &str,
        label: &str,
        text: impl std::fmt::Display,
        json: impl Into<Value>,
    ) -> &mut Self {
        self.lines.push(format!("  {label}: {text}"));
        self.json.insert(key.to_owned(), json.into());
        self
    }

    /// Adds a fact whose text and JSON value are the same string.
    fn text(&mut self, key: &str, label: &str, value: impl std::fmt::Display) -> &mut Self {
        let value = value.to_string();
        self.fact(key, label, &value, value.clone())
    }

    /// Adds a fact named by a value's `Debug` form (enum variants).
    fn debug(&mut self, key: &str, label: &str, value: impl std::fmt::Debug) -> &mut Self {
        self.text(key, label, format_args!("{value:?}"))
    }

    /// Adds a boolean flag.
    fn flag(&mut self, key: &str, label: &str, value: bool) -> &mut Self {
        self.fact(key, label, if value { "yes" } else { "no" }, value)
    }

    /// Adds a number shown in hex.
    fn hex(&mut self, key: &str, label: &str, value: u64) -> &mut Self {
        self.fact(key, label, format_args!("{value:#x}"), value)
    }

    /// Adds a nested explanation under `key`.
    fn nested(&mut self, key: &str, inner: Explanation) -> &mut Self {
        for line in inner.text.lines() {
            self.lines.push(format!("  {line}"));
        }
        self.json.insert(key.to_owned(), inner.json);
        self
    }

    fn finish(&mut self) -> Explanation {
        let mut text = self.title.clone();
        for line in &self.lines {
            text.push('\n');
            text.push_str(line);
        }
        Explanation {
            text,
            json: Value::Object(std::mem::take(&mut self.json)),
        }
    }
}
