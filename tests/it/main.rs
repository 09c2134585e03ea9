//! The one integration-test binary: each module drives the real CLI or
//! library against the in-process simulator over loopback.

mod check;
mod harness;
mod plan;
mod run;
mod sim;
