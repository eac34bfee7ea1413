//! bake: declarative KDL recipes evaluated into a content-addressed build graph.
//!
//! The pipeline, one module per stage: `recipe` (parse and model) -> `eval`
//! (imports, matrix expansion, keys) -> `graph` (the DAG) -> plan / schedule /
//! exec against the `store`.

pub mod build;
pub mod check;
pub mod cli;
pub mod eval;
pub mod exec;
pub mod fetch;
pub mod fingerprint;
pub mod graph;
pub mod hash;
pub mod plan;
pub mod progress;
pub mod recipe;
pub mod release;
pub mod schedule;
pub mod step;
pub mod store;
pub mod sysext;
pub mod toolchain;
pub mod why;
