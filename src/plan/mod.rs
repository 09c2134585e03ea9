//! Expansion: a manifest's job groups (matrix, zip, set, defaults, seeds)
//! become concrete [`Job`]s in a deterministic order, each with its stable
//! [`JobId`] and patched prompt. Owns target resolution, seeds, job ids,
//! deduplication, order and `--shard`. Knows nothing of HTTP or the output
//! folder.
//!
//! SEAM (fixed for the runner, #4): `Job`, `Workflow`, `ImageInput`, and a
//! `Plan` offering `len()`, `columns()` and a lazy `jobs()` iterator.
//!
//! Expansion is lazy: [`Plan::new`] resolves every target once per (group,
//! workflow), checks every value, and walks the job space once hashing each
//! job (only when duplicates are possible) to know the final count; the
//! prompts are built one at a time by [`Plan::jobs`].

mod seeds;
mod shard;
mod targets;
mod workflow;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::ids::{JobId, NodeId};
use crate::manifest::{JobSpec, Manifest, SeedSpec, Span, normalize};
use crate::patch::{self, Prompt, Slot, class_of};
pub use shard::{Shard, ShardError};
use targets::{Graph, TargetError};

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
    /// `image` parameters, which hold the local path as written.
    pub params: Vec<(String, serde_json::Value)>,
    /// The prompt to send (before image names are replaced by upload names).
    pub prompt: Prompt,
    /// Local images to upload first.
    pub images: Vec<ImageInput>,
}

/// The largest plan accepted (jobs before deduplication): planning walks the
/// whole job space once, so a typo like `{range: [0, 1e12]}` must fail fast.
pub const MAX_JOBS: u64 = 100_000_000;

/// What is wrong with one part of a manifest, found while planning.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanErrorKind {
    /// No target rule matches the name.
    UnknownParameter {
        /// The name as written.
        name: String,
        /// The nearest valid name, if one is close.
        suggestion: Option<String>,
    },
    /// Several nodes match.
    AmbiguousTarget {
        /// The name as written.
        name: String,
        /// Why (`2 sampler nodes`).
        why: String,
        /// The matching nodes or targets.
        candidates: Vec<String>,
    },
    /// The target node lacks the input, holds a link there, or the built-in's
    /// anchor node is absent.
    BadTarget {
        /// The name as written.
        name: String,
        /// What was found instead.
        detail: String,
    },
    /// The value's JSON type does not fit the input.
    WrongType {
        /// The name as written.
        name: String,
        /// The patch error.
        detail: String,
    },
    /// The workflow cannot be found or used.
    Workflow {
        /// The workflow name.
        name: String,
        /// Why.
        detail: String,
    },
    /// `zip:` lists of different lengths.
    ZipLength {
        /// Each list with its length, in manifest order.
        lists: Vec<(String, usize)>,
    },
    /// Two names set the same input, or one name is given twice.
    Conflict {
        /// The name as written.
        name: String,
        /// What it conflicts with.
        detail: String,
    },
    /// An `image` value names a file that does not exist.
    MissingImage {
        /// The name as written.
        name: String,
        /// The file looked for.
        path: PathBuf,
    },
    /// A seed problem (e.g. `seeds:` on a workflow without a seed input).
    Seeds(String),
    /// The manifest expands to more than [`MAX_JOBS`] jobs.
    TooManyJobs(u128),
}

