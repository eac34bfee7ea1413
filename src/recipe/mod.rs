//! Stage 1: recipe text -> typed model. Every mistake becomes a located [`RecipeError`].

mod error;
pub mod limits;
mod model;
mod parse;
mod read;
mod source;
mod split;
mod template;

pub use error::{did_you_mean, RecipeError, Report};
pub use model::*;
pub use parse::parse;
pub use source::{Files, Loc, Spanned};
pub use template::Template;
