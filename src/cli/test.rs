//! `bake test`: build what the tests need, run the tests, report as CI reads it.

use std::fmt::Write as _;
use std::time::Duration;

use super::*;

/// How one test instance ended.
enum Verdict {
    Passed(Duration),
    Cached,
    Failed(String),
}

pub(super) fn cmd_test(
    recipe: &RecipeArgs,
    targets: &[String],
    run: &RunArgs,
    rerun: bool,
    json: bool,
    junit: Option<&Path>,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let is_test = |i: &usize| eval.instance(*i).kind() == Kind::Test;
    let tests: Vec<usize> = eval
        .select(targets)
        .map_err(|e| Failure::usage(format!("{}: {e}", eval.top_file())))?
        .into_iter()
        .filter(is_test)
        .collect();
    if tests.is_empty() {
        return Err(Failure::usage(match targets {
            [] => format!("{} declares no test", recipe.file.display()),
            _ => "none of the targets is a test".to_string(),
        }));
    }
    stop_on_signals();
    let force = if rerun {
        Selection::from_fn(eval.graph.len(), |i| tests.contains(&i))
    } else {
        Selection::from_fn(0, |_| false)
    };
    let report = Realiser::new(&eval, &store, run.options()?)
        .rerun(force)
        .build(&eval.graph.closure(&tests));
    // What the tests needed and could not get is an error of its own.
    for (i, e) in report.failed.iter().filter(|(i, _)| !is_test(i)) {
        errln!("error: {} failed", eval.instance(*i).id);
        print_diagnostic(e);
    }
    let verdicts: Vec<(usize, Verdict)> = tests
        .iter()
        .map(|&t| {
            let verdict = if let Some((_, e)) = report.failed.iter().find(|(i, _)| *i == t) {
                Verdict::Failed(e.to_string())
            } else if report.built.contains(&t) {
                Verdict::Passed(report.durations.get(&t).copied().unwrap_or_default())
            } else if report.cached.contains(&t) {
                Verdict::Cached
            } else if report.interrupted.contains(&t) {
                Verdict::Failed("interrupted".into())
            } else {
                Verdict::Failed("not run: something it needs failed".into())
            };
            (t, verdict)
        })
        .collect();
    let id = |i: usize| eval.instance(i).id.as_str();
    let count = |f: fn(&Verdict) -> bool| verdicts.iter().filter(|(_, v)| f(v)).count();
    let passed = count(|v| matches!(v, Verdict::Passed(_)));
    let cached = count(|v| matches!(v, Verdict::Cached));
    let failed = count(|v| matches!(v, Verdict::Failed(_)));
    for (t, v) in &verdicts {
        if let Verdict::Failed(why) = v {
            errln!("FAILED   {}\n{why}", id(*t));
        }
    }
    if let Some(path) = junit {
        let xml = junit_xml(recipe, &eval, &verdicts);
        std::fs::write(path, xml)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if json {
        let of = |f: fn(&Verdict) -> bool| -> Vec<&str> {
            verdicts
                .iter()
                .filter(|(_, v)| f(v))
                .map(|(t, _)| id(*t))
                .collect()
        };
        outln!(
            "{:#}",
            json!({
                "passed": of(|v| matches!(v, Verdict::Passed(_))),
                "failed": of(|v| matches!(v, Verdict::Failed(_))),
                "cached": of(|v| matches!(v, Verdict::Cached)),
            })
        );
    }
    errln!("passed={passed} failed={failed} cached={cached}");
    interrupted()?;
    if failed == 0 {
        Ok(())
    } else {
        Err(Failure::failed())
    }
}

/// One testsuite named after the recipe, one testcase per test instance; a
/// failure's text is what bake printed of it (the log's last lines).
fn junit_xml(recipe: &RecipeArgs, eval: &Evaluation, verdicts: &[(usize, Verdict)]) -> String {
    let suite = recipe.file.display().to_string();
    let failures = verdicts
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Failed(_)))
        .count();
    let total: f64 = verdicts
        .iter()
        .map(|(_, v)| match v {
            Verdict::Passed(d) => d.as_secs_f64(),
            _ => 0.0,
        })
        .sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites tests=\"{n}\" failures=\"{failures}\" time=\"{total:.3}\">\n  <testsuite name=\"{s}\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{total:.3}\">",
        n = verdicts.len(),
        s = escape(&suite),
    );
    for (t, v) in verdicts {
        let name = escape(eval.instance(*t).id.as_str());
        let classname = escape(&suite);
        match v {
            Verdict::Passed(d) => {
                let _ = writeln!(
                    x,
                    "    <testcase classname=\"{classname}\" name=\"{name}\" time=\"{:.3}\"/>",
                    d.as_secs_f64()
                );
            }
            Verdict::Cached => {
                let _ = writeln!(
                    x,
                    "    <testcase classname=\"{classname}\" name=\"{name}\" time=\"0\">\n      <properties><property name=\"cached\" value=\"true\"/></properties>\n      <system-out>passed before with the same inputs; not run again</system-out>\n    </testcase>"
                );
            }
            Verdict::Failed(why) => {
                let first = why.lines().next().unwrap_or("failed");
                let _ = writeln!(
                    x,
                    "    <testcase classname=\"{classname}\" name=\"{name}\" time=\"0\">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(first),
                    escape(why)
                );
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// Text as XML character data or an attribute value; characters XML 1.0 cannot
/// hold (most control characters, which logs may have) become U+FFFD.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}
