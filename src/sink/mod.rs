//! Where results land: every output file's bytes exactly as received,
//! texts as UTF-8 files, the prompt JSON
//! sent, and the `runs.csv` log (through `crate::runlog`'s writer). Every file appears whole or not at all
//! (write to a temporary name, then rename), so a killed run never leaves a
//! half-written image or row; files reach the disk before a row names
//! them, jobs ending together sharing one sync (`durable`). Knows nothing
//! of the network or progress.

mod durable;
mod files;
mod sent;

pub use files::{
    Incoming, InputFile, KEPT_EXTENSIONS, OutputDir, UNKNOWN_EXTENSION, extension_of,
    image_file_name, kept_extension, kept_input, prompt_text,
};
pub(crate) use files::{
    temp_beside, write_atomic_synced, write_atomic_synced_with, write_atomic_unsynced,
};
pub use sent::sent_job;

use std::path::PathBuf;

/// A file in the output folder could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct SinkError {
    /// The file or folder.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

impl SinkError {
    pub(crate) fn at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SinkError {
        let path = path.into();
        move |source| SinkError { path, source }
    }
}
