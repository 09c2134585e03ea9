//! Newtype identifiers shared by every stage, so a job id is never confused
//! with a prompt id or a node id at a seam.

use std::fmt;

/// Stable identity of one expanded job: a short hash of (workflow content,
/// resolved parameters, seed). Frozen: the same manifest gives the same ids
/// on every machine and every version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Wraps an already computed id (16 lowercase hex characters).
    pub fn new(id: impl Into<String>) -> Self {
        JobId(id.into())
    }
    /// The id as text, as it appears in file names and `runs.csv`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one submission of a job to a server (`POST /prompt`'s
/// `prompt_id`). Chosen by the client so that a restarted runner can find its
/// own prompts on the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromptId(String);

impl PromptId {
    /// Wraps a prompt id as sent to or received from the server.
    pub fn new(id: impl Into<String>) -> Self {
        PromptId(id.into())
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PromptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Index of a server in the run's server list (`--server`, in the order given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub usize);

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server{}", self.0 + 1)
    }
}

/// A node id inside an API-format prompt (the JSON object key, e.g. `"9"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// Wraps a node id.
    pub fn new(id: impl Into<String>) -> Self {
        NodeId(id.into())
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
