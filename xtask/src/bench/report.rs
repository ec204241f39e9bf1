//! The benchmark report: machine facts, one row per figure × Python version × variant, the
//! printed table, `target/bench/report.json` and `target/bench/report.md` (for the README).
use crate::bench::stats::{AbResult, Summary};
use crate::util::{output, root};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Version of the report.json layout; bumped on any incompatible change.
pub const SCHEMA: u32 = 1;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub machine: Machine,
    /// `--quick`: a smoke run with far fewer samples; its numbers are not figures to quote.
    pub quick: bool,
    /// Wall time of the whole run, seconds (builds included).
    pub duration_s: f64,
    /// Of which building the helper and the agent, seconds.
    pub build_s: f64,
    /// Wall time of each figure measured, seconds, in run order (builds it triggered included).
    pub figure_s: Vec<(String, f64)>,
    pub rows: Vec<Row>,
}

/// Facts about the machine and the tree the figures were measured on.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    /// RFC 3339 UTC, start of the run.
    pub date: String,
    pub git_commit: String,
    /// Uncommitted changes in the tree when the run started.
    pub git_dirty: bool,
    /// `/proc/loadavg` at the start and at the end: a noisy machine shows here.
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub hostname: String,
}

impl Machine {
    pub fn collect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let git = |args: &[&str]| {
            output(Command::new("git").current_dir(root()).args(args)).map(|s| s.trim().to_owned())
        };
        Self {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            date: now_rfc3339(),
            git_commit: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
            git_dirty: git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()),
            loadavg_start: read("/proc/loadavg").trim().to_owned(),
            loadavg_end: String::new(),
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
        }
    }
}

/// The current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// How a row compares with its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "MISS")]
    Miss,
    /// Not measured: a piece is missing or failed; the notes say why. Never a made-up number.
    #[serde(rename = "N/A")]
    NotAvailable,
    /// Measured, with no target of its own (a reference, a baseline, a "reported" figure).
    #[serde(rename = "INFO")]
    Info,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::NotAvailable => "N/A",
            Verdict::Info => "INFO",
        }
    }

    /// PASS if `ok`, else MISS.
    pub fn check(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Miss }
    }
}

/// One line of the table: a figure for one Python version and variant.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// "B1" ... "B7".
    pub figure: &'static str,
    /// What exactly was measured, e.g. "slowdown, sync handler, agent + 5 unreached breakpoints".
    pub name: String,
    /// Interpreter version ("3.12.1"), or None for a figure not tied to one.
    pub python: Option<String>,
    /// Unit of `value`, `median`, `p99`, `min`, `max`.
    pub unit: &'static str,
    /// The headline value the verdict is based on.
    pub value: Option<f64>,
    pub median: Option<f64>,
    pub p99: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// A/B figures: the B/A ratio of each pair, in run order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pair_ratios: Vec<f64>,
    /// A/B figures: the raw measurements of the A (without) and B (with) runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ab: Option<AbResult>,
    /// How many runs (processes, pairs) the value rests on.
    pub runs: usize,
    /// How many samples (captures, requests, ...) in total, where that differs from runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    pub target: &'static str,
    pub verdict: Verdict,
    pub notes: Vec<String>,
    /// Raw output of the measurement scripts, for whoever wants to dig.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub raw: serde_json::Value,
}

impl Row {
    /// A row with nothing measured yet; fill in with the builder methods.
    pub fn new(figure: &'static str, name: impl Into<String>, unit: &'static str) -> Self {
        Self {
            figure,
            name: name.into(),
            python: None,
            unit,
            value: None,
            median: None,
            p99: None,
            min: None,
            max: None,
            pair_ratios: Vec::new(),
            ab: None,
            runs: 0,
            samples: None,
            target: "",
            verdict: Verdict::Info,
            notes: Vec::new(),
            raw: serde_json::Value::Null,
        }
    }

    pub fn python(mut self, version: &str) -> Self {
        self.python = Some(version.to_owned());
        self
    }

