//! The preflight of `check`, `run`, `rerun` and `convert --server`: each
//! server's node catalogue, fetched for the node classes the jobs use, and
//! every job's patched prompt validated locally against it, so a typo fails
//! in a second with exit 2 instead of failing a thousand jobs on the GPU.
//!
//! The catalogue is fetched once per server and run, and only for the node
//! classes the plan uses: `/object_info/{class}` for each, concurrently
//! (a server with hundreds of custom node packs takes seconds to build the
//! whole `/object_info`, and each runner would hold it parsed). Only a
//! server without the per-class route (404) is asked for the whole one.
//!
//! It knows servers (through `comfy`), jobs and the two catalogues
//! (`validate`'s to check against, `convert`'s to convert UI-format
//! workflows with); it must not know argv, exit statuses or the output
//! folder: its errors say which exit code they are ([`PreflightError::exit_code`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

use crate::comfy::http::{HttpClient, HttpPool};
use crate::comfy::{ClientError, ServerUrl};
use crate::convert::NodeDefs;
use crate::manifest::clip;
use crate::patch::{class_of, link_source};
use crate::plan::Job;
use crate::validate::{Catalogue, ValidateOptions, Validation, validate_prompt};

/// Jobs to validate in the preflight, produced afresh (plans are lazy).
pub type JobSource<'a> = &'a dyn Fn() -> Box<dyn Iterator<Item = Job> + 'a>;

/// Why the preflight stopped a command.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// A server's catalogue could not be read (the error names the request
    /// and the server).
    #[error(transparent)]
    Server(#[from] ClientError),
    /// A server's catalogue entry is not one conversion can read.
    #[error(transparent)]
    Entry(#[from] crate::convert::NodeDefsError),
    /// Jobs the catalogues refuse: one line per distinct problem.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl PreflightError {
    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            PreflightError::Server(e) => Some(unreachable_hint(e)),
            PreflightError::Entry(_) => None,
            PreflightError::Invalid(_) => Some(
                "fix the manifest or workflow; nothing was queued (`run --no-check` skips this check)",
            ),
        }
    }
}

/// One distinct problem and the jobs it affects.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// What is wrong, naming node, class, input and value.
    pub text: String,
    /// Labels of the affected jobs, in plan order.
    pub jobs: Vec<String>,
}

impl Problem {
    /// One line: the problem, then the jobs (the first few and a count).
    pub fn line(&self, server: Option<&str>) -> String {
        const SHOWN: usize = 3;
        let mut jobs = self.jobs[..self.jobs.len().min(SHOWN)].join(", ");
        if self.jobs.len() > SHOWN {
            jobs.push_str(&format!(" and {} more", self.jobs.len() - SHOWN));
        }
        let plural = if self.jobs.len() == 1 { "" } else { "s" };
        let on = server.map(|s| format!(" on {s}")).unwrap_or_default();
        format!(
            "{}{on} ({} job{plural}: {jobs})",
            self.text,
            self.jobs.len()
        )
    }
}

/// The longest problem text: a rejected value is quoted, and may be a 1 MB
/// prompt.
const MAX_PROBLEM: usize = 400;

/// The closest offered value to a rejected one, for a `did you mean`.
fn nearest(catalogue: &Catalogue, class: &str, input: &str, value: &str) -> Option<String> {
    let options = catalogue.class(class)?.input(input)?.combo_options()?;
    crate::text::nearest(value, options.iter().filter_map(|o| o.as_str()))
}

/// The problems a validation found, one text each.
fn texts(catalogue: &Catalogue, v: &Validation) -> Vec<String> {
    let mut out = Vec::new();
    for (node, e) in &v.node_errors {
        for input in &e.errors {
            let name = input
                .extra_info
                .get("input_name")
                .and_then(|n| n.as_str())
                .map(|n| format!(" input '{n}'"))
                .unwrap_or_default();
            let mut text = format!("node {node} ({}){name}: {}", e.class_type, input.message);
            if !input.details.is_empty() {
                text.push_str(&format!(": {}", input.details));
            }
            let received = input
                .extra_info
                .get("received_value")
                .and_then(|v| v.as_str());
            let name = input.extra_info.get("input_name").and_then(|n| n.as_str());
            if let (true, Some(value), Some(name)) =
                (input.kind == "value_not_in_list", received, name)
                && let Some(near) = nearest(catalogue, &e.class_type, name, value)
            {
                text.push_str(&format!("; did you mean '{near}'?"));
            }
            out.push(clip(&crate::text::one_line(&text), MAX_PROBLEM));
        }
    }
    if out.is_empty()
        && let Some(e) = &v.error
    {
        let mut text = e.message.clone();
        if !e.details.is_empty() && e.details != e.message {
            text.push_str(&format!(" ({})", e.details));
        }
        out.push(clip(&crate::text::one_line(&text), MAX_PROBLEM));
    }
    out
}

