//! Jobs rebuilt from typed rows of a run log (`rerun`): a row holds
//! everything a job was made of (workflow path and sha256, seed, every
//! parameter; paths relative to the log), so the job is re-planned from it
//! through the ordinary manifest → plan → patch path and gets the same job
//! id and prompt. Reads the workflow files the rows name, as planning does;
//! never the output folder: the job as last sent is asked of the caller.

use std::path::Path;

use serde_json::{Map, Value};

use super::{Job, Loads, Pack, Plan};
use crate::ids::JobId;
use crate::manifest::{Alias, DrawSpec, JobSpec, Manifest, Param, SeedSpec, Span, WorkflowEntry};
use crate::runlog::{self, Logged};

/// What the rows alone do not say: where they were planned.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The log's folder: the rows' workflow paths are relative to it.
    pub dir: &'a Path,
    /// The original manifest's folder (image paths are logged as written
    /// there).
    pub base: &'a Path,
    /// The manifest's parameter aliases (name → `node.input`).
    pub aliases: &'a Map<String, Value>,
    /// The template choice columns: logged, not set.
    pub choices: &'a [String],
    /// Whether a row whose workflow changed since is rebuilt from the new
    /// file (the job then gets a new id) rather than refused.
    pub allow_changed: bool,
    /// The workflow files, each read once: every row naming one is
    /// rebuilt from the same bytes.
    pub workflows: &'a Loads,
}

/// The workflow file a row names, by its absolute path (the key of
/// [`Origin::workflows`]).
fn workflow_path(dir: &Path, row: &Logged) -> std::path::PathBuf {
    let path = dir.join(&row.workflow);
    std::path::absolute(&path).unwrap_or(path)
}

/// Rebuilds one job from its row through a one-job manifest, built
/// directly (no text round trip) as if it stood in the original manifest's
/// folder `base` (image paths are logged as written there); the workflow is
/// named by its absolute path. Problems name the log's line.
pub fn rebuild(row: &Logged, origin: &Origin) -> Result<Job, Vec<String>> {
    let Origin {
        dir,
        base,
        aliases,
        choices,
        ..
    } = *origin;
    let at = Span {
        line: row.line,
        col: 1,
    };
    let set = row
        .params
        .iter()
        // Template choices are logged, not set: the resolved text is.
        .filter(|(name, _)| !choices.contains(name))
        .filter_map(|(name, cell)| {
            Some(Param {
                name: name.clone(),
                value: runlog::value(cell)?,
                at,
            })
        })
        .collect();
    let pack = logged_pack(row).map_err(|e| vec![e])?;
    // A packed row's image is one of its pack's: the pack is rebuilt (its
    // seed in each of its places) and the row's job taken from it.
    let places = pack.as_ref().map_or(1, |p| p.size as usize);
    let seeds = match row.seed.as_str() {
        "" => None,
        seed => Some(SeedSpec::List(vec![
            seed.parse().map_err(|_| {
                vec![format!("line {}: seed '{seed}' is not a number", row.line)]
            })?;
            places
        ])),
    };
    let workflow = workflow_path(dir, row);
    let manifest = Manifest {
        path: dir.join("runs.csv"),
        dir: base.to_path_buf(),
        servers: Vec::new(),
        output: None,
        concurrency: None,
        workflows: vec![WorkflowEntry {
            name: "w".into(),
            path: workflow,
            at,
        }],
        params: aliases
            .iter()
            .filter_map(|(name, target)| {
                Some(Alias {
                    name: name.clone(),
                    target: target.as_str()?.to_string(),
                    at,
                })
            })
            .collect(),
        defaults: Vec::new(),
        jobs: vec![JobSpec {
            name: "rerun".into(),
            at,
            workflows: vec!["w".into()],
            workflow_at: at,
            matrix: Vec::new(),
            zip: Vec::new(),
            zip_at: at,
            zip_first: false,
            set,
            seeds,
            seeds_at: at,
            templates: Vec::new(),
            templates_at: at,
            draw: DrawSpec::All,
            draw_at: at,
            pack: pack.as_ref().map(|p| p.size),
            pack_at: at,
        }],
        wildcards: base.join("wildcards"),
        grids: Vec::new(),
    };
    let plan =
        Plan::with_loads(&manifest, rand::random(), origin.workflows).map_err(|e| e.lines())?;
    let mut job = plan
        .jobs()
        .nth(pack.map_or(0, |p| p.batch_index as usize))
        .ok_or_else(|| vec![format!("line {}: the row rebuilds to no job", row.line)])?;
    job.label = row.job.clone();
    for (name, cell) in row.params.iter().filter(|(n, _)| choices.contains(n)) {
        // Choices are text: a cell that reads as a number stays as it is.
        let text = match runlog::value(cell) {
            None => continue,
            Some(Value::String(s)) => s,
            Some(_) => cell.clone(),
        };
        job.params.push((name.clone(), Value::String(text)));
    }
    Ok(job)
}

