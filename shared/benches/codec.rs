//! Criterion benchmarks of the codec and reactors (filled in below).
fn main() {}