/// Links to an output their source node's class does not have. The server
/// reports these only as "tuple index out of range", under another input's
/// name, so they are found and named here first.
fn bad_links(catalogue: &Catalogue, prompt: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (id, node) in prompt {
        let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
            continue;
        };
        for (input, v) in inputs {
            let Some(from) = link_source(v) else {
                continue;
            };
            let slot = v.get(1).and_then(Value::as_u64).unwrap_or(0);
            let Some(source) = prompt.get(from) else {
                continue;
            };
            let Some(class) = catalogue.class(class_of(source)) else {
                continue;
            };
            let outputs = &class.outputs;
            if usize::try_from(slot).is_ok_and(|s| s < outputs.len()) {
                continue;
            }
            out.push(format!(
                "node {id} ({}) input '{input}' links to output {slot} of node {from} ({}), \
                 which has {} output{} ({}), counted from 0",
                class_of(node),
                class.name,
                outputs.len(),
                if outputs.len() == 1 { "" } else { "s" },
                outputs.join(", ")
            ));
        }
    }
    out
}

/// Validates every job against `catalogue`; problems are listed once each,
/// in the order first met, with the jobs they affect.
pub fn problems(catalogue: &Catalogue, jobs: impl Iterator<Item = Job>) -> Vec<Problem> {
    let mut found: Vec<Problem> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // Image files are uploaded at run time; their local existence is the
    // plan's check, so the server-side file check is skipped here.
    let options = ValidateOptions::default();
    for job in jobs {
        let v = validate_prompt(catalogue, &job.prompt.0, &options);
        let links = bad_links(catalogue, &job.prompt.0);
        let mut found_texts = texts(catalogue, &v);
        if !links.is_empty() {
            found_texts.retain(|t| !t.contains("tuple index out of range"));
        }
        for text in links.into_iter().chain(found_texts) {
            let i = *index.entry(text.clone()).or_insert_with(|| {
                found.push(Problem {
                    text,
                    jobs: Vec::new(),
                });
                found.len() - 1
            });
            found[i].jobs.push(job.label.clone());
        }
    }
    found
}

/// The node classes the jobs use, sorted.
pub fn classes_used(jobs: impl Iterator<Item = Job>) -> BTreeSet<String> {
    let mut classes = BTreeSet::new();
    // Every job of one workflow has its classes: look at each workflow once.
    let mut seen = std::collections::HashSet::new();
    for job in jobs {
        if !seen.insert(job.workflow.sha256.clone()) && !job.workflow.sha256.is_empty() {
            continue;
        }
        for node in job.prompt.0.values() {
            let class = class_of(node);
            if !classes.contains(class) {
                classes.insert(class.to_string());
            }
        }
    }
    classes
}

/// Requests in flight per server while fetching `classes` classes: enough
/// that the fetch takes at most [`CLASS_ROUNDS`] round trips, at least two,
/// at most sixteen. Each opens a connection of its own, and on loopback
/// the connections cost more than the requests (`check` of a six-class
/// workflow against 32 simulators: 28–30 ms of CPU with two, 34–37 with
/// sixteen); against a distant server each round is a round trip (two at
/// a time, a 64-class workflow behind 100 ms took 3.4 s, not 0.5).
fn class_fetches(classes: usize) -> usize {
    classes.div_ceil(CLASS_ROUNDS).clamp(2, 16)
}

/// Round trips the class fetch of one server may take.
const CLASS_ROUNDS: usize = 4;

