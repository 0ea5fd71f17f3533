//! The load's progress bar on stderr (stdout carries the summary).

use std::io::IsTerminal;
use std::io::{self, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Only when stderr is a terminal.
    Auto,
    /// Always; one line per second when stderr is not a terminal.
    Always,
    Never,
}

pub fn bar(mode: ProgressMode, len: u64) -> ProgressBar {
    let target = match mode {
        ProgressMode::Never => ProgressDrawTarget::hidden(),
        ProgressMode::Auto => ProgressDrawTarget::stderr(),
        ProgressMode::Always if io::stderr().is_terminal() => ProgressDrawTarget::stderr(),
        ProgressMode::Always => ProgressDrawTarget::term_like_with_hz(Box::new(StderrLines), 1),
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let template = "{msg:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// A "terminal" that cannot move its cursor: every redraw becomes a new line, readable in a log.
#[derive(Debug)]
struct StderrLines;

impl TermLike for StderrLines {
    fn width(&self) -> u16 {
        100
    }

    fn move_cursor_up(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }

    fn write_line(&self, line: &str) -> io::Result<()> {
        writeln!(io::stderr(), "{line}")
    }

    fn write_str(&self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        writeln!(io::stderr(), "{text}")
    }

    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        io::stderr().flush()
    }
}