    pub fn target(mut self, target: &'static str) -> Self {
        self.target = target;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Marks the row N/A with the reason.
    pub fn not_available(mut self, reason: impl Into<String>) -> Self {
        self.verdict = Verdict::NotAvailable;
        self.value = None;
        self.notes.insert(0, reason.into());
        self
    }

    /// Fills median/p99/min/max from a summary (scaled by `scale`, e.g. ns → µs) and sets the
    /// headline value to the median.
    pub fn summary(mut self, s: &Summary, scale: f64) -> Self {
        self.median = Some(s.median * scale);
        self.p99 = Some(s.p99 * scale);
        self.min = Some(s.min * scale);
        self.max = Some(s.max * scale);
        self.value = self.median;
        self.samples = Some(s.n);
        self
    }

    /// Fills the row from an A/B result: value = median of the pair ratios.
    pub fn ab(mut self, r: AbResult) -> Self {
        self.value = Some(r.ratio.median);
        self.median = Some(r.ratio.median);
        self.min = Some(r.ratio.min);
        self.max = Some(r.ratio.max);
        self.pair_ratios = r.ratios.clone();
        self.runs = r.ratios.len();
        self.ab = Some(r);
        self
    }

    pub fn runs(mut self, runs: usize) -> Self {
        self.runs = runs;
        self
    }

    pub fn verdict(mut self, verdict: Verdict) -> Self {
        self.verdict = verdict;
        self
    }

    pub fn raw(mut self, raw: serde_json::Value) -> Self {
        self.raw = raw;
        self
    }

    /// The value as the table shows it.
    fn value_text(&self) -> String {
        let Some(v) = self.value else {
            return "-".into();
        };
        let mut s = format!("{} {}", fmt_num(v), self.unit);
        if let Some(p99) = self.p99 {
            let _ = write!(s, " (p99 {})", fmt_num(p99));
        } else if let (Some(min), Some(max)) = (self.min, self.max)
            && !self.pair_ratios.is_empty()
        {
            let _ = write!(s, " [{}..{}]", fmt_num(min), fmt_num(max));
        }
        s
    }

    fn runs_text(&self) -> String {
        if self.verdict == Verdict::NotAvailable {
            return "-".into();
        }
        let unit = match (self.pair_ratios.is_empty(), self.runs == 1) {
            (true, true) => "run",
            (true, false) => "runs",
            (false, true) => "pair",
            (false, false) => "pairs",
        };
        match self.samples {
            Some(n) if n != self.runs => format!("{} {unit}, {n} samples", self.runs),
            _ => format!("{} {unit}", self.runs),
        }
    }
}

/// A number with 3–4 significant digits, without scientific notation for ordinary values.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

impl Report {
    /// Rows for display: consecutive rows that differ only by Python version and are N/A for the
    /// same reason are shown once, with their versions joined.
    fn display_groups(&self) -> Vec<(&Row, Vec<&str>)> {
        let mut groups: Vec<(&Row, Vec<&str>)> = Vec::new();
        for r in &self.rows {
            let py = r.python.as_deref().unwrap_or("-");
            if let Some((last, pys)) = groups.last_mut()
                && r.verdict == Verdict::NotAvailable
                && last.verdict == Verdict::NotAvailable
                && last.figure == r.figure
                && last.name == r.name
                && last.notes == r.notes
            {
                pys.push(py);
                continue;
            }
            groups.push((r, vec![py]));
        }
        groups
    }

    /// The table printed at the end of a run (also the body of report.md).
    pub fn table(&self) -> String {
        let header = [
            "figure", "what", "python", "value", "target", "verdict", "runs",
        ];
        let rows: Vec<[String; 7]> = self
            .display_groups()
            .into_iter()
            .map(|(r, pys)| {
                [
                    r.figure.to_owned(),
                    r.name.clone(),
                    pys.join(", "),
                    r.value_text(),
                    r.target.to_owned(),
                    r.verdict.label().to_owned(),
                    r.runs_text(),
                ]
            })
            .collect();
        let mut width = header.map(|h| h.chars().count());
        for r in &rows {
            for (w, cell) in width.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (cell, w) in cells.iter().zip(width) {
                let pad = w - cell.chars().count();
                let _ = write!(s, " {cell}{} |", " ".repeat(pad));
            }
            s.push('\n');
            s
        };
        let mut out = line(&header.map(String::from));
        out += &line(&width.map(|w| "-".repeat(w)));
        for r in &rows {
            out += &line(r);
        }
        out
    }

