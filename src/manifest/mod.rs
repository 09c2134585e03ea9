//! The manifest: YAML text → a typed [`Manifest`] whose every key carries its
//! line, plus the seed specs. Owns the file format (`docs/manifest.md`) and
//! where a run of a manifest writes ([`Manifest::output_folder`]); knows
//! nothing of workflows, targets or the network: a parameter here is just
//! a name and a JSON value.

mod draw;
mod lines;
mod seeds;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::text::redact_url;

pub use draw::DrawSpec;
pub use lines::ValueStyle;
pub use seeds::SeedSpec;

/// Names that mean the seed: not parameters, seeds come from `seeds:`.
const SEED_NAMES: &[&str] = &["seed", "noise_seed"];

/// A position in the manifest file, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// What is wrong with a manifest (one problem).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestErrorKind {
    /// The file could not be read.
    #[error("cannot read the manifest: {0}")]
    Read(String),
    /// The text is not valid YAML.
    #[error("invalid yaml: {0}")]
    Syntax(String),
    /// The same key twice in one mapping.
    #[error("duplicate key '{0}'")]
    DuplicateKey(String),
    /// A key the format does not have.
    #[error("unknown key '{key}'{}", suggestion.as_ref().map(|s| format!("; did you mean '{s}'?")).unwrap_or_default())]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The nearest valid key, if any is close.
        suggestion: Option<String>,
    },
    /// `version:` is absent or not 1.
    #[error("{0}")]
    Version(String),
    /// A value of the wrong shape (serde's message).
    #[error("{0}")]
    Invalid(String),
    /// The file is not UTF-8 text.
    #[error("{0}")]
    Encoding(String),
}

/// One problem at one place.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where it is.
    pub span: Span,
    /// What it is.
    pub kind: ManifestErrorKind,
}

/// A manifest that cannot be used: every problem found, each with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestError {
    /// The manifest file, as given.
    pub file: PathBuf,
    /// The problems, in file order (at least one).
    pub problems: Vec<Problem>,
}

impl ManifestError {
    fn one(file: &Path, span: Span, kind: ManifestErrorKind) -> Self {
        ManifestError {
            file: file.to_owned(),
            problems: vec![Problem { span, kind }],
        }
    }

    /// One line per problem, `file:line:col: message`, for the CLI.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| {
                format!(
                    "{}:{}:{}: {}",
                    self.file.display(),
                    p.span.line,
                    p.span.col,
                    p.kind
                )
            })
            .collect()
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = self.lines();
        f.write_str(
            lines
                .first()
                .map(String::as_str)
                .unwrap_or("invalid manifest"),
        )?;
        if lines.len() > 1 {
            write!(f, " (and {} more problems)", lines.len() - 1)?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

/// One named value (`cfg: 7` in `defaults:` or `set:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The name as written: a built-in, an alias, `ID.input`, `Title.input`…
    pub name: String,
    /// The value, as YAML gave it (numbers stay numbers).
    pub value: Value,
    /// Where the name is written.
    pub at: Span,
}

/// One named list of values (`cfg: [5, 6.5]` in `matrix:` or `zip:`).
#[derive(Debug, Clone, PartialEq)]
pub struct ListParam {
    /// The name as written.
    pub name: String,
    /// The values, in order (never empty).
    pub values: Vec<Value>,
    /// Where the name is written.
    pub at: Span,
}

/// One `templates:` entry: a string parameter set from a template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateParam {
    /// The parameter name, as in `set:`.
    pub name: String,
    /// The template text (Dynamic Prompts syntax).
    pub text: String,
    /// Where the name is written.
    pub at: Span,
    /// Where the text starts and how it is written (to place errors inside
    /// it), if known.
    pub value_at: Option<(Span, ValueStyle)>,
}

/// A `workflows:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowEntry {
    /// The name jobs use.
    pub name: String,
    /// The file, resolved against the manifest's folder.
    pub path: PathBuf,
    /// Where the entry is written.
    pub at: Span,
}

/// A `params:` alias: a user name for a target (`style: "Style.text"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    /// The alias.
    pub name: String,
    /// The target it stands for, `ID.input`, `Title.input` or `Class.input`.
    pub target: String,
    /// Where the alias is written.
    pub at: Span,
}

/// One job group as written (`jobs:` item); `plan` expands it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Group name (`job<N>` when not given); the `job` column is `name#i`.
    pub name: String,
    /// Where the group starts.
    pub at: Span,
    /// Workflow names: one, or several to compare (an axis, outermost).
    pub workflows: Vec<String>,
    /// Where `workflow:` is written.
    pub workflow_at: Span,
    /// Cartesian axes, in manifest order.
    pub matrix: Vec<ListParam>,
    /// Lists that vary together (one axis), in manifest order.
    pub zip: Vec<ListParam>,
    /// Where `zip:` is written (its lists must have equal lengths).
    pub zip_at: Span,
    /// True when `zip:` is written before `matrix:` (axis order).
    pub zip_first: bool,
    /// Fixed values.
    pub set: Vec<Param>,
    /// Seeds, if given.
    pub seeds: Option<SeedSpec>,
    /// Where `seeds:` is written.
    pub seeds_at: Span,
    /// Parameters set from templates, in manifest order.
    pub templates: Vec<TemplateParam>,
    /// Where `templates:` is written.
    pub templates_at: Span,
    /// How the templates are expanded (`draw:`; default all).
    pub draw: DrawSpec,
    /// Where `draw:` is written.
    pub draw_at: Span,
    /// `pack: N`: jobs differing only in their seed go N to a prompt (one
    /// latent batch); `None` sends one prompt per job.
    pub pack: Option<u64>,
    /// Where `pack:` is written.
    pub pack_at: Span,
}