/// One planning problem, with its place in the manifest and its context.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanError {
    /// The manifest file.
    pub file: PathBuf,
    /// Where in it.
    pub at: Span,
    /// The job group (empty for manifest-wide problems).
    pub group: String,
    /// The workflow, when the problem is specific to one.
    pub workflow: Option<String>,
    /// What is wrong.
    pub kind: PlanErrorKind,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PlanErrorKind as K;
        let (head, tail) = match &self.kind {
            K::UnknownParameter { name, suggestion } => (
                format!("unknown parameter '{name}'"),
                match suggestion {
                    Some(s) => format!("; did you mean '{s}'?"),
                    None => "; it is no node id, title, class, alias or built-in name".into(),
                },
            ),
            K::AmbiguousTarget {
                name,
                why,
                candidates,
            } => (
                format!("ambiguous parameter '{name}'"),
                format!(
                    ": {why}; candidates: {}; name one as ID.input, or add an alias under params:",
                    candidates.join(", ")
                ),
            ),
            K::BadTarget { name, detail } => (
                format!("parameter '{name}' has no target"),
                format!(": {detail}"),
            ),
            K::WrongType { name, detail } => (
                format!("wrong value type for '{name}'"),
                format!(": {detail}"),
            ),
            K::Workflow { name, detail } => {
                (format!("workflow '{name}' unusable"), format!(": {detail}"))
            }
            K::ZipLength { lists } => (
                "zip lists differ in length".into(),
                format!(
                    ": {}",
                    lists
                        .iter()
                        .map(|(n, l)| format!("'{n}' has {l}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            K::Conflict { name, detail } => (format!("'{name}' conflicts"), format!(": {detail}")),
            K::MissingImage { name, path } => (
                format!("image file for '{name}' not found"),
                format!(": {}", path.display()),
            ),
            K::Seeds(detail) => ("bad seeds".into(), format!(": {detail}")),
            K::TooManyJobs(n) => (
                format!("the manifest expands to {n} jobs"),
                format!("; the limit is {MAX_JOBS}"),
            ),
        };
        write!(
            f,
            "{}:{}:{}: {head}",
            self.file.display(),
            self.at.line,
            self.at.col
        )?;
        if !self.group.is_empty() {
            write!(f, " in group '{}'", self.group)?;
        }
        if let Some(w) = &self.workflow {
            write!(f, " (workflow {w})")?;
        }
        f.write_str(&tail)
    }
}

/// Every problem found while planning a manifest, in manifest order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanErrors(pub Vec<PlanError>);

impl PlanErrors {
    /// One line per problem, for the CLI.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for PlanErrors {}

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
    Axis { axis: usize, member: usize },
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
    warnings: Vec<String>,
    /// Raw positions of collapsed duplicates, ascending.
    skip: Vec<u64>,
    raw_len: u64,
    len: usize,
    random_key: u64,
}

/// A workflow as shared by the groups using it: metadata and nodes.
type LoadedWorkflow = (Arc<Workflow>, Map<String, Value>);

/// Collects errors with their context.
struct Errors<'m> {
    file: &'m std::path::Path,
    list: Vec<PlanError>,
}

impl Errors<'_> {
    fn push(&mut self, at: Span, group: &str, workflow: Option<&str>, kind: PlanErrorKind) {
        self.list.push(PlanError {
            file: self.file.to_owned(),
            at,
            group: group.to_owned(),
            workflow: workflow.map(str::to_owned),
            kind,
        });
    }
}

fn encode(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
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
        let mut groups = Vec::new();
        let mut raw_start: u128 = 0;
        for (gi, spec) in manifest.jobs.iter().enumerate() {
            let mut variants_src = Vec::new();
            for name in &spec.workflows {
                if !loaded.iter().any(|(n, _)| n == name) {
                    let entry = match workflow::load(manifest, name) {
                        Ok(w) => Some((
                            Arc::new(Workflow {
                                name: name.clone(),
                                path: w.path,
                                sha256: w.sha256,
                            }),
                            w.nodes,
                        )),
                        Err(e) => {
                            let at = manifest
                                .workflows
                                .iter()
                                .find(|w| &w.name == name)
                                .map(|w| w.at)
                                .unwrap_or(spec.workflow_at);
                            errors.push(
                                at,
                                &spec.name,
                                None,
                                PlanErrorKind::Workflow {
                                    name: name.clone(),
                                    detail: e.to_string(),
                                },
                            );
                            None
                        }
                    };
                    loaded.push((name.clone(), entry));
                }
                if let Some((_, Some((wf, nodes)))) = loaded.iter().find(|(n, _)| n == name) {
                    variants_src.push((wf.clone(), nodes.clone()));
                }
            }
            if let Some(group) = plan_group(manifest, spec, gi, &aliases, variants_src, &mut errors)
            {
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
        let mut plan = Plan {
            groups,
            columns,
            warnings: Vec::new(),
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
        let mut idx = Vec::new();
        let mut dropped_per_group: Vec<(usize, u64, u64)> = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            for local in 0..g.raw_len() {
                let raw = g.raw_start + local;
                let (vi, seed) = self.decode(g, local, raw, &mut idx);
                let digest = digest(g, &g.variants[vi], &idx, seed);
                let key = u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]));
                match first.get(&key) {
                    None => {
                        first.insert(key, raw);
                    }
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

    /// Decodes a raw position into (variant, axis indices, seed).
    fn decode(
        &self,
        g: &Group,
        local: u64,
        raw: u64,
        idx: &mut Vec<usize>,
    ) -> (usize, Option<u64>) {
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
    /// manifest order of first appearance; `seed` is not among them.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Notes for the user (e.g. collapsed duplicates), one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The jobs, lazily, in plan order (`index` 0..len).
    pub fn jobs(&self) -> impl Iterator<Item = Job> + '_ {
        Jobs {
            plan: self,
            raw: 0,
            index: 0,
            skip_pos: 0,
            group: 0,
            in_group: 0,
            idx: Vec::new(),
        }
    }
}

/// The job id input: workflow content, every resolved (node, input) value
/// sorted by slot, and the seed. Frozen (see `docs/manifest.md`).
fn digest(g: &Group, v: &Variant, idx: &[usize], seed: Option<u64>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"comfy-batch job v1\0");
    h.update(v.workflow.sha256.as_bytes());
    h.update(b"\0");
    for item in &v.hash {
        h.update(&item.key);
        match &item.value {
            HashValue::Fixed(bytes) => h.update(bytes),
            HashValue::Axis { axis, member } => {
                h.update(&g.axes[*axis].members[*member].encoded[idx[*axis]])
            }
        }
        h.update(b"\0");
    }
    match seed {
        Some(s) => {
            h.update(b"seed\0");
            h.update(s.to_string().as_bytes());
        }
        None => h.update(b"noseed"),
    }
    h.finalize().into()
}

struct Jobs<'p> {
    plan: &'p Plan,
    raw: u64,
    index: usize,
    skip_pos: usize,
    group: usize,
    in_group: usize,
    idx: Vec<usize>,
}

