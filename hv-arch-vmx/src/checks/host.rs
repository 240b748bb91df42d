//! (being written)
#![allow(missing_docs, clippy::missing_errors_doc, unused_variables)]
use super::EntryContext;
use crate::capabilities::VmxCapabilities;
use crate::vmcs::VmcsRead;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostCheck {}

impl HostCheck {
    pub const fn sdm_section(&self) -> &'static str {
        match *self {}
    }
}

pub fn check_host_state<V: VmcsRead + ?Sized>(vmcs: &V, caps: &VmxCapabilities, context: &EntryContext) -> Result<(), HostCheck> {
    Ok(())
}
