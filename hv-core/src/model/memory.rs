//! L1's memory and MSRs in the model: byte-addressed L1 physical memory
//! over hv-mmu's sparse [`TestMemory`], with L1 paging off (identity), and
//! a plain MSR file.

extern crate alloc;

use alloc::collections::BTreeMap;

use hv_mmu::addr::L1Gpa;
use hv_mmu::env::{L1Memory, NotL1Memory};
use hv_mmu::testing::TestMemory;

use crate::reflect::{MsrAccess, MsrFault};
use crate::state::{L1Access, L1Cpu, PageFault};

/// L1 physical memory: every byte below the size is RAM, read as zero until
/// written. L1 runs with identity translation (the model's L1 does not use
/// paging for its VMX operands), so [`L1Access::translate`] never faults.
#[derive(Clone, Debug)]
pub struct ModelMemory {
    words: TestMemory,
}

impl ModelMemory {
    /// `size` bytes of zeroed L1 memory (rounded up to whole pages).
    pub fn new(size: u64) -> Self {
        Self {
            words: TestMemory::new(size),
        }
    }

    /// The size in bytes.
    pub const fn len(&self) -> u64 {
        self.words.len()
    }

    /// Whether there is no memory at all.
    pub const fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The word store, for hv-mmu helpers such as `Ept12Builder`.
    pub const fn words_mut(&mut self) -> &mut TestMemory {
        &mut self.words
    }

    /// The word store.
    pub const fn words(&self) -> &TestMemory {
        &self.words
    }

    /// Reads the little-endian `u64` at `gpa` (any alignment).
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when a byte is outside L1 memory.
    pub fn read_u64_at(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
        let mut bytes = [0; 8];
        self.read_bytes(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Writes the little-endian `u64` at `gpa` (any alignment).
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when a byte is outside L1 memory; nothing is written
    /// then.
    pub fn write_u64_at(&mut self, gpa: L1Gpa, value: u64) -> Result<(), NotL1Memory> {
        self.write_bytes(gpa, &value.to_le_bytes())
    }
}

impl L1Access for ModelMemory {
    fn read_bytes(&self, gpa: L1Gpa, buf: &mut [u8]) -> Result<(), NotL1Memory> {
        self.words.read_bytes(gpa, buf)
    }

    fn write_bytes(&mut self, gpa: L1Gpa, buf: &[u8]) -> Result<(), NotL1Memory> {
        self.words.write_bytes(gpa, buf)
    }

    fn translate(&self, _cpu: &L1Cpu, linear: u64, _write: bool) -> Result<L1Gpa, PageFault> {
        Ok(L1Gpa::new(linear))
    }
}

impl L1Memory for ModelMemory {
    fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
        self.words.read_u64(gpa)
    }

    fn compare_exchange_u64(
        &mut self,
        gpa: L1Gpa,
        old: u64,
        new: u64,
    ) -> Result<bool, NotL1Memory> {
        self.words.compare_exchange_u64(gpa, old, new)
    }
}

/// `IA32_PAT` at reset (SDM Vol. 3A 13.12.4).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// `IA32_DEBUGCTL` value the model's L1 runs with.
pub const DEBUGCTL: u64 = 0;

/// L1's MSRs: any index reads as what was last written (0 if never), except
/// `IA32_PAT` (0x277), which starts at its reset value. No MSR faults: the
/// model's L1 is a well-behaved 64-bit processor with every MSR present.
#[derive(Clone, Debug)]
pub struct ModelMsrs {
    values: BTreeMap<u32, u64>,
    writes: u64,
}

impl Default for ModelMsrs {
    fn default() -> Self {
        let mut values = BTreeMap::new();
        values.insert(0x277, PAT_RESET);
        Self { values, writes: 0 }
    }
}

impl ModelMsrs {
    /// The value of MSR `index` (0 if never written).
    pub fn get(&self, index: u32) -> u64 {
        self.values.get(&index).copied().unwrap_or_default()
    }

    /// How many MSR writes exits performed.
    pub const fn writes(&self) -> u64 {
        self.writes
    }
}

impl MsrAccess for ModelMsrs {
    fn read_msr(&mut self, index: u32) -> Result<u64, MsrFault> {
        Ok(self.get(index))
    }

    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), MsrFault> {
        self.writes += 1;
        self.values.insert(index, value);
        Ok(())
    }
}
