//! `run.json` is folder state ([`crate::folder::runinfo`]); this name stays
//! for the command modules not yet moved to it.

pub(crate) use crate::folder::runinfo::RunInfo;
