//! Expansion: a manifest's job groups (matrix, zip, set, defaults, seeds)
//! become concrete [`Job`]s in a deterministic order, each with its stable
//! [`JobId`] and patched prompt. Owns target resolution, seeds, job ids,
//! deduplication, order and `--shard`, and jobs rebuilt from a run log's
//! typed rows (`rebuild`, for `rerun`). Knows nothing of HTTP or the output
//! folder.
//!
//! SEAM (fixed for the runner, #4): `Job`, `Workflow`, `ImageInput`, and a
//! `Plan` offering `len()`, `columns()` and a lazy `jobs()` iterator.
//!
//! Expansion is lazy: [`Plan::new`] resolves every target once per (group,
//! workflow), checks every value, and walks the job space once hashing each
//! job (only when duplicates are possible) to know the final count; the
//! prompts are built one at a time by [`Plan::jobs`].

mod build;
mod collide;
mod error;
mod expand;
pub mod rebuild;
mod seeds;
mod shard;
mod targets;
mod templates;
mod workflow;

pub use workflow::{FetchClasses, Loads};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::ids::{JobId, NodeId};
use crate::manifest::{Manifest, Span};
use crate::patch::{Prompt, Slot};
use build::{Errors, LoadedWorkflow, plan_group};
pub use error::{PlanError, PlanErrorKind, PlanErrors};
pub use expand::{Cell, Row};
use expand::{Jobs, digest};
pub use shard::{Shard, ShardError};
use templates::{Draws, PackPos, Scratch, TemplateSlot, materialize};

/// One API-format workflow file as loaded for a run.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The name jobs refer to it by (`workflow: t2i`).
    pub name: String,
    /// Where it was read from (absolute or relative to the cwd).
    pub path: PathBuf,
    /// sha256 of the file's bytes, lowercase hex: logged so a later rerun can
    /// tell whether the workflow changed.
    pub sha256: String,
}

/// A local image that must be uploaded before the job's prompt is sent; the
/// runner replaces `prompt[node].inputs[input]` with the server's name for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// The `LoadImage` (or similar) node.
    pub node: NodeId,
    /// The input to set, usually `image`.
    pub input: String,
    /// The local file, resolved against the manifest's folder.
    pub path: PathBuf,
}

/// One concrete, patched job: everything the runner and the log need.
#[derive(Debug, Clone)]
pub struct Job {
    /// Position in the full plan after deduplication, 0-based (`--shard`
    /// keeps `index % N == K - 1`).
    pub index: usize,
    /// Stable identity (hash of workflow content, parameters and seed).
    pub id: JobId,
    /// The `job` column: group name and index within the group, `fox#3`.
    pub label: String,
    /// The workflow the prompt was patched from.
    pub workflow: Arc<Workflow>,
    /// The seed set on the prompt, if the workflow has a seed input.
    pub seed: Option<u64>,
    /// Parameter values in manifest order (names as written in the manifest;
    /// `seed` excluded). Values are the JSON values set on the prompt, except
    /// `image` parameters, which hold the local path as written. Then the
    /// choices of the job's templates (wildcard and variable names, see
    /// [`Plan::choice_columns`]): logged, not set on the prompt.
    pub params: Vec<(String, serde_json::Value)>,
    /// The prompt to send (before image names are replaced by upload names).
    pub prompt: Prompt,
    /// Local images to upload first.
    pub images: Vec<ImageInput>,
    /// The job's pack, in a `pack:` group: its prompt makes the whole
    /// pack's batch, of which this job keeps one image.
    pub pack: Option<Pack>,
    /// What `--shard` partitions by: the job's `index`, or for a packed job
    /// its pack's number among the plan's packs (a pack is never split).
    pub shard_unit: usize,
}

impl Job {
    /// Whose name its file in `prompts/` takes: the pack's id for a
    /// packed job (its pack's jobs send one prompt, kept once), else its own.
    pub fn prompt_file_id(&self) -> &JobId {
        self.pack.as_ref().map_or(&self.id, |p| &p.id)
    }
}

/// A packed job's place in its pack (`pack:` in the manifest). The pack's
/// one prompt has the pack's seed and `batch_size` = `size`; the job's
/// image is the batch's image `batch_index`. (seed, batch_index, size)
/// reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// The pack id (16 hex, like a job id): every job of the pack has it,
    /// and its prompt file is `prompts/<pack id>.json`.
    pub id: JobId,
    /// The image's index in the batch, 0-based.
    pub batch_index: u64,
    /// How many images the pack's prompt makes.
    pub size: u64,
}

/// The largest plan accepted (jobs before deduplication): planning walks the
/// whole job space once, so a typo like `{range: [0, 1e12]}` must fail fast.
pub const MAX_JOBS: u64 = 100_000_000;

/// Where a group parameter's value comes from.
#[derive(Debug)]
enum Source {
    Fixed(Value),
    Axis { axis: usize, member: usize },
}

#[derive(Debug)]
struct GroupParam {
    name: String,
    at: Span,
    source: Source,
    from_defaults: bool,
}

/// One list of an axis: a matrix entry, or one list of a zip.
#[derive(Debug)]
struct Member {
    param: usize,
    /// The group's template slot whose text this member is (then `values`
    /// and `encoded` are empty: texts are computed per job).
    template: Option<usize>,
    values: Vec<Value>,
    /// Canonical JSON of each value, for job ids.
    encoded: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct Axis {
    len: usize,
    members: Vec<Member>,
}

#[derive(Debug)]
enum SeedAxis {
    /// No seed input anywhere in the group's workflows.
    None,
    List(Vec<u64>),
    Range {
        start: u64,
        len: u64,
    },
    /// One fresh seed per job.
    Fresh,
}

impl SeedAxis {
    fn len(&self) -> u64 {
        match self {
            SeedAxis::List(v) => v.len() as u64,
            SeedAxis::Range { len, .. } => *len,
            SeedAxis::None | SeedAxis::Fresh => 1,
        }
    }
}

#[derive(Debug)]
enum HashValue {
    Fixed(Vec<u8>),
    Axis {
        axis: usize,
        member: usize,
    },
    /// An input image taken from an axis: the sha256 of each value's file
    /// content (by value index), never its path.
    Content {
        axis: usize,
        digests: Vec<[u8; 32]>,
    },
}

#[derive(Debug)]
struct HashItem {
    /// `node \0 input \0`.
    key: Vec<u8>,
    value: HashValue,
}

#[derive(Debug)]
enum ImageSource {
    Fixed(PathBuf),
    /// Resolved path per value index of an axis member.
    Axis {
        axis: usize,
        paths: Vec<PathBuf>,
    },
}

/// One workflow of a group, with everything resolved.
#[derive(Debug)]
struct Variant {
    workflow: Arc<Workflow>,
    /// The workflow with the group's fixed values applied.
    base: Map<String, Value>,
    /// (slot, axis, member): set per job.
    setters: Vec<(Slot, usize, usize)>,
    seed_slots: Vec<Slot>,
    /// Sorted by slot: the canonical job-id input.
    hash: Vec<HashItem>,
    /// SaveImage nodes whose prefix comes from the job id.
    savers: Vec<String>,
    images: Vec<(Slot, ImageSource)>,
    /// The latent's `batch_size`, set to the pack's size (`pack:` groups).
    batch_slot: Option<Slot>,
}

#[derive(Debug)]
struct Group {
    name: String,
    index: usize,
    raw_start: u64,
    per_variant: u64,
    variants: Vec<Variant>,
    axes: Vec<Axis>,
    seeds: SeedAxis,
    params: Vec<GroupParam>,
    templates: Vec<TemplateSlot>,
    draws: Option<Draws>,
    /// Names of the group's choice columns (wildcards, variables).
    choice_cols: Vec<String>,
    /// `pack:`: images per prompt.
    pack: Option<u64>,
}

impl Group {
    fn raw_len(&self) -> u64 {
        self.per_variant * self.variants.len() as u64
    }
}

/// A planned manifest: how many jobs, which columns, and the jobs
/// themselves on demand, always in the same order with the same ids.
#[derive(Debug)]
pub struct Plan {
    groups: Vec<Group>,
    columns: Vec<String>,
    /// How many of `columns` (the last ones) are template choices.
    choice_columns: usize,
    warnings: Vec<String>,
    /// Raw positions of collapsed duplicates, ascending.
    skip: Vec<u64>,
    raw_len: u64,
    len: usize,
    random_key: u64,
}

impl Plan {
    /// Plans a manifest: loads its workflows, resolves every parameter,
    /// checks every value, and counts the jobs. Every problem is reported.
    /// Jobs without `seeds:` draw fresh seeds keyed by an OS random number.
    pub fn new(manifest: &Manifest) -> Result<Plan, PlanErrors> {
        Plan::with_random_key(manifest, rand::random())
    }

