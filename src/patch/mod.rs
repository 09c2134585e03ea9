//! Patching: a job's resolved parameters are set on a copy of its workflow
//! as JSON values (never by string substitution), and SaveImage prefixes are
//! pointed at per-job server folders. Knows nothing of YAML or the network.
//!
//! SEAM (fixed for the runner, #4): `Prompt`.

use serde::{Deserialize, Serialize};

/// An API-format prompt: node id → `{class_type, inputs, _meta?}`, in the
/// workflow file's key order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Prompt(pub serde_json::Map<String, serde_json::Value>);