    /// The notes of every row that has any, numbered by row, for below the table.
    pub fn notes_text(&self) -> String {
        let mut out = String::new();
        for (r, pys) in self.display_groups() {
            if !r.notes.is_empty() {
                let _ = writeln!(
                    out,
                    "* {} {} ({}): {}",
                    r.figure,
                    r.name,
                    pys.join(", "),
                    r.notes.join("; ")
                );
            }
        }
        out
    }

    /// Markdown for the README: date, machine, table, notes.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "Measured {} on {} ({} cores, Linux {}), commit {}{}{}.\n\n",
            m.date,
            m.cpu_model,
            m.cores,
            m.kernel,
            &m.git_commit[..m.git_commit.len().min(12)],
            if m.git_dirty {
                " (with local changes)"
            } else {
                ""
            },
            if self.quick {
                "; QUICK smoke run, not figures to quote"
            } else {
                ""
            },
        );
        out += &self.table();
        out.push('\n');
        out += &self.notes_text();
        out += &format!(
            "\nThe run took {:.0} s ({:.0} s building): {}.\n",
            self.duration_s,
            self.build_s,
            self.figure_s
                .iter()
                .map(|(f, s)| format!("{f} {s:.0} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out
    }

    /// Writes report.json and report.md into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = dir.join("report.json");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&json, text + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_not_available_rows_are_shown_once() {
        let na = |py: &str| {
            Row::new("B3", "false condition", "µs")
                .python(py)
                .not_available("helper not built")
        };
        let report = Report {
            schema: SCHEMA,
            machine: Machine::collect(),
            quick: true,
            duration_s: 0.0,
            build_s: 0.0,
            figure_s: Vec::new(),
            rows: vec![
                na("3.11.7"),
                na("3.12.1"),
                Row::new("B3", "false condition", "µs").python("3.13.0"),
            ],
        };
        let t = report.table();
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(t.contains("3.11.7, 3.12.1"), "{t}");
        assert_eq!(report.notes_text().lines().count(), 1);
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(fmt_num(1.0234), "1.023");
        assert_eq!(fmt_num(43.97), "43.97");
        assert_eq!(fmt_num(21345.6), "21346");
        assert_eq!(fmt_num(0.12345), "0.1235");
        assert_eq!(fmt_num(0.0), "0");
    }

    #[test]
    fn not_available_rows_carry_no_value_and_say_why() {
        let r = Row::new("B3", "false condition", "µs")
            .not_available("helper not built")
            .python("3.12.1");
        assert_eq!(r.verdict, Verdict::NotAvailable);
        assert_eq!(r.value, None);
        assert_eq!(r.notes, ["helper not built"]);
        assert_eq!(r.value_text(), "-");
        assert_eq!(r.runs_text(), "-");
    }

    #[test]
    fn table_has_a_line_per_row() {
        let s = Summary::of(&[1.0, 2.0, 3.0]).expect("samples");
        let report = Report {
            schema: SCHEMA,
            machine: Machine::collect(),
            quick: true,
            duration_s: 0.0,
            build_s: 0.0,
            figure_s: Vec::new(),
            rows: vec![
                Row::new("B2", "plain capture", "µs")
                    .python("3.12.1")
                    .summary(&s, 1.0)
                    .runs(1),
                Row::new("B4", "attach", "ms").not_available("agent missing"),
            ],
        };
        let t = report.table();
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(t.contains("1 run, 3 samples"), "{t}");
        assert!(t.contains("2.000 µs (p99 3.000)"), "{t}");
        assert!(t.contains("N/A"), "{t}");
        let v = serde_json::to_value(&report).expect("serialises");
        assert_eq!(v["rows"][1]["verdict"], "N/A");
        assert_eq!(v["rows"][0]["p99"], 3.0);
    }
}
