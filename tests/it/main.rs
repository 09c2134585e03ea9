//! The one integration-test binary: each module drives the real CLI or
//! library against the in-process simulator over loopback.

mod bad_input;
mod bench;
mod check;
mod ci_examples;
mod compare;
mod convert;
mod drift;
mod environment;
mod exit_codes;
mod export;
mod faults;
mod folder_safety;
mod gallery;
mod gallery_heap;
mod gallery_review;
mod grid;
mod harness;
mod install;
mod merge;
mod outputs;
mod pack;
mod packaging;
mod plan;
mod rerun;
mod resume;
mod review_sched;
mod run;
mod run_log;
mod secrets;
mod sim;
mod status;
mod templates;
mod terminate;