/// A `grids:` entry: a labelled grid image `run` makes into
/// `report/grids/<name>[-<page value>].png` (and the report's default view).
#[derive(Debug, Clone, PartialEq)]
pub struct GridSpec {
    /// File name stem (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// X axis: a parameter name, `seed` or `group`.
    pub x: String,
    /// Y axis.
    pub y: String,
    /// One image per value of this parameter.
    pub page: Option<String>,
    /// Fixed values, as CSV cells (strings raw, other values as JSON).
    pub r#where: Vec<(String, String)>,
    /// Only this job group.
    pub group: Option<String>,
    /// Where the entry is written.
    pub at: Span,
    /// Where each key is written (`x`, `y`, `page`, `where.NAME`, `group`).
    pub key_at: Vec<(String, Span)>,
}

/// A loaded manifest. Paths are resolved against the manifest's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The manifest file, as given.
    pub path: PathBuf,
    /// Its folder (relative paths in the manifest are relative to it).
    pub dir: PathBuf,
    /// `server:`, a string or a list; empty if absent.
    pub servers: Vec<String>,
    /// `output:`, resolved against the manifest's folder.
    pub output: Option<PathBuf>,
    /// `concurrency:` (prompts in flight per server).
    pub concurrency: Option<usize>,
    /// `workflows:`, in manifest order.
    pub workflows: Vec<WorkflowEntry>,
    /// `params:` aliases, in manifest order.
    pub params: Vec<Alias>,
    /// `defaults:`, in manifest order.
    pub defaults: Vec<Param>,
    /// `jobs:`, in manifest order.
    pub jobs: Vec<JobSpec>,
    /// `wildcards:`, resolved against the manifest's folder (default
    /// `wildcards/` beside the manifest).
    pub wildcards: PathBuf,
    /// `grids:`, in manifest order.
    pub grids: Vec<GridSpec>,
}

/// An ordered map as written in YAML (serde_yaml would give a hash map).
#[derive(Debug, Default)]
struct Ordered<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<KeyString, V>()? {
                    out.push((k.0, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V2(std::marker::PhantomData))
    }
}

/// A mapping key: a string, or a number written bare (`9: …`) taken as text.
struct KeyString(String);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KV;
        impl Visitor<'_> for KV {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
        }
        d.deserialize_any(KV)
    }
}

/// The largest `concurrency:` (as for `run --concurrency`).
const MAX_CONCURRENCY: u64 = 1024;

/// `concurrency:`, a whole number from 1 to [`MAX_CONCURRENCY`].
struct Concurrency(usize);

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = d.deserialize_any(seeds::WholeVisitor {
            what: "concurrency",
            min: 1,
            max: MAX_CONCURRENCY,
        })?;
        usize::try_from(n)
            .map(Concurrency)
            .map_err(|_| de::Error::custom(format!("concurrency {n} is too large")))
    }
}

/// `jobs:`, a list of groups (its own type for a clearer `expecting`).
struct Groups(Vec<RawJob>);

impl<'de> Deserialize<'de> for Groups {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct GV;
        impl<'de> Visitor<'de> for GV {
            type Value = Groups;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of job groups ('- workflow: …' items)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Groups, E> {
                Ok(Groups(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Groups, A::Error> {
                let mut out = Vec::new();
                while let Some(job) = seq.next_element::<RawJob>()? {
                    out.push(job);
                }
                Ok(Groups(out))
            }
        }
        d.deserialize_any(GV)
    }
}

/// A string or a list of strings (`server:`, `workflow:`).
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OV;
        impl<'de> Visitor<'de> for OV {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                if out.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least one entry"));
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(OV)
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with 'version: 1' and 'jobs:'"
)]
struct RawManifest {
    version: Option<Value>,
    server: Option<OneOrMany>,
    output: Option<String>,
    concurrency: Option<Concurrency>,
    #[serde(default)]
    workflows: Ordered<String>,
    #[serde(default)]
    params: Ordered<String>,
    #[serde(default)]
    defaults: Ordered<Value>,
    jobs: Option<Groups>,
    wildcards: Option<String>,
    #[serde(default)]
    grids: Vec<RawGrid>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a grid mapping (name, x, y, page, where, group)"
)]
struct RawGrid {
    name: String,
    x: String,
    y: String,
    page: Option<String>,
    #[serde(default, rename = "where")]
    fixed: Ordered<Value>,
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a job group mapping (name, workflow, matrix, zip, set, seeds, templates, draw)"
)]
struct RawJob {
    name: Option<String>,
    workflow: Option<OneOrMany>,
    #[serde(default)]
    matrix: Ordered<Vec<Value>>,
    #[serde(default)]
    zip: Ordered<Vec<Value>>,
    #[serde(default)]
    set: Ordered<Value>,
    seeds: Option<SeedSpec>,
    #[serde(default)]
    templates: Ordered<String>,
    draw: Option<DrawSpec>,
    pack: Option<u64>,
}

