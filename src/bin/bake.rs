// The recipe parser allocates heavily; mimalloc makes large evaluations markedly faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // No transparent huge pages for bake itself: mimalloc hands freed memory
    // back and takes it again many times in a large evaluation, and each huge
    // page taken again is 2 MiB zeroed. Without them a 100,000-node evaluation
    // peaks at about 280 MB instead of 300-320 MB, with steadier system time.
    // mimalloc is built not to ask for them (its `no_thp`: it set up its first
    // arena with two before main, 0.3 ms of a 5 ms no-op); this is for hosts
    // that give them unasked. Steps get them back (exec::sandbox).
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    std::process::exit(bake::cli::main());
}
