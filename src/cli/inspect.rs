//! Commands that look without building: eval, graph, plan, why.

use super::*;
use crate::realise::{settle, State};

pub(super) fn print_eval(e: &Evaluation, as_json: bool) {
    let inputs = |i: usize| -> Vec<&str> {
        e.graph
            .deps(i)
            .iter()
            .map(|(d, _)| e.instance(*d).id.as_str())
            .collect()
    };
    if as_json {
        let derivations: Vec<_> = e
            .graph
            .nodes()
            .map(|(n, i)| {
                let axes: serde_json::Map<String, serde_json::Value> = i
                    .axes
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v.as_str())))
                    .collect();
                let mut d = json!({
                    "id": i.id.as_str(),
                    "name": i.name.as_str(),
                    "kind": i.kind().name(),
                    "axes": axes,
                    "key": i.key.to_string(),
                    "inputs": inputs(n),
                });
                if i.spec.privileged() {
                    d["privileged"] = json!(true);
                }
                d
            })
            .collect();
        outln!("{:#}", json!({ "derivations": derivations }));
        return;
    }
    // One write for the whole listing: stdout is line-buffered, and a large
    // graph's lines one system call each cost more than evaluating it from cache.
    use std::fmt::Write as _;
    let width = e
        .graph
        .nodes()
        .map(|(_, i)| i.id.as_str().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (n, i) in e.graph.nodes() {
        let inputs = inputs(n);
        let key = i.key.to_string();
        let kind = i.kind().name();
        let mark = if i.spec.privileged() {
            "  [privileged]"
        } else {
            ""
        };
        let _ = if inputs.is_empty() {
            writeln!(out, "{}  {kind:<9} {}{mark}", &key[..16], i.id)
        } else {
            let id = i.id.as_str();
            writeln!(
                out,
                "{}  {kind:<9} {id:<width$}  <- {}{mark}",
                &key[..16],
                inputs.join(", ")
            )
        };
    }
    write_out(format_args!("{out}"));
}

pub(super) fn print_graph(e: &Evaluation, dot: bool) {
    if dot {
        write_out(format_args!("{}", to_dot(e)));
        return;
    }
    use std::fmt::Write as _;
    let mut out = String::new();
    for (n, i) in e.graph.nodes() {
        let _ = writeln!(out, "{}", i.id);
        for (d, _) in e.graph.deps(n) {
            let _ = writeln!(out, "  <- {}", e.instance(*d).id);
        }
    }
    write_out(format_args!("{out}"));
}

/// The instances as a Graphviz digraph, an edge from each dependency to its dependent.
fn to_dot(e: &Evaluation) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("digraph bake {\n  rankdir=LR;\n  node [fontname=\"monospace\"];\n");
    for (_, inst) in e.graph.nodes() {
        let shape = match inst.kind() {
            Kind::Source => "note",
            Kind::Toolchain => "component",
            Kind::Build => "box",
            Kind::Sysext => "box3d",
            Kind::Release => "folder",
            Kind::Test => "diamond",
        };
        let label = format!("{}\n{}", inst.id, &inst.key.to_string()[..12]);
        let _ = writeln!(
            out,
            "  {} [label={}, shape={shape}];",
            dot_id(inst.id.as_str()),
            dot_id(&label)
        );
    }
    for (n, inst) in e.graph.nodes() {
        for (d, _) in e.graph.deps(n) {
            let from = dot_id(e.instance(*d).id.as_str());
            let _ = writeln!(out, "  {from} -> {};", dot_id(inst.id.as_str()));
        }
    }
    out.push_str("}\n");
    out
}

fn dot_id(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

pub(super) fn cmd_plan(
    recipe: &RecipeArgs,
    targets: &[String],
    json: bool,
    remote: &RemoteArgs,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let (selected, wanted) = select(&eval, targets)?;
    let remote = remote.open()?;
    let mut settled = realise::settle_with_remote(&eval, &store, &wanted, remote.as_ref());
    settled.mark_needed(
        &eval,
        &asked_for(&eval, &selected, targets),
        remote.as_ref(),
    );
    let id = |i: usize| eval.instance(i).id.as_str();
    let from_remote: Vec<&str> = settled.remote().map(id).collect();
    let unneeded: Vec<&str> = settled.unneeded().map(id).collect();
    if json {
        let build: Vec<_> = settled
            .todo()
            .map(|(i, reason)| json!({"id": id(i), "reason": reason.to_string()}))
            .collect();
        let cached: Vec<&str> = settled.ready().map(|(i, _)| id(i)).collect();
        let mut doc = json!({"build": build, "cached": cached, "unneeded": unneeded});
        if remote.is_some() {
            doc["remote"] = json!(from_remote);
        }
        outln!("{doc:#}");
        return Ok(());
    }
    let width = settled
        .todo()
        .map(|(i, _)| id(i).len())
        .chain(from_remote.iter().map(|r| r.len()))
        .max()
        .unwrap_or(0);
    for (i, reason) in settled.todo() {
        outln!("build  {:<width$}  {reason}", id(i));
    }
    for r in &from_remote {
        let left = match unneeded.contains(r) {
            true => " (left there: only its output hash is needed)",
            false => "",
        };
        outln!("remote {r:<width$}  in the remote cache{left}");
    }
    if remote.is_some() {
        outln!(
            "{} to build, {} from the remote, {} cached",
            settled.todo().count(),
            from_remote.len(),
            settled.ready().count()
        );
    } else {
        outln!(
            "{} to build, {} cached",
            settled.todo().count(),
            settled.ready().count()
        );
    }
    Ok(())
}

pub(super) fn cmd_why(recipe: &RecipeArgs, target: &str) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let (selected, wanted) = select(&eval, &[target.to_string()])?;
    let settled = settle(&eval, &store, &wanted);
    for i in selected {
        let inst = eval.instance(i);
        match settled.state(i) {
            Some(State::Todo(reason)) => {
                outln!("{}: would build: {reason}", inst.id);
                for line in reason.details() {
                    outln!("  {line}");
                }
            }
            _ => outln!("{}: up to date", inst.id),
        }
    }
    Ok(())
}
