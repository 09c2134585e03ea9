//! The job exactly as a run last sent it, read back from the output
//! folder (`prompts/<pack_id>.json` or `prompts/<job_id>.json`, and the
//! inputs kept in `inputs/`): what
//! `rerun` falls back on when a row does not rebuild.

use std::path::Path;

use serde_json::Value;

use crate::ids::{JobId, NodeId};
use crate::patch::Prompt;
use crate::plan::{ImageInput, Job, Workflow};
use crate::runlog::Logged;

/// The job exactly as last sent, from its prompt file
/// ([`crate::folder::prompt_files`]: its pack's, else its own). It and the
/// inputs it names are read as every command reads a run folder: never
/// through a symbolic link, only regular files (a FIFO would block).
pub fn sent_job(dir: &Path, row: &Logged) -> Result<Job, String> {
    let pack = crate::plan::rebuild::logged_pack(row)?;
    let pack_id = pack.as_ref().map_or("", |p| p.id.as_str());
    // The pack's file, else (missing: an older folder) the job's own; a
    // file missing everywhere is named as the newest builds keep it.
    let mut first_missing = None;
    let mut opened = None;
    for rel in crate::folder::prompt_files(&row.job_id, pack_id) {
        match crate::folder::open_under(dir, Path::new(&rel)) {
            Err(crate::folder::Refusal::Missing) => {
                first_missing.get_or_insert(rel);
            }
            other => {
                opened = Some((rel, other));
                break;
            }
        }
    }
    let (rel, opened) = opened.unwrap_or_else(|| {
        let rel = first_missing.unwrap_or_default();
        (rel, Err(crate::folder::Refusal::Missing))
    });
    let path = dir.join(&rel);
    let bytes = opened
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
            let path = super::kept_input(dir, value)?
                .map_err(|(path, why)| format!("{}: {why}", path.display()));
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
            .filter_map(|(n, c)| Some((n.clone(), crate::runlog::value(c)?)))
            .collect(),
        prompt,
        images,
        // The prompt made the whole pack: the row keeps its own image.
        pack,
        shard_unit: 0,
    })
}
