//! Progress of long commands (`ferry lab up`, `ferry lab check`, the benchmarks): a spinner
//! per step and a bar per count on a terminal (indicatif), plain lines when stderr is not
//! a terminal (logs and CI keep readable output, with no carriage returns).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Whether progress is drawn (stderr is a terminal).
pub fn is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// One numbered step; says `ok (Ns)` when [`Step::done`] is called, `failed` if dropped
/// before.
#[derive(Debug)]
pub struct Step {
    label: String,
    started: Instant,
    bar: Option<ProgressBar>,
    finished: bool,
}

/// Starts step `n` of `total`.
pub fn step(n: usize, total: usize, what: &str) -> Step {
    let label = format!("[{n}/{total}] {what}");
    let bar = if is_tty() {
        let b = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}") {
            b.set_style(style);
        }
        b.set_message(label.clone());
        b.enable_steady_tick(Duration::from_millis(100));
        Some(b)
    } else {
        eprint!("{label} ... ");
        None
    };
    Step {
        label,
        started: Instant::now(),
        bar,
        finished: false,
    }
}

impl Step {
    /// Ends the step successfully.
    pub fn done(mut self) {
        self.finished = true;
        let secs = self.started.elapsed().as_secs_f64();
        match self.bar.take() {
            Some(b) => {
                if let Ok(style) = ProgressStyle::with_template("\u{2713} {msg}") {
                    b.set_style(style);
                }
                b.finish_with_message(format!("{} ok ({secs:.1}s)", self.label));
            }
            None => eprintln!("ok ({secs:.1}s)"),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        match self.bar.take() {
            Some(b) => {
                if let Ok(style) = ProgressStyle::with_template("\u{2717} {msg}") {
                    b.set_style(style);
                }
                b.abandon_with_message(format!("{} failed", self.label));
            }
            None => eprintln!("failed"),
        }
    }
}

/// Counters drawn as bars, by name: the bar, in plain mode the last tenth printed, and
/// whether it ended.
type Counter = (Option<ProgressBar>, u64, bool);
static COUNTS: LazyLock<Mutex<HashMap<String, Counter>>> = LazyLock::new(Default::default);

/// Reports `done` of `total` for the counter `what` (a bar on a terminal; in plain mode a
/// line at each tenth). The counter ends when `done >= total`; further reports at the end
/// are ignored, a report below it starts the counter again.
pub fn count(what: &str, done: usize, total: usize, extra: &str) {
    let Ok(mut counts) = COUNTS.lock() else {
        return;
    };
    let finished = done >= total;
    match counts.get(what) {
        Some((_, _, true)) if finished => return,
        Some((_, _, true)) => {
            counts.remove(what);
        }
        _ => {}
    }
    let entry = counts.entry(what.to_string()).or_insert_with(|| {
        let bar = is_tty().then(|| {
            let b = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "  {prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} {elapsed:.dim}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(what.to_string());
            b
        });
        (bar, u64::MAX, false)
    });
    match &entry.0 {
        Some(b) => {
            b.set_length(total as u64);
            b.set_position(done as u64);
            b.set_message(extra.to_string());
            if finished {
                b.finish();
            }
        }
        None => {
            let tenth = (done * 10).checked_div(total).unwrap_or(10) as u64;
            if tenth != entry.1 {
                entry.1 = tenth;
                eprintln!("  {what}: {done}/{total} {extra}");
            }
        }
    }
    entry.2 = finished;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_ends_at_its_total_and_can_start_again() {
        let ended = || {
            COUNTS
                .lock()
                .expect("lock")
                .get("test-counter")
                .map(|c| c.2)
        };
        count("test-counter", 0, 3, "");
        assert_eq!(ended(), Some(false));
        count("test-counter", 3, 3, "");
        assert_eq!(ended(), Some(true));
        count("test-counter", 3, 3, "");
        assert_eq!(ended(), Some(true));
        count("test-counter", 1, 3, "");
        assert_eq!(ended(), Some(false));
    }
}
