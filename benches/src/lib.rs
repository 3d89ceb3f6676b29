//! Criterion benchmarks of Préau's hot paths live in `benches/hot_paths.rs`:
//! `cargo bench -p preau-benches`. This library is empty on purpose; the crate exists
//! so the benchmarks are their own workspace member.
