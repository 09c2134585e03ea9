//! How one attempt of a job ended: the value the scheduler produces and the
//! sink logs. It sits below both `run` and `sink` so neither depends on the
//! other; it knows nothing of networks or files.

use std::time::SystemTime;

use crate::ids::PromptId;

/// How one attempt of a job ended; `runs.csv`'s `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Executed successfully, every image saved.
    Ok,
    /// Failed in execution or while collecting its images.
    Failed,
    /// The server refused the prompt (validation).
    Rejected,
    /// Interrupted (Ctrl-C, or by someone else on the server).
    Interrupted,
    /// Exceeded `--timeout`.
    Timeout,
}

impl Status {
    /// The CSV spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::Interrupted => "interrupted",
            Status::Timeout => "timeout",
        }
    }

    /// Parses the CSV spelling.
    pub fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "ok" => Status::Ok,
            "failed" => Status::Failed,
            "rejected" => Status::Rejected,
            "interrupted" => Status::Interrupted,
            "timeout" => Status::Timeout,
            _ => return None,
        })
    }
}

/// The outcome of a job's last attempt: a failed job is a value, not an error.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// Every saved output (files of any kind, texts as `.txt`), relative
    /// to the output folder, in server order.
    pub images: Vec<String>,
    /// The job's text output, when it made exactly one (a caption): the
    /// log's `text` column.
    pub text: Option<String>,
    /// One line saying what went wrong.
    pub error: Option<String>,
    /// Where and when the attempt ran.
    pub attempt: Attempt,
}

/// Where and when one attempt ran.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// The server's URL.
    pub server: Option<String>,
    /// The prompt id used.
    pub prompt_id: Option<PromptId>,
    /// When the server accepted it.
    pub queued_at: Option<SystemTime>,
    /// When it started executing.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
}

/// An error with its whole `source()` chain on one line, each cause once:
/// `a: b: c`. Wrappers whose text already ends with their source's text
/// (thiserror's `#[error("{0}")]`) do not repeat it.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    crate::text::one_line(&line)
}