impl Iterator for Jobs<'_> {
    type Item = Job;

    fn next(&mut self) -> Option<Job> {
        let plan = self.plan;
        loop {
            if self.raw >= plan.raw_len {
                return None;
            }
            let mut g = plan.groups.get(self.group)?;
            while self.raw >= g.raw_start + g.raw_len() {
                self.group += 1;
                self.in_group = 0;
                g = plan.groups.get(self.group)?;
            }
            let raw = self.raw;
            self.raw += 1;
            if plan.skip.get(self.skip_pos) == Some(&raw) {
                self.skip_pos += 1;
                continue;
            }
            let (vi, seed) = plan.decode(g, raw - g.raw_start, raw, &mut self.idx);
            let v = &g.variants[vi];
            let id = JobId::new(hex::encode(&digest(g, v, &self.idx, seed)[..6]));
            let mut prompt = v.base.clone();
            let idx = &self.idx;
            for (slot, axis, member) in &v.setters {
                let value = g.axes[*axis].members[*member].values[idx[*axis]].clone();
                patch::set(&mut prompt, slot, value);
            }
            if let Some(seed) = seed {
                for slot in &v.seed_slots {
                    patch::set(&mut prompt, slot, Value::from(seed));
                }
            }
            patch::set_prefixes(&mut prompt, &v.savers, &id);
            let params = g
                .params
                .iter()
                .map(|p| {
                    let value = match &p.source {
                        Source::Fixed(v) => v.clone(),
                        Source::Axis { axis, member } => {
                            g.axes[*axis].members[*member].values[idx[*axis]].clone()
                        }
                    };
                    (p.name.clone(), value)
                })
                .collect();
            let images = v
                .images
                .iter()
                .map(|(slot, src)| ImageInput {
                    node: NodeId::new(slot.node.clone()),
                    input: slot.input.clone(),
                    path: match src {
                        ImageSource::Fixed(p) => p.clone(),
                        ImageSource::Axis { axis, paths, .. } => paths[idx[*axis]].clone(),
                    },
                })
                .collect();
            self.in_group += 1;
            let job = Job {
                index: self.index,
                id,
                label: format!("{}#{}", g.name, self.in_group),
                workflow: v.workflow.clone(),
                seed,
                params,
                prompt: Prompt(prompt),
                images,
            };
            self.index += 1;
            return Some(job);
        }
    }
}

/// Names that mean the seed, set only through `seeds:`.
const SEED_NAMES: &[&str] = &["seed", "noise_seed"];

fn is_expensive(name: &str) -> bool {
    name == "checkpoint" || name.ends_with(".ckpt_name")
}

