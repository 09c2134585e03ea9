//! What a comparison is written as: the summary for people (environment
//! differences, counts, the worst pairs), one CSV or JSON record per pair,
//! JUnit (a testcase per pair), and a Markdown job summary.

use std::fmt::Write as _;
use std::path::Path;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde_json::json;

use super::{Class, CompareError, Comparison, Pair};

/// How the pairs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Environment differences, counts and the worst pairs.
    #[default]
    Text,
    /// One CSV record per pair, with a header.
    Csv,
    /// One JSON object per pair, a line each.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err("expected text, csv or json".into()),
        }
    }
}

/// The worst pairs the summary lists.
const LISTED: usize = 20;

fn ids(p: &Pair) -> (&str, &str) {
    (
        p.a.as_ref().map_or("", |s| s.id.as_str()),
        p.b.as_ref().map_or("", |s| s.id.as_str()),
    )
}

fn metric(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.4}")).unwrap_or_default()
}

/// The counts line: `12 pairs: 9 identical, 1 same, 1 close, 1 different,
/// 0 missing, 0 failed`.
pub fn counts(c: &Comparison) -> String {
    let parts: Vec<String> = Class::ALL
        .iter()
        .map(|k| format!("{} {}", c.count(*k), k.name()))
        .collect();
    format!("{} pairs: {}", c.pairs.len(), parts.join(", "))
}

/// The summary for people: environment differences first, then the
/// counts, then the worst pairs that do not pass (or are close).
pub fn summary(c: &Comparison) -> String {
    let mut out = String::new();
    if c.environment.is_empty() {
        out.push_str("environment: no difference\n");
    } else {
        out.push_str("environment:\n");
        for line in &c.environment {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "{}", counts(c));
    let worst: Vec<&Pair> = c
        .pairs
        .iter()
        .filter(|p| p.class > Class::Same)
        .take(LISTED)
        .collect();
    if !worst.is_empty() {
        out.push_str("worst first:\n");
        for p in &worst {
            let (a, b) = ids(p);
            let mut line = p.label().to_string();
            if a == b {
                let _ = write!(line, " {a}");
            } else {
                let _ = write!(line, " {} ↔ {}", or_dash(a), or_dash(b));
            }
            if !p.reason.is_empty() {
                let _ = write!(line, ": {}", p.reason);
            }
            if let Some(ssim) = p.ssim.filter(|_| p.psnr.is_some()) {
                let _ = write!(line, ", SSIM {ssim:.4}");
            }
            // One line whatever a label or an error holds.
            let line = crate::text::clip(&crate::text::one_line(&line), 400);
            let _ = writeln!(out, "  {:<9} {line}", p.class.name());
        }
        let more = c.pairs.iter().filter(|p| p.class > Class::Same).count() - worst.len();
        if more > 0 {
            let _ = writeln!(out, "  … and {more} more (--format csv lists every pair)");
        }
    }
    out
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// The pairs as records, worst first: CSV with a header, or JSON, one
/// object a line. PSNR is empty (`null`) when not measured or infinite
/// (equal pixels): the class says which.
pub fn records(c: &Comparison, format: Format) -> String {
    match format {
        Format::Text => summary(c),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record([
                "a_job_id", "b_job_id", "job", "class", "psnr_db", "ssim", "reason", "a_files",
                "b_files", "params",
            ]);
            for p in &c.pairs {
                let (a, b) = ids(p);
                let files = |s: &Option<super::Side>| {
                    s.as_ref().map(|s| s.files.join(";")).unwrap_or_default()
                };
                let params: Vec<String> = p
                    .params
                    .iter()
                    .map(|d| format!("{}={}→{}", d.name, d.a, d.b))
                    .collect();
                let _ = w.write_record([
                    a,
                    b,
                    p.label(),
                    p.class.name(),
                    &metric(p.psnr),
                    &metric(p.ssim),
                    &p.reason,
                    &files(&p.a),
                    &files(&p.b),
                    &params.join("; "),
                ]);
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        Format::Json => {
            let mut out = String::new();
            for p in &c.pairs {
                let side = |s: &Option<super::Side>| {
                    s.as_ref().map(|s| {
                        json!({"job_id": s.id, "job": s.label, "status": s.status, "files": s.files})
                    })
                };
                let round = |v: Option<f64>| v.map(|v| (v * 10_000.0).round() / 10_000.0);
                let record = json!({
                    "class": p.class,
                    "a": side(&p.a),
                    "b": side(&p.b),
                    "psnr_db": round(p.psnr),
                    "ssim": round(p.ssim),
                    "reason": p.reason,
                    "params": p.params,
                });
                let _ = writeln!(out, "{record}");
            }
            out
        }
    }
}

/// JUnit XML: a testcase per pair (named by its label and ids), failing
/// those that are not identical, same or close, written atomically.
pub fn junit(c: &Comparison, path: &Path) -> Result<(), CompareError> {
    let mut suite = TestSuite::new("compare");
    for p in &c.pairs {
        let status = if p.class.passes() {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(format!("{}: {}", p.class.name(), p.reason))
                .set_type(p.class.name());
            s
        };
        let (a, b) = ids(p);
        let name = if a == b {
            format!("{} ({a})", p.label())
        } else {
            format!("{} ({} ↔ {})", p.label(), or_dash(a), or_dash(b))
        };
        let mut case = TestCase::new(name, status);
        case.set_classname("compare");
        let mut out = format!("class: {}\n", p.class.name());
        if let Some(db) = p.psnr {
            let _ = writeln!(out, "psnr_db: {db:.4}");
        }
        if let Some(s) = p.ssim {
            let _ = writeln!(out, "ssim: {s:.4}");
        }
        case.set_system_out(out);
        suite.add_test_case(case);
    }
    let mut report = Report::new("comfy-batch compare");
    report.add_test_suite(suite);
    let xml = report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- comfy-batch: could not render JUnit: {e} -->\n"));
    super::write_output(c, "--junit", path, xml.as_bytes())
}

/// The Markdown job summary: the folders, the environment differences,
/// the counts as a table, and the worst pairs.
pub fn step_summary(c: &Comparison, max_different: usize) -> String {
    let mut out = String::new();
    let failing = c.failing();
    let _ = writeln!(
        out,
        "### comfy-batch compare: {}\n",
        if failing > max_different {
            format!(
                "{failing} pair(s) not identical, same or close (at most {max_different} allowed)"
            )
        } else {
            "passed".to_string()
        }
    );
    let _ = writeln!(
        out,
        "`{}` → `{}`\n",
        c.a.display().to_string().replace('`', "'"),
        c.b.display().to_string().replace('`', "'")
    );
    if !c.environment.is_empty() {
        out.push_str("Environment:\n\n");
        for line in &c.environment {
            let _ = writeln!(out, "- {}", crate::ci::markdown_cell(line));
        }
        out.push('\n');
    }
    out.push_str("| class | pairs |\n| --- | ---: |\n");
    for k in Class::ALL {
        let _ = writeln!(out, "| {} | {} |", k.name(), c.count(k));
    }
    let worst: Vec<&Pair> = c
        .pairs
        .iter()
        .filter(|p| !p.class.passes())
        .take(LISTED)
        .collect();
    if !worst.is_empty() {
        out.push_str("\n| job | class | reason |\n| --- | --- | --- |\n");
        for p in worst {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                crate::ci::markdown_cell(p.label()),
                p.class.name(),
                crate::ci::markdown_cell(&p.reason)
            );
        }
    }
    out
}
