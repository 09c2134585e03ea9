//! The program's exit codes, and the one trait by which each error type
//! says which code its failures end with, so the same failure has the same
//! code in every command: a folder that is not a run folder, a log that
//! does not parse, a bad manifest or flag is 2; reading or writing a file
//! failing (disk, permissions) or no server is 3. The impls are kept here,
//! beside each other, as one table (README's "Exit codes" says the same).
//! `cli` turns a [`Failure`] into its diagnostic and exit code in one place;
//! this module knows nothing of argv, stderr or which command failed.

/// Exit codes, fixed by the product contract (README's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every job ok.
    Ok = 0,
    /// Some jobs failed.
    JobsFailed = 1,
    /// Bad manifest, workflow, arguments, or a folder that is not a run
    /// folder or whose log does not parse; nothing was queued or written.
    BadInput = 2,
    /// No server reachable, or reading or writing a file failed (disk,
    /// permissions).
    Infrastructure = 3,
    /// Interrupted by Ctrl-C.
    Interrupted = 130,
    /// Terminated by SIGTERM (or a closed console), after its cleanup.
    Terminated = 143,
}

/// An error that knows the exit code it ends the program with.
pub trait Failure: std::error::Error + Sized + 'static {
    /// The exit code.
    fn exit_code(&self) -> Exit;

    /// One line per problem; by default the error with its causes folded
    /// into one line (`msg: cause: cause`).
    fn lines(&self) -> Vec<String> {
        vec![folded(self)]
    }

    /// What the user can do about it, when there is something to say.
    fn hint(&self) -> Option<&'static str> {
        None
    }
}

/// A run stopped early ends with why it stopped.
impl From<crate::run::CancelReason> for Exit {
    fn from(reason: crate::run::CancelReason) -> Exit {
        use crate::run::CancelReason::*;
        match reason {
            Interrupt | SecondInterrupt => Exit::Interrupted,
            Terminated => Exit::Terminated,
            NoServers => Exit::Infrastructure,
            // Stopped by failed jobs: 1, as their rows say.
            FailFast | MaxFailures => Exit::JobsFailed,
        }
    }
}

/// A run ends with why it stopped, else 1 when a job failed, else 0.
impl From<&crate::run::RunSummary> for Exit {
    fn from(summary: &crate::run::RunSummary) -> Exit {
        match summary.cancelled.map(Exit::from) {
            Some(exit) if exit != Exit::JobsFailed => exit,
            _ if summary.stats.failed > 0 => Exit::JobsFailed,
            _ => Exit::Ok,
        }
    }
}

/// Any I/O failure (disk, permissions, a closed pipe) is infrastructure.
impl Failure for std::io::Error {
    fn exit_code(&self) -> Exit {
        Exit::Infrastructure
    }
}

/// Errors whose every failure has one code.
macro_rules! always {
    ($exit:ident: $($ty:ty),+ $(,)?) => {$(
        impl Failure for $ty {
            fn exit_code(&self) -> Exit {
                Exit::$exit
            }
        }
    )+};
}

always!(Infrastructure:
    crate::sink::SinkError,
    crate::sim::SimError,
    crate::comfy::ClientError,
    crate::run::RunError,
    crate::ci::CiError,
    crate::environment::EnvironmentError,
);

/// A folder that cannot be read is as for every reader; an output that
/// cannot be written is infrastructure; the rest is the arguments' fault.
impl Failure for crate::compare::CompareError {
    fn exit_code(&self) -> Exit {
        use crate::compare::CompareError::*;
        match self {
            Folder { source, .. } => source.exit_code(),
            Write { .. } => Exit::Infrastructure,
            _ => Exit::BadInput,
        }
    }
}

/// A workflow that does not convert is the input's fault.
impl Failure for crate::convert::ConvertErrors {
    fn exit_code(&self) -> Exit {
        Exit::BadInput
    }
}

/// Every problem on its own line, each naming its file and line.
impl Failure for crate::manifest::ManifestError {
    fn exit_code(&self) -> Exit {
        Exit::BadInput
    }
    fn lines(&self) -> Vec<String> {
        crate::manifest::ManifestError::lines(self)
    }
}