impl Manifest {
    /// Where a run of this manifest writes: `flag` (`--output`), else its
    /// `output:`, else `out/<manifest name>` beside it.
    pub fn output_folder(&self, flag: Option<&Path>) -> PathBuf {
        if let Some(flag) = flag {
            return flag.to_path_buf();
        }
        if let Some(out) = &self.output {
            return out.clone();
        }
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        self.dir.join("out").join(stem)
    }

    /// `run --pack N`: every group with `seeds:` and no `pack:` of its own
    /// packs by `n` (a group without seeds has none to pack).
    pub fn pack_seeded_groups(&mut self, n: u64) {
        for group in &mut self.jobs {
            if group.pack.is_none() && group.seeds.is_some() {
                group.pack = Some(n);
            }
        }
    }

    /// sha256 of the manifest file as it is now, lowercase hex (`None` when
    /// it cannot be read): recorded in `run.json`, so `merge` and `status`
    /// can tell a folder's manifest from another.
    pub fn sha256(&self) -> Option<String> {
        use sha2::{Digest, Sha256};
        std::fs::read(&self.path)
            .ok()
            .map(|bytes| hex::encode(Sha256::digest(&bytes)))
    }

    /// Reads and checks a manifest file. Every structural problem found
    /// (unknown or duplicate keys, bad values) is reported with its line.
    /// A file that is not UTF-8 text (binary, Latin-1, UTF-16) is refused
    /// with the place of the first offending byte; a UTF-8 byte-order mark
    /// is skipped.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let start = Span { line: 1, col: 1 };
        let read = |why: String| ManifestError::one(path, start, ManifestErrorKind::Read(why));
        if path.is_dir() {
            return Err(read("it is a directory, not a file".into()));
        }
        let bytes = read_capped(path, MAX_MANIFEST_BYTES).map_err(|e| {
            read(match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".into(),
                std::io::ErrorKind::PermissionDenied => "permission denied".into(),
                _ => e.to_string(),
            })
        })?;
        let text = decode(&bytes).map_err(|(span, kind)| ManifestError::one(path, span, kind))?;
        Manifest::parse(path, text)
    }

    /// Parses manifest text as if read from `path` (which names the folder
    /// relative paths are resolved against, and appears in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let (lines, raw) = read_raw(path, text)?;
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let mut problems = Vec::new();
        let mut bad = |span: Span, kind: ManifestErrorKind| problems.push(Problem { span, kind });

        check_version(raw.version.as_ref(), &lines, &mut bad);
        let servers = servers(raw.server, &lines, &mut bad);
        let workflows = workflow_entries(raw.workflows, &lines, &dir);
        let params = aliases(raw.params, &lines);
        let defaults = default_params(raw.defaults, &lines);
        let jobs = job_groups(raw.jobs, &lines, &mut bad);
        check_seed_names(&defaults, &jobs, &mut problems);
        let grids = grids(raw.grids, &lines, &mut problems);
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.span);
            return Err(ManifestError {
                file: path.to_owned(),
                problems,
            });
        }
        Ok(Manifest {
            wildcards: normalize(&dir.join(raw.wildcards.as_deref().unwrap_or("wildcards"))),
            grids,
            path: path.to_owned(),
            servers,
            output: raw.output.map(|o| normalize(&dir.join(o))),
            concurrency: raw.concurrency.map(|c| c.0),
            dir,
            workflows,
            params,
            defaults,
            jobs,
        })
    }
}

/// Where a problem found while reading the manifest goes (`parse` keeps
/// them all, then sorts them by line).
type Bad<'a> = dyn FnMut(Span, ManifestErrorKind) + 'a;

/// The text's lines and its YAML read into the raw manifest; refused at
/// the first control character, line problem or YAML error.
fn read_raw(path: &Path, text: &str) -> Result<(lines::Lines, RawManifest), ManifestError> {
    if let Some((span, c)) = control_char(text) {
        return Err(ManifestError::one(
            path,
            span,
            ManifestErrorKind::Syntax(format!(
                "control character U+{:04X} is not allowed (a binary file?)",
                u32::from(c)
            )),
        ));
    }
    let (lines, problems) = lines::scan(text);
    if !problems.is_empty() {
        return Err(ManifestError {
            file: path.to_owned(),
            problems,
        });
    }
    let raw: RawManifest = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
    Ok((lines, raw))
}

