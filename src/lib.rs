//! bake: declarative KDL recipes evaluated into a content-addressed build graph.
//!
//! The pipeline, one module per stage: `recipe` (parse and model) -> `eval`
//! (imports, matrix expansion, eval keys) -> `realise` (settle against the
//! `store`, then `schedule` the rest, each step in `exec`'s sandbox). What each
//! kind of node is and does lives in `derivation`, one file per kind.
//!
//! The public modules are what the `bake` binary, the tests and the benchmarks use.

pub mod cli;
pub mod eval;
pub mod fetch;
pub mod graph;
pub mod hash;
pub mod names;
pub mod schedule;

mod compare;
mod derivation;
mod exec;
mod fingerprint;
mod interrupt;
mod progress;
mod realise;
mod recipe;
mod release;
mod remote;
mod store;
mod sysext;
mod units;
mod variation;
