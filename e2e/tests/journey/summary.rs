//! The journey's summary: the timings it measured and the requests of every phase, as a table that is
//! printed at the end and written to `summary.txt` in the run directory.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::load::PhaseStats;

/// What the journey measured.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    timings: Vec<(String, Duration, String)>,
    /// Phase name → what the design promises about its failures.
    promises: Vec<(String, String)>,
}

impl Summary {
    /// A measured time, with a note.
    pub(crate) fn time(&mut self, what: &str, took: Duration, note: impl Into<String>) {
        eprintln!("  measured: {what}: {:.1}s", took.as_secs_f64());
        self.timings.push((what.to_owned(), took, note.into()));
    }

    /// What phase `phase` promises (shown next to its counts).
    pub(crate) fn promise(&mut self, phase: &str, promise: &str) {
        self.promises.push((phase.to_owned(), promise.to_owned()));
    }

    /// The table.
    pub(crate) fn render(&self, phases: &[Arc<PhaseStats>]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== Switchyard journey: timings ==");
        for (what, took, note) in &self.timings {
            let _ = writeln!(out, "  {what:<54} {:>7.1} s  {note}", took.as_secs_f64());
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "== requests per phase ==");
        let _ = writeln!(
            out,
            "  {:<38} {:>6} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>5}  promise",
            "phase", "secs", "requests", "failed", "intrpt", "logins", "reconn", "pushes", "moved"
        );
        for phase in phases
            .iter()
            .filter(|p| PhaseStats::get(&p.requests) > 0 || p.name != "setup")
        {
            let promise = self
                .promises
                .iter()
                .find(|(name, _)| *name == phase.name)
                .map(|(_, promise)| promise.as_str())
                .unwrap_or("-");
            let _ = writeln!(
                out,
                "  {:<38} {:>6.1} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>5}  {promise}",
                phase.name,
                phase.duration().as_secs_f64(),
                PhaseStats::get(&phase.requests),
                PhaseStats::get(&phase.failed),
                PhaseStats::get(&phase.interrupted),
                PhaseStats::get(&phase.logins),
                PhaseStats::get(&phase.reconnects),
                PhaseStats::get(&phase.pushes),
                PhaseStats::get(&phase.moved),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  failed: error answers, timeouts and connections lost without warning; intrpt: requests cut off\n  \
             after the server asked the client to reconnect elsewhere; moved: a player found on another node\n  \
             than it was bound to (whoami, or a re-login after a reconnect)."
        );
        out
    }
}
