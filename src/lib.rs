//! comfy-batch: a batch job runner for ComfyUI servers.
//!
//! The crate is one pipeline, a module per stage, data flowing one way:
//!
//! `manifest` (YAML → typed manifest) → `templates` (Dynamic Prompts
//! syntax → variants, used by `plan`) → `plan` (sweeps → concrete jobs) →
//! `patch` (job + workflow → prompt) → `run` (schedule over servers through
//! `comfy`, the HTTP + WebSocket client) → `sink` (images, prompts, `runs.csv`)
//! and `progress` (progress on a terminal, plain lines elsewhere). `gallery`
//! (the HTML report) and `grid` (labelled grid images) read an output folder
//! and nothing else.
//!
//! `validate` checks a prompt against a server's `/object_info` catalogue and is
//! shared by `check`, the preflight of `run`, and `sim`, the embedded
//! ComfyUI-compatible simulator every test talks to. `cli` is the only module
//! that reads argv, the environment or the terminal.
//!
//! `runlog` owns `runs.csv`'s columns and its one streaming reader. After a
//! run: `folder` reads an output folder back (and merges shard
//! folders), `export` turns it into a dataset, and `ci` writes JUnit and
//! GitHub job summaries from the run's events. `environment` records what
//! each server ran (versions, devices, node and model hashes) beside the log;
//! `compare` pairs two folders' jobs and classifies their outputs.
//!
//! `scaffold` writes the starter project of `init` (the repository's own
//! examples, embedded).
#![warn(missing_docs)]

pub mod ci;
pub mod cli;
pub mod comfy;
pub mod compare;
pub mod convert;
pub mod environment;
pub mod export;
pub mod folder;
pub mod gallery;
pub mod grid;
pub mod ids;
pub mod manifest;
pub mod outcome;
pub mod patch;
mod paths;
pub mod plan;
pub mod progress;
pub mod run;
pub mod runlog;
pub mod scaffold;
pub mod sim;
pub mod sink;
pub mod templates;
pub mod text;
pub mod validate;
