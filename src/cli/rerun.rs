//! `comfy-batch rerun LOG.csv`: rebuilds jobs from rows of a run log and runs
//! them again. A row holds everything a job was made of (workflow path and
//! sha256, seed, every parameter; paths relative to the log), so the job is
//! re-planned from it through the ordinary manifest → plan → patch path and
//! gets the same job id and prompt. `prompts/<job_id>.json` is the fallback
//! when the workflow file is gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use sha2::{Digest, Sha256};

use super::drive::{Prepared, Session, drive, open_output};
use super::options::{RunOptions, check_output};
use super::{CliError, Exit, GlobalArgs};
use crate::ids::{JobId, NodeId};
use crate::manifest::{Alias, DrawSpec, JobSpec, Manifest, Param, SeedSpec, Span, WorkflowEntry};
use crate::patch::Prompt;
use crate::plan::{ImageInput, Job, Pack, Plan, Workflow};
use crate::run::Status;
use crate::sink::csv::{self, LoggedRow, Resume, RunLog};
use crate::sink::kept_input;

/// Arguments of `comfy-batch rerun`.
#[derive(Debug, clap::Args)]
pub struct RerunArgs {
    /// The run log (`runs.csv`) to take jobs from.
    pub log: PathBuf,
    /// Rerun this job id (repeatable) [default: every job in the log].
    #[arg(long = "job", value_name = "ID")]
    pub jobs: Vec<String>,
    /// Rerun jobs whose newest row has this status: ok, failed, rejected,
    /// interrupted or timeout (repeatable).
    #[arg(long = "status", value_name = "STATUS", value_parser = parse_status)]
    pub statuses: Vec<Status>,
    /// Output folder [default: the log's folder, appending to the same log].
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Rebuild from the workflow file even if it changed since the run
    /// (the jobs then get new ids).
    #[arg(long)]
    pub allow_changed_workflow: bool,
    /// How to run (the same options as `run`).
    #[command(flatten)]
    pub options: RunOptions,
}

fn parse_status(text: &str) -> Result<Status, String> {
    Status::parse(text).ok_or_else(|| {
        format!("'{text}' is not a status (ok, failed, rejected, interrupted, timeout)")
    })
}

/// The newest row of each job id, in order of first appearance, filtered.
fn select<'a>(rows: &'a [LoggedRow], args: &RerunArgs) -> Result<Vec<&'a LoggedRow>, Vec<String>> {
    let mut newest: BTreeMap<&str, usize> = BTreeMap::new();
    let mut order = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if newest.insert(&row.job_id, i).is_none() {
            order.push(row.job_id.as_str());
        }
    }
    let missing: Vec<String> = args
        .jobs
        .iter()
        .filter(|id| !newest.contains_key(id.as_str()))
        .map(|id| format!("{}: no job '{id}' in the log", args.log.display()))
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(order
        .into_iter()
        .map(|id| &rows[newest[id]])
        .filter(|row| args.jobs.is_empty() || args.jobs.iter().any(|j| j == &row.job_id))
        .filter(|row| {
            args.statuses.is_empty() || row.status.is_some_and(|s| args.statuses.contains(&s))
        })
        .collect())
}

