//! KDL text -> typed [`RecipeFile`], with a located error for every mistake.

use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::error::{did_you_mean, RecipeError};
use super::model::*;
use super::source::{FileId, Loc, Spanned};
use super::template::Template;
use crate::exec::SANDBOX_VARS;
use crate::hash::SourceHash;
use crate::units::{parse_duration, parse_size};

type Result<T> = std::result::Result<T, RecipeError>;

const TOP_LEVEL: &[&str] = &[
    "import",
    "default",
    "matrix",
    "source",
    "toolchain",
    "build",
    "sysext",
    "release",
    "test",
];
const SOURCE_FIELDS: &[&str] = &[
    "url", "hash", "unpack", "size", "limits", "version", "license",
];
const TOOLCHAIN_FIELDS: &[&str] = &[
    "description",
    "target",
    "cflags",
    "path",
    "identity",
    "mount",
    "env",
    "cache",
    "version",
    "install",
];
const BUILD_FIELDS: &[&str] = &[
    "source",
    "toolchain",
    "input",
    "env",
    "script",
    "patch",
    "files",
    "limits",
    "privileged",
];
const SYSEXT_FIELDS: &[&str] = &[
    "input",
    "files",
    "version",
    "arch",
    "os",
    "reload-manager",
    "format",
];
const RELEASE_FIELDS: &[&str] = &["sysext", "base-url"];

/// Parses one recipe file's text: a large one in pieces, in parallel (see
/// [`super::split`]), falling back to the whole text for any error.
pub fn parse(file: FileId, text: &str) -> Result<RecipeFile> {
    super::limits::check_nesting(file, text)?;
    if let Some(pieces) = super::split::pieces(text) {
        use rayon::prelude::*;
        let parsed: Result<Vec<RecipeFile>> = pieces
            .par_iter()
            .map(|(base, piece)| parse_document(file, piece, *base))
            .collect();
        if let Ok(parsed) = parsed {
            let mut recipe = RecipeFile::default();
            for part in parsed {
                recipe.imports.extend(part.imports);
                recipe.defaults.extend(part.defaults);
                recipe.axes.extend(part.axes);
                recipe.nodes.extend(part.nodes);
            }
            return Ok(recipe);
        }
    }
    parse_document(file, text, 0)
}

/// Parses `text`, found at `base` in the file.
fn parse_document(file: FileId, text: &str, base: usize) -> Result<RecipeFile> {
    let doc = super::read::document(text).map_err(|e| kdl_error(file, e))?;
    let p = Parser { file, text, base };
    let mut recipe = RecipeFile::default();
    for node in doc.nodes() {
        match node.name().value() {
            "import" => recipe.imports.push(p.import(node)?),
            "default" => {
                p.no_children(node)?;
                recipe.defaults.extend(p.strings(node)?);
            }
            "matrix" => recipe.axes.extend(p.matrix(node)?),
            "source" => recipe
                .nodes
                .push(p.node(node, SOURCE_FIELDS, |p, f| p.source(f))?),
            "toolchain" => recipe
                .nodes
                .push(p.node(node, TOOLCHAIN_FIELDS, |p, f| p.toolchain(f))?),
            "build" => recipe
                .nodes
                .push(p.node(node, BUILD_FIELDS, |p, f| p.build(f))?),
            "sysext" => recipe
                .nodes
                .push(p.node(node, SYSEXT_FIELDS, |p, f| p.sysext(f))?),
            "release" => recipe
                .nodes
                .push(p.node(node, RELEASE_FIELDS, |p, f| p.release(f))?),
            "test" => recipe.nodes.push(p.node(node, BUILD_FIELDS, |p, f| {
                Ok(Body::Test(p.step(f, "test")?))
            })?),
            other => return Err(p.unknown(node, other, TOP_LEVEL, "node")),
        }
    }
    Ok(recipe)
}

fn kdl_error(file: FileId, e: kdl::KdlError) -> RecipeError {
    let first = e.diagnostics.first();
    let message = first
        .and_then(|d| d.message.clone())
        .unwrap_or_else(|| "invalid KDL".to_string());
    let mut err = RecipeError::new(format!("KDL syntax error: {message}"));
    for d in &e.diagnostics {
        let label = d.label.clone().unwrap_or_else(|| "here".to_string());
        err = err.label(Loc::new(file, d.span), label);
    }
    if let Some(help) = first.and_then(|d| d.help.clone()) {
        err = err.help(help);
    }
    err
}

