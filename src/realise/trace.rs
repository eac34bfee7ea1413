//! What a build did when: one span per step on the worker that ran it, written
//! as Chrome trace-event JSON (Perfetto, chrome://tracing), and the critical
//! path through them.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Report;
use crate::eval::Evaluation;

/// One step as it ran.
#[derive(Clone, Debug)]
pub struct Span {
    pub instance: usize,
    /// The worker that ran it, from 0.
    pub lane: usize,
    pub start: Instant,
    pub end: Instant,
    /// "built", "cached" (found in the store once its inputs were), "failed", "stopped".
    pub outcome: &'static str,
}

/// The chain of steps, each waiting on the one before, that took longest.
pub struct CriticalPath {
    /// In build order, with how long each ran.
    pub steps: Vec<(usize, Duration)>,
    pub total: Duration,
}

/// Paths longer than this are shown by their ends and their longest steps: a
/// chain of thousands of steps on one line reads as nothing.
const SHOWN_WHOLE: usize = 12;
const SHOWN_AT_EACH_END: usize = 4;
const LONGEST_SHOWN: usize = 5;

impl CriticalPath {
    /// `keepalived@2.3.4/arm64 (12.1 s) -> ...`, and the path's share of `wall`.
    pub fn describe(&self, eval: &Evaluation, wall: Duration) -> String {
        let step = |(i, d): &(usize, Duration)| format!("{} ({})", eval.instance(*i).id, took(*d));
        let head = format!(
            "critical path: {:.2} s of {:.2} s wall, {} step(s): ",
            self.total.as_secs_f64(),
            wall.as_secs_f64(),
            self.steps.len(),
        );
        let n = self.steps.len();
        if n <= SHOWN_WHOLE {
            let steps: Vec<String> = self.steps.iter().map(step).collect();
            return head + &steps.join(" -> ");
        }
        let ends = SHOWN_AT_EACH_END;
        let (first, rest) = self.steps.split_at(ends);
        let (middle, last) = rest.split_at(n - 2 * ends);
        let between: Duration = middle.iter().map(|(_, d)| *d).sum();
        let mut longest = self.steps.clone();
        longest.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        longest.truncate(LONGEST_SHOWN);
        let shown = |s: &[(usize, Duration)]| s.iter().map(step).collect::<Vec<_>>().join(" -> ");
        format!(
            "{head}{} -> [{} more, {}] -> {}\n  longest on it: {}",
            shown(first),
            middle.len(),
            took(between),
            shown(last),
            longest.iter().map(step).collect::<Vec<_>>().join(", ")
        )
    }
}

/// `1.52 s`, `412 ms`, `2.4 ms`: a trivial step's time is not `0.00 s`.
fn took(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    match ms {
        ms if ms >= 1e3 => format!("{:.2} s", ms / 1e3),
        ms if ms >= 10.0 => format!("{ms:.0} ms"),
        ms => format!("{ms:.1} ms"),
    }
}

/// The longest chain of dependent steps of `report`, by how long each ran;
/// instances that did not run here weigh nothing.
pub fn critical_path(eval: &Evaluation, report: &Report) -> CriticalPath {
    let n = eval.graph.len();
    let mut ran = vec![Duration::ZERO; n];
    for s in &report.spans {
        ran[s.instance] = s.end.saturating_duration_since(s.start);
    }
    // Dependencies come first in the graph, so one pass in order suffices.
    let mut finish = vec![Duration::ZERO; n];
    let mut via: Vec<Option<usize>> = vec![None; n];
    for i in 0..n {
        let before = eval
            .graph
            .deps(i)
            .iter()
            .map(|(d, _)| *d)
            .max_by_key(|d| finish[*d]);
        let waited = before.map_or(Duration::ZERO, |d| finish[d]);
        via[i] = before.filter(|d| !finish[*d].is_zero());
        finish[i] = waited + ran[i];
    }
    let Some(last) = (0..n).max_by_key(|i| finish[*i]) else {
        return CriticalPath {
            steps: Vec::new(),
            total: Duration::ZERO,
        };
    };
    let mut steps = Vec::new();
    let mut at = Some(last).filter(|i| !finish[*i].is_zero());
    while let Some(i) = at {
        if !ran[i].is_zero() {
            steps.push((i, ran[i]));
        }
        at = via[i];
    }
    steps.reverse();
    CriticalPath {
        steps,
        total: finish[last],
    }
}

/// The build as Chrome trace events, times from `origin`: the evaluation
/// (`eval_end`) on the main lane, each step on its worker's lane, and what
/// the store already had as instant events on a lane of their own.
pub fn chrome_trace(
    eval: &Evaluation,
    report: &Report,
    origin: Instant,
    eval_end: Instant,
) -> serde_json::Value {
    let us = |t: Instant| t.saturating_duration_since(origin).as_secs_f64() * 1e6;
    const PID: u32 = 1;
    const MAIN: usize = 0;
    const CACHED: usize = 1;
    let worker = |lane: usize| lane + 2;
    let lanes = report.spans.iter().map(|s| s.lane + 1).max().unwrap_or(0);
    let mut events = vec![
        json!({"ph": "M", "pid": PID, "name": "process_name", "args": {"name": "bake build"}}),
        json!({"ph": "M", "pid": PID, "tid": MAIN, "name": "thread_name", "args": {"name": "bake"}}),
        json!({"ph": "M", "pid": PID, "tid": CACHED, "name": "thread_name",
               "args": {"name": "in the store"}}),
        json!({"ph": "X", "pid": PID, "tid": MAIN, "name": "evaluate", "cat": "eval",
               "ts": 0.0, "dur": us(eval_end),
               "args": {"instances": eval.graph.len(), "from the evaluation cache": eval.cached}}),
    ];
    for lane in 0..lanes {
        events.push(
            json!({"ph": "M", "pid": PID, "tid": worker(lane), "name": "thread_name",
                           "args": {"name": format!("worker {}", lane + 1)}}),
        );
    }
    let ran: std::collections::HashSet<usize> = report.spans.iter().map(|s| s.instance).collect();
    for &i in report.cached.iter().filter(|i| !ran.contains(i)) {
        let inst = eval.instance(i);
        events.push(json!({"ph": "i", "s": "t", "pid": PID, "tid": CACHED,
                           "name": inst.id.as_str(), "cat": "cached", "ts": us(eval_end),
                           "args": {"kind": inst.kind().name(), "cached": true}}));
    }
    for s in &report.spans {
        let inst = eval.instance(s.instance);
        events.push(json!({"ph": "X", "pid": PID, "tid": worker(s.lane),
                           "name": inst.id.as_str(), "cat": s.outcome,
                           "ts": us(s.start), "dur": us(s.end) - us(s.start),
                           "args": {"kind": inst.kind().name(), "outcome": s.outcome,
                                    "cached": s.outcome == "cached"}}));
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}