/// Rebuilds one job from its row through a one-job manifest, built
/// directly (no text round trip) as if it stood in the original manifest's
/// folder `base` (image paths are logged as written there); the workflow is
/// named by its absolute path. Problems name the log's line.
fn rebuild(
    row: &LoggedRow,
    dir: &Path,
    base: &Path,
    aliases: &Map<String, Value>,
    choices: &[String],
) -> Result<Job, Vec<String>> {
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
                value: csv::value(cell)?,
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
    let workflow =
        std::path::absolute(dir.join(&row.workflow)).unwrap_or_else(|_| dir.join(&row.workflow));
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
    let plan = Plan::new(&manifest).map_err(|e| e.lines())?;
    let mut job = plan
        .jobs()
        .nth(pack.map_or(0, |p| p.batch_index as usize))
        .ok_or_else(|| vec![format!("line {}: the row rebuilds to no job", row.line)])?;
    job.label = row.job.clone();
    for (name, cell) in row.params.iter().filter(|(n, _)| choices.contains(n)) {
        // Choices are text: a cell that reads as a number stays as it is.
        let text = match csv::value(cell) {
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
fn logged_pack(row: &LoggedRow) -> Result<Option<Pack>, String> {
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

/// The job exactly as last sent, from `prompts/<job_id>.json`. It and the
/// inputs it names are read as every command reads a run folder: never
/// through a symbolic link, only regular files (a FIFO would block).
fn from_prompt_file(row: &LoggedRow, dir: &Path) -> Result<Job, String> {
    let rel = Path::new("prompts").join(format!("{}.json", row.job_id));
    let path = dir.join(&rel);
    let bytes = crate::folder::open_under(dir, &rel)
        .map_err(|e| e.to_string())
        .and_then(|mut f| f.read_all().map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let prompt: Prompt =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    // Inputs the run uploaded are kept in `inputs/` under their content
    // names: they go up again, so the prompt runs on a fresh server too.
    let images = prompt
        .0
        .iter()
        .filter(|(_, node)| {
            node.get("class_type")
                .and_then(Value::as_str)
                .is_some_and(|c| c.starts_with("LoadImage"))
        })
        .filter_map(|(id, node)| {
            let value = node.get("inputs")?.get("image")?.as_str()?;
            let path =
                kept_input(dir, value)?.map_err(|(path, why)| format!("{}: {why}", path.display()));
            Some(path.map(|path| ImageInput {
                node: NodeId::new(id.clone()),
                input: "image".into(),
                path,
            }))
        })
        .collect::<Result<_, _>>()?;
    Ok(Job {
        index: 0,
        id: JobId::new(row.job_id.clone()),
        label: row.job.clone(),
        workflow: std::sync::Arc::new(Workflow {
            name: row.workflow.clone(),
            path: dir.join(&row.workflow),
            sha256: row.workflow_sha256.clone(),
        }),
        seed: row.seed.parse().ok(),
        params: row
            .params
            .iter()
            .filter_map(|(n, c)| Some((n.clone(), csv::value(c)?)))
            .collect(),
        prompt,
        images,
        // The prompt made the whole pack: the row keeps its own image.
        pack: logged_pack(row)?,
        shard_unit: 0,
    })
}

/// Rebuilds every selected row; every problem is reported, not only the first.
fn rebuild_all(
    rows: &[&LoggedRow],
    dir: &Path,
    allow_changed: bool,
) -> Result<(Vec<Job>, Vec<String>), Vec<String>> {
    let info = super::runinfo::RunInfo::read(dir);
    let base = info
        .manifest_dir
        .map(|m| dir.join(m))
        .unwrap_or_else(|| dir.to_path_buf());
    let aliases = info.aliases;
    let choices = info.choices;
    let mut jobs = Vec::new();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for row in rows {
        // The id names files in the output folder: only our own form.
        // 16 hex digits; 12 in logs written before ids grew to 64 bits.
        let valid_id = matches!(row.job_id.len(), 12 | 16)
            && row
                .job_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid_id {
            errors.push(format!(
                "{}: line {}: '{}' is not a comfy-batch job id",
                dir.join("runs.csv").display(),
                row.line,
                row.job_id
            ));
            continue;
        }
        let path = dir.join(&row.workflow);
        let at = format!("{}: job {} ({})", path.display(), row.job_id, row.job);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let sha = hex::encode(Sha256::digest(&bytes));
                if sha != row.workflow_sha256 && !allow_changed {
                    errors.push(format!(
                        "{at}: the workflow changed since the run (sha256 {} was {}); pass --allow-changed-workflow to rebuild from the new file",
                        &sha[..12],
                        &row.workflow_sha256.get(..12).unwrap_or(&row.workflow_sha256)
                    ));
                    continue;
                }
                match rebuild(row, dir, &base, &aliases, &choices) {
                    Ok(rebuilt)
                        if sha == row.workflow_sha256 && rebuilt.id.as_str() != row.job_id =>
                    {
                        // Same workflow, different job: the row cannot be
                        // rebuilt faithfully; the sent prompt can.
                        match from_prompt_file(row, dir) {
                            Ok(job) => {
                                warnings.push(format!(
                                    "{at}: the row rebuilds as job {}; using prompts/{}.json, the prompt as sent",
                                    rebuilt.id, row.job_id
                                ));
                                jobs.push(job);
                            }
                            Err(e) => {
                                errors.push(format!("{at}: rebuilt as a different job and {e}"))
                            }
                        }
                    }
                    Ok(job) => jobs.push(job),
                    // E.g. a text cell that reads as a number ("1984"): the
                    // prompt as sent still holds the job exactly.
                    Err(lines) => match from_prompt_file(row, dir) {
                        Ok(job) if sha == row.workflow_sha256 => {
                            warnings.push(format!(
                                "{at}: the row does not rebuild ({}); using prompts/{}.json, the prompt as sent",
                                lines.join("; "),
                                row.job_id
                            ));
                            jobs.push(job);
                        }
                        Err(e) if sha == row.workflow_sha256 => errors.push(format!(
                            "{at}: the row does not rebuild ({}) and {e}",
                            lines.join("; ")
                        )),
                        _ => errors.extend(lines.into_iter().map(|l| format!("{at}: {l}"))),
                    },
                }
            }
            Err(read) => match from_prompt_file(row, dir) {
                Ok(job) => {
                    warnings.push(format!(
                        "{at}: workflow unreadable ({read}); using prompts/{}.json",
                        row.job_id
                    ));
                    jobs.push(job);
                }
                Err(e) => errors.push(format!("{at}: workflow unreadable ({read}) and {e}")),
            },
        }
    }
    if errors.is_empty() {
        Ok((jobs, warnings))
    } else {
        Err(errors)
    }
}

/// Runs the command.
pub fn execute(args: RerunArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let bad = |lines: Vec<String>| CliError::many(Exit::BadInput, lines);
    let (header, rows) =
        csv::read(&args.log).map_err(|e| CliError::from_error(Exit::BadInput, &e))?;
    let dir = args.log.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let selected = select(&rows, &args).map_err(bad)?;
    let (mut jobs, warnings) =
        rebuild_all(&selected, &dir, args.allow_changed_workflow).map_err(bad)?;
    if !global.quiet {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    }
    for (i, job) in jobs.iter_mut().enumerate() {
        job.index = i;
    }
    let params: Vec<String> = csv::param_columns(&header);

    let output_path = args.output.clone().unwrap_or_else(|| dir.clone());
    let mut target_info = super::runinfo::RunInfo::read(&output_path);
    let key = target_info.key_for(&output_path);
    if target_info.run_key.is_none() {
        // A new folder: keep what a later rerun or run into it needs.
        target_info = super::runinfo::RunInfo {
            run_key: Some(key.clone()),
            ..super::runinfo::RunInfo::read(&dir)
        };
        if target_info.manifest_dir.is_some() && output_path != dir {
            let source_manifest_dir = dir.join(target_info.manifest_dir.as_deref().unwrap_or("."));
            target_info.manifest_dir = Some(crate::paths::relative_to(
                &output_path,
                &source_manifest_dir,
            ));
        }
    }
    let output_path = check_output(&output_path)?;
    // The run's own `concurrency:` is the default, as for `run`.
    let lowered = args.options.lower(&[], target_info.concurrency, key)?;
    let (config, shard) = (lowered.config, lowered.shard);
    if let Some(shard) = &shard {
        jobs.retain(|job| shard.contains(job.index));
    }
    let session = Session {
        config,
        sim: args.options.sim,
        check: !args.options.no_check,
        quiet: global.quiet,
        verbose: global.verbose,
        resuming: output_path.is_dir(),
        junit: args.options.junit.clone(),
        report: (!args.options.no_report).then_some(super::report::ReportPlan {
            grids: None,
            quiet: global.quiet,
        }),
    };
    let jobs = &jobs;
    drive(session, &|| Box::new(jobs.iter().cloned()), || {
        let output = open_output(&output_path)?;
        target_info.write(&output)?;
        let (log, existing) = RunLog::open(&output.log_path(), &params)
            .map_err(|e| CliError::from_error(Exit::BadInput, &e))?;
        // A rerun runs what it was asked to, done or not; the log only
        // numbers the attempts so prompt ids never repeat.
        let resume = Resume::from_rows(&existing, &output);
        let numbered: Vec<(Job, u32)> = jobs
            .iter()
            .map(|job| (job.clone(), resume.next_attempt(job.id.as_str())))
            .collect();
        Ok(Prepared {
            output,
            log,
            total: numbered.len(),
            skipped: 0,
            jobs: Box::new(numbered.into_iter()),
        })
    })
}
