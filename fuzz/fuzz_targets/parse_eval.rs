//! Any bytes, as a recipe: parsing and evaluating must end in a value or a
//! located error, never a panic, a crash or unbounded memory. Inputs up to 64 KB.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("recipe.kdl");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = bake::eval::evaluate(&path, &bake::eval::Options::default());
});
