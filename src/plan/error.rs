//! Planning errors: each problem with its manifest position, group,
//! workflow and candidates; all of them are collected and reported together.

use std::fmt;
use std::path::PathBuf;

use super::MAX_JOBS;
use crate::manifest::Span;

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
    /// An `image` value names a directory.
    ImageIsDirectory {
        /// The name as written.
        name: String,
        /// The directory.
        path: PathBuf,
    },
    /// A seed problem (e.g. `seeds:` on a workflow without a seed input).
    Seeds(String),
    /// The manifest expands to more than [`MAX_JOBS`] jobs.
    TooManyJobs(u128),
    /// `pack:` where the graph (or the group) cannot take a latent batch.
    Pack(String),
    /// A template (or a wildcard file it reads) is unusable.
    Template {
        /// The parameter the template is for.
        name: String,
        /// What is wrong.
        detail: String,
    },
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
            K::ImageIsDirectory { name, path } => (
                format!("image for '{name}' is a directory"),
                format!(": {}; give an image file", path.display()),
            ),
            K::Seeds(detail) => ("bad seeds".into(), format!(": {detail}")),
            K::Pack(detail) => ("cannot pack".into(), format!(": {detail}")),
            K::TooManyJobs(n) => (
                format!("the manifest expands to {n} jobs"),
                format!("; the limit is {MAX_JOBS}"),
            ),
            K::Template { name, detail } => {
                (format!("template for '{name}'"), format!(": {detail}"))
            }
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