    /// Like [`Plan::new`], with the key of the fresh-seed stream given
    /// (tests; reproducing a plan).
    pub fn with_random_key(manifest: &Manifest, random_key: u64) -> Result<Plan, PlanErrors> {
        Plan::with_catalogue(manifest, random_key, None)
    }

    /// Like [`Plan::with_random_key`], converting UI-format workflows with
    /// `catalogue` (a server's) instead of the built-in one. Each workflow is
    /// loaded and converted once.
    pub fn with_catalogue(
        manifest: &Manifest,
        random_key: u64,
        catalogue: Option<&crate::convert::NodeDefs>,
    ) -> Result<Plan, PlanErrors> {
        Plan::build(manifest, random_key, workflow::Catalogues::new(catalogue))
    }

    /// Like [`Plan::with_catalogue`], with the catalogue entries of the
    /// classes each UI-format workflow uses fetched by `fetch` (`run`: one
    /// `/object_info/{class}` per class, nothing for API-only manifests).
    pub fn with_catalogue_from(
        manifest: &Manifest,
        random_key: u64,
        fetch: workflow::FetchClasses<'_>,
    ) -> Result<Plan, PlanErrors> {
        Plan::build(manifest, random_key, workflow::Catalogues::per_class(fetch))
    }

    /// Like [`Plan::with_random_key`], taking the workflows the manifest
    /// names by path from `loads`, read once for many plans (`rerun`).
    pub fn with_loads(
        manifest: &Manifest,
        random_key: u64,
        loads: &workflow::Loads,
    ) -> Result<Plan, PlanErrors> {
        Plan::build(
            manifest,
            random_key,
            workflow::Catalogues::with_loads(loads),
        )
    }

    fn build(
        manifest: &Manifest,
        random_key: u64,
        catalogues: workflow::Catalogues<'_>,
    ) -> Result<Plan, PlanErrors> {
        let mut convert_warnings = Vec::new();
        let mut errors = Errors {
            file: &manifest.path,
            list: Vec::new(),
        };
        let aliases: Vec<(String, String)> = manifest
            .params
            .iter()
            .map(|a| (a.name.clone(), a.target.clone()))
            .collect();
        let mut loaded: Vec<(String, Option<LoadedWorkflow>)> = Vec::new();
        let mut wildcards = crate::templates::Wildcards::new(manifest.wildcards.clone());
        let mut groups = Vec::new();
        let mut raw_start: u128 = 0;
        for (gi, spec) in manifest.jobs.iter().enumerate() {
            let mut variants_src = Vec::new();
            for name in &spec.workflows {
                if !loaded.iter().any(|(n, _)| n == name) {
                    let entry = match workflow::load(manifest, name, &catalogues) {
                        Ok(w) => {
                            if let Some(report) = &w.report {
                                let rules: Vec<String> = report
                                    .counts()
                                    .iter()
                                    .map(|(r, n)| format!("{r} x{n}"))
                                    .collect();
                                tracing::info!(
                                    "workflow '{name}' ({}): converted from the UI format, {} nodes; rules used: {}",
                                    w.path.display(),
                                    w.nodes.len(),
                                    if rules.is_empty() {
                                        "none".into()
                                    } else {
                                        rules.join(", ")
                                    }
                                );
                            }
                            for warning in w.report.iter().flat_map(|r| r.warnings()) {
                                convert_warnings.push(format!(
                                    "workflow '{name}' ({}): {warning}",
                                    w.path.display()
                                ));
                            }
                            Some((
                                Arc::new(Workflow {
                                    name: name.clone(),
                                    path: w.path,
                                    sha256: w.sha256,
                                }),
                                w.nodes,
                                w.needs,
                            ))
                        }
                        Err(e) => {
                            let at = manifest
                                .workflows
                                .iter()
                                .find(|w| &w.name == name)
                                .map(|w| w.at)
                                .unwrap_or(spec.workflow_at);
                            for detail in e.lines() {
                                errors.push(
                                    at,
                                    &spec.name,
                                    None,
                                    PlanErrorKind::Workflow {
                                        name: name.clone(),
                                        detail,
                                    },
                                );
                            }
                            None
                        }
                    };
                    loaded.push((name.clone(), entry));
                }
                if let Some((_, Some((wf, nodes, needs)))) = loaded.iter().find(|(n, _)| n == name)
                {
                    variants_src.push((wf.clone(), nodes.clone(), needs.clone()));
                }
            }
            if let Some(group) = plan_group(
                manifest,
                spec,
                gi,
                &aliases,
                variants_src,
                &mut wildcards,
                &mut errors,
            ) {
                let mut group = group;
                group.raw_start = raw_start.min(u128::from(u64::MAX)) as u64;
                raw_start += u128::from(group.per_variant) * group.variants.len() as u128;
                groups.push(group);
            }
        }
        if raw_start > u128::from(MAX_JOBS) {
            errors.push(
                Span { line: 1, col: 1 },
                "",
                None,
                PlanErrorKind::TooManyJobs(raw_start),
            );
        }
        if !errors.list.is_empty() {
            // Manifest order; problems at one place keep their order.
            errors.list.sort_by_key(|e| e.at);
            return Err(PlanErrors(errors.list));
        }
        let mut columns: Vec<String> = Vec::new();
        for g in &groups {
            for p in &g.params {
                if !columns.contains(&p.name) {
                    columns.push(p.name.clone());
                }
            }
        }
        let params = columns.len();
        // A column named like one of the log's own would be a second header
        // of that name: readers by name (pandas, `status`, the report) would
        // take the wrong one.
        let mut reserved_seen: Vec<&str> = Vec::new();
        for g in &groups {
            let spec = &manifest.jobs[g.index];
            let named = g
                .params
                .iter()
                .map(|p| (p.name.as_str(), p.at, "parameter"))
                .chain(
                    g.choice_cols
                        .iter()
                        .map(|c| (c.as_str(), spec.templates_at, "templates' choice")),
                );
            for (name, at, what) in named {
                if crate::runlog::is_column(name) && !reserved_seen.contains(&name) {
                    reserved_seen.push(name);
                    errors.push(
                        at,
                        &g.name,
                        None,
                        PlanErrorKind::Conflict {
                            name: name.to_owned(),
                            detail: format!(
                                "the {what} '{name}' would be logged under a second '{name}' column, which runs.csv already has; rename it (the wildcard file, variable or alias)"
                            ),
                        },
                    );
                }
            }
        }
        for g in &groups {
            for c in &g.choice_cols {
                if crate::runlog::is_column(c) {
                    continue;
                }
                if columns[..params].contains(c) {
                    let spec = &manifest.jobs[g.index];
                    errors.push(
                        spec.templates_at,
                        &g.name,
                        None,
                        PlanErrorKind::Conflict {
                            name: c.clone(),
                            detail: format!(
                                "the templates' choice of '{c}' (a wildcard or variable) would be logged in the column of the parameter '{c}'; rename the wildcard file or variable"
                            ),
                        },
                    );
                } else if !columns.contains(c) {
                    columns.push(c.clone());
                }
            }
        }
        if !errors.list.is_empty() {
            errors.list.sort_by_key(|e| e.at);
            return Err(PlanErrors(errors.list));
        }
        let mut plan = Plan {
            choice_columns: columns.len() - params,
            groups,
            columns,
            warnings: convert_warnings,
            skip: Vec::new(),
            raw_len: raw_start as u64,
            len: raw_start as usize,
            random_key,
        };
        plan.collapse_duplicates();
        Ok(plan)
    }

