// The recipe parser allocates heavily; mimalloc makes large evaluations markedly faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(bake::cli::main());
}
