//! Secrets given with a server (issue #23): a password in the URL's user
//! info, a token in its query and a `--header` value reach the server on
//! every request (a simulator that requires all three), and none of them
//! appears in any file a run, rerun, status, report or merge writes, nor on
//! stdout or stderr, at `-v` or with `RUST_LOG=trace`.

use std::path::Path;

use base64::Engine as _;
use comfy_batch::sim::SimConfig;

use crate::harness::{Output, Project, read_rows, refusing_address, sim_with};

const USER: &str = "user";
const PASSWORD: &str = "s3cretpass";
const TOKEN: &str = "t0psecret";
const HEADER: &str = "h3adervalue";

/// `Authorization: Basic …` for [`USER`]:[`PASSWORD`].
fn basic() -> String {
    let pair = format!("{USER}:{PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// What must never be shown or written: the three secrets, and the
/// password as the basic-auth header carries it.
fn secrets() -> Vec<String> {
    let encoded = basic().trim_start_matches("Basic ").to_string();
    vec![PASSWORD.into(), TOKEN.into(), HEADER.into(), encoded]
}

/// A simulator that answers 401 unless a request carries the password (as
/// basic auth), the token and the header: a proxy in front of ComfyUI.
/// Some prompts fail (seeded) and every socket drops now and then, so
/// failures, annotations and reconnects are part of the run.
async fn guarded_sim() -> comfy_batch::sim::SimHandle {
    sim_with(SimConfig {
        require_headers: vec![
            ("Authorization".into(), basic()),
            ("X-Api-Key".into(), HEADER.into()),
        ],
        require_query: vec![("token".into(), TOKEN.into())],
        fail_rate: 0.4,
        seed: 3,
        drop_ws_every: Some(30),
        ..SimConfig::default()
    })
    .await
}

/// `http://user:s3cretpass@ADDR/?token=t0psecret`.
fn secret_url(plain: &str) -> String {
    let addr = plain.trim_start_matches("http://");
    format!("http://{USER}:{PASSWORD}@{addr}/?token={TOKEN}")
}

const MANIFEST: &str = r#"version: 1
workflows:
  tiny: workflows/tiny.json
jobs:
  - name: colors
    workflow: tiny
    matrix:
      "Canvas.color": [255, 65280, 16711680]
      "1.width": [16, 24]
"#;

/// Panics if a secret is in `text` (what `what` names).
fn assert_clean(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for secret in secrets() {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&secret)).collect();
        assert!(
            lines.is_empty(),
            "{what} shows the secret {secret:?}:\n{}",
            lines.join("\n")
        );
    }
}

fn assert_output_clean(what: &str, out: &Output) {
    assert_clean(&format!("{what}: stdout"), out.stdout.as_bytes());
    assert_clean(&format!("{what}: stderr"), out.stderr.as_bytes());
}

