//! Download progress on stderr: a live bar on a terminal, one line at the start
//! and end of each download otherwise (CI logs).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::AttemptFailure;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines only.
    Lines,
    Quiet,
}

pub(crate) struct Progress {
    /// Shared by all downloads so parallel bars do not overwrite each other.
    bars: Option<MultiProgress>,
    lines: bool,
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bars = (mode == ProgressMode::Auto && terminal)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let lines = bars.is_none() && mode != ProgressMode::Quiet;
        Progress { bars, lines }
    }

    pub(crate) fn start(&self, name: &str, location: &str, length: Option<u64>) -> Transfer {
        let label = format!("{name} from {location}");
        let bar = self.bars.as_ref().map(|multi| {
            let bar = multi.add(match length {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::no_length(),
            });
            let style = ProgressStyle::with_template(
                "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(format!("fetch {name}"));
            bar
        });
        if self.lines {
            eprintln!("fetch {label}");
        }
        Transfer {
            bar,
            lines: self.lines,
            label,
            started: Instant::now(),
        }
    }
}

pub(crate) struct Transfer {
    bar: Option<ProgressBar>,
    lines: bool,
    label: String,
    started: Instant,
}

impl Transfer {
    pub(crate) fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    pub(crate) fn finish(self, outcome: Result<u64, &AttemptFailure>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let summary = match outcome {
            Ok(bytes) => format!("fetched {} ({bytes} bytes, {seconds:.1} s)", self.label),
            Err(failure) => format!("failed {}: {failure}", self.label),
        };
        match self.bar {
            Some(bar) if outcome.is_ok() => bar.finish_and_clear(),
            Some(bar) => bar.abandon_with_message(summary),
            None if self.lines => eprintln!("{summary}"),
            None => {}
        }
    }
}
