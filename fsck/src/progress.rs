//! A progress bar on standard error for long scans, shown only when it is a terminal.

use std::io::IsTerminal;

use engine::check::ScanProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-count progress bar, hidden when standard error is not a terminal (piped output gets
/// none) or when `quiet`.
#[derive(Debug)]
pub(crate) struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub(crate) fn bytes(quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), target(quiet));
        let style = ProgressStyle::with_template(
            "{spinner} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Self { bar }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Where a bar draws: standard error when it is a terminal, nowhere otherwise.
pub(crate) fn target(quiet: bool) -> ProgressDrawTarget {
    if quiet || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}

impl ScanProgress for Bar {
    fn total(&mut self, bytes: u64) {
        self.bar.set_length(bytes);
    }

    fn advance(&mut self, bytes: u64) {
        self.bar.inc(bytes);
    }
}