/// A packed row's pack (`batch_index`, `pack_size`, `pack_id`), `None`
/// for a row outside packs or from a log without the columns.
pub fn logged_pack(row: &Logged) -> Result<Option<Pack>, String> {
    let [index, size, id] = &row.pack;
    if index.is_empty() && size.is_empty() && id.is_empty() {
        return Ok(None);
    }
    let bad = || {
        format!(
            "line {}: batch_index '{index}', pack_size '{size}' and pack_id '{id}' are not a pack",
            row.line
        )
    };
    let (batch_index, size) = match (index.parse::<u64>(), size.parse::<u64>()) {
        (Ok(i), Ok(n)) if i < n && n <= 4096 => (i, n),
        _ => return Err(bad()),
    };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(Some(Pack {
        id: JobId::new(id.clone()),
        batch_index,
        size,
    }))
}

/// A row rebuilt ([`rebuild_row`]): the job, and a warning when it was
/// taken from the job as last sent rather than from the row.
#[derive(Debug)]
pub struct Rebuilt {
    /// The job.
    pub job: Job,
    /// Why the job as sent was used (the caller shows it once).
    pub warning: Option<String>,
}

/// Rebuilds one row; `Err` holds every problem found, each naming the log
/// and the row's line or its workflow and job. A row that does not
/// rebuild faithfully (its workflow file gone or unreadable, or rebuilding
/// to another job) is taken from `sent`, the job exactly as last sent,
/// when that has it (the warning says so). Reads the row's workflow file
/// (and `sent` its prompt file) each time: a file changed since gives
/// another answer, which the caller may compare.
pub fn rebuild_row(
    row: &Logged,
    origin: &Origin,
    sent: impl Fn(&Logged) -> Result<Job, String>,
) -> Result<Rebuilt, Vec<String>> {
    let dir = origin.dir;
    let log = || dir.join(runlog::LOG);
    // The id names files in the output folder: only our own form.
    // 16 hex digits; 12 in logs written before ids grew to 64 bits.
    let valid_id = matches!(row.job_id.len(), 12 | 16)
        && row
            .job_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid_id {
        return Err(vec![format!(
            "{}: line {}: '{}' is not a comfy-batch job id",
            log().display(),
            row.line,
            row.job_id
        )]);
    }
    // Bad pack cells are the log's damage: named by its line, once (not as
    // the workflow's problem, twice over through `sent`).
    if let Err(e) = logged_pack(row) {
        return Err(vec![format!("{}: {e}", log().display())]);
    }
    let path = dir.join(&row.workflow);
    let at = format!("{}: job {} ({})", path.display(), row.job_id, row.job);
    let sha = match origin.workflows.sha256(&workflow_path(dir, row)) {
        Ok(sha) => sha,
        Err(read) => {
            return match sent(row) {
                Ok(job) => Ok(Rebuilt {
                    warning: Some(format!(
                        "{at}: workflow unreadable ({read}); using prompts/{}.json",
                        job.prompt_file_id()
                    )),
                    job,
                }),
                Err(e) => Err(vec![format!("{at}: workflow unreadable ({read}) and {e}")]),
            };
        }
    };
    let same = sha == row.workflow_sha256;
    if !same && !origin.allow_changed {
        return Err(vec![format!(
            "{at}: the workflow changed since the run (sha256 {} was {}); pass --allow-changed-workflow to rebuild from the new file",
            &sha[..12],
            &row.workflow_sha256
                .get(..12)
                .unwrap_or(&row.workflow_sha256)
        )]);
    }
    match rebuild(row, origin) {
        Ok(rebuilt) if same && rebuilt.id.as_str() != row.job_id => {
            // Same workflow, different job: the row cannot be rebuilt
            // faithfully; the sent prompt can.
            match sent(row) {
                Ok(job) => Ok(Rebuilt {
                    warning: Some(format!(
                        "{at}: the row rebuilds as job {}; using prompts/{}.json, the prompt as sent",
                        rebuilt.id,
                        job.prompt_file_id()
                    )),
                    job,
                }),
                Err(e) => Err(vec![format!("{at}: rebuilt as a different job and {e}")]),
            }
        }
        Ok(job) => Ok(Rebuilt { job, warning: None }),
        // E.g. a text cell that reads as a number ("1984"): the prompt as
        // sent still holds the job exactly.
        Err(lines) if same => match sent(row) {
            Ok(job) => Ok(Rebuilt {
                warning: Some(format!(
                    "{at}: the row does not rebuild ({}); using prompts/{}.json, the prompt as sent",
                    lines.join("; "),
                    job.prompt_file_id()
                )),
                job,
            }),
            Err(e) => Err(vec![format!(
                "{at}: the row does not rebuild ({}) and {e}",
                lines.join("; ")
            )]),
        },
        Err(lines) => Err(lines.into_iter().map(|l| format!("{at}: {l}")).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Attempt, Outcome, Status};
    use crate::runlog::{Layout, Row};

    /// A project folder with the t2i workflow and a plan of `matrix` over
    /// its prompt text, seed 7.
    fn planned(texts: &str) -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().unwrap();
        let wf = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/t2i.json")).unwrap();
        std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
        std::fs::write(dir.path().join("workflows/t2i.json"), wf).unwrap();
        let path = dir.path().join("m.yaml");
        let text = format!(
            "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: fox\n    workflow: t2i\n    seeds: [7]\n    matrix:\n      \"6.text\": {texts}\n"
        );
        std::fs::write(&path, text).unwrap();
        let plan = Plan::new(&Manifest::load(&path).unwrap()).unwrap();
        (dir, plan)
    }

    /// The job's row as the log's writer writes it and its reader reads it.
    fn logged(job: &Job, dir: &Path, columns: &[String]) -> Logged {
        let outcome = Outcome {
            status: Status::Ok,
            images: Vec::new(),
            text: None,
            error: None,
            attempt: Attempt::default(),
        };
        let layout = Layout::of(runlog::header(columns)).unwrap();
        layout.logged(&Row {
            line: 2,
            cells: runlog::row(job, dir, &outcome, columns),
        })
    }

    fn origin<'a>(dir: &'a Path, none: &'a Map<String, Value>, loads: &'a Loads) -> Origin<'a> {
        Origin {
            dir,
            base: dir,
            aliases: none,
            choices: &[],
            allow_changed: false,
            workflows: loads,
        }
    }

    fn not_sent(_: &Logged) -> Result<Job, String> {
        Err("no prompt file".into())
    }

    /// Every row rebuilt, as `rerun`'s checking pass goes: every problem
    /// of every row, or the jobs and warnings.
    fn rebuild_all(
        rows: &[Logged],
        origin: &Origin,
        sent: impl Fn(&Logged) -> Result<Job, String>,
    ) -> Result<(Vec<Job>, Vec<String>), Vec<String>> {
        let (mut jobs, mut warnings, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            match rebuild_row(row, origin, &sent) {
                Ok(r) => {
                    jobs.push(r.job);
                    warnings.extend(r.warning);
                }
                Err(lines) => errors.extend(lines),
            }
        }
        match errors.is_empty() {
            true => Ok((jobs, warnings)),
            false => Err(errors),
        }
    }

    /// A row holds the whole job: rebuilt, it has the same id and prompt,
    /// a string set empty included (it is not the workflow's own text).
    #[test]
    fn a_logged_row_rebuilds_to_the_job_it_logs() {
        let (dir, plan) = planned(r#"["a fox", ""]"#);
        let none = Map::new();
        let jobs: Vec<Job> = plan.jobs().collect();
        let rows: Vec<Logged> = jobs
            .iter()
            .map(|j| logged(j, dir.path(), plan.columns()))
            .collect();
        let loads = Loads::default();
        let (rebuilt, warnings) =
            rebuild_all(&rows, &origin(dir.path(), &none, &loads), not_sent).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(rebuilt.len(), 2);
        for (job, again) in jobs.iter().zip(&rebuilt) {
            assert_eq!(again.id, job.id);
            assert_eq!(again.label, job.label);
            assert_eq!(again.prompt.0, job.prompt.0);
        }
        assert_ne!(rebuilt[0].prompt.0, rebuilt[1].prompt.0);
    }

    /// A changed workflow is refused naming the job and the flag; with the
    /// flag the job is rebuilt from the new file (a new id). A workflow
    /// gone falls back on the job as sent, with a warning. Each rerun
    /// reads a file once: its rows are rebuilt from the bytes it read,
    /// whatever happens to the file since.
    #[test]
    fn a_changed_workflow_is_refused_and_a_gone_one_falls_back_on_the_job_as_sent() {
        let (dir, plan) = planned(r#"["a fox"]"#);
        let none = Map::new();
        let job = plan.jobs().next().unwrap();
        let rows = vec![logged(&job, dir.path(), plan.columns())];
        let wf = dir.path().join("workflows/t2i.json");
        let text = std::fs::read_to_string(&wf).unwrap();
        let before = Loads::default();
        let (rebuilt, _) =
            rebuild_all(&rows, &origin(dir.path(), &none, &before), not_sent).unwrap();
        assert_eq!(rebuilt[0].id, job.id);
        std::fs::write(&wf, text.replace("lowres", "highres")).unwrap();
        let after = Loads::default();
        let errors = rebuild_all(&rows, &origin(dir.path(), &none, &after), not_sent).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains(job.id.as_str()) && errors[0].contains("--allow-changed-workflow"),
            "{errors:?}"
        );
        let allowed = Origin {
            allow_changed: true,
            ..origin(dir.path(), &none, &after)
        };
        let (rebuilt, _) = rebuild_all(&rows, &allowed, not_sent).unwrap();
        assert_ne!(rebuilt[0].id, job.id);
        std::fs::remove_file(&wf).unwrap();
        let (rebuilt, _) =
            rebuild_all(&rows, &origin(dir.path(), &none, &before), not_sent).unwrap();
        assert_eq!(rebuilt[0].id, job.id, "the bytes read first");
        let sent = |_: &Logged| Ok(job.clone());
        let gone = Loads::default();
        let (rebuilt, warnings) =
            rebuild_all(&rows, &origin(dir.path(), &none, &gone), sent).unwrap();
        assert_eq!(rebuilt[0].id, job.id);
        assert!(warnings[0].contains("workflow unreadable"), "{warnings:?}");
    }

    /// Every bad row is reported, each naming its line: a seed that is not
    /// a number, an id that is not comfy-batch's.
    #[test]
    fn bad_rows_are_all_reported_by_line() {
        let (dir, plan) = planned(r#"["a fox"]"#);
        let none = Map::new();
        let job = plan.jobs().next().unwrap();
        let good = logged(&job, dir.path(), plan.columns());
        let bad_seed = Logged {
            line: 3,
            seed: "x".into(),
            ..good.clone()
        };
        let bad_id = Logged {
            line: 4,
            job_id: "../../etc".into(),
            ..good.clone()
        };
        let loads = Loads::default();
        let errors = rebuild_all(
            &[bad_seed, bad_id],
            &origin(dir.path(), &none, &loads),
            not_sent,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("line 3: seed 'x' is not a number"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("line 4: '../../etc' is not a comfy-batch job id"),
            "{errors:?}"
        );
    }
}