    /// Finds identical jobs (same id input), keeping the first. Skipped
    /// when no two jobs can be identical: every group's axis values and
    /// seeds are distinct, and no two groups share a workflow's content.
    fn collapse_duplicates(&mut self) {
        let mut shas = HashSet::new();
        let mut possible = false;
        for g in &self.groups {
            for v in &g.variants {
                possible |= !shas.insert(v.workflow.sha256.clone());
            }
            possible |= g.axes.iter().any(|a| {
                if a.members.iter().any(|m| m.template.is_some()) {
                    // Template axes hold distinct variants by construction.
                    return false;
                }
                let mut seen = HashSet::new();
                (0..a.len).any(|i| {
                    let key: Vec<&[u8]> =
                        a.members.iter().map(|m| m.encoded[i].as_slice()).collect();
                    !seen.insert(key)
                })
            });
            if let SeedAxis::List(list) = &g.seeds {
                let set: HashSet<&u64> = list.iter().collect();
                possible |= set.len() != list.len();
            }
        }
        if !possible {
            return;
        }
        let mut first: HashMap<u64, u64> = HashMap::new();
        let mut scratch = Scratch::default();
        let mut dropped_per_group: Vec<(usize, u64, u64)> = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            for local in 0..g.raw_len() {
                let raw = g.raw_start + local;
                let (vi, seed) = self.decode(g, local, raw, &mut scratch);
                let full = digest(g, &g.variants[vi], &scratch, seed);
                let key = u64::from_le_bytes(full[..8].try_into().unwrap_or([0; 8]));
                match first.get(&key) {
                    None => {
                        first.insert(key, raw);
                    }
                    // The same id for different jobs (a hash collision) is
                    // no duplicate: both stay, and the run refuses the plan.
                    Some(&orig) if self.digest_at(orig) != full => {}
                    Some(&orig) => {
                        self.skip.push(raw);
                        match dropped_per_group.last_mut() {
                            Some((last, n, _)) if *last == gi => *n += 1,
                            _ => dropped_per_group.push((gi, 1, orig)),
                        }
                    }
                }
            }
        }
        self.len = (self.raw_len - self.skip.len() as u64) as usize;
        for (gi, n, orig) in dropped_per_group {
            let g = &self.groups[gi];
            let og = self
                .groups
                .iter()
                .find(|o| orig >= o.raw_start && orig < o.raw_start + o.raw_len())
                .unwrap_or(g);
            let before = self.skip.partition_point(|s| *s < orig)
                - self.skip.partition_point(|s| *s < og.raw_start);
            let label = format!("{}#{}", og.name, orig - og.raw_start - before as u64 + 1);
            self.warnings.push(format!(
                "group '{}': {n} job{} identical to earlier jobs collapsed (the first repeats {label})",
                g.name,
                if n == 1 { "" } else { "s" }
            ));
        }
    }

    /// The full job-id digest of the job at raw position `raw`.
    fn digest_at(&self, raw: u64) -> [u8; 32] {
        let Some(g) = self
            .groups
            .iter()
            .find(|g| raw >= g.raw_start && raw < g.raw_start + g.raw_len())
        else {
            return [0; 32];
        };
        let mut scratch = Scratch::default();
        let (vi, seed) = self.decode(g, raw - g.raw_start, raw, &mut scratch);
        digest(g, &g.variants[vi], &scratch, seed)
    }

    /// Decodes a raw position into (variant, seed), with the axis indices
    /// and the template texts in `scratch`.
    fn decode(
        &self,
        g: &Group,
        local: u64,
        raw: u64,
        scratch: &mut Scratch,
    ) -> (usize, Option<u64>) {
        let idx = &mut scratch.idx;
        let vi = (local / g.per_variant) as usize;
        let mut rem = local % g.per_variant;
        let slen = g.seeds.len();
        let si = rem % slen;
        rem /= slen;
        idx.clear();
        idx.resize(g.axes.len(), 0);
        for (a, axis) in g.axes.iter().enumerate().rev() {
            idx[a] = (rem % axis.len as u64) as usize;
            rem /= axis.len as u64;
        }
        // A pack of N takes N consecutive seeds' places; its one seed is
        // the k-th of the group's seeds, k its number in the group.
        let (si, pack) = match g.pack {
            Some(n) => {
                let k = si / n;
                let size = n.min(slen - k * n);
                (
                    k,
                    Some(PackPos {
                        index: si % n,
                        size,
                    }),
                )
            }
            None => (si, None),
        };
        scratch.pack = pack;
        let seed = if g.variants[vi].seed_slots.is_empty() {
            None
        } else {
            match &g.seeds {
                SeedAxis::None => None,
                SeedAxis::List(v) => Some(v[si as usize]),
                SeedAxis::Range { start, .. } => Some(start + si),
                SeedAxis::Fresh => Some(seeds::fresh(self.random_key, g.index, raw)),
            }
        };
        materialize(&g.templates, g.draws.as_ref(), g.choice_cols.len(), scratch);
        (vi, seed)
    }

    /// The number of jobs, after collapsing duplicates.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the plan has no jobs (never, for a valid manifest).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parameter column names for `runs.csv`: the union over groups, in
    /// manifest order of first appearance, then the template choice columns
    /// ([`Plan::choice_columns`]); `seed` is not among them.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The last columns of [`Plan::columns`]: each wildcard's and variable's
    /// choice in the templates (`animals`). Logged, never set on a prompt:
    /// a rebuild from a log row ignores them.
    pub fn choice_columns(&self) -> &[String] {
        &self.columns[self.columns.len() - self.choice_columns..]
    }

