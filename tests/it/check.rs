//! `comfy-batch check` and the preflight of `run`: bad values are caught
//! against the server's catalogue before anything is queued.

use comfy_batch::sim::SimConfig;

use crate::harness::{Output, Project, Proxy, ResettingProxy, sim, sim_with};

/// `comfy-batch check MANIFEST` against `servers`, in order.
async fn check_on(p: &Project, manifest: &str, servers: &[String]) -> Output {
    let mut args = vec!["check", manifest];
    for url in servers {
        args.extend(["--server", url.as_str()]);
    }
    p.cli(&args).await
}

/// Checks `manifest` on `servers` (expecting problems) and returns the
/// output, asserting it has the very error lines of a check on the first
/// server alone: servers sharing a catalogue are one fleet.
async fn check_as_one_fleet(p: &Project, manifest: &str, servers: &[String]) -> Output {
    let out = check_on(p, manifest, servers).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let alone = check_on(p, manifest, &servers[..1]).await;
    assert_eq!(errors(&out.stderr), errors(&alone.stderr));
    out
}

/// The `error:` lines of a command's stderr.
fn errors(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

const TYPO: &str = r#"version: 1
jobs:
  - name: fox
    workflow: t2i
    matrix:
      sampler: [euler, eulr]
      cfg: [5, 6]
    seeds: [1, 2]
  - name: big
    workflow: t2i
    set:
      steps: 0
      checkpoint: missing.safetensors
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_each_problem_once_with_its_jobs() {
    let sim = sim().await;
    let p = Project::new();
    p.write("typo.yaml", TYPO);
    let out = p.cli(&["check", "typo.yaml", "--server", &sim.url()]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    insta::assert_snapshot!(errors(&out.stderr).join("\n"));
    assert_eq!(sim.stats().prompts_executed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_preflight_fails_before_queueing_anything() {
    let sim = sim().await;
    let p = Project::new();
    p.write("typo.yaml", TYPO);
    let out = p.run("typo.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("eulr"), "{}", out.stderr);
    assert_eq!(sim.stats().prompts_executed, 0);
    assert!(
        !out.stderr.contains("start "),
        "nothing was submitted: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_good_manifest() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "good.yaml",
        "version: 1\njobs:\n  - name: fox\n    workflow: t2i\n    seeds: [1, 2]\n",
    );
    let out = p.cli(&["check", "good.yaml", "--server", &sim.url()]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("ok: 2 jobs valid"), "{}", out.stderr);
}

const GOOD: &str = "version: 1\njobs:\n  - name: fox\n    workflow: t2i\n    seeds: [1, 2, 3]\n";

/// The classes of the run fixture `t2i.json`.
fn t2i_classes() -> usize {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/run/t2i.json"
    ))
    .unwrap();
    let prompt: serde_json::Value = serde_json::from_str(&text).unwrap();
    let classes: std::collections::BTreeSet<&str> = prompt
        .as_object()
        .unwrap()
        .values()
        .map(|n| n["class_type"].as_str().unwrap())
        .collect();
    classes.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_never_downloads_the_full_catalogue() {
    // A server whose full catalogue takes long, as one with many packs.
    let sim = sim_with(SimConfig {
        object_info_delay_ms: 5_000,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("good.yaml", GOOD);
    let out = p.run("good.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stats = sim.stats();
    assert_eq!(stats.catalogue_requests, 0, "never the whole /object_info");
    assert_eq!(
        stats.class_requests as usize,
        t2i_classes(),
        "each class the plan uses, once per run"
    );
    // `check` too.
    let out = p.cli(&["check", "good.yaml", "--server", &sim.url()]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(sim.stats().catalogue_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_the_connections_its_preflight_opened() {
    // On loopback a connection costs more than several requests: the
    // preflight's two carry the run's submissions and downloads (a run
    // against 32 servers opened 64 connections twice).
    let sim = sim().await;
    let proxy = Proxy::start(sim.addr()).await;
    let p = Project::new();
    p.write("good.yaml", GOOD);
    let out = p
        .run_urls("good.yaml", &[proxy.url()], &["--concurrency", "1"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(sim.stats().class_requests as usize, t2i_classes());
    // The websocket and the preflight's two (one prompt at a time: a job's
    // download and the next job's submission overlap at most).
    let connections = proxy.connections();
    assert!(connections <= 3, "{connections} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_preflight_connections_were_reset_still_runs_each_prompt_once() {
    // The run's first requests go on the preflight's kept-alive
    // connections; a middlebox that forgot them meanwhile resets them
    // after the request is sent. Submissions are retried (after looking
    // whether the lost one was queued), nothing is lost or doubled.
    let sim = sim().await;
    let proxy = ResettingProxy::start(sim.addr()).await;
    let p = Project::new();
    p.write("good.yaml", GOOD);
    let out = p.run_urls("good.yaml", &[proxy.url()], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(proxy.resets() >= 1, "no preflight connection was reused");
    assert_eq!(sim.stats().prompts_executed, 3);
    let log = std::fs::read_to_string(p.path("out/runs.csv")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains(",ok,")).count(),
        3,
        "{log}"
    );
    assert_eq!(log.lines().count(), 4, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_per_class_route_is_checked_against_its_full_catalogue() {
    let old = sim_with(SimConfig {
        no_class_route: true,
        ..SimConfig::default()
    })
    .await;
    let new = sim().await;
    let p = Project::new();
    p.write("typo.yaml", TYPO);
    // Both servers' catalogues, each fetched its own way, find the typos.
    let out = p.run("typo.yaml", &[&old, &new], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("eulr"), "{}", out.stderr);
    assert_eq!(old.stats().catalogue_requests, 1);
    assert_eq!(new.stats().catalogue_requests, 0);
    assert!(new.stats().class_requests > 0);
    // A good manifest runs on the old server.
    p.write("good.yaml", GOOD);
    let out = p.run("good.yaml", &[&old], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(old.stats().catalogue_requests, 2, "once per run");
    assert_eq!(old.stats().class_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_class_is_reported_from_the_per_class_answer() {
    let sim = sim().await;
    let p = Project::new();
    let mut wf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path("workflows/t2i.json")).unwrap())
            .unwrap();
    wf["9"]["class_type"] = serde_json::json!("SaveImageTypo");
    p.write("workflows/typo.json", wf.to_string());
    p.write(
        "typo.yaml",
        "version: 1\njobs:\n  - name: fox\n    workflow: typo\n    seeds: [1]\n",
    );
    let out = p.cli(&["check", "typo.yaml", "--server", &sim.url()]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("SaveImageTypo"), "{}", out.stderr);
    assert_eq!(sim.stats().catalogue_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_us_is_named_once_and_hints_at_credentials() {
    // A server behind an authenticating proxy: 401 to every request
    // without the key.
    let app = axum::Router::new()
        .fallback(|| async { (axum::http::StatusCode::UNAUTHORIZED, "missing API key") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let guarded = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let p = Project::new();
    p.write("good.yaml", GOOD);
    let out = check_on(&p, "good.yaml", std::slice::from_ref(&guarded)).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    assert!(out.stderr.contains("--header"), "{}", out.stderr);
    assert!(!out.stderr.contains("is the server up"), "{}", out.stderr);
    // Beside a server that answers, the run goes on there; the warning
    // names the refusing server's address once, with the request.
    let sim = sim().await;
    let out = p
        .run_urls("good.yaml", &[guarded.clone(), sim.url()], &[])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let warning = out
        .stderr
        .lines()
        .find(|l| l.starts_with("warning: ") && l.contains(&guarded))
        .unwrap_or_else(|| panic!("no warning naming {guarded}: {}", out.stderr));
    assert_eq!(warning.matches(&guarded).count(), 1, "{warning}");
    // Refused per class: the whole catalogue is not asked for in vain.
    assert!(warning.contains("/object_info/"), "{warning}");
}

/// An HTTP front for `check` that answers `status` to the first request of
/// each `/object_info/{class}` (a proxy's 503 or rate limit's 429) and
/// forwards everything else to `target`.
async fn flaky_front(target: String, status: u16) -> String {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (seen, target) = (seen.clone(), target.clone());
        async move {
            let path = uri.path().to_string();
            if path.starts_with("/object_info/") && seen.lock().unwrap().insert(path.clone()) {
                return (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    Vec::new(),
                );
            }
            let r = reqwest::get(format!("{target}{path}")).await.unwrap();
            let code = axum::http::StatusCode::from_u16(r.status().as_u16()).unwrap();
            (code, r.bytes().await.unwrap().to_vec())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_error_on_one_class_is_retried_not_a_dead_server() {
    // With one request per class, one 503 or 429 of a proxy among dozens
    // must not make the preflight call the server down.
    let sim = sim().await;
    let p = Project::new();
    p.write("good.yaml", GOOD);
    for status in [503, 429] {
        let front = flaky_front(sim.url(), status).await;
        let out = p.cli(&["check", "good.yaml", "--server", &front]).await;
        assert_eq!(out.code, 0, "{status}: {}", out.stderr);
        assert!(out.stderr.contains("ok: 3 jobs valid"), "{}", out.stderr);
    }
    assert_eq!(sim.stats().catalogue_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sharing_a_catalogue_are_checked_once_and_differing_ones_are_named() {
    let (a, b) = (sim().await, sim().await);
    let p = Project::new();
    p.write("typo.yaml", TYPO);
    // One fleet: each problem is one line, not one per server.
    check_as_one_fleet(&p, "typo.yaml", &[a.url(), b.url()]).await;

    // A server without the checkpoint: its problems name it, the shared
    // ones name both servers.
    let mut models = comfy_batch::sim::default_models();
    models.insert("checkpoints".into(), vec!["other.safetensors".into()]);
    let c = sim_with(SimConfig {
        models,
        ..SimConfig::default()
    })
    .await;
    let out = check_on(&p, "typo.yaml", &[a.url(), b.url(), c.url()]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let named = |url: &str| out.stderr.lines().filter(|l| l.contains(url)).count();
    assert!(named(&c.url()) > named(&a.url()), "{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("eulr") && l.contains(&format!(" on {}, {} (", a.url(), b.url()))),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_class_route_shares_its_fleets_catalogue() {
    // An older server answers with its whole /object_info: for the classes
    // the jobs use it is its peers' catalogue, so nothing is said twice.
    let a = sim().await;
    let b = sim_with(SimConfig {
        no_class_route: true,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("typo.yaml", TYPO);
    check_as_one_fleet(&p, "typo.yaml", &[a.url(), b.url()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_holding_different_input_images_share_a_catalogue() {
    // LoadImage lists each server's input folder, which earlier runs
    // filled differently; the preflight never reads that list (images are
    // uploaded at run time), so the servers are still one fleet.
    let (a, b) = (sim().await, sim().await);
    std::fs::write(b.input_dir().join("earlier.png"), b"png").unwrap();
    let p = Project::new();
    p.write("there.png", b"png");
    p.write(
        "i2i.yaml",
        "version: 1\njobs:\n  - name: g\n    workflow: i2i\n    set: {image: there.png}\n  - name: fox\n    workflow: t2i\n    set: {sampler: eulr}\n",
    );
    let out = check_as_one_fleet(&p, "i2i.yaml", &[a.url(), b.url()]).await;
    assert!(out.stderr.contains("eulr"), "{}", out.stderr);
}

/// An HTTP front that holds each `/object_info/{class}` request for `hold`
/// before forwarding it to `target`, and counts the most held at once.
async fn slow_class_front(
    target: String,
    hold: std::time::Duration,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (held, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = peak.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (held, peak, target) = (held.clone(), peak.clone(), target.clone());
        async move {
            let path = uri.path().to_string();
            let class = path.starts_with("/object_info/");
            if class {
                peak.fetch_max(held.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
            }
            let r = reqwest::get(format!("{target}{path}")).await.unwrap();
            let code = axum::http::StatusCode::from_u16(r.status().as_u16()).unwrap();
            let body = r.bytes().await.unwrap().to_vec();
            if class {
                held.fetch_sub(1, Ordering::SeqCst);
            }
            (code, body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_of_many_classes_is_fetched_in_a_few_round_trips() {
    // Each class is a round trip to a distant server: two at a time, a
    // workflow of 40 classes waited 20 of them before its first job.
    use std::sync::atomic::Ordering;
    let sim = sim().await;
    let p = Project::new();
    let catalogue: serde_json::Value = reqwest::get(format!("{}/object_info", sim.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut wf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path("workflows/t2i.json")).unwrap())
            .unwrap();
    // Unconnected nodes of 40 more classes (none a sampler: one seed only).
    let extra = catalogue
        .as_object()
        .unwrap()
        .keys()
        .filter(|c| !c.contains("Sampler") && !c.contains("Noise"))
        .step_by(10)
        .take(40);
    for (i, class) in extra.enumerate() {
        wf[format!("{}", 100 + i)] = serde_json::json!({"class_type": class, "inputs": {}});
    }
    p.write("workflows/big.json", wf.to_string());
    p.write(
        "big.yaml",
        "version: 1\njobs:\n  - name: big\n    workflow: big\n    seeds: [1]\n",
    );
    let hold = std::time::Duration::from_millis(300);
    let (front, peak) = slow_class_front(sim.url(), hold).await;
    let out = p.cli(&["check", "big.yaml", "--server", &front]).await;
    // Nodes no output needs are not checked, but their classes are fetched.
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("ok: 1 jobs valid"), "{}", out.stderr);
    let most = peak.load(Ordering::SeqCst);
    assert!(most >= 8, "at most {most} classes fetched at once");

    // A small workflow keeps to two connections (on loopback they cost
    // more than the requests).
    let (front, peak) = slow_class_front(sim.url(), hold).await;
    p.write("good.yaml", GOOD);
    let out = p.cli(&["check", "good.yaml", "--server", &front]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

/// The preflight is a library of its own: `check`'s problems come from it
/// with exit code 2 and the `--no-check` hint, a server that cannot be read
/// with 3 and the "is the server up?" hint, without the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preflight_library_says_its_exit_code_and_hint() {
    use comfy_batch::comfy::ServerUrl;
    use comfy_batch::comfy::http::HttpPool;
    use comfy_batch::preflight;

    let sim = sim().await;
    let p = Project::new();
    p.write("typo.yaml", TYPO);
    let manifest = comfy_batch::manifest::Manifest::load(&p.path("typo.yaml")).unwrap();
    let plan = comfy_batch::plan::Plan::new(&manifest).unwrap();
    let jobs = || Box::new(plan.jobs()) as Box<dyn Iterator<Item = _>>;
    let pool = HttpPool::new(Default::default(), std::time::Duration::from_secs(10)).unwrap();

    let live = [ServerUrl::parse(&sim.url()).unwrap()];
    let refused = preflight::check_servers(&live, &pool, &jobs, true)
        .await
        .unwrap_err();
    assert_eq!(
        comfy_batch::exit::Failure::exit_code(&refused) as u8,
        2,
        "{refused}"
    );
    assert!(refused.to_string().contains("'eulr'"), "{refused}");
    assert!(refused.hint().unwrap().contains("--no-check"));

    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = [ServerUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()];
    let unread = preflight::check_servers(&down, &pool, &jobs, true)
        .await
        .unwrap_err();
    assert_eq!(
        comfy_batch::exit::Failure::exit_code(&unread) as u8,
        3,
        "{unread}"
    );
    assert!(unread.hint().unwrap().contains("is the server up?"));
    assert_eq!(sim.stats().prompts_executed, 0);
}
