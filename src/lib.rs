//! bake: declarative KDL recipes evaluated into a content-addressed build graph.
//!
//! The pipeline, one module per stage: `recipe` (parse and model) -> `eval`
//! (imports, matrix expansion, keys) -> `graph` (the DAG) -> plan / schedule /
//! exec against the `store`.

pub mod cli;
pub mod eval;
pub mod fingerprint;
pub mod graph;
pub mod hash;
pub mod progress;
pub mod recipe;
pub mod schedule;
pub mod why;
