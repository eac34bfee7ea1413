fn main() {
    std::process::exit(bake::cli::main());
}
