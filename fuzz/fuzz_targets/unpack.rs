//! Any bytes, as a source archive: unpacking must end in a tree inside its
//! directory or an error, never a panic, a crash or a write outside.
#![no_main]

use bake::fetch::unpack::{unpack_archive, UnpackLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let archive = dir.path().join("archive");
    if std::fs::write(&archive, data).is_err() {
        return;
    }
    let dest = dir.path().join("inside/dest");
    let limits = UnpackLimits {
        bytes: 64 << 20,
        ratio: 1000,
    };
    let _ = unpack_archive(&archive, &dest, 0, &limits);
    // Nothing may land beside the destination.
    let stray: Vec<_> = std::fs::read_dir(dir.path().join("inside"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(stray.iter().all(|n| n == "dest"), "wrote outside: {stray:?}");
});
