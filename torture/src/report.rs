//! Printing a run: one progress line per cycle while it runs, then the per-cycle table, totals,
//! warnings, samples of problems and the verdict.

use std::fmt::Write as _;

use crate::ledger::CycleStats;
use crate::run::Report;

/// The line printed when a cycle ends.
pub fn progress_line(stats: &CycleStats, cycles: u32) -> String {
    let kill = stats.kill_after_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
    format!(
        "cycle {:>4}/{cycles}: kill@{kill:>7} (inflight {:>4}, deferred {:>4})  acked {:>6} (unacked {:>3})  delivered {:>6} \
         (again {:>5})  fin {:>6} req {:>5} touch {:>5} disc {:>3}  corrupt {} unexpected {} \
         dup {:>4} early {}  [{:.2}s]",
        stats.cycle,
        stats.in_flight_at_kill,
        stats.deferred_at_kill,
        stats.acked,
        stats.sent - stats.acked,
        stats.delivered,
        stats.redelivered,
        stats.fin,
        stats.req,
        stats.touch,
        stats.disconnects,
        stats.corrupt,
        stats.unexpected,
        stats.duplicate,
        stats.early,
        as_secs(stats.duration_ms),
    )
}

#[allow(clippy::cast_precision_loss)]
fn as_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

const COLUMNS: usize = 19;

const HEADER: [&str; COLUMNS] = [
    "cycle",
    "kill_ms",
    "inflight@kill",
    "deferred@kill",
    "acked",
    "unacked",
    "pub_err",
    "delivered",
    "again",
    "fin",
    "req",
    "touch",
    "disc",
    "cons_err",
    "lost",
    "corrupt",
    "unexpected",
    "duplicate",
    "early",
];

fn row(label: &str, s: &CycleStats) -> [String; COLUMNS] {
    [
        label.to_owned(),
        s.kill_after_ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
        s.in_flight_at_kill.to_string(),
        s.deferred_at_kill.to_string(),
        s.acked.to_string(),
        (s.sent - s.acked).to_string(),
        s.pub_errors.to_string(),
        s.delivered.to_string(),
        s.redelivered.to_string(),
        s.fin.to_string(),
        s.req.to_string(),
        s.touch.to_string(),
        s.disconnects.to_string(),
        s.consumer_errors.to_string(),
        s.lost.to_string(),
        s.corrupt.to_string(),
        s.unexpected.to_string(),
        s.duplicate.to_string(),
        s.early.to_string(),
    ]
}

/// The whole report as text: the table (a row per cycle, the drain, totals) and the verdict.
pub fn render(report: &Report) -> String {
    let mut rows: Vec<[String; COLUMNS]> = vec![HEADER.map(str::to_owned)];
    rows.extend(report.cycles.iter().map(|c| row(&c.cycle.to_string(), c)));
    rows.push(row("drain", &report.drain));
    rows.push(row("total", &report.totals));
    let mut widths = [0usize; COLUMNS];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        if i == 1 || i == rows.len() - 2 {
            let _ = writeln!(
                out,
                "{}",
                widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ")
            );
        }
        let cells: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:>w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
    let t = &report.totals;
    let _ = writeln!(
        out,
        "\nseed {}, run {}: {} kills, {} messages acknowledged, {} deliveries, {} FINs; \
         lost {}, corrupt {}, unexpected {}, duplicate {}, early {}; {:.1}s",
        report.seed,
        report.run_id,
        report.kills,
        t.acked,
        t.delivered,
        t.fin,
        t.lost,
        t.corrupt,
        t.unexpected,
        t.duplicate,
        t.early,
        as_secs(report.elapsed_ms),
    );
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    if !report.samples.is_empty() {
        let _ = writeln!(out, "first problems seen:");
        for sample in &report.samples {
            let _ = writeln!(out, "  {sample}");
        }
    }
    if report.passed {
        let _ = writeln!(
            out,
            "PASS: nothing acknowledged was lost, nothing corrupt, nothing unexpected"
        );
    } else {
        let _ = writeln!(
            out,
            "FAIL: {} lost, {} corrupt, {} unexpected (data kept in {})",
            t.lost, t.corrupt, t.unexpected, report.data_path
        );
    }
    out
}