/// A YAML or shape error from serde, on its line, in the manifest's words.
fn yaml_error(path: &Path, e: &serde_yaml::Error) -> ManifestError {
    let span = e
        .location()
        .map(|l| Span {
            line: l.line(),
            col: l.column(),
        })
        .unwrap_or(Span { line: 1, col: 1 });
    let mut msg = e.to_string();
    if let Some(cut) = msg.find(" at line ") {
        msg.truncate(cut);
    }
    // serde's word for a YAML tagged value (`!foo x`) is `enum`.
    let msg = msg.replace("invalid type: enum,", "invalid type: tagged value (!tag),");
    let msg = clip_quoted(&msg);
    let kind = if msg.contains("repetition limit exceeded") {
        ManifestErrorKind::Syntax(
            "aliases expand to too many values (repetition limit exceeded)".into(),
        )
    } else if msg.contains("recursion limit exceeded") {
        ManifestErrorKind::Syntax("nested too deeply (recursion limit exceeded)".into())
    } else {
        ManifestErrorKind::Invalid(msg)
    };
    ManifestError::one(path, span, kind)
}

/// `version:` must be there and be 1.
fn check_version(version: Option<&Value>, lines: &lines::Lines, bad: &mut Bad) {
    match version {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(other) => bad(
            lines.at(&["version"]),
            ManifestErrorKind::Version(format!(
                "unsupported version {}; this comfy-batch reads 'version: 1'",
                clip(&other.to_string(), 40)
            )),
        ),
        None => bad(
            Span { line: 1, col: 1 },
            ManifestErrorKind::Version("missing 'version: 1' (the manifest format version)".into()),
        ),
    }
}

/// `server:`, one URL or a list: each http:// or https://.
fn servers(server: Option<OneOrMany>, lines: &lines::Lines, bad: &mut Bad) -> Vec<String> {
    let servers = server.map(|s| s.0).unwrap_or_default();
    for (i, url) in servers.iter().enumerate() {
        let lower = url.trim().to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            bad(
                lines
                    .get(&["server", &i.to_string()])
                    .unwrap_or_else(|| lines.at(&["server"])),
                ManifestErrorKind::Invalid(format!(
                    "server '{}' is not an http:// or https:// URL",
                    // Often with a password or token in it: shown redacted.
                    redact_url(url, &|_| true)
                )),
            );
        }
    }
    servers
}

/// `workflows:`, their files resolved against the manifest's folder.
fn workflow_entries(
    workflows: Ordered<String>,
    lines: &lines::Lines,
    dir: &Path,
) -> Vec<WorkflowEntry> {
    workflows
        .0
        .into_iter()
        .map(|(name, file)| WorkflowEntry {
            at: lines.at(&["workflows", &name]),
            path: normalize(&dir.join(file)),
            name,
        })
        .collect()
}

/// `params:` aliases.
fn aliases(params: Ordered<String>, lines: &lines::Lines) -> Vec<Alias> {
    params
        .0
        .into_iter()
        .map(|(name, target)| Alias {
            at: lines.at(&["params", &name]),
            target,
            name,
        })
        .collect()
}

/// `defaults:`.
fn default_params(defaults: Ordered<Value>, lines: &lines::Lines) -> Vec<Param> {
    defaults
        .0
        .into_iter()
        .map(|(name, value)| Param {
            at: lines.at(&["defaults", &name]),
            value,
            name,
        })
        .collect()
}

/// `jobs:`, at least one group, each read by [`job_group`].
fn job_groups(raw: Option<Groups>, lines: &lines::Lines, bad: &mut Bad) -> Vec<JobSpec> {
    let raw_jobs = raw.map(|g| g.0).unwrap_or_default();
    if raw_jobs.is_empty() {
        bad(
            lines.get(&["jobs"]).unwrap_or(Span { line: 1, col: 1 }),
            ManifestErrorKind::Invalid("no jobs: 'jobs:' needs at least one group".into()),
        );
    }
    let mut jobs: Vec<JobSpec> = Vec::new();
    for (i, job) in raw_jobs.into_iter().enumerate() {
        let spec = job_group(i, job, &jobs, lines, bad);
        jobs.push(spec);
    }
    jobs
}