/// The children of one node, by field name, for checking fields given twice.
struct Fields<'a> {
    children: &'a [KdlNode],
}

impl<'a> Fields<'a> {
    fn all(&self, name: &'a str) -> impl Iterator<Item = &'a KdlNode> + 'a {
        self.children
            .iter()
            .filter(move |c| c.name().value() == name)
    }
}

struct Parser<'a> {
    file: FileId,
    text: &'a str,
    /// Where `text` begins in the file: spans are of `text`, locations of the file.
    base: usize,
}

impl<'a> Parser<'a> {
    fn loc(&self, span: SourceSpan) -> Loc {
        Loc::new(
            self.file,
            SourceSpan::new((span.offset() + self.base).into(), span.len()),
        )
    }

    fn raw(&self, span: SourceSpan) -> &'a str {
        self.text
            .get(span.offset()..span.offset() + span.len())
            .unwrap_or("")
    }

    fn unknown(&self, node: &KdlNode, name: &str, known: &[&str], what: &str) -> RecipeError {
        let err = RecipeError::at(
            self.loc(node.name().span()),
            format!("unknown {what} `{name}`"),
            format!("not a known {what}"),
        );
        match did_you_mean(name, known.iter().copied()) {
            Some(near) => err.help(format!("did you mean `{near}`?")),
            None => err.help(format!("expected one of: {}", known.join(", "))),
        }
    }

    fn import(&self, node: &KdlNode) -> Result<Spanned<String>> {
        self.no_children(node)?;
        self.one_string(node)
    }

    fn matrix(&self, node: &KdlNode) -> Result<Vec<Axis>> {
        if let Some(e) = node.entries().first() {
            return Err(RecipeError::at(
                self.loc(e.span()),
                "`matrix` takes no arguments",
                "unexpected",
            )
            .help("declare axes as children: matrix { arch \"x86-64\" \"arm64\" }"));
        }
        let mut axes: Vec<Axis> = Vec::new();
        for child in children(node) {
            self.no_children(child)?;
            let name = self.identifier(child.name().value(), child.name().span(), "axis")?;
            let values = self.strings(child)?;
            let mut seen: Vec<&Spanned<String>> = Vec::new();
            for v in &values {
                check_axis_value(v)?;
                if let Some(first) = seen.iter().find(|s| s.value == v.value) {
                    return Err(RecipeError::at(
                        v.loc,
                        format!("axis `{}` lists `{}` twice", name.value, v.value),
                        "listed again here",
                    )
                    .label(first.loc, "first listed here"));
                }
                seen.push(v);
            }
            axes.push(Axis { name, values });
        }
        Ok(axes)
    }

    /// A `KIND "NAME" { fields }` node; `body` builds the kind's fields.
    fn node(
        &self,
        node: &KdlNode,
        known: &[&str],
        body: impl FnOnce(&Self, &Fields) -> Result<Body>,
    ) -> Result<Node> {
        let kind = node.name().value();
        let Some(first) = node.entries().first() else {
            return Err(RecipeError::at(
                self.loc(node.name().span()),
                format!("`{kind}` needs a name"),
                "no name",
            )
            .help(format!("write it as {kind} \"NAME\" {{ ... }}")));
        };
        let name = self.one_string(node)?;
        let name = self.identifier(&name.value, first.span(), kind)?;
        let children: &[KdlNode] = node.children().map_or(&[], |d| d.nodes());
        for child in children {
            let field = child.name().value();
            if !known.contains(&field) {
                return Err(self.unknown(child, field, known, &format!("field of `{kind}`")));
            }
        }
        let fields = Fields { children };
        let body = body(self, &fields).map_err(|e| {
            if e.labels.is_empty() {
                e.label(self.loc(node.span()), format!("in this {kind}"))
            } else {
                e
            }
        })?;
        Ok(Node {
            name: Spanned::new(NodeName::new(name.value), name.loc),
            loc: self.loc(node.span()),
            body,
        })
    }

    fn source(&self, f: &Fields) -> Result<Body> {
        let mut urls = Vec::new();
        for n in f.all("url") {
            self.no_children(n)?;
            for u in self.string_entries(n)? {
                urls.push(self.template(u)?);
            }
        }
        if urls.is_empty() {
            return Err(RecipeError::new("`source` needs at least one `url`")
                .help("add: url \"https://example.org/pkg-{version}.tar.gz\""));
        }
        let mut hashes = Vec::new();
        for n in f.all("hash") {
            hashes.push(self.selected(n, |p, e| p.source_hash(e))?);
        }
        if hashes.is_empty() {
            return Err(RecipeError::new("`source` needs a `hash`")
                .help("add: hash \"sha256:HEX\" (sha256, sha512 or blake3)"));
        }
        let unpack = match self.at_most_one(f, "unpack")? {
            Some(n) => self.one_bool(n)?,
            None => true,
        };
        let size = match self.at_most_one(f, "size")? {
            Some(n) => {
                self.no_children(n)?;
                let [e] = self.positional::<1>(n)?;
                Some(self.count(e)?)
            }
            None => None,
        };
        let version = match self.at_most_one(f, "version")? {
            Some(n) => {
                self.no_children(n)?;
                let [e] = self.positional::<1>(n)?;
                Some(self.template(e)?)
            }
            None => None,
        };
        Ok(Body::Source(Source {
            urls,
            hashes,
            unpack,
            size,
            limits: self.source_limits(f)?,
            version,
            license: self.optional_string(f, "license")?,
        }))
    }

    /// `limits download="1G" unpacked="16G" ratio=200`, each optional.
    fn source_limits(&self, f: &Fields<'a>) -> Result<SourceLimits> {
        let mut limits = SourceLimits::default();
        let Some(n) = self.at_most_one(f, "limits")? else {
            return Ok(limits);
        };
        self.no_children(n)?;
        let [] = self.arguments::<0>(n)?;
        let allowed = ["download", "unpacked", "ratio"];
        for e in n.entries() {
            let Some(k) = e.name() else { continue };
            match k.value() {
                "ratio" => limits.ratio = Some(self.count(e)?),
                "download" => limits.download = Some(self.size(e)?),
                "unpacked" => limits.unpacked = Some(self.size(e)?),
                other => return Err(self.unknown_property(e, other, &allowed)),
            }
        }
        Ok(limits)
    }

    /// A whole number above zero.
    fn count(&self, e: &KdlEntry) -> Result<u64> {
        match e.value() {
            KdlValue::Integer(n) if *n > 0 && *n <= i128::from(u64::MAX) => Ok(*n as u64),
            KdlValue::Integer(_) => Err(RecipeError::at(
                self.loc(e.span()),
                "expected a whole number above zero",
                "out of range",
            )),
            other => Err(self.wrong_type(e, "a whole number", other)),
        }
    }

    /// A size: `"512M"`, `"8G"` or a number of bytes.
    fn size(&self, e: &KdlEntry) -> Result<u64> {
        if let KdlValue::Integer(_) = e.value() {
            return self.count(e);
        }
        let s = self.string(e)?;
        parse_size(&s.value).ok_or_else(|| {
            RecipeError::at(s.loc, format!("`{}` is not a size", s.value), "here")
                .help("write it as \"512M\", \"8G\" or a number of bytes")
        })
    }

    fn toolchain(&self, f: &Fields) -> Result<Body> {
        let mut targets = Vec::new();
        for n in f.all("target") {
            targets.push(self.selected(n, |p, e| p.string(e))?);
        }
        if targets.is_empty() {
            return Err(RecipeError::new("`toolchain` needs a `target`")
                .help("add: target \"x86_64-linux-musl\" arch=\"x86-64\""));
        }
        Ok(Body::Toolchain(Toolchain {
            description: self.optional_string(f, "description")?.map(|s| s.value),
            targets,
            paths: self.all_strings(f, "path")?,
            identity: self.all_strings(f, "identity")?,
            env: self.env(f)?,
            cflags: f
                .all("cflags")
                .map(|n| self.selected(n, |p, e| p.string(e)))
                .collect::<Result<_>>()?,
            cache: self.optional_string(f, "cache")?,
            mounts: self.all_strings(f, "mount")?,
            version: self.optional_string(f, "version")?.map(|s| s.value),
            install: self.optional_string(f, "install")?.map(|s| s.value),
        }))
    }

    fn build(&self, f: &Fields) -> Result<Body> {
        Ok(Body::Build(self.step(f, "build")?))
    }

    /// The fields of a step, shared by `build` and `test`.
    fn step(&self, f: &Fields, kind: &str) -> Result<Build> {
        let scripts = f
            .all("script")
            .map(|n| {
                self.selected(n, |p, e| {
                    let t = p.template(e)?;
                    Ok(Spanned::new(t.clone(), t.loc))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if scripts.is_empty() {
            return Err(RecipeError::new(format!("`{kind}` needs a `script`"))
                .help("add: script \"make && make DESTDIR=$out install\""));
        }
        Ok(Build {
            source: self.optional_ref(f, "source")?,
            toolchain: self.optional_ref(f, "toolchain")?,
            inputs: self.refs(f, "input")?,
            env: self.env(f)?,
            scripts,
            patches: f
                .all("patch")
                .map(|n| self.selected(n, |p, e| p.string(e)))
                .collect::<Result<_>>()?,
            files: self.all_strings(f, "files")?,
            limits: self.step_limits(f)?,
            privileged: match self.at_most_one(f, "privileged")? {
                Some(n) => self.one_bool(n)?,
                None => false,
            },
        })
    }

    /// `limits time="2h" memory="8G" output="10G"`, each optional.
    fn step_limits(&self, f: &Fields<'a>) -> Result<StepLimits> {
        let mut limits = StepLimits::default();
        let Some(n) = self.at_most_one(f, "limits")? else {
            return Ok(limits);
        };
        self.no_children(n)?;
        let [] = self.arguments::<0>(n)?;
        for (name, value) in self.only_props(n, &["time", "memory", "output"])? {
            let bad = |what: &str, example: &str| {
                RecipeError::at(
                    value.loc,
                    format!("`{}` is not {what}", value.value),
                    "here",
                )
                .help(format!("write it as {example}"))
            };
            match name.as_str() {
                "time" => {
                    limits.time = Some(parse_duration(&value.value).ok_or_else(|| {
                        bad("a duration", "\"90s\", \"30m\", \"2h\" or \"1h30m\"")
                    })?)
                }
                other => {
                    let size = parse_size(&value.value)
                        .ok_or_else(|| bad("a size", "\"512M\", \"8G\" or a number of bytes"))?;
                    if other == "memory" {
                        limits.memory = Some(size);
                    } else {
                        limits.output = Some(size);
                    }
                }
            }
        }
        Ok(limits)
    }

    fn sysext(&self, f: &Fields) -> Result<Body> {
        let required = |field: &str, example: &str| -> Result<Template> {
            match self.at_most_one(f, field)? {
                Some(n) => {
                    self.no_children(n)?;
                    let [e] = self.positional::<1>(n)?;
                    self.template(e)
                }
                None => Err(RecipeError::new(format!("`sysext` needs `{field}`"))
                    .help(format!("add: {field} {example}"))),
            }
        };
        let version = required("version", "\"{version}\"")?;
        let arch = required("arch", "\"{arch}\"")?;
        let (os, sysext_level) = match self.at_most_one(f, "os")? {
            Some(n) => {
                self.no_children(n)?;
                let [id] = self.arguments::<1>(n)?;
                let id = self.string(id)?;
                let level = self.only_props(n, &["sysext-level"])?.into_iter().next();
                let level = level.map(|(_, v)| v);
                if id.value != "_any" && level.is_none() {
                    return Err(RecipeError::at(
                        id.loc,
                        format!("`os \"{}\"` needs a sysext level", id.value),
                        "no sysext-level",
                    )
                    .help(format!("write: os \"{}\" sysext-level=\"1.0\"", id.value)));
                }
                (id, level)
            }
            None => (
                Spanned::new("_any".to_string(), Loc::new(self.file, (0, 0).into())),
                None,
            ),
        };
        let reload_manager = match self.at_most_one(f, "reload-manager")? {
            Some(n) => self.one_bool(n)?,
            None => true,
        };
        let format = match self.at_most_one(f, "format")? {
            Some(n) => {
                let s = self.one_string(n)?;
                match s.value.as_str() {
                    "squashfs" => ImageFormat::Squashfs,
                    "erofs" => ImageFormat::Erofs,
                    "ddi" => ImageFormat::Ddi,
                    other => {
                        return Err(RecipeError::at(
                            s.loc,
                            format!("unknown image format `{other}`"),
                            "not squashfs, erofs or ddi",
                        )
                        .help("use format \"squashfs\" (the default), \"erofs\" or \"ddi\" (erofs with dm-verity in a GPT disk image)"))
                    }
                }
            }
            None => ImageFormat::Squashfs,
        };
        let inputs = self.refs(f, "input")?;
        if inputs.is_empty() {
            return Err(RecipeError::new("`sysext` needs at least one `input`")
                .help("add: input \"keepalived\" (a build whose output goes into the image)"));
        }
        Ok(Body::Sysext(Sysext {
            inputs,
            files: self.all_strings(f, "files")?,
            version,
            arch,
            os,
            sysext_level,
            reload_manager,
            format,
        }))
    }

    fn release(&self, f: &Fields) -> Result<Body> {
        let sysexts = self.refs(f, "sysext")?;
        if sysexts.is_empty() {
            return Err(RecipeError::new("`release` needs at least one `sysext`")
                .help("add: sysext \"keepalived\""));
        }
        Ok(Body::Release(Release {
            sysexts,
            base_url: self.optional_string(f, "base-url")?,
        }))
    }

    // Field helpers.

    fn at_most_one(&self, f: &Fields<'a>, name: &'a str) -> Result<Option<&'a KdlNode>> {
        let mut all = f.all(name);
        let first = all.next();
        if let (Some(first), Some(second)) = (first, all.next()) {
            return Err(RecipeError::at(
                self.loc(second.name().span()),
                format!("`{name}` given twice"),
                "given again here",
            )
            .label(self.loc(first.name().span()), "first given here")
            .help(format!("keep one `{name}`")));
        }
        Ok(first)
    }

    fn optional_string(&self, f: &Fields<'a>, name: &'a str) -> Result<Option<Spanned<String>>> {
        self.at_most_one(f, name)?
            .map(|n| {
                self.no_children(n)?;
                self.one_string(n)
            })
            .transpose()
    }

    fn optional_ref(&self, f: &Fields<'a>, name: &'a str) -> Result<Option<Reference>> {
        Ok(self
            .optional_string(f, name)?
            .map(|s| Spanned::new(NodeName::new(s.value), s.loc)))
    }

    fn refs(&self, f: &Fields<'a>, name: &'a str) -> Result<Vec<Reference>> {
        Ok(self
            .all_strings(f, name)?
            .into_iter()
            .map(|s| Spanned::new(NodeName::new(s.value), s.loc))
            .collect())
    }

    /// Every string argument of every `name` field: `input "a" "b"` and repeated `input`.
    fn all_strings(&self, f: &Fields<'a>, name: &'a str) -> Result<Vec<Spanned<String>>> {
        let mut out = Vec::new();
        for n in f.all(name) {
            self.no_children(n)?;
            out.extend(self.strings(n)?);
        }
        Ok(out)
    }

    fn env(&self, f: &Fields) -> Result<Vec<EnvVar>> {
        let mut vars: Vec<EnvVar> = Vec::new();
        for n in f.all("env") {
            self.no_children(n)?;
            if let Some(e) = n.entries().iter().find(|e| e.name().is_none()) {
                return Err(RecipeError::at(
                    self.loc(e.span()),
                    "`env` takes NAME=\"value\" properties",
                    "not a property",
                )
                .help("write: env CFLAGS=\"-O2\""));
            }
            for e in n.entries() {
                let Some(key) = e.name() else { continue };
                let name = Spanned::new(key.value().to_string(), self.loc(key.span()));
                if !is_env_name(&name.value) {
                    return Err(RecipeError::at(
                        name.loc,
                        format!("`{}` is not a valid variable name", name.value),
                        "invalid name",
                    )
                    .help("use letters, digits and `_`, not starting with a digit"));
                }
                if SANDBOX_VARS.contains(&name.value.as_str()) {
                    return Err(RecipeError::at(
                        name.loc,
                        format!("`{}` is set by bake for every step", name.value),
                        "reserved variable",
                    )
                    .help(format!(
                        "bake sets {}; PATH comes from the toolchain's `path`",
                        SANDBOX_VARS.join(", ")
                    )));
                }
                if let Some(prev) = vars.iter().find(|v| v.name.value == name.value) {
                    return Err(RecipeError::at(
                        name.loc,
                        format!("variable `{}` set twice", name.value),
                        "set again here",
                    )
                    .label(prev.name.loc, "first set here"));
                }
                vars.push(EnvVar {
                    name,
                    value: self.template(e)?,
                });
            }
        }
        Ok(vars)
    }

    /// `FIELD VALUE axis="value" ...`: one positional value and axis conditions.
    fn selected<T>(
        &self,
        node: &KdlNode,
        value: impl Fn(&Self, &KdlEntry) -> Result<Spanned<T>>,
    ) -> Result<Selected<T>> {
        self.no_children(node)?;
        let positional: Vec<&KdlEntry> = node
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .collect();
        let [e] = positional[..] else {
            return Err(self.arg_count(node, positional.len(), 1));
        };
        let when = node
            .entries()
            .iter()
            .filter_map(|e| e.name().map(|k| (k, e)))
            .map(|(k, e)| {
                let v = self.string(e)?;
                Ok((Spanned::new(k.value().to_string(), self.loc(k.span())), v))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Selected {
            value: value(self, e)?,
            when,
        })
    }

    fn source_hash(&self, e: &KdlEntry) -> Result<Spanned<SourceHash>> {
        let s = self.string(e)?;
        match s.value.parse::<SourceHash>() {
            Ok(h) => Ok(Spanned::new(h, s.loc)),
            Err(why) => Err(
                RecipeError::at(s.loc, format!("bad hash: {why}"), "this hash")
                    .help("write it as sha256:HEX, sha512:HEX or blake3:HEX"),
            ),
        }
    }

    fn template(&self, e: &KdlEntry) -> Result<Template> {
        let s = self.string(e)?;
        Ok(Template::parse(&s.value, self.raw(e.span()), s.loc))
    }

    // Entry helpers.

    fn no_children(&self, node: &KdlNode) -> Result<()> {
        match node.children() {
            Some(c) => Err(RecipeError::at(
                self.loc(c.span()),
                format!("`{}` takes no block", node.name().value()),
                "unexpected block",
            )),
            None => Ok(()),
        }
    }

    fn only_props(
        &self,
        node: &KdlNode,
        allowed: &[&str],
    ) -> Result<Vec<(String, Spanned<String>)>> {
        let mut out = Vec::new();
        for e in node.entries() {
            let Some(k) = e.name() else { continue };
            if !allowed.contains(&k.value()) {
                return Err(self.unknown_property(e, k.value(), allowed));
            }
            out.push((k.value().to_string(), self.string(e)?));
        }
        Ok(out)
    }

    fn unknown_property(&self, e: &KdlEntry, name: &str, allowed: &[&str]) -> RecipeError {
        let err = RecipeError::at(
            self.loc(e.span()),
            format!("unknown property `{name}`"),
            "not expected here",
        );
        match did_you_mean(name, allowed.iter().copied()) {
            Some(near) => err.help(format!("did you mean `{near}`?")),
            None if allowed.is_empty() => err.help("this field takes no properties"),
            None => err.help(format!("expected one of: {}", allowed.join(", "))),
        }
    }

    /// Exactly `N` positional arguments and no properties.
    fn positional<const N: usize>(&self, node: &'a KdlNode) -> Result<[&'a KdlEntry; N]> {
        if let Some(e) = node.entries().iter().find(|e| e.name().is_some()) {
            let name = e.name().map_or("", |k| k.value());
            return Err(self.unknown_property(e, name, &[]));
        }
        self.arguments(node)
    }

    /// Exactly `N` positional arguments; properties are the caller's to check.
    fn arguments<const N: usize>(&self, node: &'a KdlNode) -> Result<[&'a KdlEntry; N]> {
        let entries: Vec<&KdlEntry> = node
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .collect();
        entries
            .try_into()
            .map_err(|v: Vec<&KdlEntry>| self.arg_count(node, v.len(), N))
    }

    fn arg_count(&self, node: &KdlNode, got: usize, want: usize) -> RecipeError {
        let name = node.name().value();
        let positional: Vec<&KdlEntry> = node
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .collect();
        match positional.get(want) {
            Some(extra) => RecipeError::at(
                self.loc(extra.span()),
                format!("`{name}` takes {want} argument{}, got {got}", plural(want)),
                "unexpected argument",
            ),
            None => RecipeError::at(
                self.loc(node.span()),
                format!("`{name}` takes {want} argument{}, got {got}", plural(want)),
                "missing argument",
            ),
        }
    }

    fn one_string(&self, node: &KdlNode) -> Result<Spanned<String>> {
        let [e] = self.positional::<1>(node)?;
        self.string(e)
    }

    fn one_bool(&self, node: &KdlNode) -> Result<bool> {
        self.no_children(node)?;
        let [e] = self.positional::<1>(node)?;
        match e.value() {
            KdlValue::Bool(b) => Ok(*b),
            other => Err(self.wrong_type(e, "a boolean (#true or #false)", other)),
        }
    }

    /// One or more positional arguments and no properties.
    fn string_entries(&self, node: &'a KdlNode) -> Result<&'a [KdlEntry]> {
        if node.entries().is_empty() {
            return Err(self.arg_count(node, 0, 1));
        }
        if let Some(e) = node.entries().iter().find(|e| e.name().is_some()) {
            let name = e.name().map_or("", |k| k.value());
            return Err(self.unknown_property(e, name, &[]));
        }
        Ok(node.entries())
    }

    /// One or more positional strings and no properties.
    fn strings(&self, node: &'a KdlNode) -> Result<Vec<Spanned<String>>> {
        self.string_entries(node)?
            .iter()
            .map(|e| self.string(e))
            .collect()
    }

    fn string(&self, e: &KdlEntry) -> Result<Spanned<String>> {
        match e.value() {
            KdlValue::String(s) => Ok(Spanned::new(s.clone(), self.loc(e.span()))),
            other => Err(self.wrong_type(e, "a string", other)),
        }
    }

    fn wrong_type(&self, e: &KdlEntry, want: &str, got: &KdlValue) -> RecipeError {
        let got = match got {
            KdlValue::String(_) => "a string",
            KdlValue::Integer(_) | KdlValue::Float(_) => "a number",
            KdlValue::Bool(_) => "a boolean",
            KdlValue::Null => "#null",
        };
        RecipeError::at(
            self.loc(e.span()),
            format!("expected {want}, found {got}"),
            format!("expected {want}"),
        )
    }

    /// Names end up in instance ids (`NAME@a/b`) and variable names: keep them plain.
    fn identifier(&self, name: &str, span: SourceSpan, what: &str) -> Result<Spanned<String>> {
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'));
        if ok {
            Ok(Spanned::new(name.to_string(), self.loc(span)))
        } else {
            Err(RecipeError::at(
                self.loc(span),
                format!("`{name}` is not a valid {what} name"),
                "invalid name",
            )
            .help(
                "use letters, digits, `_`, `-`, `.` and `+`, starting with a letter, digit or `_`",
            ))
        }
    }
}

fn children(node: &KdlNode) -> &[KdlNode] {
    node.children().map_or(&[], |d| d.nodes())
}

fn check_axis_value(v: &Spanned<String>) -> Result<()> {
    let bad = v.value.is_empty()
        || v.value == "."
        || v.value == ".."
        || v.value
            .chars()
            .any(|c| c == '/' || c == '@' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(RecipeError::at(
            v.loc,
            format!("axis value `{}` cannot be used in instance ids", v.value),
            "invalid value",
        )
        .help("axis values are non-empty, not `.` or `..`, and have no `/`, `@` or white space"));
    }
    Ok(())
}

fn is_env_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
