// The recipe parser allocates heavily; mimalloc makes large evaluations markedly faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // No transparent huge pages for bake itself: mimalloc hands freed memory
    // back and takes it again many times in a large evaluation, and each huge
    // page taken again is 2 MiB zeroed. Without them a 100,000-node evaluation
    // peaks at about 280 MB instead of 300-320 MB, with steadier system time.
    // Steps get them back (exec::sandbox).
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    std::process::exit(bake::cli::main());
}
