//! Shared helpers for hv benchmarks.