/// Every file under `dir`, whatever its kind, is free of secrets; returns
/// how many files were read.
fn assert_tree_clean(dir: &Path) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files += assert_tree_clean(&path);
        } else {
            assert_clean(&path.display().to_string(), &std::fs::read(&path).unwrap());
            files += 1;
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_the_url_and_headers_work_and_never_leak() {
    let p = Project::new();
    p.write("colors.yaml", MANIFEST);
    let s = guarded_sim().await;
    let url = secret_url(&s.url());
    // A second server, down: its address (with the same secrets) is in
    // the warnings and errors about it.
    let (_hold, down) = refusing_address();
    let down = secret_url(&down);
    let header = format!("X-Api-Key: {HEADER}");
    let summary = p.path("summary.md");
    let summary_path = summary.to_str().unwrap();
    let ci: [(&str, Option<&str>); 2] = [
        ("GITHUB_STEP_SUMMARY", Some(summary_path)),
        ("GITHUB_ACTIONS", Some("true")),
    ];

    // The whole CI path at -v, then again (into a fresh folder, so the
    // servers are talked to) with every crate's tracing at trace level.
    let runs = [
        ("out", "junit.xml", None),
        ("traced", "junit-traced.xml", Some("trace")),
    ];
    for (output, junit, log) in runs {
        let args = [
            "run",
            "colors.yaml",
            "--server",
            &url,
            "--server",
            &down,
            "--header",
            &header,
            "--output",
            output,
            "--junit",
            junit,
            "-v",
        ];
        let mut env = ci.to_vec();
        env.push(("RUST_LOG", log));
        let out = p.cli_env(&args, &env).await;
        let what = format!("run -v, RUST_LOG={log:?}");
        assert!(out.code == 0 || out.code == 1, "{what}: {}", out.stderr);
        assert_output_clean(&what, &out);
        // The credentials reached the server: jobs ran there, and some ended
        // ok, some failed (seeded), each with its `::error` line.
        let rows = read_rows(&p.path(output).join("runs.csv"));
        assert_eq!(rows.len(), 6, "{what}: {}", out.stderr);
        let failed = rows.iter().filter(|r| r.get("status") == "failed").count();
        assert!(failed > 0 && failed < 6, "{what}: {rows:?}");
        assert_eq!(
            out.stdout.matches("::error ").count(),
            failed,
            "{what}: {}",
            out.stdout
        );
        // Where a server is shown, it is shown redacted.
        let shown = format!("http://{USER}:***@");
        assert!(
            rows.iter()
                .all(|r| r.get("server").starts_with(&shown)
                    && r.get("server").ends_with("?token=***")),
            "{what}: {rows:?}"
        );
        if log.is_some() {
            // Tracing was on: the HTTP client's own lines are there.
            assert!(out.stderr.contains("TRACE"), "{what}: {}", out.stderr);
        } else {
            assert!(out.stderr.contains(&shown), "{what}: {}", out.stderr);
        }
    }
    let summary_text = std::fs::read_to_string(&summary).unwrap();
    assert!(summary_text.contains("?token=***"), "{summary_text}");

    // A rerun of the failures (the server from COMFY_URL, as CI sets it),
    // then the commands that read the folders back.
    let rerun = p
        .cli_env(
            &[
                "rerun",
                "out/runs.csv",
                "--status",
                "failed",
                "--output",
                "again",
                "--header",
                &header,
                "-v",
            ],
            &[("COMFY_URL", Some(&url)), ("RUST_LOG", None)],
        )
        .await;
    assert!(rerun.code == 0 || rerun.code == 1, "{}", rerun.stderr);
    assert_output_clean("rerun -v", &rerun);
    let check = p
        .cli_env(
            &["check", "colors.yaml", "--header", &header, "-v"],
            &[("COMFY_URL", Some(&url)), ("RUST_LOG", Some("trace"))],
        )
        .await;
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert_output_clean("check", &check);
    for args in [
        &["status", "out", "-v"][..],
        &["report", "out", "-v"],
        &["merge", "merged", "out", "again", "traced", "-v"],
        &["status", "merged", "--manifest", "colors.yaml", "-v"],
    ] {
        let out = p.cli_env(args, &[("RUST_LOG", None)]).await;
        assert!(out.code == 0 || out.code == 1, "{args:?}: {}", out.stderr);
        assert_output_clean(&format!("{args:?}"), &out);
    }

    // Every file of the project: the output folders with their images,
    // prompts, logs, run.json and reports, the JUnit files and the summary.
    assert!(p.path("merged/report/index.html").is_file());
    assert!(p.path("junit-traced.xml").is_file());
    let files = assert_tree_clean(p.dir.path());
    assert!(files > 40, "{files} files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guarded_simulator_refuses_a_request_without_every_credential() {
    let s = guarded_sim().await;
    let client = reqwest::Client::new();
    let status = |query: &'static str, headers: &[(&'static str, String)]| {
        let mut request = client.get(format!("{}/api/system_stats{query}", s.url()));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let auth = ("Authorization", basic());
    let key = ("X-Api-Key", HEADER.to_string());
    let query = "?token=t0psecret";
    assert_eq!(status(query, &[auth.clone(), key.clone()]).await, 200);
    assert_eq!(status("", &[auth.clone(), key.clone()]).await, 401);
    assert_eq!(
        status("?token=other", &[auth.clone(), key.clone()]).await,
        401
    );
    assert_eq!(status(query, &[key]).await, 401);
    assert_eq!(status(query, &[auth]).await, 401);
    // The websocket handshake is refused the same way.
    let ws = format!("{}/ws?clientId=x", s.url().replace("http://", "ws://"));
    let refused = tokio_tungstenite::connect_async(ws.as_str()).await;
    assert!(refused.is_err(), "a handshake without credentials");
}

/// A server that answers every request with a redirect to another host:
/// reqwest would follow it, keeping a `--header` value (it drops only
/// `Authorization` and cookies across hosts), and the other host would
/// get the API key. A redirect is never followed (the credentials go to
/// the server given and nowhere else); the error says where it led,
/// without a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_takes_no_secret_elsewhere() {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let other = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(format!("{uri} {headers:?}"));
                "{}"
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, other).await });
    let target = elsewhere.clone();
    let front = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!("{target}{uri}");
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_url = secret_url(&format!("http://{}", listener.local_addr().unwrap()));
    tokio::spawn(async move { axum::serve(listener, front).await });

    let p = Project::new();
    p.write("colors.yaml", MANIFEST);
    let header = format!("X-Api-Key: {HEADER}");
    for command in ["check", "run"] {
        let out = p
            .cli_env(
                &[
                    command,
                    "colors.yaml",
                    "--server",
                    &front_url,
                    "--header",
                    &header,
                    "-v",
                ],
                &[("RUST_LOG", Some("trace"))],
            )
            .await;
        assert_eq!(out.code, 3, "{command}: {}", out.stderr);
        assert_output_clean(command, &out);
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with("error: ") && l.contains("redirect"))
            .unwrap_or_else(|| panic!("{command}: no error naming the redirect: {}", out.stderr));
        assert!(line.contains(&elsewhere), "{command}: {line}");
    }
    let seen = seen.lock().unwrap();
    assert!(seen.is_empty(), "the other host was asked: {seen:?}");
    assert_tree_clean(p.dir.path());
}