/// One class's catalogue entry. A server that answered but said 5xx or 429
/// (a proxy's hiccup, a rate limit met by the concurrent requests) is asked
/// again: one of dozens of requests failing must not make it look down. A
/// refused connection is not retried, so a server down stays quick to tell.
async fn class_entry(
    http: &HttpClient,
    class: &str,
) -> Result<serde_json::Map<String, Value>, ClientError> {
    let mut backoff = crate::run::retry::Backoff::default();
    loop {
        match http.object_info_class(class).await {
            Err(e @ ClientError::Status { .. }) if e.is_transient() => match backoff.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// One server's catalogue of `classes`: each fetched on its own,
/// concurrently; the whole `/object_info` only if the per-class route is
/// missing.
pub async fn catalogue_of(
    http: &HttpClient,
    classes: &BTreeSet<String>,
) -> Result<Catalogue, ClientError> {
    let info = object_info_of(http, classes).await?;
    Catalogue::from_object_info(&info).map_err(|e| ClientError::Decode {
        url: http.base().shown_endpoint("object_info"),
        why: e.to_string(),
    })
}

/// The `/object_info` entries of `classes` (a class the server does not
/// know is absent), fetched as [`catalogue_of`] says; `convert` reads them
/// too, so UI workflows convert with what the preflight checks against.
pub async fn object_info_of(
    http: &HttpClient,
    classes: &BTreeSet<String>,
) -> Result<Value, ClientError> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let fetched: Result<Vec<_>, ClientError> = stream::iter(classes)
        .map(|class| class_entry(http, class))
        .buffered(class_fetches(classes.len()))
        .try_collect()
        .await;
    let info = match fetched {
        Ok(entries) => {
            let mut info = serde_json::Map::new();
            for entry in entries {
                info.extend(entry);
            }
            Value::Object(info)
        }
        // No such route (404 from an older server; a proxy may answer
        // another 4xx or a page that is not JSON): the whole catalogue. A
        // refusal would only be repeated there.
        Err(e @ (ClientError::Status { .. } | ClientError::Decode { .. }))
            if !e.is_transient() && !refused(&e) =>
        {
            tracing::info!(
                "{}: no per-class catalogue ({e}); fetching /object_info",
                http.base()
            );
            // Only `classes`, as a per-class server answers: the preflight
            // groups servers by equal catalogues.
            let mut info = http.object_info().await?;
            if let Value::Object(all) = &mut info {
                all.retain(|class, _| classes.contains(class));
            }
            info
        }
        Err(e) => return Err(e),
    };
    Ok(info)
}

/// Fetches each server's catalogue of `classes`, all servers at once,
/// through `pool`. Results keep the servers' order.
pub async fn catalogues(
    servers: &[ServerUrl],
    pool: &HttpPool,
    classes: &BTreeSet<String>,
) -> Vec<Result<(String, Catalogue), PreflightError>> {
    let one = |url: &ServerUrl| {
        let url = url.clone();
        async move {
            let http = pool.client(url.clone());
            let catalogue = catalogue_of(&http, classes).await?;
            Ok((url.to_string(), catalogue))
        }
    };
    futures_util::future::join_all(servers.iter().map(one)).await
}

/// Whether the server (or a proxy in front) refused us: the credentials
/// are missing or wrong, whatever the route.
fn refused(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Status {
            status: 401 | 403 | 407,
            ..
        }
    )
}

/// The hint for a server whose catalogue could not be read: one that
/// redirected us is elsewhere, one that refused us wants credentials, any
/// other may be down.
fn unreachable_hint(e: &ClientError) -> &'static str {
    if e.is_redirect() {
        "give the URL it redirects to, if that server is meant to get the credentials"
    } else if refused(e) {
        "the server refused the request: does it need `--header` (an API key or token)?"
    } else {
        "is the server up? `comfy-batch sim` serves a stand-in"
    }
}

/// The preflight of `run` and `rerun`: each reachable server's catalogue
/// (through `pool`, whose connections the run then keeps using), then
/// every prompt. A server down at the start is left out with a warning
/// (the scheduler skips it too); only when none answers is that an error.
/// Returns the catalogues found, by server (the environment's node hashes).
pub async fn check_servers(
    servers: &[ServerUrl],
    pool: &HttpPool,
    jobs: JobSource<'_>,
    quiet: bool,
) -> Result<Vec<(String, Catalogue)>, PreflightError> {
    let classes = classes_used(jobs());
    let mut found = Vec::new();
    let mut first_error = None;
    for result in catalogues(servers, pool, &classes).await {
        match result {
            Ok(c) => found.push(c),
            Err(e) => {
                // The error names the request, the server's address with it.
                if !quiet {
                    eprintln!("warning: {}", crate::outcome::error_line(&e));
                }
                first_error.get_or_insert(e);
            }
        }
    }
    if let (true, Some(e)) = (found.is_empty(), first_error) {
        return Err(e);
    }
    check(jobs, &found)?;
    Ok(found)
}