/// Builds one group: parameters, axes, seeds and one variant per workflow.
/// Problems go to `errors`; `None` when the group cannot be planned.
fn plan_group(
    manifest: &Manifest,
    spec: &JobSpec,
    gi: usize,
    aliases: &[(String, String)],
    variants_src: Vec<(Arc<Workflow>, Map<String, Value>)>,
    errors: &mut Errors<'_>,
) -> Option<Group> {
    let before = errors.list.len();
    let gname = spec.name.as_str();
    // Parameters: defaults, then the group's sections in file order.
    let mut params: Vec<GroupParam> = manifest
        .defaults
        .iter()
        .map(|p| GroupParam {
            name: p.name.clone(),
            at: p.at,
            source: Source::Fixed(p.value.clone()),
            from_defaults: true,
        })
        .collect();
    let mut axes: Vec<Axis> = Vec::new();
    // Adds a parameter (or overrides a default); its index, or None on error.
    let add = |params: &mut Vec<GroupParam>,
               name: &str,
               at: Span,
               source: Source,
               errors: &mut Errors<'_>| {
        if SEED_NAMES.contains(&name) && !manifest.params.iter().any(|a| a.name == name) {
            errors.push(
                at,
                gname,
                None,
                PlanErrorKind::Seeds(format!(
                    "'{name}' is not a parameter; give seeds with 'seeds:'"
                )),
            );
            return None;
        }
        if let Some(i) = params.iter().position(|p| p.name == name) {
            let existing = &mut params[i];
            if existing.from_defaults {
                existing.source = source;
                existing.at = at;
                existing.from_defaults = false;
                return Some(i);
            }
            errors.push(
                at,
                gname,
                None,
                PlanErrorKind::Conflict {
                    name: name.to_owned(),
                    detail: format!("it is already given at line {}", existing.at.line),
                },
            );
            return None;
        }
        params.push(GroupParam {
            name: name.to_owned(),
            at,
            source,
            from_defaults: false,
        });
        Some(params.len() - 1)
    };
    // Sections in file order (axes keep manifest order).
    let mut sections: Vec<(&str, Span)> = Vec::new();
    if let Some(p) = spec.set.first() {
        sections.push(("set", p.at));
    }
    if let Some(l) = spec.matrix.first() {
        sections.push(("matrix", l.at));
    }
    if !spec.zip.is_empty() {
        sections.push(("zip", spec.zip_at));
    }
    sections.sort_by_key(|(_, at)| *at);
    for (section, _) in sections {
        match section {
            "set" => {
                for p in &spec.set {
                    add(
                        &mut params,
                        &p.name,
                        p.at,
                        Source::Fixed(p.value.clone()),
                        errors,
                    );
                }
            }
            "matrix" => {
                for l in &spec.matrix {
                    let axis = axes.len();
                    if let Some(param) = add(
                        &mut params,
                        &l.name,
                        l.at,
                        Source::Axis { axis, member: 0 },
                        errors,
                    ) {
                        axes.push(Axis {
                            len: l.values.len(),
                            members: vec![Member {
                                param,
                                encoded: l.values.iter().map(encode).collect(),
                                values: l.values.clone(),
                            }],
                        });
                    }
                }
            }
            _ => {
                let lens: Vec<(String, usize)> = spec
                    .zip
                    .iter()
                    .map(|l| (l.name.clone(), l.values.len()))
                    .collect();
                if lens.iter().any(|(_, n)| *n != lens[0].1) {
                    errors.push(
                        spec.zip_at,
                        gname,
                        None,
                        PlanErrorKind::ZipLength { lists: lens },
                    );
                    continue;
                }
                let axis = axes.len();
                let mut members = Vec::new();
                for l in &spec.zip {
                    let member = members.len();
                    if let Some(param) = add(
                        &mut params,
                        &l.name,
                        l.at,
                        Source::Axis { axis, member },
                        errors,
                    ) {
                        members.push(Member {
                            param,
                            encoded: l.values.iter().map(encode).collect(),
                            values: l.values.clone(),
                        });
                    }
                }
                axes.push(Axis {
                    len: lens[0].1,
                    members,
                });
            }
        }
    }
    // Axis order: checkpoint axes outermost, then manifest order.
    let mut order: Vec<usize> = (0..axes.len()).collect();
    order.sort_by_key(|a| {
        let expensive = axes[*a]
            .members
            .iter()
            .any(|m| is_expensive(&params[m.param].name));
        !expensive
    });
    let mut remap = vec![0; axes.len()];
    for (new, old) in order.iter().enumerate() {
        remap[*old] = new;
    }
    let mut slots: Vec<Option<Axis>> = axes.into_iter().map(Some).collect();
    let axes: Vec<Axis> = order.iter().filter_map(|o| slots[*o].take()).collect();
    for p in &mut params {
        if let Source::Axis { axis, .. } = &mut p.source {
            *axis = remap[*axis];
        }
    }
    // Member indices follow the member order in each axis.
    for (a, axis) in axes.iter().enumerate() {
        for (m, member) in axis.members.iter().enumerate() {
            if let Some(p) = params.get_mut(member.param) {
                p.source = Source::Axis { axis: a, member: m };
            }
        }
    }

    // Seeds.
    let seeds = match &spec.seeds {
        Some(SeedSpec::List(v)) => SeedAxis::List(v.clone()),
        Some(SeedSpec::Count { count, base }) => {
            if *count > MAX_JOBS {
                errors.push(
                    spec.seeds_at,
                    gname,
                    None,
                    PlanErrorKind::Seeds(format!("count {count} exceeds {MAX_JOBS}")),
                );
                SeedAxis::None
            } else {
                SeedAxis::List(seeds::from_base(*base, *count))
            }
        }
        Some(SeedSpec::Range { start, end }) => {
            let len = u128::from(*end) - u128::from(*start) + 1;
            if len > u128::from(MAX_JOBS) {
                errors.push(
                    spec.seeds_at,
                    gname,
                    None,
                    PlanErrorKind::Seeds(format!(
                        "range [{start}, {end}] holds {len} seeds, more than {MAX_JOBS}"
                    )),
                );
                SeedAxis::None
            } else {
                SeedAxis::Range {
                    start: *start,
                    len: len as u64,
                }
            }
        }
        None => SeedAxis::Fresh,
    };

    // Variants.
    let mut variants = Vec::new();
    for (wf, nodes) in variants_src {
        if let Some(v) = plan_variant(manifest, spec, aliases, &params, &axes, wf, nodes, errors) {
            variants.push(v);
        }
    }
    if errors.list.len() > before || variants.is_empty() {
        return None;
    }
    let seeds = if variants.iter().all(|v| v.seed_slots.is_empty()) {
        SeedAxis::None
    } else {
        seeds
    };
    let per_variant = axes
        .iter()
        .fold(seeds.len(), |n, a| n.saturating_mul(a.len as u64));
    Some(Group {
        name: spec.name.clone(),
        index: gi,
        raw_start: 0,
        per_variant,
        variants,
        axes,
        seeds,
        params,
    })
}