/// A manifest's `server:` that is refused (not http or https) is quoted in
/// the error with its secrets redacted, by every command that reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_manifest_server_is_quoted_without_its_secrets() {
    let p = Project::new();
    let manifest = MANIFEST.replace(
        "version: 1\n",
        &format!("version: 1\nserver: \"ftp://{USER}:{PASSWORD}@127.0.0.1:1/?token={TOKEN}\"\n"),
    );
    p.write("colors.yaml", &manifest);
    for command in ["plan", "check", "run"] {
        let out = p
            .cli_env(&[command, "colors.yaml"], &[("RUST_LOG", Some("trace"))])
            .await;
        assert_eq!(out.code, 2, "{command}: {}", out.stderr);
        assert_output_clean(command, &out);
        assert!(
            out.stderr.contains("colors.yaml:2:")
                && out.stderr.contains("ftp://user:***@127.0.0.1:1/?token=***"),
            "{command}: {}",
            out.stderr
        );
    }
    // Nothing else written holds them (the manifest itself does).
    std::fs::remove_file(p.path("colors.yaml")).unwrap();
    assert_tree_clean(p.dir.path());
}

/// A password typed unencoded with a `?` in it (`COMFY_URL` written by
/// hand) makes a URL that does not parse; the error quoting it shows no
/// part of the password, which was taken for the start of a query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_with_a_question_mark_is_not_shown_in_part() {
    let p = Project::new();
    p.write("colors.yaml", MANIFEST);
    let url = "http://user:s3cret?part@127.0.0.1:1/?token=t0psecret";
    for args in [
        &["check", "colors.yaml", "--server", url][..],
        &["run", "colors.yaml", "--server", url, "-v"],
    ] {
        let out = p.cli(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        for secret in ["s3cret", "part", TOKEN] {
            assert!(!out.stderr.contains(secret), "{args:?}: {}", out.stderr);
        }
        assert!(
            out.stderr
                .contains("http://user:***@127.0.0.1:1/?token=***"),
            "{}",
            out.stderr
        );
    }
}