/// The check shared by `check`, `run` and `rerun`: every problem against
/// every server, or `Ok`.
pub fn check(
    jobs: JobSource<'_>,
    catalogues: &[(String, Catalogue)],
) -> Result<(), PreflightError> {
    // A fleet's servers serve one catalogue: each distinct catalogue checks
    // every job once, not once per server (32 servers, 32 times the work).
    let mut groups: Vec<(&Catalogue, Value, Vec<&str>)> = Vec::new();
    for (url, catalogue) in catalogues {
        let seen = as_checked(catalogue);
        match groups.iter_mut().find(|(_, s, _)| *s == seen) {
            Some((_, _, urls)) => urls.push(url),
            None => groups.push((catalogue, seen, vec![url])),
        }
    }
    let mut lines = Vec::new();
    for (catalogue, _, urls) in &groups {
        // Named only when the servers differ; then by all that share it.
        let server = (groups.len() > 1).then(|| servers_named(urls));
        for p in problems(catalogue, jobs()) {
            lines.push(p.line(server.as_deref()));
        }
    }
    if lines.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::Invalid(lines))
    }
}

/// A catalogue as the preflight reads it: without the input images each
/// server lists (earlier runs uploaded different ones), never checked here.
fn as_checked(catalogue: &Catalogue) -> Value {
    let mut info = Value::Object(catalogue.object_info().clone());
    if let Value::Object(classes) = &mut info {
        for (class, entry) in classes.iter_mut() {
            if crate::validate::image_list_unchecked(class)
                && let Some(list) = entry.pointer_mut("/input/required/image/0")
            {
                *list = Value::Null;
            }
        }
    }
    info
}

/// The servers sharing one catalogue, as a problem line names them: the
/// first few and a count.
fn servers_named(urls: &[&str]) -> String {
    const SHOWN: usize = 2;
    let mut named = urls[..urls.len().min(SHOWN)].join(", ");
    if urls.len() > SHOWN {
        named.push_str(&format!(" and {} more", urls.len() - SHOWN));
    }
    named
}

/// The catalogue entries of `classes` on `url`, one `/object_info/{class}`
/// each (the whole `/object_info` from an older server); a class the server
/// does not know is left out (conversion names it). `convert --server`
/// converts with these.
pub async fn fetch_classes(
    url: &ServerUrl,
    headers: &reqwest::header::HeaderMap,
    classes: &[String],
) -> Result<NodeDefs, PreflightError> {
    let http = HttpClient::new(url.clone(), headers.clone(), Duration::from_secs(60))?;
    // The preflight's way: per class, transient errors retried, the whole
    // `/object_info` from a server without the per-class route.
    let wanted: BTreeSet<String> = classes.iter().cloned().collect();
    let info = object_info_of(&http, &wanted).await?;
    let mut catalogue = NodeDefs::new();
    for class in classes {
        if let Some(e) = info.get(class) {
            catalogue.insert(class, e)?;
        }
    }
    Ok(catalogue)
}

/// For `run` and `check`: the catalogue UI-format workflows are converted
/// with, fetched per class from the first of `servers` that answers (the
/// first one the jobs can run on); when none does, the built-in one, with a
/// warning (the preflight reports an unreachable server on its own). A
/// server that failed once is not asked again, nor warned about again.
pub struct ServerClasses<'a> {
    servers: &'a [ServerUrl],
    headers: &'a reqwest::header::HeaderMap,
    quiet: bool,
    dead: std::cell::RefCell<Vec<bool>>,
    builtin: std::sync::OnceLock<NodeDefs>,
}

impl<'a> ServerClasses<'a> {
    /// No server (`--sim`): the built-in catalogue, which the simulator's is.
    pub fn new(
        servers: &'a [ServerUrl],
        headers: &'a reqwest::header::HeaderMap,
        quiet: bool,
    ) -> ServerClasses<'a> {
        ServerClasses {
            servers,
            headers,
            quiet,
            dead: std::cell::RefCell::new(vec![false; servers.len()]),
            builtin: std::sync::OnceLock::new(),
        }
    }

    /// The entries of `classes` (a class no catalogue has is left out).
    pub fn fetch(&self, classes: &[String]) -> NodeDefs {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let mut dead = self.dead.borrow_mut();
        if let Ok(rt) = &runtime {
            for (url, dead) in self.servers.iter().zip(dead.iter_mut()) {
                if *dead {
                    continue;
                }
                match rt.block_on(fetch_classes(url, self.headers, classes)) {
                    Ok(catalogue) => return catalogue,
                    Err(e) => {
                        let why = crate::outcome::error_line(&e);
                        *dead = true;
                        if !self.quiet {
                            eprintln!(
                                "warning: cannot read the node catalogue of {url} ({why}); \
                                 UI-format workflows are converted with {}",
                                if self.servers.len() > 1 {
                                    "the next server's, else the built-in one"
                                } else {
                                    "the built-in one"
                                }
                            );
                        }
                    }
                }
            }
        }
        self.builtin.get_or_init(NodeDefs::builtin).subset(classes)
    }
}