/// Group `i` of `jobs:`; `jobs` are the groups before it.
fn job_group(
    i: usize,
    job: RawJob,
    jobs: &[JobSpec],
    lines: &lines::Lines,
    bad: &mut Bad,
) -> JobSpec {
    let idx = i.to_string();
    let at = lines
        .get(&["jobs", &idx, "name"])
        .unwrap_or_else(|| lines.at(&["jobs", &idx]));
    let name = job.name.unwrap_or_else(|| format!("job{}", i + 1));
    check_group_name(
        &name,
        lines.get(&["jobs", &idx, "name"]).unwrap_or(at),
        jobs,
        bad,
    );
    let workflow_at = lines.get(&["jobs", &idx, "workflow"]).unwrap_or(at);
    let workflows = group_workflows(job.workflow, &name, at, workflow_at, bad);
    let matrix = list_params(lines, &idx, "matrix", job.matrix, bad);
    let zip = list_params(lines, &idx, "zip", job.zip, bad);
    let zip_at = lines.get(&["jobs", &idx, "zip"]).unwrap_or(at);
    let zip_first = match (
        lines.get(&["jobs", &idx, "zip"]),
        lines.get(&["jobs", &idx, "matrix"]),
    ) {
        (Some(z), Some(m)) => z < m,
        _ => false,
    };
    let set = set_params(lines, &idx, job.set);
    let templates = template_params(lines, &idx, job.templates);
    if job.draw.is_some() && templates.is_empty() {
        bad(
            lines.get(&["jobs", &idx, "draw"]).unwrap_or(at),
            ManifestErrorKind::Invalid(format!(
                "group '{name}' has 'draw:' but no 'templates:' to draw from"
            )),
        );
    }
    let pack_at = lines.get(&["jobs", &idx, "pack"]).unwrap_or(at);
    if job.pack == Some(0) {
        bad(
            pack_at,
            ManifestErrorKind::Invalid(format!(
                "group '{name}' has 'pack: 0'; a pack holds at least 1 image"
            )),
        );
    }
    JobSpec {
        pack: job.pack,
        pack_at,
        templates_at: lines.get(&["jobs", &idx, "templates"]).unwrap_or(at),
        templates,
        draw: job.draw.unwrap_or_default(),
        draw_at: lines.get(&["jobs", &idx, "draw"]).unwrap_or(at),
        seeds_at: lines.get(&["jobs", &idx, "seeds"]).unwrap_or(at),
        name,
        at,
        workflows,
        workflow_at,
        matrix,
        zip,
        zip_at,
        zip_first,
        set,
        seeds: job.seeds,
    }
}

/// A group's name: non-empty, without '#', not taken by an earlier group.
fn check_group_name(name: &str, name_at: Span, jobs: &[JobSpec], bad: &mut Bad) {
    if name.is_empty() || name.contains('#') {
        bad(
            name_at,
            ManifestErrorKind::Invalid(format!(
                "group name '{name}' must be non-empty and without '#'"
            )),
        );
    }
    if jobs.iter().any(|j| j.name == name) {
        bad(
            name_at,
            ManifestErrorKind::Invalid(format!("two job groups are named '{name}'")),
        );
    }
}

/// A group's `workflow:`, required, no name empty.
fn group_workflows(
    workflow: Option<OneOrMany>,
    name: &str,
    at: Span,
    workflow_at: Span,
    bad: &mut Bad,
) -> Vec<String> {
    match workflow {
        Some(w) => {
            if w.0.iter().any(|n| n.trim().is_empty()) {
                bad(
                    workflow_at,
                    ManifestErrorKind::Invalid(format!(
                        "group '{name}' has an empty workflow name"
                    )),
                );
            }
            w.0
        }
        None => {
            bad(
                at,
                ManifestErrorKind::Invalid(format!("group '{name}' has no 'workflow:'")),
            );
            Vec::new()
        }
    }
}

/// A group's `matrix:` or `zip:` (its `section`): lists of values, none
/// empty.
fn list_params(
    lines: &lines::Lines,
    idx: &str,
    section: &str,
    items: Ordered<Vec<Value>>,
    bad: &mut Bad,
) -> Vec<ListParam> {
    items
        .0
        .into_iter()
        .map(|(pname, values)| {
            let pat = lines.at(&["jobs", idx, section, &pname]);
            if values.is_empty() {
                bad(
                    pat,
                    ManifestErrorKind::Invalid(format!("'{pname}' in {section} has no values")),
                );
            }
            ListParam {
                name: pname,
                values,
                at: pat,
            }
        })
        .collect()
}

/// A group's `set:`.
fn set_params(lines: &lines::Lines, idx: &str, set: Ordered<Value>) -> Vec<Param> {
    set.0
        .into_iter()
        .map(|(pname, value)| Param {
            at: lines.at(&["jobs", idx, "set", &pname]),
            value,
            name: pname,
        })
        .collect()
}

/// A group's `templates:`.
fn template_params(
    lines: &lines::Lines,
    idx: &str,
    templates: Ordered<String>,
) -> Vec<TemplateParam> {
    templates
        .0
        .into_iter()
        .map(|(pname, text)| TemplateParam {
            at: lines.at(&["jobs", idx, "templates", &pname]),
            value_at: lines.value(&["jobs", idx, "templates", &pname]),
            text,
            name: pname,
        })
        .collect()
}

/// No parameter (a default, a group's set, matrix, zip or template) is
/// named as a seed: seeds come from `seeds:`.
fn check_seed_names(defaults: &[Param], jobs: &[JobSpec], problems: &mut Vec<Problem>) {
    let named = defaults
        .iter()
        .map(|p| (&p.name, p.at))
        .chain(jobs.iter().flat_map(|j| {
            j.set
                .iter()
                .map(|p| (&p.name, p.at))
                .chain(j.matrix.iter().chain(&j.zip).map(|l| (&l.name, l.at)))
                .chain(j.templates.iter().map(|t| (&t.name, t.at)))
        }));
    for (name, at) in named {
        if SEED_NAMES.contains(&name.as_str()) {
            problems.push(Problem {
                span: at,
                kind: ManifestErrorKind::Invalid(format!(
                    "'{name}' is not a parameter: give seeds with 'seeds:' (a list, {{count, base}} or {{range}})"
                )),
            });
        }
    }
}

