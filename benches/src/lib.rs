//! Shared helpers for hv benchmarks.
//!
//! Every hv benchmark measures what it competes with (its floor) in the same
//! run and reports the ratio, because these machines are shared and noisy:
//! absolute times drift between runs, ratios much less.

use std::hint::black_box;
use std::time::Instant;

/// Result of timing one operation: the median over batches, in nanoseconds
/// per call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Median nanoseconds per call.
    pub median_ns: f64,
}

/// Times `operation` in `batches` batches of `calls` calls each and returns
/// the median per-call time. The median resists the outliers a shared
/// machine produces.
pub fn time<T>(batches: usize, calls: usize, mut operation: impl FnMut() -> T) -> Timing {
    let mut per_call = Vec::with_capacity(batches);
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..calls {
            black_box(operation());
        }
        #[allow(clippy::cast_precision_loss)]
        per_call.push(start.elapsed().as_nanos() as f64 / calls as f64);
    }
    per_call.sort_by(f64::total_cmp);
    Timing {
        median_ns: per_call[per_call.len() / 2],
    }
}

/// Prints one comparison row: the operation, its floor and the ratio.
pub fn report(name: &str, measured: Timing, floor_name: &str, floor: Timing) {
    println!(
        "{name:<40} {:>10.1} ns   floor ({floor_name}) {:>8.1} ns   ratio {:>6.2}x",
        measured.median_ns,
        floor.median_ns,
        measured.median_ns / floor.median_ns
    );
}
