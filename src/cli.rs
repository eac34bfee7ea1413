//! The `bake` command line: a thin layer over the library.

use clap::Parser;

#[derive(Parser)]
#[command(name = "bake", version, about = "Evaluate KDL recipes into a content-addressed build graph and build from it")]
struct Cli {}

/// Runs bake with the process arguments and returns the exit status.
pub fn main() -> i32 {
    let _cli = Cli::parse();
    0
}
