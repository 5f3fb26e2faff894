//! The checks the fuzz targets run, as a library so `fuzz_targets/*.rs` stay one line each. The
//! code lives in `checks.rs`, which the root crate's `tests/fuzz_regressions.rs` includes too,
//! so a regression input is judged by exactly what judged it under the fuzzer.

pub mod checks;