/// `grids:`, each read by [`grid`].
fn grids(raw: Vec<RawGrid>, lines: &lines::Lines, problems: &mut Vec<Problem>) -> Vec<GridSpec> {
    let mut grids: Vec<GridSpec> = Vec::new();
    for (i, g) in raw.into_iter().enumerate() {
        let spec = grid(i, g, &grids, lines, problems);
        grids.push(spec);
    }
    grids
}

/// Grid `i` of `grids:`; `grids` are the ones before it.
fn grid(
    i: usize,
    g: RawGrid,
    grids: &[GridSpec],
    lines: &lines::Lines,
    problems: &mut Vec<Problem>,
) -> GridSpec {
    let idx = i.to_string();
    let at = lines.at(&["grids", &idx]);
    let key = |k: &str| lines.get(&["grids", &idx, k]).unwrap_or(at);
    check_grid_name(&g.name, key("name"), grids, problems);
    let mut key_at: Vec<(String, Span)> = ["x", "y", "page", "group"]
        .iter()
        .map(|k| (k.to_string(), key(k)))
        .collect();
    let fixed = g
        .fixed
        .0
        .into_iter()
        .map(|(k, v)| {
            let span = lines.get(&["grids", &idx, "where", &k]).unwrap_or(at);
            key_at.push((format!("where.{k}"), span));
            let cell = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, cell)
        })
        .collect();
    GridSpec {
        name: g.name,
        x: g.x,
        y: g.y,
        page: g.page,
        r#where: fixed,
        group: g.group,
        at,
        key_at,
    }
}

/// A grid's name: a file name, not taken by an earlier grid.
fn check_grid_name(name: &str, name_at: Span, grids: &[GridSpec], problems: &mut Vec<Problem>) {
    let name_ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if !name_ok {
        problems.push(Problem {
            span: name_at,
            kind: ManifestErrorKind::Invalid(format!(
                "grid name '{}' must be a file name: letters, digits, '-', '_', '.'",
                clip(name, 60)
            )),
        });
    }
    if grids.iter().any(|o| o.name == name) {
        problems.push(Problem {
            span: name_at,
            kind: ManifestErrorKind::Invalid(format!("two grids are named '{name}'")),
        });
    }
}

pub(crate) use crate::text::clip;

/// A serde message with the value it quotes (`invalid type: string "…",
/// expected …`) clipped, keeping what was expected.
fn clip_quoted(msg: &str) -> String {
    match msg.rfind(", expected ") {
        Some(i) if msg.len() > 200 => format!("{}{}", clip(&msg[..i], 120), clip(&msg[i..], 120)),
        _ => clip(msg, 240),
    }
}

/// The largest manifest read: far above any real one, but a mistaken
/// `/dev/zero` or a huge log must not eat the memory.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Reads at most `limit` bytes of `path`; a longer file is an error
/// (`InvalidData`, "larger than … MB") rather than an endless read.
pub(crate) fn read_capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {} MB", limit >> 20),
        ));
    }
    Ok(bytes)
}

/// The span just after `prefix` (1-based line; column in characters).
fn span_after(prefix: &str) -> Span {
    let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
    Span {
        line: prefix.matches('\n').count() + 1,
        col: prefix[line_start..].chars().count() + 1,
    }
}

/// The first character YAML forbids (C0 controls but tab, LF and CR; DEL;
/// C1 controls but NEL), with its place: a binary file shows up here.
fn control_char(text: &str) -> Option<(Span, char)> {
    let (i, c) = text.char_indices().find(|(_, c)| {
        let c = u32::from(*c);
        (c < 0x20 && ![0x09, 0x0A, 0x0D].contains(&c))
            || c == 0x7F
            || ((0x80..=0x9F).contains(&c) && c != 0x85)
    })?;
    Some((span_after(&text[..i]), c))
}

/// The manifest's bytes as text: UTF-8 only, with the place of the first
/// byte that is not (or of a control character before it).
fn decode(bytes: &[u8]) -> Result<&str, (Span, ManifestErrorKind)> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err((
            Span { line: 1, col: 1 },
            ManifestErrorKind::Encoding("the manifest is UTF-16 text; save it as UTF-8".into()),
        ));
    }
    let error = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(e) => e,
    };
    let prefix = std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default();
    if let Some((span, c)) = control_char(prefix) {
        return Err((
            span,
            ManifestErrorKind::Encoding(format!(
                "the manifest is not text: control character U+{:04X} (a binary file?)",
                u32::from(c)
            )),
        ));
    }
    let byte = bytes[error.valid_up_to()];
    Err((
        span_after(prefix),
        ManifestErrorKind::Encoding(format!(
            "the manifest is not UTF-8 text: byte 0x{byte:02X} here is not UTF-8; save the file as UTF-8"
        )),
    ))
}

pub(crate) use crate::paths::normalize;

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"version: 1
server: http://127.0.0.1:8188
output: ../out/fox
concurrency: 2
workflows:
  t2i: ../workflows/txt2img.json
params:
  style: "Style Prompt.text"
defaults:
  negative: "lowres, watermark"
