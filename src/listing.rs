//! A plan's jobs printed for people and tools (`comfy-batch plan`): an
//! aligned table, JSON (an object per line) or CSV with `runs.csv`'s leading
//! columns; and each job's patched prompt written as a file. Reads a
//! [`Plan`]; knows nothing of argv, servers or output folders.

use std::io::{self, Write};
use std::path::Path;

use serde_json::Value;

use crate::plan::{Cell, Job, Plan};

/// How `plan` prints the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// A JSON array, one job object per line.
    Json,
    /// CSV with the same leading columns as `runs.csv`.
    Csv,
}

/// Writes every job of `plan` to `out` in `format`.
pub fn write(plan: &Plan, format: Format, out: &mut impl Write) -> io::Result<()> {
    match format {
        Format::Table => write_table(plan, out),
        Format::Json => write_json(plan, out),
        Format::Csv => write_csv(plan, out),
    }
}

/// Writes each job's patched prompt as `dir/<job_id>.json` (making `dir`).
pub fn write_prompts(plan: &Plan, dir: &Path) -> io::Result<()> {
    let fail = |e: io::Error, path: &Path| {
        io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e, dir))?;
    for job in plan.jobs() {
        let path = dir.join(format!("{}.json", job.id));
        let mut text =
            serde_json::to_string_pretty(&job.prompt).expect("plain data always serialises");
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| fail(e, &path))?;
    }
    Ok(())
}

/// A parameter value as a cell: strings bare, anything else as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The cells of one job, in header order (without `workflow_sha256` when
/// `with_sha` is false).
fn row(plan: &Plan, job: &Job, with_sha: bool) -> Vec<String> {
    let mut cells = vec![
        job.id.to_string(),
        job.label.clone(),
        job.workflow.name.clone(),
    ];
    if with_sha {
        cells.push(job.workflow.sha256.clone());
    }
    cells.push(job.seed.map(|s| s.to_string()).unwrap_or_default());
    if plan.has_packs() {
        cells.extend(crate::runlog::pack_cells(job.pack.as_ref()));
    }
    for col in plan.columns() {
        let value = job
            .params
            .iter()
            .find(|(n, _)| n == col)
            .map(|(_, v)| cell(v));
        cells.push(value.unwrap_or_default());
    }
    cells
}

fn header(plan: &Plan, with_sha: bool) -> Vec<String> {
    let mut h: Vec<String> = ["job_id", "job", "workflow"].map(String::from).to_vec();
    if with_sha {
        h.push("workflow_sha256".into());
    }
    h.push("seed".into());
    // The CSV has runs.csv's leading columns; the table shows the pack
    // columns only for a plan with packs.
    if with_sha || plan.has_packs() {
        h.extend(crate::runlog::PACK.map(String::from));
    }
    h.extend(plan.columns().iter().cloned());
    h
}

/// Widest a table cell gets; longer values are cut with an ellipsis.
const MAX_CELL: usize = 40;

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX_CELL - 1).collect();
        t.push('…');
        t
    }
}

fn write_table(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    let head = header(plan, false);
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for job in plan.jobs() {
        for (w, c) in widths.iter_mut().zip(row(plan, &job, false)) {
            *w = (*w).max(clip(&c).chars().count());
        }
    }
    let line = |cells: &[String], out: &mut dyn Write| -> io::Result<()> {
        let mut text = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let c = clip(c);
            text.push_str(&c);
            text.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&head, out)?;
    for job in plan.jobs() {
        line(&row(plan, &job, false), out)?;
    }
    writeln!(
        out,
        "{} job{}",
        plan.len(),
        if plan.len() == 1 { "" } else { "s" }
    )
}

fn write_json(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "[")?;
    for job in plan.jobs() {
        let params: serde_json::Map<String, Value> = job.params.iter().cloned().collect();
        let images: Vec<Value> = job
            .images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "node": i.node.as_str(),
                    "input": i.input,
                    "path": i.path.display().to_string(),
                })
            })
            .collect();
        let mut obj = serde_json::json!({
            "job_id": job.id.as_str(),
            "job": job.label,
            "workflow": job.workflow.name,
            "workflow_sha256": job.workflow.sha256,
            "seed": job.seed,
            "params": params,
            "images": images,
        });
        if let Some(p) = &job.pack {
            obj["batch_index"] = p.batch_index.into();
            obj["pack_size"] = p.size.into();
            obj["pack_id"] = p.id.as_str().into();
        }
        let sep = if job.index + 1 < plan.len() { "," } else { "" };
        writeln!(out, "  {obj}{sep}")?;
    }
    writeln!(out, "]")
}

/// The jobs as CSV, `runs.csv`'s leading columns first, a row at a time.
pub fn write_csv(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .buffer_capacity(1 << 16)
        .from_writer(out);
    w.write_record(header(plan, true)).map_err(csv_io)?;
    let mut buf = String::new();
    let mut num = itoa_buf();
    plan.for_each_row(|row| -> io::Result<()> {
        w.write_field(row.id).map_err(csv_io)?;
        buf.clear();
        buf.push_str(row.group);
        buf.push('#');
        buf.push_str(decimal(row.number as u64, &mut num));
        w.write_field(&buf).map_err(csv_io)?;
        w.write_field(&row.workflow.name).map_err(csv_io)?;
        w.write_field(&row.workflow.sha256).map_err(csv_io)?;
        match row.seed {
            Some(s) => w.write_field(decimal(s, &mut num)).map_err(csv_io)?,
            None => w.write_field("").map_err(csv_io)?,
        }
        for c in crate::runlog::pack_cells(row.pack.as_ref()) {
            w.write_field(c).map_err(csv_io)?;
        }
        for c in row.cells {
            match c {
                None => w.write_field("").map_err(csv_io)?,
                Some(Cell::Text(t)) => w.write_field(t).map_err(csv_io)?,
                Some(Cell::Json(Value::String(t))) => w.write_field(t).map_err(csv_io)?,
                Some(Cell::Json(v)) => {
                    buf.clear();
                    use std::fmt::Write as _;
                    let _ = write!(buf, "{v}");
                    w.write_field(&buf).map_err(csv_io)?;
                }
            }
        }
        w.write_record(None::<&[u8]>).map_err(csv_io)?;
        Ok(())
    })?;
    w.flush()
}

/// A CSV error as the I/O error it wraps (so a closed pipe stays
/// `BrokenPipe`: `plan … | head` is not a failure).
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, written into `buf` (no allocation per row).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}
