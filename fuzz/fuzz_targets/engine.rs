//! Fuzz target: an `Engine` fed arbitrary steps from arbitrary peers; see `checks::check_engine`.
//! `ZGOSSIP_FUZZ_SHOW=1` prints the steps, for working on one input (`engine FILE`).
#![no_main]

use std::sync::LazyLock;

use zgossip_fuzz::checks;

static SHOW: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("ZGOSSIP_FUZZ_SHOW").is_some_and(|v| v == "1"));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if *SHOW {
        for (n, step) in checks::engine_steps(data).iter().enumerate() {
            eprintln!("step {}: {step:?}", n + 1);
        }
    }
    checks::check_engine(data);
});
