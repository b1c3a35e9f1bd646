//! tandem-bench (placeholder).
fn main() {}
