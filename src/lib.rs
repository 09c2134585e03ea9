//! comfy-batch: a batch job runner for ComfyUI servers.
//!
//! The crate is one pipeline, a module per stage, data flowing one way:
//!
//! `manifest` (YAML → typed manifest) → `templates` (Dynamic Prompts
//! syntax → variants, used by `plan`) → `plan` (sweeps → concrete jobs) →
//! `patch` (job + workflow → prompt) → `run` (schedule over servers through
//! `comfy`, the HTTP + WebSocket client) → `sink` (images, prompts, `runs.csv`)
//! and `progress` (the run's events shown: progress on a terminal, plain
//! lines elsewhere, the HTML report kept fresh; `ci` is the other consumer of
//! events). `gallery`
//! (the HTML report) and `grid` (labelled grid images) read an output folder
//! and nothing else.
//!
//! `validate` checks a prompt against a server's `/object_info` catalogue and is
//! shared by `preflight` (each server's catalogue of the classes the jobs
//! use, and every job checked against it: `check`, `run`, `rerun`,
//! `convert --server`) and `sim`, the embedded ComfyUI-compatible simulator
//! every test talks to. `cli` is the only module that reads argv, the
//! environment or the terminal; `exit` says which
//! exit code each stage's errors end with.
//!
//! `runlog` owns `runs.csv`: its columns, its one writer and its one
//! streaming reader. After a run: `folder` reads an output folder back (and
//! merges shard folders), `export` turns it into a dataset, and `ci` writes
//! JUnit and GitHub job summaries from the run's events. `environment` records what
//! each server ran (versions, devices, node and model hashes) beside the log;
//! `compare` pairs two folders' jobs and classifies their outputs.
//!
//! `rerun` rebuilds a rerun's jobs from the log's rows, streamed, as a
//! feed for `run`.
//!
//! `scaffold` writes the starter project of `init` (the repository's own
//! examples, embedded); `listing` prints a plan's jobs for `plan`.
#![warn(missing_docs)]

pub mod ci;
pub mod cli;
pub mod comfy;
pub mod compare;
pub mod convert;
pub mod environment;
pub mod exit;
pub mod export;
pub mod folder;
pub mod gallery;
pub mod grid;
mod hash;
pub mod ids;
pub mod listing;
pub mod manifest;
pub mod outcome;
pub mod patch;
mod paths;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod rerun;
pub mod run;
pub mod runlog;
pub mod scaffold;
pub mod sim;
pub mod sink;
pub mod templates;
pub mod text;
pub mod validate;
