//! The `hv` command-line tool.
fn main() {}
