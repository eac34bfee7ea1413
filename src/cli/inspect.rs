//! Commands that look without building: eval, graph, plan, why.

use super::*;

pub(super) fn print_eval(e: &Evaluation, as_json: bool) {
    let mut stdout = std::io::stdout().lock();
    if as_json {
        let derivations: Vec<_> = e
            .instances
            .iter()
            .map(|i| {
                let axes: serde_json::Map<String, serde_json::Value> =
                    i.axes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                let inputs: Vec<&str> = i
                    .deps
                    .iter()
                    .map(|d| e.instances[d.instance].id.0.as_str())
                    .collect();
                json!({
                    "id": i.id.0,
                    "name": i.name.0,
                    "kind": i.kind.name(),
                    "axes": axes,
                    "key": i.key.to_string(),
                    "inputs": inputs,
                })
            })
            .collect();
        let doc = json!({ "derivations": derivations });
        let _ = writeln!(stdout, "{doc:#}");
        return;
    }
    let width = e.instances.iter().map(|i| i.id.0.len()).max().unwrap_or(0);
    for i in &e.instances {
        let inputs: Vec<&str> = i
            .deps
            .iter()
            .map(|d| e.instances[d.instance].id.0.as_str())
            .collect();
        let arrow = if inputs.is_empty() {
            String::new()
        } else {
            format!("  <- {}", inputs.join(", "))
        };
        let id = if arrow.is_empty() {
            i.id.0.clone()
        } else {
            format!("{:<width$}", i.id.0)
        };
        let _ = writeln!(
            stdout,
            "{}  {:<9} {id}{arrow}",
            &i.key.to_string()[..16],
            i.kind.name()
        );
    }
}

pub(super) fn print_graph(e: &Evaluation, dot: bool) {
    let mut stdout = std::io::stdout().lock();
    if dot {
        let _ = stdout.write_all(graph::to_dot(e).as_bytes());
        return;
    }
    for i in &e.instances {
        let _ = writeln!(stdout, "{}", i.id);
        for d in &i.deps {
            let _ = writeln!(stdout, "  <- {}", e.instances[d.instance].id);
        }
    }
}

pub(super) fn cmd_plan(recipe: &RecipeArgs, targets: &[String], json: bool) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let wanted = build::closure(&eval, &select(&eval, targets)?);
    let p = plan::plan(&eval, &store, &wanted);
    let id = |i: usize| eval.instances[i].id.0.as_str();
    let mut stdout = std::io::stdout().lock();
    if json {
        let build: Vec<_> = p
            .build
            .iter()
            .map(|s| json!({"id": id(s.instance), "reason": s.reason}))
            .collect();
        let cached: Vec<&str> = p.cached.iter().map(|&i| id(i)).collect();
        let _ = writeln!(stdout, "{:#}", json!({"build": build, "cached": cached}));
    } else {
        let width = p
            .build
            .iter()
            .map(|s| id(s.instance).len())
            .max()
            .unwrap_or(0);
        for s in &p.build {
            let _ = writeln!(stdout, "build  {:<width$}  {}", id(s.instance), s.reason);
        }
        let _ = writeln!(
            stdout,
            "{} to build, {} cached",
            p.build.len(),
            p.cached.len()
        );
    }
    Ok(())
}

pub(super) fn cmd_why(recipe: &RecipeArgs, target: &str) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let selected = select(&eval, &[target.to_string()])?;
    let wanted = build::closure(&eval, &selected);
    let p = plan::plan(&eval, &store, &wanted);
    let mut stdout = std::io::stdout().lock();
    for i in selected {
        let inst = &eval.instances[i];
        let _ = match p.build.iter().find(|s| s.instance == i) {
            None => writeln!(stdout, "{}: up to date", inst.id),
            Some(s) => {
                let changes = plan::changes(&eval, &store, i, &p.outputs);
                let _ = writeln!(stdout, "{}: would build: {}", inst.id, s.reason);
                for c in changes {
                    let _ = writeln!(stdout, "  {c}");
                }
                Ok(())
            }
        };
    }
    Ok(())
}