jobs:
  - name: fox
    workflow: t2i
    zip:
      prompt: [a, b]
    matrix:
      cfg: [5, 6.5]
      9: [1]
    seeds: [1, 2]
    set:
      width: 768
  - workflow: [t2i, i2i]
    seeds: {count: 2, base: 7}
"#;

    fn parse(text: &str) -> Result<Manifest, Vec<String>> {
        Manifest::parse(Path::new("jobs/m.yaml"), text).map_err(|e| e.lines())
    }

    #[test]
    fn a_run_writes_to_the_flag_else_the_manifests_output_else_out_beside_it() {
        let m = parse(FULL).unwrap();
        let flag = Path::new("elsewhere");
        assert_eq!(m.output_folder(Some(flag)), PathBuf::from("elsewhere"));
        assert_eq!(m.output_folder(None), PathBuf::from("out/fox"));
        let bare =
            parse("version: 1\nworkflows: {t2i: w.json}\njobs: [{workflow: t2i}]\n").unwrap();
        assert_eq!(bare.output_folder(None), PathBuf::from("jobs/out/m"));
    }

    #[test]
    fn reads_every_field_with_lines_and_resolved_paths() {
        let m = parse(FULL).unwrap();
        assert_eq!(m.servers, vec!["http://127.0.0.1:8188"]);
        assert_eq!(m.output, Some(PathBuf::from("out/fox")));
        assert_eq!(m.concurrency, Some(2));
        assert_eq!(m.workflows[0].path, PathBuf::from("workflows/txt2img.json"));
        assert_eq!(m.workflows[0].at.line, 6);
        assert_eq!(m.params[0].target, "Style Prompt.text");
        assert_eq!(m.defaults[0].at, Span { line: 10, col: 3 });
        let fox = &m.jobs[0];
        assert_eq!(fox.name, "fox");
        assert!(fox.zip_first);
        assert_eq!(fox.matrix[0].name, "cfg");
        assert_eq!(fox.matrix[0].at.line, 17);
        assert_eq!(fox.matrix[1].name, "9");
        assert_eq!(fox.set[0].at.line, 21);
        assert_eq!(fox.seeds, Some(SeedSpec::List(vec![1, 2])));
        let second = &m.jobs[1];
        assert_eq!(second.name, "job2");
        assert_eq!(second.workflows, vec!["t2i", "i2i"]);
        assert_eq!(second.seeds, Some(SeedSpec::Count { count: 2, base: 7 }));
    }

    #[test]
    fn grids_are_read_with_their_lines_and_where_values_as_cells() {
        let m = parse(&format!(
            "{FULL}grids:\n  - name: by-cfg\n    x: cfg\n    y: prompt\n    page: seed\n    where: {{cfg: 6.5, prompt: a}}\n    group: fox\n"
        ))
        .unwrap();
        let g = &m.grids[0];
        assert_eq!(
            (g.name.as_str(), g.x.as_str(), g.y.as_str()),
            ("by-cfg", "cfg", "prompt")
        );
        assert_eq!(g.page.as_deref(), Some("seed"));
        assert_eq!(g.group.as_deref(), Some("fox"));
        assert_eq!(
            g.r#where,
            vec![("cfg".into(), "6.5".into()), ("prompt".into(), "a".into())]
        );
        assert_eq!(g.at.line, 25);
        assert!(g.key_at.contains(&("x".into(), Span { line: 26, col: 5 })));
        let bad = parse(&format!(
            "{FULL}grids:\n  - {{name: a/b, x: cfg, y: prompt}}\n  - {{name: g, x: cfg, y: prompt}}\n  - {{name: g, x: cfg, y: prompt}}\n"
        ))
        .unwrap_err();
        assert!(
            bad[0].contains("grid name 'a/b' must be a file name"),
            "{bad:?}"
        );
        assert!(
            bad.iter().any(|l| l.contains("two grids are named 'g'")),
            "{bad:?}"
        );
        let missing = parse(&format!("{FULL}grids:\n  - {{name: h, x: cfg}}\n")).unwrap_err();
        assert!(missing[0].contains("missing field `y`"), "{missing:?}");
    }

    #[test]
    fn server_may_be_a_list() {
        let m = parse("version: 1\nserver: [http://a, http://b]\njobs: [{workflow: x}]\n").unwrap();
        assert_eq!(m.servers, vec!["http://a", "http://b"]);
        assert_eq!(m.output, None);
    }

    #[test]
    fn version_is_required_and_must_be_1() {
        let err = parse("jobs: [{workflow: x}]\n").unwrap_err();
        assert_eq!(
            err,
            vec!["jobs/m.yaml:1:1: missing 'version: 1' (the manifest format version)"]
        );
        let err = parse("version: 2\njobs: [{workflow: x}]\n").unwrap_err();
        assert_eq!(
            err,
            vec!["jobs/m.yaml:1:1: unsupported version 2; this comfy-batch reads 'version: 1'"]
        );
    }

    #[test]
    fn unknown_keys_are_all_listed_with_lines() {
        let err = parse(
            "version: 1\nouptut: x\njobs:\n  - workflow: x\n    seeds: {count: 2, bsae: 1}\n",
        )
        .unwrap_err();
        insta::assert_debug_snapshot!(err);
    }

    #[test]
    fn bad_yaml_names_its_line() {
        let err = parse("version: 1\njobs:\n  - workflow: x\n    set: {cfg: 5\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("jobs/m.yaml:5:"), "{err:?}");
        assert!(err[0].contains("invalid yaml"), "{err:?}");
    }

    #[test]
    fn wrong_shapes_name_their_line() {
        let err =
            parse("version: 1\njobs:\n  - workflow: x\n    matrix:\n      cfg: 5\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("jobs/m.yaml:5:"), "{err:?}");
        let err = parse("version: 1\njobs:\n  - workflow: x\n    seeds: 5\n").unwrap_err();
        assert!(err[0].starts_with("jobs/m.yaml:4:"), "{err:?}");
        assert!(
            err[0].contains("a list of seeds, {count: N, base: S} or {range: [FIRST, LAST]}"),
            "{err:?}"
        );
    }

    #[test]
    fn duplicate_keys_and_groups_are_errors() {
        let err =
            parse("version: 1\njobs:\n  - workflow: x\n    set: {cfg: 5, cfg: 6}\n").unwrap_err();
        assert_eq!(err, vec!["jobs/m.yaml:4:19: duplicate key 'cfg'"]);
        let err =
            parse("version: 1\njobs:\n  - {name: a, workflow: x}\n  - {name: a, workflow: x}\n")
                .unwrap_err();
        assert_eq!(err, vec!["jobs/m.yaml:4:6: two job groups are named 'a'"]);
    }

    #[test]
    fn empty_lists_and_missing_workflow_are_errors() {
        let err = parse("version: 1\njobs:\n  - name: a\n    matrix: {cfg: []}\n").unwrap_err();
        insta::assert_debug_snapshot!(err);
    }

    #[test]
    fn group_problems_keep_their_lines_and_their_order_on_one_line() {
        // Two problems on one line stay in the order they are found (the
        // sort by line is stable): the name's shape, then the duplicate.
        let err = parse(
            "version: 1\njobs:\n  - {name: 'a#', workflow: x}\n  - name: 'a#'\n    workflow: [x, ' ']\n    zip: {cfg: []}\n    draw: {random: 2, seed: 1}\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                "jobs/m.yaml:3:6: group name 'a#' must be non-empty and without '#'",
                "jobs/m.yaml:4:5: group name 'a#' must be non-empty and without '#'",
                "jobs/m.yaml:4:5: two job groups are named 'a#'",
                "jobs/m.yaml:5:5: group 'a#' has an empty workflow name",
                "jobs/m.yaml:6:11: 'cfg' in zip has no values",
                "jobs/m.yaml:7:5: group 'a#' has 'draw:' but no 'templates:' to draw from",
            ]
        );
    }

    #[test]
    fn seeds_are_not_parameters() {
        let err = parse("version: 1\ndefaults: {seed: 1}\njobs:\n  - workflow: x\n    matrix: {noise_seed: [1, 2]}\n").unwrap_err();
        insta::assert_debug_snapshot!(err);
    }

    #[test]
    fn wrong_document_shapes_are_explained() {
        let err = parse("- a\n- b\n").unwrap_err();
        assert_eq!(
            err,
            vec![
                "jobs/m.yaml:1:1: invalid type: sequence, expected a mapping with 'version: 1' and 'jobs:'"
            ]
        );
        let err = parse("version: 1\njobs: [5]\n").unwrap_err();
        assert_eq!(
            err,
            vec![
                "jobs/m.yaml:2:8: jobs[0]: invalid type: integer `5`, expected a job group mapping (name, workflow, matrix, zip, set, seeds, templates, draw)"
            ]
        );
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, b"0123456789x").unwrap();
        assert_eq!(read_capped(&path, 11).unwrap().len(), 11);
        let err = read_capped(&path, 10).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn text_that_is_not_utf8_is_placed() {
        let (span, kind) = decode(b"version: 1\njobs: caf\xe9\n").unwrap_err();
        assert_eq!(span, Span { line: 2, col: 10 });
        assert!(kind.to_string().contains("byte 0xE9"), "{kind}");
        let (span, kind) = decode(b"a: 1\n\x01\xff").unwrap_err();
        assert_eq!(span, Span { line: 2, col: 1 });
        assert!(kind.to_string().contains("U+0001"), "{kind}");
        assert!(decode(b"\xff\xfeh\x00").is_err());
        let m = parse("\u{feff}version: 1\njobs: [{workflow: x}]\n").unwrap();
        assert_eq!(m.jobs.len(), 1);
    }

    #[test]
    fn normalize_removes_dot_segments() {
        assert_eq!(
            normalize(Path::new("jobs/../workflows/a.json")),
            PathBuf::from("workflows/a.json")
        );
        assert_eq!(normalize(Path::new("../x/./y")), PathBuf::from("../x/y"));
        assert_eq!(normalize(Path::new("a/..")), PathBuf::from("."));
    }
}
