//! Loading a recipe and its imports: each file once, import cycles refused.

use std::path::{Path, PathBuf};

use crate::fingerprint::StatCache;
use crate::recipe::limits::MAX_FILE_BYTES;
use crate::recipe::{self, Axis, Files, Loc, Node, RecipeError, Spanned};

/// Every declaration reachable from the top recipe, imports first.
pub struct Loaded {
    pub axes: Vec<Axis>,
    pub nodes: Vec<Node>,
    /// The top file's `default` targets (an imported file's are its own business).
    pub defaults: Vec<Spanned<String>>,
}

/// Loads `path` and everything it imports into `files`; `seen` records every
/// file read.
pub fn load(path: &Path, files: &mut Files, seen: &mut StatCache) -> Result<Loaded, RecipeError> {
    let mut loaded = Loaded {
        axes: Vec::new(),
        nodes: Vec::new(),
        defaults: Vec::new(),
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| RecipeError::new(format!("cannot read recipe `{}`: {e}", path.display())))?;
    let mut stack = Vec::new();
    let mut cx = Loading {
        files,
        seen,
        stack: &mut stack,
        loaded: &mut loaded,
    };
    load_file(&canonical, path.display().to_string(), None, &mut cx)?;
    Ok(loaded)
}

/// One file on the import chain: its path, and the import that led to it.
struct Frame {
    path: PathBuf,
    via: Option<Loc>,
}

/// What loading carries from file to file.
struct Loading<'a> {
    files: &'a mut Files,
    seen: &'a mut StatCache,
    stack: &'a mut Vec<Frame>,
    loaded: &'a mut Loaded,
}

fn load_file(
    path: &Path,
    display: String,
    via: Option<Loc>,
    cx: &mut Loading<'_>,
) -> Result<(), RecipeError> {
    if let Some(at) = cx.stack.iter().position(|f| f.path == path) {
        return Err(import_cycle(&cx.stack[at..], via));
    }
    if cx.files.find(path).is_some() {
        return Ok(());
    }
    let text = read_recipe(path, cx.seen).map_err(|why| {
        let err = RecipeError::new(format!("cannot read recipe `{display}`: {why}"));
        match via {
            Some(loc) => err.label(loc, "imported here"),
            None => err,
        }
    })?;
    let id = cx.files.add(path.to_path_buf(), display, text);
    let text = cx.files.get(id).text.clone();
    let recipe = recipe::parse(id, &text)?;
    cx.stack.push(Frame {
        path: path.to_path_buf(),
        via,
    });
    let dir = path.parent().unwrap_or(Path::new("/"));
    for import in &recipe.imports {
        let (target, shown) = resolve_import(dir, import, cx)?;
        load_file(&target, shown, Some(import.loc), cx)?;
    }
    cx.stack.pop();
    if cx.stack.is_empty() {
        cx.loaded.defaults = recipe.defaults;
    }
    cx.loaded.axes.extend(recipe.axes);
    cx.loaded.nodes.extend(recipe.nodes);
    Ok(())
}

/// A recipe's text: a regular file of at most [`MAX_FILE_BYTES`]. It is
/// looked at before it is read, so a change while it is read shows next time.
fn read_recipe(path: &Path, seen: &mut StatCache) -> Result<String, String> {
    let meta = seen.stat(path, true).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes, more than a recipe may have ({MAX_FILE_BYTES})",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

fn resolve_import(
    dir: &Path,
    import: &Spanned<String>,
    cx: &mut Loading<'_>,
) -> Result<(PathBuf, String), RecipeError> {
    let joined = dir.join(&import.value);
    // Through links: a link moved to another file is another file.
    let _ = cx.seen.stat(&joined, true);
    let target = joined.canonicalize().map_err(|e| {
        RecipeError::at(
            import.loc,
            format!("import `{}` not found: {e}", import.value),
            "cannot read this file",
        )
        .help(format!(
            "imports are relative to the importing file's directory, {}",
            dir.display()
        ))
    })?;
    // Show imported files by a path relative to the importer's, as the user wrote it.
    let importer = &cx.files.get(import.loc.file).display;
    let shown = match Path::new(importer).parent() {
        Some(p) if !Path::new(&import.value).is_absolute() => p.join(&import.value),
        _ => PathBuf::from(&import.value),
    };
    Ok((target, shown.display().to_string()))
}

fn import_cycle(chain: &[Frame], closing: Option<Loc>) -> RecipeError {
    let names: Vec<String> = chain
        .iter()
        .map(|f| file_name(&f.path))
        .chain(chain.first().map(|f| file_name(&f.path)))
        .collect();
    let mut err = RecipeError::new(format!("import cycle: {}", names.join(" -> ")));
    if let Some(loc) = closing {
        err = err.label(loc, format!("imports {}, closing the cycle", names[0]));
    }
    for (i, loc) in chain.iter().skip(1).filter_map(|f| f.via).enumerate() {
        err = err.label(loc, format!("imports {}", names[i + 1]));
    }
    err.help("remove one of these imports")
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
