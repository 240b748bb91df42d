//! The shadow-table frames EPT02 lives in, shared between hv-mmu (which
//! writes them through [`ModelFrames`]) and the model's processor (which
//! walks them as hardware would through [`Ept02View`]).
//!
//! [`FrameAllocator::table`] returns plain references, which cannot point
//! into a `RefCell` shared with the model. So the frames hv-mmu owns stay
//! private to [`ModelFrames`], and every change is *published* to a shared
//! copy that the model reads: allocation and freeing at once, a table handed
//! out by `table_mut` at the next call on the handle or at
//! [`ModelFrames::publish`]. The model refuses to run L2 while a write is
//! unpublished ([`Ept02View::has_unpublished_writes`]), so it can never walk
//! an EPT02 older than hv-mmu's.

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use core::cell::{Cell, RefCell};

use hv_mmu::addr::HostPa;
use hv_mmu::env::{FrameAllocator, Table};
use hv_mmu::testing::FramePool;

/// An all-zero table: what a frame the model does not know reads as.
static ZERO_TABLE: Table = [0; 512];

/// The published copy of every allocated frame.
#[derive(Debug, Default)]
struct Published {
    tables: BTreeMap<HostPa, Box<Table>>,
    /// A frame handed out by `table_mut` whose content is not copied yet.
    pending: Option<HostPa>,
}

/// The frame allocator hv-mmu builds EPT02 in (the model's
/// `Platform::Frames`): a [`FramePool`] whose changes are published to the
/// model. Create it with [`crate::model::Model::new`], which keeps the other
/// end.
#[derive(Debug)]
pub struct ModelFrames {
    pool: FramePool,
    shared: Rc<RefCell<Published>>,
    /// Whether `shared.pending` may be set (avoids a borrow per read).
    dirty: Cell<bool>,
}

impl ModelFrames {
    /// A pool of `capacity` frames and the model's view of it.
    pub(crate) fn new(capacity: usize) -> (Self, Ept02View) {
        let shared = Rc::new(RefCell::new(Published::default()));
        (
            Self {
                pool: FramePool::new(capacity),
                shared: Rc::clone(&shared),
                dirty: Cell::new(false),
            },
            Ept02View { shared },
        )
    }

    /// Copies the table last handed out by `table_mut` to the model's view.
    /// Call it after hv-mmu's last operation before a `run(L2)`
    /// ([`crate::model::Harness`] does).
    pub fn publish(&self) {
        if !self.dirty.replace(false) {
            return;
        }
        let mut shared = self.shared.borrow_mut();
        if let Some(frame) = shared.pending.take()
            && self.pool.is_live(frame)
        {
            let copy = Box::new(*self.pool.table(frame));
            shared.tables.insert(frame, copy);
        }
    }

    /// The underlying pool (counters).
    pub const fn pool(&self) -> &FramePool {
        &self.pool
    }
}

/// Whether a frame is allocated in a [`FramePool`] (without panicking).
trait LiveFrame {
    fn is_live(&self, frame: HostPa) -> bool;
}

impl LiveFrame for FramePool {
    fn is_live(&self, frame: HostPa) -> bool {
        use hv_mmu::testing::AllocatedFrames;
        self.is_allocated(frame)
    }
}

impl FrameAllocator for ModelFrames {
    fn allocate(&mut self) -> Option<HostPa> {
        self.publish();
        let frame = self.pool.allocate()?;
        self.shared
            .borrow_mut()
            .tables
            .insert(frame, Box::new([0; 512]));
        Some(frame)
    }

    fn free(&mut self, frame: HostPa) {
        self.publish();
        self.pool.free(frame);
        self.shared.borrow_mut().tables.remove(&frame);
    }

    fn table(&self, frame: HostPa) -> &Table {
        self.publish();
        self.pool.table(frame)
    }

    fn table_mut(&mut self, frame: HostPa) -> &mut Table {
        self.publish();
        self.shared.borrow_mut().pending = Some(frame);
        self.dirty.set(true);
        self.pool.table_mut(frame)
    }
}

/// The model's read-only view of EPT02: the published frames, walked with
/// `hv_mmu::testing::hardware::translate_ept02`.
#[derive(Clone, Debug)]
pub struct Ept02View {
    shared: Rc<RefCell<Published>>,
}

impl Ept02View {
    /// Whether hv-mmu wrote a table since the last publication.
    pub fn has_unpublished_writes(&self) -> bool {
        self.shared.borrow().pending.is_some()
    }

    /// Runs `f` on the published frames as a (read-only) frame allocator.
    pub fn with_tables<R>(&self, f: impl FnOnce(&PublishedTables<'_>) -> R) -> R {
        let shared = self.shared.borrow();
        f(&PublishedTables {
            tables: &shared.tables,
            scratch: [0; 512],
        })
    }

    /// Frames published (allocated) now.
    pub fn frames(&self) -> usize {
        self.shared.borrow().tables.len()
    }
}

/// The published frames, as the read-only [`FrameAllocator`] the hardware
/// walk takes. Allocation fails and writes go nowhere: only reads are used.
#[derive(Debug)]
pub struct PublishedTables<'a> {
    tables: &'a BTreeMap<HostPa, Box<Table>>,
    /// Where `table_mut` writes land (never read back).
    scratch: Table,
}

impl FrameAllocator for PublishedTables<'_> {
    fn allocate(&mut self) -> Option<HostPa> {
        None
    }

    fn free(&mut self, _frame: HostPa) {}

    fn table(&self, frame: HostPa) -> &Table {
        // A pointer to a frame that is not allocated reads as an empty
        // table (not present), never as another frame's content.
        self.tables.get(&frame).map_or(&ZERO_TABLE, |table| table)
    }

    fn table_mut(&mut self, _frame: HostPa) -> &mut Table {
        // Never called by the walk; a scratch table keeps the signature
        // total without touching the published frames.
        &mut self.scratch
    }
}
