//! Prompt templates in the Dynamic Prompts syntax (`{a|b}`, `{2$$a|b|c}`,
//! `__wildcards__`, `${variables}`), expanded before anything is queued.
//! Owns the grammar, the wildcards folder, the combinatorial count, the
//! lazy expansion of variant *i* from its index alone, and the pinned
//! random draw stream. It yields strings and choices only: it must not
//! know workflows, targets or jobs (`plan` sets the strings on targets and
//! logs the choices).

mod expand;
mod parse;
mod wildcards;

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

pub use expand::{Expansion, Template};
pub use wildcards::Wildcards;

/// What is wrong with a template or a wildcard file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateErrorKind {
    /// Text that is not the template syntax.
    #[error("{0}")]
    Syntax(String),
    /// A `{` without `}` or the reverse.
    #[error("unbalanced braces: {0}")]
    Unbalanced(String),
    /// A `{N$$…}` count that cannot be met.
    #[error("bad $$ count: {0}")]
    BadCount(String),
    /// Syntax of the reference that comfy-batch refuses.
    #[error("{0}")]
    Unsupported(String),
    /// No wildcard file of that name.
    #[error("unknown wildcard '__{name}__' (no {name}.txt, .yaml or .json under {}){}{}", folder.display(), if nearest.is_empty() { String::new() } else { format!("; did you mean {}?", nearest.iter().map(|n| format!("'__{n}__'")).collect::<Vec<_>>().join(", ")) }, if unreadable.is_empty() { String::new() } else { format!("; unreadable: {}", unreadable.join(", ")) })]
    UnknownWildcard {
        /// The name as written.
        name: String,
        /// The nearest known names.
        nearest: Vec<String>,
        /// The wildcards folder.
        folder: PathBuf,
        /// YAML/JSON collections that could not be read.
        unreadable: Vec<String>,
    },
    /// A wildcard whose files hold no entries.
    #[error("wildcard '__{name}__' has no entries ({} holds only blank lines and comments)", names.join(", "))]
    EmptyWildcard {
        /// The name as written.
        name: String,
        /// The collections it matched.
        names: Vec<String>,
    },
    /// Wildcards that include each other.
    #[error("wildcards include each other in a cycle: {}", .0.iter().map(|n| format!("__{n}__")).collect::<Vec<_>>().join(" → "))]
    Cycle(Vec<String>),
    /// `${x}` with no `${x=…}` before it.
    #[error("undefined variable '${{{name}}}' (set it with ${{{name}=…}} or give a default ${{{name}:…}}){}", suggestion.as_ref().map(|s| format!("; did you mean '{s}'?")).unwrap_or_default())]
    UndefinedVariable {
        /// The name.
        name: String,
        /// The nearest defined name.
        suggestion: Option<String>,
    },
    /// A wildcard file that cannot be read.
    #[error("{0}")]
    Wildcard(String),
    /// A template too large to handle.
    #[error("the template is too large: {0}")]
    TooLarge(String),
}

/// Where a template problem is.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// In the template itself, at this character offset.
    Template(usize),
    /// In a wildcard file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
    },
}

/// One template problem, placed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}")]
pub struct TemplateError {
    /// Where.
    pub origin: Origin,
    /// What (boxed: errors travel through every compile step).
    pub kind: Box<TemplateErrorKind>,
}

impl TemplateError {
    fn in_template(at: usize, kind: TemplateErrorKind) -> Self {
        TemplateError {
            origin: Origin::Template(at),
            kind: Box::new(kind),
        }
    }
    fn in_file(path: &Path, line: usize, col: usize, kind: TemplateErrorKind) -> Self {
        TemplateError {
            origin: Origin::File {
                path: path.to_owned(),
                line,
                col,
            },
            kind: Box::new(kind),
        }
    }
}

/// 1-based (line, column) of character offset `at` in `text`.
pub fn place(text: &str, at: usize) -> (usize, usize) {
    let mut line = 1;
    let mut col = 1;
    for c in text.chars().take(at) {
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    (line, col)
}

impl Template {
    /// Parses `text` and reads the wildcards it names (and theirs).
    pub fn compile(text: &str, wildcards: &mut Wildcards) -> Result<Template, TemplateError> {
        expand::compile(text, wildcards)
    }
}

/// The random stream of attempt `attempt` of `draw: {random: N, seed: S}`:
/// ChaCha20 (`rand_chacha`) keyed by `seed_from_u64(S)`, on stream
/// `attempt`. Frozen: changing it changes every user's draws.
pub fn draw_stream(seed: u64, attempt: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(attempt);
    rng
}

#[cfg(test)]
mod tests;