/// Every problem on its own line, each naming its job.
impl Failure for crate::plan::PlanErrors {
    fn exit_code(&self) -> Exit {
        Exit::BadInput
    }
    fn lines(&self) -> Vec<String> {
        crate::plan::PlanErrors::lines(self)
    }
}

impl Failure for crate::runlog::LogError {
    fn exit_code(&self) -> Exit {
        use crate::runlog::LogError::*;
        match self {
            NotALog { .. } | BadRow { .. } => Exit::BadInput,
            Io { .. } => Exit::Infrastructure,
        }
    }
}

impl Failure for crate::folder::FolderError {
    fn exit_code(&self) -> Exit {
        use crate::folder::FolderError::*;
        match self {
            Log(e) => e.exit_code(),
            Io { .. } => Exit::Infrastructure,
            UnknownColumn { .. } | BadWhere(_) => Exit::BadInput,
        }
    }
}

impl Failure for crate::folder::status::StatusError {
    fn exit_code(&self) -> Exit {
        use crate::folder::status::StatusError::*;
        match self {
            Folder(e) => e.exit_code(),
            Write(_) => Exit::Infrastructure,
        }
    }
}

impl Failure for crate::folder::merge::MergeError {
    fn exit_code(&self) -> Exit {
        use crate::folder::merge::MergeError::*;
        match self {
            Folder(e) => e.exit_code(),
            Refused(_) => Exit::BadInput,
            Io { .. } => Exit::Infrastructure,
        }
    }
}

impl Failure for crate::export::ExportError {
    fn exit_code(&self) -> Exit {
        use crate::export::ExportError::*;
        match self {
            Folder(e) => e.exit_code(),
            BadTarget { .. } | Empty(_) => Exit::BadInput,
            Io { .. } => Exit::Infrastructure,
        }
    }
}

impl Failure for crate::gallery::GalleryError {
    fn exit_code(&self) -> Exit {
        use crate::gallery::GalleryError::*;
        match self {
            Folder(e) => e.exit_code(),
            Link { .. } => Exit::BadInput,
            // Render is a bug in a template, not the user's input.
            Write { .. } | Render(_) => Exit::Infrastructure,
        }
    }
}

impl Failure for crate::grid::GridError {
    fn exit_code(&self) -> Exit {
        use crate::grid::GridError::*;
        match self {
            Folder(e) => e.exit_code(),
            Write { .. } | Encode { .. } => Exit::Infrastructure,
            UnknownAxis { .. } | UnknownValue { .. } | SameAxis(_) | BadWhere(_) => Exit::BadInput,
            NoJobs { .. } | TooLarge { .. } | Format(_) => Exit::BadInput,
        }
    }
}

impl Failure for crate::runlog::OpenError {
    fn exit_code(&self) -> Exit {
        use crate::runlog::OpenError::*;
        match self {
            Io(e) => e.exit_code(),
            Read(e) => e.exit_code(),
            Incompatible { .. } => Exit::BadInput,
        }
    }
}

impl Failure for crate::scaffold::ScaffoldError {
    fn exit_code(&self) -> Exit {
        use crate::scaffold::ScaffoldError::*;
        match self {
            Exists(_) | NotAFolder(_) => Exit::BadInput,
            Io { .. } => Exit::Infrastructure,
        }
    }
}

/// Refused jobs are bad input (one line per problem); a catalogue that
/// cannot be fetched or read is infrastructure.
impl Failure for crate::preflight::PreflightError {
    fn exit_code(&self) -> Exit {
        use crate::preflight::PreflightError::*;
        match self {
            Invalid(_) => Exit::BadInput,
            Server(_) | Entry(_) => Exit::Infrastructure,
        }
    }

    fn lines(&self) -> Vec<String> {
        match self {
            crate::preflight::PreflightError::Invalid(lines) => lines.clone(),
            other => vec![folded(other)],
        }
    }

    fn hint(&self) -> Option<&'static str> {
        crate::preflight::PreflightError::hint(self)
    }
}

/// An error with its cause chain folded into one line (`msg: cause: cause`).
pub fn folded(error: &(dyn std::error::Error + 'static)) -> String {
    use std::fmt::Write as _;
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // thiserror's `#[error("{0}")]` wrappers repeat their source.
        if !line.ends_with(&text) {
            let _ = write!(line, ": {text}");
        }
        source = cause.source();
    }
    line
}
