//! `comfy-batch convert WORKFLOW [-o OUT]`: a UI-format workflow (or a
//! PNG/WebP that embeds one) → the API-format prompt, as ComfyUI's frontend
//! makes it. The catalogue is the built-in one, or with `--server`/`--sim`
//! the server's, fetched per class for the classes the workflow uses
//! (`crate::preflight::fetch_classes`).

use std::path::PathBuf;

use serde_json::Value;

use super::{CliError, Exit, GlobalArgs};
use crate::comfy::ServerUrl;
use crate::comfy::http::parse_headers;
use crate::convert::{self, Format, NodeDefs, embedded};

/// The largest workflow file read (images with a workflow included).
const MAX_BYTES: u64 = 256 << 20;

/// Arguments of `comfy-batch convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The workflow: UI-format JSON, API-format JSON (passed through), or a
    /// PNG/WebP that embeds a workflow.
    pub workflow: PathBuf,
    /// Write the prompt here instead of standard output.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Convert with this server's node catalogue [default: the built-in one].
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Convert with the embedded simulator's catalogue.
    #[arg(long, conflicts_with = "server")]
    pub sim: bool,
    /// Extra HTTP header for every request (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
}

fn bad(line: String) -> CliError {
    CliError::many(Exit::BadInput, vec![line])
}

/// Runs the command.
pub fn execute(args: ConvertArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let path = &args.workflow;
    let shown = path.display().to_string();
    if path.is_dir() {
        return Err(bad(format!("{shown}: is a folder, not a workflow file")));
    }
    let bytes =
        crate::manifest::read_capped(path, MAX_BYTES).map_err(|e| bad(format!("{shown}: {e}")))?;
    let text = if embedded::image_kind(&bytes).is_some() {
        embedded::read(&bytes)
            .into_text()
            .map_err(|why| bad(format!("{shown}: {why}")))?
    } else {
        // A byte order mark is no content (the frontend never sees it).
        let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
            Some(rest) => rest.to_vec(),
            None => bytes,
        };
        String::from_utf8(bytes).map_err(|_| {
            bad(format!(
                "{shown}: neither JSON nor a PNG/WebP image with a workflow"
            ))
        })?
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{shown}: not a workflow: not JSON: {e}")))?;
    let out = match (convert::detect(&value), value) {
        (Format::Api, _) => {
            // Already what the server takes: passed through as written.
            let mut t = text;
            if !t.ends_with('\n') {
                t.push('\n');
            }
            t
        }
        (Format::Ui, Value::Object(ui)) => {
            let catalogue = catalogue_for(&args, &ui)?;
            let done = convert::convert(&ui, &catalogue).map_err(|e| {
                CliError::many(
                    Exit::BadInput,
                    e.0.iter().map(|e| format!("{shown}: {e}")).collect(),
                )
            })?;
            if done.prompt.is_empty() {
                return Err(bad(format!(
                    "{shown}: a UI-format workflow with no node the server would run (only \
                     notes, reroutes, primitives, muted or bypassed nodes)"
                )));
            }
            // No prompt the server would take: `plan`/`run` can set these
            // inputs from a manifest; `convert` has nothing to set them with;
            // refused before the warnings and the summary of a prompt not given.
            if !done.needs.is_empty() {
                return Err(CliError::many(
                    Exit::BadInput,
                    done.needs.iter().map(|n| format!("{shown}: {n}")).collect(),
                ));
            }
            if !global.quiet {
                for w in done.report.warnings() {
                    eprintln!("warning: {shown}: {w}");
                }
            }
            if global.verbose > 0 {
                let rules: Vec<String> = done
                    .report
                    .counts()
                    .iter()
                    .map(|(r, n)| format!("{r} ×{n}"))
                    .collect();
                eprintln!(
                    "converted {} nodes; rules used: {}",
                    done.prompt.len(),
                    if rules.is_empty() {
                        "none".to_string()
                    } else {
                        rules.join(", ")
                    }
                );
            }
            let mut t = serde_json::to_string_pretty(&Value::Object(done.prompt))
                .expect("JSON values serialise");
            t.push('\n');
            t
        }
        _ => {
            return Err(bad(format!(
                "{shown}: neither an API-format workflow ({{id: {{class_type, inputs}}}}) nor a \
                 UI-format one ({{nodes, links}})"
            )));
        }
    };
    match &args.output {
        Some(file) => {
            if file.is_dir() {
                return Err(bad(format!(
                    "-o {}: is a folder, not a file",
                    file.display()
                )));
            }
            crate::sink::write_atomic_synced(file, out.as_bytes()).map_err(|e| {
                // The temporary file's name means nothing to the user.
                let why = match e.source.kind() {
                    std::io::ErrorKind::NotFound => "its folder does not exist".to_string(),
                    kind => kind.to_string(),
                };
                bad(format!("-o {}: cannot write it: {why}", file.display()))
            })?;
        }
        None => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush());
        }
    }
    Ok(Exit::Ok)
}

/// The built-in catalogue, or the server's entries for the classes `ui`
/// uses, fetched one by one.
fn catalogue_for(
    args: &ConvertArgs,
    ui: &serde_json::Map<String, Value>,
) -> Result<NodeDefs, CliError> {
    if args.server.is_none() && !args.sim {
        return Ok(NodeDefs::builtin());
    }
    let headers = parse_headers(&args.headers).map_err(|e| bad(format!("--header: {e}")))?;
    let classes = convert::classes_used(ui);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut _sim = None;
        let url = if args.sim {
            let sim = super::sim::start_embedded().await?;
            let url = sim.url();
            _sim = Some(sim);
            url
        } else {
            args.server.clone().unwrap_or_default()
        };
        let url = ServerUrl::parse(&url).map_err(|e| bad(format!("--server: {e}")))?;
        Ok(crate::preflight::fetch_classes(&url, &headers, &classes).await?)
    })
}
