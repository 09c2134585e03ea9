//! Pairing: each side's newest row per job, streamed once, kept as a
//! [`Side`] (id, label, status, files) and a few parameter values; jobs
//! pair by job id, or by the values of the `--by` columns.

use std::collections::HashMap;

use super::{CompareError, ParamDiff, Side};
use crate::folder::{Row, RunFolder};
use crate::runlog::job_key;

/// A parameter value shown in a pair's differences is clipped to this.
const MAX_VALUE: usize = 200;

/// One side's job before pairing.
pub(super) struct Job {
    pub side: Side,
    /// The values of the parameters both logs have (and `seed`), in the
    /// order of [`Columns::shared`].
    pub values: Vec<String>,
}

/// Two jobs (or one) to classify, with the parameters that differ.
pub(super) struct Paired {
    pub a: Option<Side>,
    pub b: Option<Side>,
    pub params: Vec<ParamDiff>,
}

/// The parameters both logs have, `seed` first.
fn shared(a: &RunFolder, b: &RunFolder) -> Vec<String> {
    std::iter::once("seed".to_string())
        .chain(
            a.params()
                .iter()
                .filter(|p| b.params().contains(p))
                .cloned(),
        )
        .collect()
}

fn side_of(folder: &RunFolder, row: &Row) -> Side {
    Side {
        id: folder.get(row, "job_id").to_string(),
        label: folder.get(row, "job").to_string(),
        status: folder.get(row, "status").to_string(),
        error: crate::text::one_line(folder.get(row, "error")),
        files: folder.files(row).map(str::to_string).collect(),
    }
}

/// Checks that every `--by` name is a column of `folder`.
fn check_by(folder: &RunFolder, side: &'static str, by: &[String]) -> Result<(), CompareError> {
    for name in by {
        if !folder.has(name) {
            let known: Vec<String> = std::iter::once("seed".to_string())
                .chain(folder.params().iter().cloned())
                .collect();
            return Err(CompareError::UnknownBy {
                name: name.clone(),
                side,
                log: folder.root().join(crate::runlog::LOG).display().to_string(),
                suggestion: crate::text::nearest(name, known.iter().map(String::as_str)),
                known,
            });
        }
    }
    Ok(())
}

/// A side's jobs (newest row each, label order) and their pairing keys.
fn jobs(
    folder: &RunFolder,
    side: &'static str,
    by: &[String],
    shared: &[String],
) -> Result<Vec<(u128, Job)>, CompareError> {
    let folder_err = |source| CompareError::Folder { side, source };
    let mut out: Vec<(u128, Job)> = Vec::new();
    let mut seen: HashMap<u128, usize> = HashMap::new();
    for row in folder.newest().map_err(folder_err)? {
        let row = row.map_err(|e| folder_err(e.into()))?;
        let side_job = side_of(folder, &row);
        let key = if by.is_empty() {
            job_key(&side_job.id)
        } else {
            let values: Vec<&str> = by.iter().map(|n| folder.param(&row, n)).collect();
            crate::hash::hash128(&values)
        };
        if let Some(&first) = seen.get(&key) {
            let name = |s: &Side| format!("{} ({})", s.label, s.id);
            return Err(CompareError::Ambiguous {
                by: by.join(","),
                side,
                first: name(&out[first].1.side),
                second: name(&side_job),
            });
        }
        seen.insert(key, out.len());
        let values = shared
            .iter()
            .map(|n| crate::text::clip(folder.param(&row, n), MAX_VALUE))
            .collect();
        out.push((
            key,
            Job {
                side: side_job,
                values,
            },
        ));
    }
    Ok(out)
}

/// Pairs the jobs of `a` and `b`: A's in label order (with B's match or
/// none; with `only_b_jobs`, those without one are left out), then B's
/// without a match.
pub(super) fn pair(
    a: &RunFolder,
    b: &RunFolder,
    by: &[String],
    only_b_jobs: bool,
) -> Result<Vec<Paired>, CompareError> {
    check_by(a, "A", by)?;
    check_by(b, "B", by)?;
    let shared = shared(a, b);
    let ja = jobs(a, "A", by, &shared)?;
    let jb = jobs(b, "B", by, &shared)?;
    let (na, nb) = (ja.len(), jb.len());
    let mut in_b: HashMap<u128, usize> = jb.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
    let mut b_jobs: Vec<Option<Job>> = jb.into_iter().map(|(_, j)| Some(j)).collect();
    let mut out = Vec::with_capacity(na.max(nb));
    let mut matched = 0;
    for (key, job_a) in ja {
        let job_b = in_b.remove(&key).and_then(|i| b_jobs[i].take());
        matched += usize::from(job_b.is_some());
        if job_b.is_none() && only_b_jobs {
            continue;
        }
        let params = job_b
            .as_ref()
            .map(|jb| differing(&shared, &job_a.values, &jb.values))
            .unwrap_or_default();
        out.push(Paired {
            a: Some(job_a.side),
            b: job_b.map(|j| j.side),
            params,
        });
    }
    if matched == 0 && na > 0 && nb > 0 {
        return Err(if by.is_empty() {
            CompareError::NothingShared { a: na, b: nb }
        } else {
            CompareError::NothingSharedBy {
                by: by.join(","),
                a: na,
                b: nb,
            }
        });
    }
    out.extend(b_jobs.into_iter().flatten().map(|j| Paired {
        a: None,
        b: Some(j.side),
        params: Vec::new(),
    }));
    Ok(out)
}

fn differing(names: &[String], a: &[String], b: &[String]) -> Vec<ParamDiff> {
    names
        .iter()
        .zip(a.iter().zip(b))
        .filter(|(_, (x, y))| x != y)
        .map(|(name, (x, y))| ParamDiff {
            name: name.clone(),
            a: x.clone(),
            b: y.clone(),
        })
        .collect()
}