/// Resolves and checks every parameter of a group against one workflow.
#[expect(clippy::too_many_arguments, reason = "one call site, all context")]
fn plan_variant(
    manifest: &Manifest,
    spec: &JobSpec,
    aliases: &[(String, String)],
    params: &[GroupParam],
    axes: &[Axis],
    wf: Arc<Workflow>,
    nodes: Map<String, Value>,
    errors: &mut Errors<'_>,
) -> Option<Variant> {
    let before = errors.list.len();
    let gname = spec.name.as_str();
    let wname = Some(wf.name.as_str());
    let graph = Graph::new(&nodes);
    let target_error = |name: &str, e: TargetError| match e {
        TargetError::Unknown { suggestion } => PlanErrorKind::UnknownParameter {
            name: name.to_owned(),
            suggestion,
        },
        TargetError::Ambiguous { why, candidates } => PlanErrorKind::AmbiguousTarget {
            name: name.to_owned(),
            why,
            candidates,
        },
        TargetError::Input(detail) | TargetError::NotFound(detail) => PlanErrorKind::BadTarget {
            name: name.to_owned(),
            detail,
        },
    };
    // The seed input.
    let mut seed_unresolved = false;
    let seed_slots = match graph.resolve("seed", aliases) {
        Ok(slots) => slots,
        Err(TargetError::Unknown { .. } | TargetError::NotFound(_)) => Vec::new(),
        Err(e) => {
            seed_unresolved = true;
            errors.push(spec.seeds_at, gname, wname, target_error("seed", e));
            Vec::new()
        }
    };
    for slot in &seed_slots {
        if let Err(e) = patch::check(&nodes, slot, &Value::from(0u64)) {
            errors.push(
                spec.seeds_at,
                gname,
                wname,
                PlanErrorKind::WrongType {
                    name: "seed".into(),
                    detail: e.to_string(),
                },
            );
        }
    }
    if seed_slots.is_empty() && spec.seeds.is_some() && !seed_unresolved {
        errors.push(
            spec.seeds_at,
            gname,
            wname,
            PlanErrorKind::Seeds(
                "the workflow has no seed input (add an alias 'seed: ID.input' under params:)"
                    .into(),
            ),
        );
    }
    let mut base = nodes.clone();
    let mut setters = Vec::new();
    let mut hash = Vec::new();
    let mut taken: Vec<(Slot, &str)> = seed_slots.iter().map(|s| (s.clone(), "the seed")).collect();
    let mut user_prefix = Vec::new();
    let mut images = Vec::new();
    for p in params {
        let at = p.at;
        let slots = match graph.resolve(&p.name, aliases) {
            Ok(s) => s,
            Err(e) => {
                errors.push(at, gname, wname, target_error(&p.name, e));
                continue;
            }
        };
        let values: Vec<&Value> = match &p.source {
            Source::Fixed(v) => vec![v],
            Source::Axis { axis, member } => axes[*axis].members[*member].values.iter().collect(),
        };
        for slot in &slots {
            if let Some((_, other)) = taken.iter().find(|(s, _)| s == slot) {
                errors.push(
                    at,
                    gname,
                    wname,
                    PlanErrorKind::Conflict {
                        name: p.name.clone(),
                        detail: format!(
                            "it sets input '{}' of node {}, as {other} does",
                            slot.input, slot.node
                        ),
                    },
                );
                continue;
            }
            taken.push((slot.clone(), &p.name));
            // Check every value once, report the first wrong one.
            if let Some(e) = values
                .iter()
                .find_map(|v| patch::check(&nodes, slot, v).err())
            {
                errors.push(
                    at,
                    gname,
                    wname,
                    PlanErrorKind::WrongType {
                        name: p.name.clone(),
                        detail: e.to_string(),
                    },
                );
                continue;
            }
            let class = nodes.get(&slot.node).map(class_of).unwrap_or("");
            if class == "SaveImage" && slot.input == "filename_prefix" {
                user_prefix.push(slot.node.clone());
            }
            if slot.input == "image" && class.starts_with("LoadImage") {
                let resolve = |v: &Value| normalize(&manifest.dir.join(v.as_str().unwrap_or("")));
                let mut paths = Vec::new();
                for v in &values {
                    let path = resolve(v);
                    if !path.is_file() {
                        errors.push(
                            at,
                            gname,
                            wname,
                            PlanErrorKind::MissingImage {
                                name: p.name.clone(),
                                path: path.clone(),
                            },
                        );
                    }
                    paths.push(path);
                }
                let src = match &p.source {
                    Source::Fixed(_) => ImageSource::Fixed(paths.remove(0)),
                    Source::Axis { axis, .. } => ImageSource::Axis { axis: *axis, paths },
                };
                images.push((slot.clone(), src));
            }
            let mut key = slot.node.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(slot.input.as_bytes());
            key.push(0);
            match &p.source {
                Source::Fixed(v) => {
                    patch::set(&mut base, slot, v.clone());
                    hash.push(HashItem {
                        key,
                        value: HashValue::Fixed(encode(v)),
                    });
                }
                Source::Axis { axis, member } => {
                    setters.push((slot.clone(), *axis, *member));
                    hash.push(HashItem {
                        key,
                        value: HashValue::Axis {
                            axis: *axis,
                            member: *member,
                        },
                    });
                }
            }
        }
    }
    if errors.list.len() > before {
        return None;
    }
    hash.sort_by(|a, b| a.key.cmp(&b.key));
    let savers = patch::save_image_nodes(&nodes)
        .into_iter()
        .filter(|n| !user_prefix.contains(n))
        .collect();
    Some(Variant {
        workflow: wf,
        base,
        setters,
        seed_slots,
        hash,
        savers,
        images,
    })
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
        // The plan's jobs are the same every time they are walked.
        assert_eq!(summary(&plan), summary(&plan));
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
    fn missing_and_ui_format_workflows_are_errors() {
        let fx = Fixture::new(&[("ui", UI)]);
        let err = err_of(fx.plan("version: 1\nworkflows:\n  listed: ../nowhere/x.json\njobs:\n  - name: a\n    workflow: nope\n  - name: b\n    workflow: ui\n  - name: c\n    workflow: listed\n"));
        insta::assert_debug_snapshot!(err);
    }

    #[test]
    fn missing_image_files_and_seed_misuse_are_errors() {
        let fx = Fixture::new(&[("i2i", I2I)]);
        let err = err_of(fx.plan(
            "version: 1\njobs:\n  - name: a\n    workflow: i2i\n    matrix:\n      image: [inputs/a.png, inputs/missing.png]\n      seed: [1, 2]\n    set: {cfg: 5}\n    zip: {cfg: [1]}\n",
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
}
