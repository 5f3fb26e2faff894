//! The fuzzers' saved inputs as ordinary tests: every file in `fuzz/regressions/<target>/` is
//! run through the same checks the fuzz target runs (`fuzz/src/checks.rs`, included here), and
//! must pass. Inputs that showed a bug stay here once it is fixed (`fixed-*`). Running the
//! fuzzers themselves is `scripts/fuzz`.
//!
//! A saved engine input means what `checks::Step` reads from it: changing those types changes
//! what every saved input does. The known-bug test notices; refresh the regressions too.
#![allow(clippy::expect_used)]

#[allow(dead_code, missing_docs)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The files in `fuzz/<folder>/<target>/`, sorted; `None` if the folder does not exist.
fn inputs(folder: &str, target: &str) -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(folder)
        .join(target);
    let entries = std::fs::read_dir(&dir).ok()?;
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Some(files)
}

/// A failing input as text a person can act on: its name, the panic, and what it does.
fn describe(target: &str, path: &Path, bytes: &[u8], panic: &str) -> String {
    let steps = match target {
        "engine" => checks::engine_steps(bytes)
            .iter()
            .enumerate()
            .map(|(n, step)| format!("\n    step {}: {step:?}", n + 1))
            .collect(),
        _ => format!("\n    bytes: {bytes:02x?}"),
    };
    format!("{}: {panic}{steps}", path.display())
}

/// Runs `check` on each file; returns (passed, failed with a description).
fn run(
    target: &str,
    files: &[PathBuf],
    check: impl Fn(&Path, &[u8]),
) -> (Vec<PathBuf>, Vec<String>) {
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).expect("a readable input");
        match catch_unwind(AssertUnwindSafe(|| check(path, &bytes))) {
            Ok(()) => passed.push(path.clone()),
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failed.push(describe(target, path, &bytes, &text));
            }
        }
    }
    (passed, failed)
}

/// The target's check, as the fuzz target runs it.
fn check_for(target: &str) -> fn(&[u8]) {
    match target {
        "decode" => checks::check_decode,
        "engine" => checks::check_engine,
        other => panic!("no fuzz target {other}"),
    }
}

/// Every saved input of `target` passes its checks; there must be some.
fn regressions_pass(target: &str) {
    let files = inputs("regressions", target)
        .unwrap_or_else(|| panic!("fuzz/regressions/{target}/ is missing"));
    assert!(
        !files.is_empty(),
        "fuzz/regressions/{target}/ is empty: nothing would be checked"
    );
    let check = check_for(target);
    let (_, failed) = run(target, &files, |_, bytes| check(bytes));
    assert!(failed.is_empty(), "failing inputs:\n{}", failed.join("\n"));
}

#[test]
fn every_saved_decode_input_decodes_and_reencodes_byte_for_byte() {
    regressions_pass("decode");
}

#[test]
fn every_saved_engine_input_keeps_the_engine_within_its_invariants() {
    regressions_pass("engine");
}
