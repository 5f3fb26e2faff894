//! Fuzz target: an `Engine` fed arbitrary steps from arbitrary peers; see `checks::check_engine`.
//! Two switches in the environment, for working on one input (`engine FILE`):
//! `ZGOSSIP_FUZZ_EXPOSE=name,...` (or `all`) stops skipping the steps that only show those
//! known bugs again (`checks::KnownBug`), to reproduce or minimise one; `ZGOSSIP_FUZZ_SHOW=1`
//! prints the steps.
#![no_main]

use std::sync::LazyLock;

use zgossip_fuzz::checks::{self, KnownBug};

static EXPOSED: LazyLock<Vec<KnownBug>> = LazyLock::new(|| {
    let names = std::env::var("ZGOSSIP_FUZZ_EXPOSE").unwrap_or_default();
    let wanted: Vec<&str> = names.split(',').filter(|n| !n.is_empty()).collect();
    for name in &wanted {
        let known = *name == "all" || KnownBug::ALL.iter().any(|b| b.name() == *name);
        assert!(known, "ZGOSSIP_FUZZ_EXPOSE: no known bug {name:?}");
    }
    (KnownBug::ALL.into_iter())
        .filter(|b| wanted.iter().any(|n| *n == "all" || *n == b.name()))
        .collect()
});
static SHOW: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("ZGOSSIP_FUZZ_SHOW").is_some_and(|v| v == "1"));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if *SHOW {
        for (n, step) in checks::engine_steps(data).iter().enumerate() {
            eprintln!("step {}: {step:?}", n + 1);
        }
    }
    checks::check_engine_exposing(data, &EXPOSED);
});
