//! `comfy-batch check MANIFEST`: the preflight (`crate::preflight`) of
//! `run` alone, against every server (or `--sim`), queueing nothing; and
//! the one mapping of a [`PreflightError`] to a diagnostic.

use std::path::PathBuf;
use std::time::Duration;

use super::{CliError, Exit, GlobalArgs};
use crate::comfy::ServerUrl;
use crate::comfy::http::{HttpPool, parse_headers};
use crate::manifest::Manifest;
use crate::plan::Plan;
use crate::preflight::{self, ServerClasses};

/// Arguments of `comfy-batch check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The manifest (YAML) to check.
    pub manifest: PathBuf,
    /// A ComfyUI server URL to check against (repeatable)
    /// [default: $COMFY_URL, else the manifest's `server`, else http://127.0.0.1:8188].
    #[arg(long = "server", value_name = "URL")]
    pub servers: Vec<String>,
    /// Check against the embedded simulator's catalogue.
    #[arg(long, conflicts_with = "servers")]
    pub sim: bool,
    /// Extra HTTP header for every request (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
}

/// Runs the command.
pub fn execute(args: CheckArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let bad = |lines: Vec<String>| CliError::many(Exit::BadInput, lines);
    let manifest = Manifest::load(&args.manifest).map_err(|e| bad(e.lines()))?;
    let headers = parse_headers(&args.headers).map_err(|e| bad(vec![format!("--header: {e}")]))?;
    let env = std::env::var("COMFY_URL").ok();
    let urls = super::options::resolve_servers(&args.servers, env.as_deref(), &manifest.servers);
    let parsed = match args.sim {
        true => Vec::new(),
        false => urls
            .iter()
            .map(|u| ServerUrl::parse(u).map_err(|e| bad(vec![e.to_string()])))
            .collect::<Result<Vec<_>, _>>()?,
    };
    // UI-format workflows are converted with the first answering server's entries for
    // the classes they use (the simulator's catalogue is the built-in one);
    // every unknown class of every workflow is listed at once.
    let source = ServerClasses::new(&parsed, &headers, global.quiet);
    let fetch = |classes: &[String]| source.fetch(classes);
    let plan =
        Plan::with_catalogue_from(&manifest, rand::random(), &fetch).map_err(|e| bad(e.lines()))?;
    if !global.quiet {
        for warning in plan.warnings() {
            eprintln!("warning: {warning}");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut _sim = None;
        let servers = if args.sim {
            let sim = super::sim::start_embedded().await?;
            let url = ServerUrl::parse(&sim.url()).map_err(|e| bad(vec![e.to_string()]))?;
            _sim = Some(sim);
            vec![url]
        } else {
            parsed.clone()
        };
        let classes = preflight::classes_used(plan.jobs());
        let pool = HttpPool::new(headers.clone(), Duration::from_secs(60))?;
        let catalogues = preflight::catalogues(&servers, &pool, &classes)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        preflight::check(&|| Box::new(plan.jobs()), &catalogues)?;
        if !global.quiet {
            eprintln!(
                "ok: {} jobs valid on {}",
                plan.len(),
                servers
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(Exit::Ok)
    })
}
