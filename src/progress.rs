//! Progress on stderr: a live line with counts and the running steps on a
//! terminal, one plain line per started and finished step otherwise (CI logs).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    running: Mutex<Vec<String>>,
}

impl Progress {
    /// `total`: the steps that will run (cached ones are not counted).
    pub fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{pos}/{len}] {elapsed_precise} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            running: Mutex::new(Vec::new()),
        }
    }

    pub fn started(&self, id: &str) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.push(id.to_string());
        match &self.bar {
            Some(bar) => bar.set_message(running.join(", ")),
            None => line(&format!("started  {id}")),
        }
    }

    /// `what`: "built", "failed", ...; `elapsed` of the step.
    pub fn finished(&self, id: &str, what: &str, elapsed: Duration) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|r| r != id);
        let text = format!("{what:<8} {id} ({:.1}s)", elapsed.as_secs_f64());
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.println(text);
                bar.set_message(running.join(", "));
            }
            None => line(&text),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// A warning on stderr.
pub fn warn(text: &str) {
    line(&format!("warning: {text}"));
}

/// Something the user should know before a build goes on.
pub fn note(text: &str) {
    line(&format!("note: {text}"));
}