    /// The key of the fresh-seed stream (jobs without `seeds:`). Stored
    /// with a run, it lets [`Plan::with_random_key`] rebuild the same seeds
    /// and job ids, e.g. to resume.
    pub fn random_key(&self) -> u64 {
        self.random_key
    }

    /// Whether some job draws a fresh seed (so [`Plan::random_key`]
    /// matters): `merge` compares keys only then.
    pub fn draws_fresh_seeds(&self) -> bool {
        self.groups
            .iter()
            .any(|g| matches!(g.seeds, SeedAxis::Fresh))
    }

    /// Whether some group packs its jobs (`pack:`).
    pub fn has_packs(&self) -> bool {
        self.groups.iter().any(|g| g.pack.is_some())
    }

    /// Notes for the user (e.g. collapsed duplicates), one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The jobs, lazily, in plan order (`index` 0..len).
    pub fn jobs(&self) -> impl Iterator<Item = Job> + '_ {
        Jobs::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const T2I: &str = include_str!("../../workflows/t2i.json");
    const I2I: &str = include_str!("../../workflows/i2i.json");
    const REAL_DEFAULT: &str =
        include_str!("../../tests/fixtures/workflows/comfyui_default_t2i.json");
    const REAL_BASE: &str = include_str!("../../tests/fixtures/workflows/seed_base_workflow.json");
    const REAL_I2I: &str =
        include_str!("../../tests/fixtures/workflows/seed_basic_image_to_image.json");
    const UI: &str = include_str!("../../tests/fixtures/workflows/ui_format.json");
    const CUSTOM: &str = include_str!("../../tests/fixtures/workflows/custom_advanced.json");
    const CONTROLNET: &str = include_str!("../../tests/fixtures/workflows/controlnet_sdxl.json");

