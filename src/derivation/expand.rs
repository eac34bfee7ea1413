//! What a kind's expansion may use: the instance's axis values, the declaring
//! file's directory, and the fingerprints of local files; and the record of the
//! axes a declaration names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::fingerprint::{fingerprint, Fingerprint, StatCache};
use crate::names::InstanceId;
use crate::recipe::limits::MAX_FINGERPRINT_BYTES;
use crate::recipe::{Node, RecipeError, Selected, Spanned, Template};

/// The axes a declaration names itself: in placeholders, and in `AXIS="value"`
/// conditions (whose values must exist).
#[derive(Default)]
pub struct AxisUses<'a> {
    pub placeholders: Vec<&'a Spanned<String>>,
    pub conditions: Vec<(&'a Spanned<String>, &'a Spanned<String>)>,
}

impl<'a> AxisUses<'a> {
    pub fn template(&mut self, t: &'a Template) {
        self.placeholders.extend(t.axes());
    }

    pub fn conditions<T>(&mut self, s: &'a Selected<T>) {
        self.conditions.extend(s.when.iter().map(|(k, v)| (k, v)));
    }
}

/// Expanding one declaration for one combination of axis values.
pub struct Expand<'a> {
    pub id: &'a InstanceId,
    pub node: &'a Node,
    values: &'a BTreeMap<String, String>,
    dir: PathBuf,
    cache: &'a mut StatCache,
}

impl<'a> Expand<'a> {
    /// `file` is the path of the file declaring `node`.
    pub fn new(
        id: &'a InstanceId,
        node: &'a Node,
        values: &'a BTreeMap<String, String>,
        file: &Path,
        cache: &'a mut StatCache,
    ) -> Self {
        Expand {
            id,
            node,
            values,
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            cache,
        }
    }

    pub fn render(&self, t: &Template) -> String {
        t.render(self.values)
    }

    /// Whether the conditions of `s` hold for this instance.
    pub fn applies<T>(&self, s: &Selected<T>) -> bool {
        s.when
            .iter()
            .all(|(k, v)| self.values.get(&k.value) == Some(&v.value))
    }

    /// The one value whose conditions hold for this instance.
    pub fn select<'b, T>(
        &self,
        options: &'b [Selected<T>],
        field: &str,
        example: &str,
    ) -> Result<&'b Spanned<T>, RecipeError> {
        let matching: Vec<&Selected<T>> = options.iter().filter(|o| self.applies(o)).collect();
        let id = self.id;
        match matching[..] {
            [one] => Ok(&one.value),
            [] => {
                let when: Vec<String> = self
                    .values
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                Err(RecipeError::at(
                    self.node.name.loc,
                    format!("no `{field}` applies to {id}"),
                    format!("{id} needs a {field}"),
                )
                .help(format!("add: {field} {example} {}", when.join(" "))))
            }
            [first, second, ..] => Err(RecipeError::at(
                second.value.loc,
                format!("two `{field}` values apply to {id}"),
                "this one applies",
            )
            .label(first.value.loc, "and so does this one")
            .help(format!(
                "add conditions such as version=\"...\" so one {field} applies to each instance"
            ))),
        }
    }

    /// Paths as written in the recipe, relative to the declaring file.
    pub fn local_paths(&self, paths: &[Spanned<String>]) -> Vec<PathBuf> {
        paths.iter().map(|p| self.dir.join(&p.value)).collect()
    }

    /// Refuses paths outside the repository holding the declaring file (the
    /// nearest directory up with a `.git`, else the file's own directory): an
    /// image is made of what the repository says, not of the machine's files.
    pub fn inside_repository(&mut self, paths: &[Spanned<String>]) -> Result<(), RecipeError> {
        if paths.is_empty() {
            return Ok(());
        }
        let cache = &mut *self.cache;
        let top = self
            .dir
            .ancestors()
            .find(|d| cache.stat(&d.join(".git"), true).is_ok())
            .unwrap_or(&self.dir);
        let top = top.canonicalize().unwrap_or_else(|_| top.to_path_buf());
        for p in paths {
            let Ok(real) = self.dir.join(&p.value).canonicalize() else {
                continue;
            };
            if !real.starts_with(&top) {
                return Err(RecipeError::at(
                    p.loc,
                    format!("`{}` is outside the repository {}", p.value, top.display()),
                    "outside the repository",
                )
                .help("keep the files an image carries in the repository, next to the recipe"));
            }
        }
        Ok(())
    }

    /// The fingerprint of local files, each named by the path the recipe wrote, so
    /// it is the same wherever the checkout is.
    pub fn fingerprint(&mut self, paths: &[Spanned<String>]) -> Result<Fingerprint, RecipeError> {
        let labelled: Vec<(&str, PathBuf)> = paths
            .iter()
            .map(|p| (p.value.as_str(), self.dir.join(&p.value)))
            .collect();
        fingerprint(&labelled, self.cache, MAX_FINGERPRINT_BYTES).map_err(|e| {
            let mut err = RecipeError::new(format!("cannot read local files: {e}"));
            if let Some(p) = paths.first() {
                err = err.label(p.loc, "while reading these");
            }
            err
        })
    }
}
