//! Benchmarks only: see `criterion/` (cargo bench -p sbc-benches) and `load/`.