    /// A temp project: `workflows/<name>.json`, `jobs/inputs/{a,b}.png`, and
    /// the manifest at `jobs/m.yaml`.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(workflows: &[(&str, &str)]) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
            std::fs::create_dir_all(dir.path().join("jobs/inputs")).unwrap();
            for (name, text) in workflows {
                std::fs::write(dir.path().join(format!("workflows/{name}.json")), text).unwrap();
            }
            for img in ["a.png", "b.png"] {
                std::fs::write(dir.path().join("jobs/inputs").join(img), b"png").unwrap();
            }
            Fixture { dir }
        }

        fn manifest(&self, text: &str) -> Manifest {
            let path = self.dir.path().join("jobs/m.yaml");
            std::fs::write(&path, text).unwrap();
            Manifest::load(&path).unwrap()
        }

        fn plan(&self, text: &str) -> Result<Plan, Vec<String>> {
            Plan::with_random_key(&self.manifest(text), 7).map_err(|e| {
                let root = self.dir.path().display().to_string();
                e.lines()
                    .iter()
                    .map(|l| l.replace(&root, "[tmp]"))
                    .collect()
            })
        }
    }

    /// One line per job: id, label, workflow, seed, params.
    fn summary(plan: &Plan) -> Vec<String> {
        plan.jobs()
            .map(|j| {
                let params: Vec<String> =
                    j.params.iter().map(|(n, v)| format!("{n}={v}")).collect();
                format!(
                    "{} {} {} {} {}",
                    j.id,
                    j.label,
                    j.workflow.name,
                    j.seed.map(|s| s.to_string()).unwrap_or("-".into()),
                    params.join(" ")
                )
            })
            .collect()
    }

    fn err_of(result: Result<Plan, Vec<String>>) -> Vec<String> {
        match result {
            Ok(_) => panic!("expected plan errors"),
            Err(e) => e,
        }
    }

    #[test]
    fn example_sweep_manifest_plan_is_pinned() {
        let m = Manifest::load(Path::new("jobs/fox-sweep.yaml")).unwrap();
        let plan = Plan::new(&m).unwrap();
        assert_eq!(plan.len(), 26);
        assert!(plan.warnings().is_empty());
        insta::assert_snapshot!(summary(&plan).join("\n"));
        let firsts: Vec<Job> = plan.jobs().filter(|j| j.label.ends_with("#1")).collect();
        for job in firsts {
            insta::assert_json_snapshot!(
                format!("fox_sweep_prompt_{}", job.label.replace('#', "_")),
                job.prompt
            );
            if job.workflow.name == "i2i" {
                assert_eq!(
                    job.images,
                    vec![ImageInput {
                        node: NodeId::new("10"),
                        input: "image".into(),
                        path: PathBuf::from("jobs/inputs/red.png"),
                    }]
                );
            }
        }
    }

    #[test]
    fn example_dataset_manifest_plan_is_pinned() {
        let m = Manifest::load(Path::new("jobs/dataset.yaml")).unwrap();
        let plan = Plan::new(&m).unwrap();
        assert_eq!(plan.len(), 64);
        insta::assert_snapshot!(summary(&plan).join("\n"));
        let first = plan.jobs().next().unwrap();
        insta::assert_json_snapshot!(first.prompt);
    }

    #[test]
    fn example_templates_manifest_plan_is_pinned() {
        let m = Manifest::load(Path::new("jobs/dataset-templates.yaml")).unwrap();
        let plan = Plan::new(&m).unwrap();
        // 3 colours × 5 animals × 4 places × 2 seeds, and 6 draws.
        assert_eq!(plan.len(), 126);
        assert_eq!(
            plan.choice_columns(),
            ["animals", "places", "colors/warm", "tone", "colors/*"]
        );
        insta::assert_snapshot!(summary(&plan).join("\n"));
    }

    #[test]
    fn real_world_workflows_patch_as_expected() {
        let fx = Fixture::new(&[
            ("default", REAL_DEFAULT),
            ("base", REAL_BASE),
            ("img", REAL_I2I),
        ]);
        let plan = fx
            .plan(
                "version: 1\njobs:\n  - name: real\n    workflow: [default, base]\n    matrix:\n      prompt: [a castle]\n      steps: [10]\n    set: {negative: blurry, checkpoint: sd15.safetensors, width: 640, sampler: euler, scheduler: normal}\n    seeds: [5]\n  - name: img\n    workflow: img\n    set: {image: inputs/a.png, denoise: 0.5, prompt: a castle}\n    seeds: [5]\n",
            )
            .unwrap();
        assert_eq!(plan.len(), 3);
        for job in plan.jobs() {
            insta::assert_json_snapshot!(
                format!("real_{}", job.label.replace('#', "_")),
                job.prompt
            );
        }
    }

    #[test]
    fn builtins_reach_custom_sampler_and_controlnet_graphs() {
        let fx = Fixture::new(&[("custom", CUSTOM), ("cn", CONTROLNET)]);
        let plan = fx
            .plan("version: 1\njobs:\n  - name: g\n    workflow: [custom, cn]\n    set: {prompt: a lighthouse, negative: fog, steps: 8, cfg: 2.5, sampler: heun, scheduler: karras, denoise: 0.9, width: 768, checkpoint: sd15.safetensors, batch_size: 2}\n    seeds: [42]\n")
            .unwrap();
        assert_eq!(plan.len(), 2);
        for job in plan.jobs() {
            insta::assert_json_snapshot!(format!("builtins_{}", job.workflow.name), job.prompt);
        }
    }

    #[test]
    fn same_manifest_gives_same_ids_and_seeds() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let text = "version: 1\njobs:\n  - name: a\n    workflow: t2i\n    matrix:\n      cfg: [5, 6]\n      prompt: [x, y]\n    set: {steps: 10, width: 256}\n    seeds: {count: 2, base: 3}\n";
        let one = summary(&fx.plan(text).unwrap());
        let two = summary(&fx.plan(text).unwrap());
        assert_eq!(one, two);
        // Keys reordered without changing the meaning: same ids and seeds.
        // (Matrix axes keep their order: it is the job order.)
        let reordered = "jobs:\n  - seeds: {base: 3, count: 2}\n    set: {width: 256, steps: 10}\n    matrix:\n      cfg: [5, 6]\n      prompt: [x, y]\n    workflow: t2i\n    name: a\nversion: 1\n";
        let three = summary(&fx.plan(reordered).unwrap());
        let ids = |s: &[String]| -> Vec<String> {
            s.iter()
                .map(|l| l.split(' ').take(4).collect::<Vec<_>>().join(" "))
                .collect()
        };
        assert_eq!(ids(&one), ids(&three));
    }

    #[test]
    fn expansion_order_is_workflow_checkpoint_axes_then_seeds() {
        let fx = Fixture::new(&[
            ("t2i", T2I),
            ("t2b", &T2I.replace("\"cfg\": 7", "\"cfg\": 8")),
        ]);
        let plan = fx
            .plan("version: 1\njobs:\n  - name: o\n    workflow: [t2i, t2b]\n    matrix:\n      cfg: [1, 2]\n      checkpoint: [a, b]\n    seeds: [10, 11]\n")
            .unwrap();
        let order: Vec<String> = plan
            .jobs()
            .map(|j| {
                let p: Vec<String> = j.params.iter().map(|(_, v)| cell_text(v)).collect();
                format!(
                    "{} {} {}",
                    j.workflow.name,
                    p.join(","),
                    j.seed.unwrap_or(0)
                )
            })
            .collect();
        insta::assert_snapshot!(order.join("\n"));
        let indexes: Vec<usize> = plan.jobs().map(|j| j.index).collect();
        assert_eq!(indexes, (0..16).collect::<Vec<_>>());
    }

    fn cell_text(v: &Value) -> String {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    }

    #[test]
    fn zip_lists_vary_together_and_columns_are_a_union() {
        let fx = Fixture::new(&[("t2i", T2I), ("i2i", I2I)]);
        let plan = fx
            .plan("version: 1\ndefaults: {steps: 12}\njobs:\n  - name: a\n    workflow: t2i\n    zip:\n      prompt: [x, y, z]\n      cfg: [1, 2, 3]\n    seeds: [1]\n  - name: b\n    workflow: i2i\n    set: {image: inputs/b.png, denoise: 0.3}\n    seeds: [1]\n")
            .unwrap();
        assert_eq!(
            plan.columns(),
            ["steps", "prompt", "cfg", "image", "denoise"]
        );
        let pairs: Vec<String> = plan
            .jobs()
            .filter(|j| j.workflow.name == "t2i")
            .map(|j| format!("{}={}", cell_text(&j.params[1].1), j.params[2].1))
            .collect();
        assert_eq!(pairs, ["x=1", "y=2", "z=3"]);
    }

    #[test]
    fn identical_jobs_are_collapsed_with_a_warning() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let plan = fx
            .plan("version: 1\njobs:\n  - name: a\n    workflow: t2i\n    matrix: {cfg: [5, 5, 6]}\n    seeds: [1]\n  - name: b\n    workflow: t2i\n    set: {cfg: 6}\n    seeds: [1, 2]\n")
            .unwrap();
        assert_eq!(plan.len(), 3);
        let labels: Vec<String> = plan
            .jobs()
            .map(|j| format!("{}:{}", j.index, j.label))
            .collect();
        assert_eq!(labels, ["0:a#1", "1:a#2", "2:b#1"]);
        assert_eq!(
            plan.warnings(),
            [
                "group 'a': 1 job identical to earlier jobs collapsed (the first repeats a#1)",
                "group 'b': 1 job identical to earlier jobs collapsed (the first repeats a#2)",
            ]
        );
        let ids: HashSet<String> = plan.jobs().map(|j| j.id.to_string()).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn save_image_prefix_is_per_job_unless_set() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let plan = fx
            .plan("version: 1\njobs:\n  - workflow: t2i\n    seeds: [1]\n")
            .unwrap();
        let job = plan.jobs().next().unwrap();
        let id = job.id.to_string();
        assert_eq!(
            job.prompt.0["9"]["inputs"]["filename_prefix"],
            Value::String(format!("comfy-batch/{}/{id}", &id[..2]))
        );
        let plan = fx
            .plan("version: 1\njobs:\n  - workflow: t2i\n    set: {\"9.filename_prefix\": mine}\n    seeds: [1]\n")
            .unwrap();
        let job = plan.jobs().next().unwrap();
        assert_eq!(job.prompt.0["9"]["inputs"]["filename_prefix"], "mine");
    }

    #[test]
    fn any_savers_prefix_set_by_the_manifest_is_kept() {
        // Video, audio… savers get the per-job prefix too, and keep the
        // user's own when the manifest sets it (by id, alias or class).
        let video = r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
            "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
            "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/ComfyUI", "format": "auto", "codec": "auto"}},
            "4": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["1", 0], "filename_prefix": "ComfyUI", "fps": 6.0, "lossless": false, "quality": 80, "method": "default"}},
            "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ComfyUI"}}}"#;
        let fx = Fixture::new(&[("video", video)]);
        let plan = fx
            .plan(
                "version: 1
params:
  vid: \"3.filename_prefix\"
jobs:
  - workflow: video
    set: {vid: mine/vid, \"SaveAnimatedWEBP.filename_prefix\": mine/anim}
",
            )
            .unwrap();
        let job = plan.jobs().next().unwrap();
        let id = job.id.to_string();
        let prefix = |n: &str| job.prompt.0[n]["inputs"]["filename_prefix"].clone();
        assert_eq!(prefix("3"), "mine/vid");
        assert_eq!(prefix("4"), "mine/anim");
        assert_eq!(
            prefix("5"),
            Value::String(format!("comfy-batch/{}/{id}", &id[..2]))
        );
    }

    #[test]
    fn no_seeds_draws_fresh_seeds_and_seedless_workflows_have_none() {
        let upscale = r#"{"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
            "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "lanczos", "scale_by": 2}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "up"}}}"#;
        let fx = Fixture::new(&[("t2i", T2I), ("up", upscale)]);
        let text = "version: 1\njobs:\n  - workflow: t2i\n    matrix: {cfg: [1, 2, 3]}\n  - workflow: up\n    matrix: {image: [inputs/a.png, inputs/b.png], \"2.scale_by\": [2, 4]}\n";
        let plan = fx.plan(text).unwrap();
        let seeds: Vec<Option<u64>> = plan.jobs().map(|j| j.seed).collect();
        assert_eq!(seeds.len(), 7);
        assert!(seeds[..3].iter().all(|s| s.is_some_and(|s| s < 1 << 53)));
        assert_ne!(seeds[0], seeds[1]);
        assert!(seeds[3..].iter().all(Option::is_none));
        // The plan's jobs are the same every time they are walked, and the
        // same key gives the same fresh seeds and ids.
        assert_eq!(summary(&plan), summary(&plan));
        let again = Plan::with_random_key(&fx.manifest(text), plan.random_key()).unwrap();
        assert_eq!(summary(&plan), summary(&again));
        let other = Plan::with_random_key(&fx.manifest(text), 8).unwrap();
        assert_ne!(summary(&plan)[0], summary(&other)[0]);
        let up = plan.jobs().nth(3).unwrap();
        assert_eq!(up.images[0].path, fx.dir.path().join("jobs/inputs/a.png"));
        assert_eq!(up.params[0], ("image".into(), Value::from("inputs/a.png")));
    }

    #[test]
    fn range_seeds_are_inclusive() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let plan = fx
            .plan("version: 1\njobs:\n  - workflow: t2i\n    seeds: {range: [100, 103]}\n")
            .unwrap();
        let seeds: Vec<u64> = plan.jobs().filter_map(|j| j.seed).collect();
        assert_eq!(seeds, [100, 101, 102, 103]);
        let err = err_of(fx.plan(
            "version: 1\njobs:\n  - workflow: t2i\n    seeds: {range: [0, 1000000000000]}\n",
        ));
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("holds 1000000000001 seeds"), "{err:?}");
    }

    #[test]
    fn unknown_parameter_names_line_group_workflow_and_nearest() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let err = err_of(fx.plan("version: 1\njobs:\n  - name: fox\n    workflow: t2i\n    matrix:\n      sampeler: [euler]\n"));
        assert_eq!(
            err,
            [
                "[tmp]/jobs/m.yaml:6:7: unknown parameter 'sampeler' in group 'fox' (workflow t2i); did you mean 'sampler'?"
            ]
        );
    }

    #[test]
    fn ambiguous_sampler_lists_candidates() {
        let mut two: Map<String, Value> = serde_json::from_str(T2I).unwrap();
        two.insert(
            "20".into(),
            serde_json::json!({"class_type": "KSamplerAdvanced", "inputs": {"noise_seed": 1, "cfg": 7, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["3", 0]}, "_meta": {"title": "Refiner"}}),
        );
        let two = serde_json::to_string(&two).unwrap();
        let fx = Fixture::new(&[("two", &two)]);
        let err = err_of(fx.plan("version: 1\njobs:\n  - name: r\n    workflow: two\n    set: {cfg: 5}\n    seeds: [1]\n"));
        insta::assert_debug_snapshot!(err);
        // An alias resolves it.
        let plan = fx
            .plan("version: 1\nparams:\n  seed: Refiner.noise_seed\n  cfg: 3.cfg\njobs:\n  - workflow: two\n    set: {cfg: 5}\n    seeds: [1]\n")
            .unwrap();
        let job = plan.jobs().next().unwrap();
        assert_eq!(job.prompt.0["20"]["inputs"]["noise_seed"], 1);
        assert_eq!(job.prompt.0["3"]["inputs"]["cfg"], 5);
    }

    #[test]
    fn missing_input_wrong_type_and_links_are_errors() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let err = err_of(fx.plan(
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    set:\n      3.cfgg: 5\n      cfg: high\n      steps: [20]\n      3.model: x\n      Positive Prompt.text: 5\n    seeds: [1]\n",
        ));
        insta::assert_debug_snapshot!(err);
    }

    #[test]
    fn zip_length_mismatch_names_lists_and_lengths() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let err = err_of(fx.plan("version: 1\njobs:\n  - name: z\n    workflow: t2i\n    zip:\n      prompt: [a, b, c]\n      cfg: [1, 2]\n"));
        assert_eq!(
            err,
            [
                "[tmp]/jobs/m.yaml:5:5: zip lists differ in length in group 'z': 'prompt' has 3, 'cfg' has 2"
            ]
        );
    }

    #[test]
    fn missing_workflows_are_errors() {
        let fx = Fixture::new(&[("ui", UI)]);
        let err = err_of(fx.plan("version: 1\nworkflows:\n  listed: ../nowhere/x.json\njobs:\n  - name: a\n    workflow: nope\n  - name: b\n    workflow: ui\n  - name: c\n    workflow: listed\n"));
        insta::assert_debug_snapshot!(err);
    }

    #[test]
    fn a_servers_catalogue_is_fetched_per_class_only_for_ui_workflows() {
        let a = r#"{"nodes": [{"id": 1, "type": "EmptyImage", "widgets_values": [8, 8, 1, 0]},
                              {"id": 2, "type": "ImageInvert"}], "links": []}"#;
        let b = r#"{"nodes": [{"id": 1, "type": "EmptyImage"}, {"id": 2, "type": "PreviewImage"}], "links": []}"#;
        let fx = Fixture::new(&[("a", a), ("b", b), ("t2i", T2I)]);
        let builtin = crate::convert::NodeDefs::builtin();
        let asked = std::cell::RefCell::new(Vec::new());
        let fetch = |classes: &[String]| {
            asked.borrow_mut().push(classes.to_vec());
            builtin.subset(classes)
        };
        let manifest = fx.manifest("version: 1\njobs:\n  - workflow: [t2i, a, b]\n");
        let plan = Plan::with_catalogue_from(&manifest, 1, &fetch).unwrap();
        assert_eq!(plan.len(), 3);
        assert_eq!(
            *asked.borrow(),
            [
                vec!["EmptyImage".to_string(), "ImageInvert".into()],
                vec!["PreviewImage".into()]
            ]
        );
        // An API-only manifest asks for nothing.
        asked.borrow_mut().clear();
        let manifest = fx.manifest("version: 1\njobs:\n  - workflow: t2i\n");
        Plan::with_catalogue_from(&manifest, 1, &fetch).unwrap();
        assert!(asked.borrow().is_empty());
    }

    #[test]
    fn dynamic_prompt_choices_in_a_ui_workflow_are_kept_with_a_warning() {
        let ui = r#"{"nodes": [{"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a {red|blue} fox"]}], "links": []}"#;
        let fx = Fixture::new(&[("ui", ui)]);
        let plan = fx.plan("version: 1\njobs:\n  - workflow: ui\n").unwrap();
        assert_eq!(plan.warnings().len(), 1, "{:?}", plan.warnings());
        assert!(
            plan.warnings()[0].contains("templates:"),
            "{:?}",
            plan.warnings()
        );
        let job = plan.jobs().next().unwrap();
        assert_eq!(job.prompt.0["6"]["inputs"]["text"], "a {red|blue} fox");
    }

    #[test]
    fn ui_format_workflows_are_converted_once_and_targets_work() {
        let fx = Fixture::new(&[("ui", UI)]);
        let plan = fx
            .plan("version: 1\njobs:\n  - workflow: ui\n    matrix: {steps: [5, 6], cfg: [2, 3]}\n    seeds: [7]\n")
            .unwrap();
        let jobs: Vec<Job> = plan.jobs().collect();
        assert_eq!(jobs.len(), 4);
        let p = &jobs[3].prompt.0;
        assert_eq!(p["3"]["class_type"], "KSampler");
        assert_eq!(p["3"]["inputs"]["steps"], 6);
        assert_eq!(p["3"]["inputs"]["cfg"], 3);
        assert_eq!(p["3"]["inputs"]["seed"], 7);
        assert_eq!(p["3"]["inputs"]["sampler_name"], "euler");
        assert_eq!(p["3"]["_meta"]["title"], "KSampler");
        let bytes = std::fs::read(&jobs[0].workflow.path).unwrap();
        use sha2::Digest as _;
        assert_eq!(
            jobs[0].workflow.sha256,
            hex::encode(sha2::Sha256::digest(bytes))
        );
    }

    #[test]
    fn missing_image_files_and_repeated_names_are_errors() {
        let fx = Fixture::new(&[("i2i", I2I)]);
        let err = err_of(fx.plan(
            "version: 1\njobs:\n  - name: a\n    workflow: i2i\n    matrix:\n      image: [inputs/a.png, inputs/missing.png]\n    set: {cfg: 5}\n    zip: {cfg: [1]}\n",
        ));
        insta::assert_debug_snapshot!(err);
    }

    #[test]
    fn every_problem_is_listed() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let err = err_of(fx.plan("version: 1\ndefaults: {stepz: 3}\njobs:\n  - name: a\n    workflow: t2i\n    set: {cfgg: 1}\n  - name: b\n    workflow: t2i\n    set: {widht: 1}\n"));
        assert_eq!(err.len(), 4, "{err:#?}");
    }

    #[test]
    fn huge_plans_are_refused() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let err = err_of(fx.plan(
            "version: 1\njobs:\n  - workflow: t2i\n    seeds: {range: [0, 99999999]}\n    matrix: {cfg: [1, 2]}\n",
        ));
        assert_eq!(
            err,
            [
                "[tmp]/jobs/m.yaml:1:1: the manifest expands to 200000000 jobs; the limit is 100000000"
            ]
        );
    }

    #[test]
    fn rows_without_prompts_match_the_jobs() {
        let fx = Fixture::new(&[("t2i", T2I), ("i2i", I2I)]);
        std::fs::create_dir_all(fx.dir.path().join("jobs/wildcards")).unwrap();
        std::fs::write(
            fx.dir.path().join("jobs/wildcards/animals.txt"),
            "cat\ndog\n",
        )
        .unwrap();
        let plan = fx
            .plan("version: 1\ndefaults: {steps: 3}\njobs:\n  - name: a\n    workflow: t2i\n    matrix: {cfg: [5, 5, 6]}\n    templates:\n      prompt: \"a {red|blue} __animals__\"\n    seeds: [1, 2]\n  - name: b\n    workflow: i2i\n    zip: {image: [inputs/a.png, inputs/b.png], denoise: [0.3, 0.4]}\n    templates: {negative: \"${x=!{p|q}}no ${x}\"}\n    draw: {random: 2, seed: 5}\n")
            .unwrap();
        assert_eq!(
            plan.columns(),
            [
                "steps", "cfg", "prompt", "image", "denoise", "negative", "animals", "x"
            ]
        );
        assert_eq!(plan.choice_columns(), ["animals", "x"]);
        let from_jobs: Vec<String> = plan
            .jobs()
            .map(|j| {
                let cells: Vec<String> = plan
                    .columns()
                    .iter()
                    .map(|c| {
                        j.params
                            .iter()
                            .find(|(n, _)| n == c)
                            .map(|(_, v)| cell_text(v))
                            .unwrap_or_default()
                    })
                    .collect();
                format!("{} {} {:?} {}", j.id, j.label, j.seed, cells.join("|"))
            })
            .collect();
        let mut from_rows = Vec::new();
        plan.for_each_row(|r| -> Result<(), ()> {
            let cells: Vec<String> = r
                .cells
                .iter()
                .map(|c| match c {
                    None => String::new(),
                    Some(Cell::Text(t)) => t.to_string(),
                    Some(Cell::Json(v)) => cell_text(v),
                })
                .collect();
            from_rows.push(format!(
                "{} {}#{} {:?} {}",
                r.id,
                r.group,
                r.number,
                r.seed,
                cells.join("|")
            ));
            Ok(())
        })
        .unwrap();
        // 3 cfg (one repeated) × 4 variants × 2 seeds, then 2 images × 2 draws.
        assert_eq!(from_jobs.len(), 2 * 4 * 2 + 2 * 2, "{from_jobs:#?}");
        assert_eq!(from_jobs, from_rows);
    }

    #[test]
    fn shards_of_a_plan_are_disjoint_and_complete() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let plan = fx.plan("version: 1\njobs:\n  - workflow: t2i\n    matrix: {cfg: [1, 2, 3, 4, 5]}\n    seeds: [1, 2]\n").unwrap();
        let all: Vec<String> = plan.jobs().map(|j| j.id.to_string()).collect();
        let mut union = Vec::new();
        for k in 1..=3 {
            let shard: Shard = format!("{k}/3").parse().unwrap();
            union.extend(
                plan.jobs()
                    .filter(|j| shard.contains(j.index))
                    .map(|j| j.id.to_string()),
            );
        }
        union.sort();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(union, sorted);
    }
    /// One line per job of a packed plan: id, label, seed, batch index,
    /// pack size, pack id, shard unit.
    fn pack_summary(plan: &Plan) -> Vec<String> {
        plan.jobs()
            .map(|j| {
                let p = j.pack.as_ref().expect("a packed job");
                format!(
                    "{} {} seed={} batch_index={} size={} pack={} unit={}",
                    j.id,
                    j.label,
                    j.seed.unwrap_or(0),
                    p.batch_index,
                    p.size,
                    p.id,
                    j.shard_unit
                )
            })
            .collect()
    }

    #[test]
    fn a_packed_sweep_sends_one_prompt_per_pack_of_seeds() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        // 5 seeds in packs of 2: packs of 2, 2 and 1, per cfg.
        let text = "version: 1\njobs:\n  - name: p\n    workflow: t2i\n    matrix: {cfg: [5, 6]}\n    seeds: {count: 5, base: 3}\n    pack: 2\n";
        let plan = fx.plan(text).unwrap();
        assert_eq!(plan.len(), 10);
        assert!(plan.has_packs());
        let lines = pack_summary(&plan);
        insta::assert_snapshot!(lines.join("\n"));
        // The pack seeds are the first seeds of the group's stream.
        let stream = seeds::from_base(3, 5);
        let jobs: Vec<Job> = plan.jobs().collect();
        let pack_seeds: Vec<u64> = jobs[..5].iter().filter_map(|j| j.seed).collect();
        assert_eq!(
            pack_seeds,
            [stream[0], stream[0], stream[1], stream[1], stream[2]]
        );
        // Every job of a pack sends the same prompt: the pack's seed, its
        // size as the batch, files named by the pack id.
        for pair in jobs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let (pa, pb) = (a.pack.as_ref().unwrap(), b.pack.as_ref().unwrap());
            assert_eq!(pa.id == pb.id, a.prompt.0 == b.prompt.0, "{a:?} {b:?}");
            assert_ne!(a.id, b.id);
        }
        let first = &jobs[0].prompt.0;
        assert_eq!(first["5"]["inputs"]["batch_size"], 2);
        let pack_id = jobs[0].pack.as_ref().unwrap().id.to_string();
        assert_eq!(
            first["9"]["inputs"]["filename_prefix"],
            Value::String(format!("comfy-batch/{}/{pack_id}", &pack_id[..2]))
        );
        insta::assert_json_snapshot!("packed_prompt_first", jobs[0].prompt);
        assert_eq!(jobs[4].prompt.0["5"]["inputs"]["batch_size"], 1);
        // The rows (runs.csv, plan --format csv) agree with the jobs.
        let mut rows = Vec::new();
        plan.for_each_row(|r| -> Result<(), ()> {
            rows.push((r.id.to_owned(), r.pack.clone(), r.shard_unit));
            Ok(())
        })
        .unwrap();
        let from_jobs: Vec<_> = jobs
            .iter()
            .map(|j| (j.id.to_string(), j.pack.clone(), j.shard_unit))
            .collect();
        assert_eq!(rows, from_jobs);
        // A packed image is never mistaken for an unpacked one: no id is
        // shared with the same sweep unpacked, nor with a pack id.
        let unpacked = fx.plan(&text.replace("    pack: 2\n", "")).unwrap();
        let mut ids: HashSet<String> = unpacked.jobs().map(|j| j.id.to_string()).collect();
        for j in &jobs {
            assert!(ids.insert(j.id.to_string()), "{}", j.id);
        }
        for j in jobs
            .iter()
            .filter(|j| j.pack.as_ref().unwrap().batch_index == 0)
        {
            assert!(ids.insert(j.pack.as_ref().unwrap().id.to_string()));
        }
        // The same manifest packs the same way.
        assert_eq!(pack_summary(&fx.plan(text).unwrap()), lines);
    }

    #[test]
    fn shards_of_a_packed_plan_never_split_a_pack() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let plan = fx
            .plan("version: 1\njobs:\n  - workflow: t2i\n    matrix: {cfg: [1, 2, 3]}\n    seeds: [1, 2, 3, 4, 5, 6, 7]\n    pack: 3\n  - workflow: t2i\n    set: {cfg: 9}\n    seeds: [1, 2, 3]\n")
            .unwrap();
        let jobs: Vec<Job> = plan.jobs().collect();
        assert_eq!(jobs.len(), 21 + 3);
        for count in 1..=4 {
            let shards: Vec<Shard> = (1..=count).map(|index| Shard { index, count }).collect();
            let owner = |j: &Job| shards.iter().position(|s| s.contains(j.shard_unit));
            for j in &jobs {
                // Complete and disjoint: one owner per job.
                assert_eq!(
                    shards.iter().filter(|s| s.contains(j.shard_unit)).count(),
                    1
                );
                // A pack's jobs share their owner.
                if let Some(p) = &j.pack {
                    let first = jobs
                        .iter()
                        .find(|o| o.pack.as_ref().is_some_and(|q| q.id == p.id))
                        .unwrap();
                    assert_eq!(owner(j), owner(first));
                } else {
                    // Groups without pack: keep today's partition.
                    assert_eq!(j.shard_unit, j.index);
                }
            }
        }
        // 3 cfg × 3 packs (3, 3, 1): 9 units, 0..9.
        let units: HashSet<usize> = jobs
            .iter()
            .filter(|j| j.pack.is_some())
            .map(|j| j.shard_unit)
            .collect();
        assert_eq!(units, (0..9).collect());
    }

    #[test]
    fn packing_is_refused_where_the_graph_cannot_take_a_batch() {
        let video = T2I.replace("\"SaveImage\"", "\"SaveAnimatedWEBP\"");
        let mut no_latent: Map<String, Value> = serde_json::from_str(T2I).unwrap();
        no_latent["5"] = serde_json::json!({"class_type": "LatentUpscale", "inputs": {"samples": ["12", 0], "upscale_method": "nearest-exact", "width": 512, "height": 512, "crop": "disabled"}});
        no_latent.insert(
            "12".into(),
            serde_json::json!({"class_type": "SolidLatent", "inputs": {"width": 8}}),
        );
        let no_latent = serde_json::to_string(&no_latent).unwrap();
        let fx = Fixture::new(&[
            ("t2i", T2I),
            ("i2i", I2I),
            ("video", &video),
            ("odd", &no_latent),
        ]);
        let group = |name: &str, wf: &str, extra: &str| {
            format!("  - name: {name}\n    workflow: {wf}\n{extra}    pack: 4\n")
        };
        let text = [
            "version: 1\njobs:\n".to_string(),
            group("noseeds", "t2i", ""),
            group(
                "img",
                "i2i",
                "    set: {image: inputs/a.png}\n    seeds: [1]\n",
            ),
            group("own", "t2i", "    set: {batch_size: 2}\n    seeds: [1]\n"),
            group("vid", "video", "    seeds: [1]\n"),
            group("odd", "odd", "    seeds: [1]\n"),
            group("zero", "t2i", "    seeds: [1]\n").replace("pack: 4", "pack: 0"),
        ]
        .concat();
        let manifest_err = Manifest::load(&{
            let path = fx.dir.path().join("jobs/m.yaml");
            std::fs::write(&path, &text).unwrap();
            path
        })
        .unwrap_err()
        .to_string()
        .replace(&fx.dir.path().display().to_string(), "[tmp]");
        // pack: 0 is the manifest's own error, on its line.
        assert_eq!(
            manifest_err,
            "[tmp]/jobs/m.yaml:27:5: group 'zero' has 'pack: 0'; a pack holds at least 1 image"
        );
        let text = text.replace("pack: 0", "pack: 1");
        let err = err_of(fx.plan(&text));
        // One line each, naming the node (the last group plans).
        insta::assert_snapshot!(err.join("\n"));
        assert_eq!(err.len(), 5, "{err:#?}");
    }

    #[test]
    fn a_choice_or_alias_named_like_a_log_column_is_refused() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        std::fs::create_dir_all(fx.dir.path().join("jobs/wildcards")).unwrap();
        for name in ["status", "images", "text", "job_id"] {
            std::fs::write(
                fx.dir.path().join(format!("jobs/wildcards/{name}.txt")),
                "x\ny\n",
            )
            .unwrap();
        }
        // A wildcard, a variable, and an alias: each would be a second
        // `status`/`images`/`text` header, which readers by name mistake.
        let err = err_of(fx.plan(
            "version: 1\nparams: {error: \"6.text\"}\njobs:\n  - name: a\n    workflow: t2i\n    templates:\n      prompt: \"__status__ __images__ ${text=x}${text} __job_id__\"\n    seeds: [1]\n  - name: b\n    workflow: t2i\n    set: {error: hi}\n    seeds: [1]\n",
        ));
        insta::assert_snapshot!(err.join("\n"));
    }
    #[test]
    fn a_template_whose_every_variant_is_void_is_refused() {
        // `{2$$a|a|a}` never picks two different options: the reference
        // drops every variant, which left a group (and a plan) of 0 jobs
        // that `run` "completed" with exit 0.
        let fx = Fixture::new(&[("t2i", T2I)]);
        let err = err_of(fx.plan(
            "version: 1\njobs:\n  - name: a\n    workflow: t2i\n    templates:\n      prompt: \"{2$$a|a|a}\"\n    seeds: [1]\n",
        ));
        insta::assert_snapshot!(err.join("\n"));
    }
    #[test]
    fn a_template_on_a_number_input_says_templates_give_text() {
        let fx = Fixture::new(&[("t2i", T2I)]);
        let err = err_of(fx.plan(
            "version: 1\njobs:\n  - name: a\n    workflow: t2i\n    templates:\n      steps: \"{20|30}\"\n    seeds: [1]\n",
        ));
        // Not `takes a number, not string ""`: the user wrote no "".
        insta::assert_snapshot!(err.join("\n"));
    }
}
