//! The committed fuzz inputs of a `fuzz/` target, for the stable
//! `cargo test` replays of the corpora (`hv-mmu/tests/ept12_corpus.rs`,
//! `hv-core/tests/vmx_ops_corpus.rs`).

use std::path::PathBuf;
use std::vec::Vec;

/// Every file in `fuzz/corpus/<target>` and `fuzz/regressions/<target>` of
/// this repository, sorted; missing folders give no files.
pub fn files(target: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .into_iter()
        .filter_map(|kind| std::fs::read_dir(root.join(kind).join(target)).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}
