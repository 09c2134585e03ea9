//! `comfy-batch report` and the report `run` writes: real runs against the
//! simulator, the page loaded in headless Chromium (Debian's `chromium`;
//! `.ci/run` installs it) and driven through its URL fragment, asserting on
//! the `data-*` attributes of the rendered DOM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use comfy_batch::sim::SimConfig;

use crate::harness::{Project, Row, sim, sim_with};

/// prompt × cfg × 2 seeds on the t2i fixture: 12 jobs.
const SWEEP: &str = r#"version: 1
workflows:
  t2i: workflows/t2i.json
jobs:
  - name: sweep
    workflow: t2i
    matrix:
      prompt: ["a red fox", "an owl at night"]
      cfg: [5, 6.5, 8]
    seeds: [1, 2]
"#;

const HOSTILE: &str = "</script><img src=x onerror=alert(1)>";

/// The browser: `CHROMIUM` if set, else the first of the usual names.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the report tests need headless Chromium: `apt-get install -y chromium` \
         (or run `bash .ci/run`, which installs it)"
    );
}

/// Chromium's flags for a quiet, offline, throwaway profile.
fn browser(profile: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(std::process::Stdio::null());
    c
}

pub(crate) fn url(index: &Path, fragment: &str) -> String {
    let abs = std::fs::canonicalize(index).unwrap();
    format!("file://{}#{fragment}", abs.display())
}

/// The page's DOM after its script ran, with `fragment` in the URL.
pub fn dump_dom(index: &Path, fragment: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = browser(profile.path())
        .arg("--dump-dom")
        .arg(url(index, fragment))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not finish (fragment {fragment}):\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        &dom[..dom.len().min(3000)]
    );
    dom
}

/// Elements of `dom` whose start tag has attribute `marker`, as attribute maps.
pub fn elements(dom: &str, tag: &str, marker: &str) -> Vec<BTreeMap<String, String>> {
    let attr = regex_lite::Regex::new(r#"([a-zA-Z_:][-a-zA-Z0-9_:.]*)="([^"]*)""#).unwrap();
    let mut out = Vec::new();
    let open = format!("<{tag} ");
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        let end = rest[i..].find('>').map(|e| i + e).unwrap();
        let head = &rest[i..end];
        rest = &rest[end..];
        let map: BTreeMap<String, String> = attr
            .captures_iter(head)
            .map(|c| (c[1].to_string(), unescape(&c[2])))
            .collect();
        if map.contains_key(marker) {
            out.push(map);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

fn cards(dom: &str) -> BTreeSet<String> {
    elements(dom, "div", "data-job")
        .into_iter()
        .filter(|e| e.get("class").is_some_and(|c| c.contains("card")))
        .map(|e| e["data-job"].clone())
        .collect()
}

fn cells(dom: &str) -> Vec<BTreeMap<String, String>> {
    elements(dom, "td", "data-job")
}

fn newest(rows: &[Row]) -> BTreeMap<String, Row> {
    rows.iter()
        .map(|r| (r.get("job_id").to_string(), r.clone()))
        .collect()
}

async fn report(p: &Project) -> crate::harness::Output {
    let out = p.cli(&["report", "out"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grid_cells_hold_the_right_jobs_and_failures_show_their_status() {
    let sim = sim_with(SimConfig {
        fail_rate: 0.3,
        seed: 11,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    let run = p.run("sweep.yaml", &[&sim], &[]).await;
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    let rows = newest(&p.rows());
    assert_eq!(rows.len(), 12);
    let failed: Vec<&Row> = rows.values().filter(|r| r.get("status") != "ok").collect();
    assert!(!failed.is_empty(), "the simulator should fail some jobs");
    let index = p.out().join("report/index.html");
    assert!(index.is_file(), "run writes the report");

    // Every seed in each cell: each job in exactly its (cfg, prompt) cell.
    let dom = dump_dom(&index, "view=grid&x=cfg&y=prompt&s.seed=*");
    let all_cells = cells(&dom);
    assert_eq!(all_cells.len(), 6, "3 cfg × 2 prompts");
    let mut seen = BTreeSet::new();
    for cell in &all_cells {
        let ids: Vec<&str> = cell["data-job"].split_whitespace().collect();
        assert_eq!(ids.len(), 2, "two seeds per cell: {cell:?}");
        for id in ids {
            let row = &rows[id];
            assert_eq!(row.get("cfg"), cell["data-x"]);
            assert_eq!(row.get("prompt"), cell["data-y"]);
            assert!(seen.insert(id.to_string()));
        }
    }
    assert_eq!(seen.len(), 12);
    // A failed job's cell shows its status (and the error as a tooltip).
    let bad = failed[0];
    let items = elements(&dom, "div", "data-item");
    let item = items
        .iter()
        .find(|i| i["data-item"] == bad.get("job_id"))
        .unwrap();
    assert!(item["class"].contains("failed"), "{item:?}");
    assert_eq!(item["title"], bad.get("error"));

    // One seed: one job per cell; the other seed's jobs are absent.
    let dom = dump_dom(&index, "view=grid&x=prompt&y=cfg&s.seed=2");
    for cell in cells_of(&dom) {
        let id = &cell["data-job"];
        assert_eq!(rows[id.as_str()].get("seed"), "2");
        assert_eq!(rows[id.as_str()].get("prompt"), cell["data-x"]);
        assert_eq!(rows[id.as_str()].get("cfg"), cell["data-y"]);
    }

    // Page axis: one section per prompt.
    let dom = dump_dom(&index, "view=grid&x=cfg&y=seed&page=prompt");
    let paged = cells(&dom);
    assert_eq!(paged.len(), 12);
    for cell in &paged {
        let row = &rows[cell["data-job"].as_str()];
        assert_eq!(row.get("prompt"), cell["data-page"]);
        assert_eq!(row.get("seed"), cell["data-y"]);
    }
}

fn cells_of(dom: &str) -> Vec<BTreeMap<String, String>> {
    let c = cells(dom);
    assert!(!c.is_empty());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gallery_filters_and_search_hide_the_right_cards() {
    let sim = sim().await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.run("sweep.yaml", &[&sim], &[]).await.code, 0);
    let rows = newest(&p.rows());
    let index = p.out().join("report/index.html");
    let all: BTreeSet<String> = rows.keys().cloned().collect();
    assert_eq!(cards(&dump_dom(&index, "")), all);
    let want = |f: &dyn Fn(&Row) -> bool| -> BTreeSet<String> {
        rows.iter()
            .filter(|(_, r)| f(r))
            .map(|(k, _)| k.clone())
            .collect()
    };
    assert_eq!(
        cards(&dump_dom(&index, "view=gallery&f.cfg=6.5")),
        want(&|r| r.get("cfg") == "6.5")
    );
    assert_eq!(
        cards(&dump_dom(&index, "f.cfg=8&f.prompt=an%20owl%20at%20night")),
        want(&|r| r.get("cfg") == "8" && r.get("prompt") == "an owl at night")
    );
    assert_eq!(
        cards(&dump_dom(&index, "q=OWL")),
        want(&|r| r.get("prompt").contains("owl"))
    );
    assert!(cards(&dump_dom(&index, "status=failed")).is_empty());
    // Sorting by cfg, descending: the first card has the largest cfg.
    let dom = dump_dom(&index, "sort=cfg&desc=1");
    let first = elements(&dom, "div", "data-job")
        .into_iter()
        .find(|e| e["class"].contains("card"))
        .unwrap();
    assert_eq!(rows[first["data-job"].as_str()].get("cfg"), "8");
    // The viewer: the exact rerun line and a link to the prompt.
    let id = rows.keys().next().unwrap();
    let dom = dump_dom(&index, &format!("job={id}"));
    let log = std::fs::canonicalize(p.out().join("runs.csv")).unwrap();
    assert!(
        dom.contains(&format!("comfy-batch rerun {} --job {id}", log.display())),
        "{dom}"
    );
    assert!(dom.contains(&format!("href=\"../prompts/{id}.json\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_prompt_stays_text() {
    let sim = sim().await;
    let p = Project::new();
    let manifest = format!(
        "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: evil\n    workflow: t2i\n    matrix:\n      prompt: [{:?}, \"a \\\"quoted\\\" & <b>bold</b> 'fox'\"]\n    seeds: [1]\n",
        HOSTILE
    );
    p.write("evil.yaml", &manifest);
    let run = p.run("evil.yaml", &[&sim], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let index = p.out().join("report/index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(
        !html.contains(HOSTILE),
        "the raw prompt is in the page source"
    );
    for fragment in ["", "view=grid&x=prompt&y=seed", "q=script"] {
        let dom = dump_dom(&index, fragment);
        // No element came out of the prompt: only our own images exist,
        // none has an onerror handler or src=x.
        assert!(!dom.contains("onerror=\"alert"), "{fragment}: {dom}");
        assert!(!dom.contains("<img src=\"x\""), "{fragment}");
        assert!(!dom.contains("<b>bold</b>"), "{fragment}");
        // The prompt is on the page as text.
        assert!(
            dom.contains("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"),
            "{fragment}: {dom}"
        );
    }
    let dom = dump_dom(&index, "view=grid&x=prompt&y=seed");
    let xs: BTreeSet<String> = cells(&dom)
        .into_iter()
        .map(|c| c["data-x"].clone())
        .collect();
    assert!(xs.contains(HOSTILE), "{xs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_of_a_folder_being_written_with_missing_files_and_a_torn_line() {
    let p = Project::new();
    let out = p.out();
    std::fs::create_dir_all(out.join("images")).unwrap();
    let png = |rgb: [u8; 3]| {
        let mut bytes = Vec::new();
        image::RgbImage::from_pixel(8, 8, image::Rgb(rgb))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    };
    std::fs::write(out.join("images/aaaa_9_0.png"), png([255, 0, 0])).unwrap();
    std::fs::write(out.join("images/cccc_9_0.webm"), b"not really a video").unwrap();
    std::fs::write(out.join("images/dddd_9_0.txt"), "a caption <i>here</i>").unwrap();
    std::fs::write(out.join("images/bad_9_0.png"), b"not a png").unwrap();
    std::fs::write(out.join("images/we ird#%3F.png"), png([0, 0, 255])).unwrap();
    let head = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error\n";
    let text = format!(
        "{head}\
         aaaa,g#0,w.json,x,1,fox,ok,s,p,,,,0.1,0.2,images/aaaa_9_0.png,\n\
         bbbb,g#1,w.json,x,1,owl,ok,s,p,,,,0.1,0.2,images/bbbb_9_0.png,\n\
         cccc,g#2,w.json,x,2,fox,ok,s,p,,,,0.1,0.2,images/cccc_9_0.webm,\n\
         dddd,g#3,w.json,x,2,owl,ok,s,p,,,,0.1,0.2,images/dddd_9_0.txt,\n\
         eeee,g#4,w.json,x,3,fox,failed,s,p,,,,0.1,0.2,,KSampler (3): boom\n\
         ffff,g#5,w.json,x,3,owl,ok,s,p,,,,0.1,0.2,../../etc/passwd;images/bad_9_0.png,\n\
         hhhh,g#7,w.json,x,5,\"<b>\",ok,s,p,,,,0.1,0.2,images/we ird#%3F.png,\n\
         gggg,g#6,w.json,x,4,fox,o"
    );
    std::fs::write(out.join("runs.csv"), text).unwrap();
    let r = report(&p).await;
    assert!(r.stdout.contains("(7 jobs)"), "{}", r.stdout);
    assert!(r.stdout.contains("files missing"), "{}", r.stdout);
    let index = out.join("report/index.html");
    let dom = dump_dom(&index, "view=grid&x=seed&y=prompt");
    let by_xy: BTreeMap<(String, String), String> = cells(&dom)
        .into_iter()
        .map(|c| {
            (
                (c["data-x"].clone(), c["data-y"].clone()),
                c["data-job"].clone(),
            )
        })
        .collect();
    assert_eq!(by_xy[&("1".into(), "fox".into())], "aaaa");
    assert_eq!(by_xy[&("3".into(), "fox".into())], "eeee");
    assert_eq!(by_xy.len(), 12, "4 seeds × 3 prompts: {by_xy:?}");
    assert!(
        by_xy.keys().all(|(x, _)| x != "4"),
        "the torn row is not read"
    );
    assert_eq!(by_xy[&("1".into(), "<b>".into())], "", "not run");
    assert!(dom.contains("missing file"));
    assert!(
        dom.contains("a caption &lt;i&gt;here&lt;/i&gt;"),
        "text outputs are shown as text"
    );
    // The video opens in a <video> element; an escaping path is never linked.
    let dom = dump_dom(&index, "job=cccc");
    assert!(
        dom.contains("<video src=\"../images/cccc_9_0.webm\""),
        "{dom}"
    );
    let dom = dump_dom(&index, "job=ffff");
    assert!(dom.contains("the path leaves the output folder"));
    assert!(
        !dom.contains("=\"../../../etc/passwd\""),
        "never a link or a source"
    );
    // An odd file name is one URL path segment, escaped.
    let dom = dump_dom(&index, "job=hhhh");
    assert!(
        dom.contains("src=\"../images/we%20ird%23%253F.png\""),
        "{dom}"
    );
    // A grid "not run" cell: seed 4 never ended.
    let dom = dump_dom(&index, "view=grid&x=seed&y=prompt&s.group=*");
    assert!(!dom.contains("data-x=\"4\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_report_with_nothing_changed_rewrites_nothing() {
    let sim = sim().await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.run("sweep.yaml", &[&sim], &["--no-report"]).await.code, 0);
    assert!(!p.out().join("report").exists(), "--no-report");
    // Images larger than a thumbnail (the simulator's 64 px ones are shown
    // as they are).
    for image in std::fs::read_dir(p.out().join("images")).unwrap() {
        image::RgbImage::from_pixel(600, 300, image::Rgb([200, 10, 10]))
            .save(image.unwrap().path())
            .unwrap();
    }
    report(&p).await;
    let index = p.out().join("report/index.html");
    let thumbs: Vec<PathBuf> = std::fs::read_dir(p.out().join("report/thumbs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(thumbs.len(), 12);
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = thumbs.iter().map(|t| stamp(t)).collect();
    let index_before = stamp(&index);
    std::thread::sleep(std::time::Duration::from_millis(20));
    report(&p).await;
    let after: Vec<_> = thumbs.iter().map(|t| stamp(t)).collect();
    assert_eq!(before, after);
    assert_eq!(index_before, stamp(&index));
    // Thumbnails are real JPEGs of the images.
    let t = image::open(&thumbs[0]).unwrap();
    assert!(t.width() > 0 && t.width() <= 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_is_refreshed_while_a_run_goes_on() {
    let sim = sim_with(SimConfig {
        step_ms: 150,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    let mut running = p.spawn("sweep.yaml", &[&sim], &["--concurrency", "1"]);
    let index = p.out().join("report/index.html");
    crate::harness::wait_for("an in-progress report", 60, || {
        std::fs::read_to_string(&index).is_ok_and(|t| t.contains("id=\"live\""))
    })
    .await;
    let live = dump_dom(&index, "");
    assert!(live.contains("Run in progress:"), "{live}");
    assert_eq!(running.exit(180).await, 0, "{}", running.stderr());
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(
        !html.contains("id=\"live\""),
        "the final page has no banner"
    );
    assert_eq!(cards(&dump_dom(&index, "")).len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_folders_exit_2_with_one_line() {
    let p = Project::new();
    let out = p.cli(&["report", "workflows"]).await;
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("not a comfy-batch output folder"),
        "{}",
        out.stderr
    );
    p.write("weird/runs.csv", "a,b\n1,2\n");
    let out = p.cli(&["report", "weird"]).await;
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("weird: not a comfy-batch output folder (runs.csv has no 'status' column)"),
        "{}",
        out.stderr
    );
    // An empty run (header only): a page that says so.
    p.write(
        "empty/runs.csv",
        "job_id,job,workflow,workflow_sha256,seed,status,images,error\n",
    );
    let out = p.cli(&["report", "empty"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dom = dump_dom(&p.path("empty/report/index.html"), "");
    assert!(dom.contains("No job has ended yet"));
    let dom = dump_dom(&p.path("empty/report/index.html"), "view=grid");
    assert!(dom.contains("No job has ended yet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_and_grid_help_are_stable() {
    let p = Project::new();
    let mut all = String::new();
    for command in ["report", "grid"] {
        let out = p.cli(&[command, "--help"]).await;
        assert_eq!(out.code, 0);
        all.push_str(&format!("$ comfy-batch {command} --help\n{}\n", out.stdout));
    }
    insta::assert_snapshot!(all);
}

/// Screenshots for a person to look at (`SCREENSHOTS=dir cargo test …`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_when_asked() {
    let Some(dir) = std::env::var_os("SCREENSHOTS") else {
        return;
    };
    let sim = sim_with(SimConfig {
        fail_rate: 0.3,
        seed: 11,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    p.run("sweep.yaml", &[&sim], &[]).await;
    let index = p.out().join("report/index.html");
    let id = newest(&p.rows()).keys().next().unwrap().clone();
    for (name, fragment) in [
        ("gallery", String::new()),
        ("grid", "view=grid&x=cfg&y=prompt&s.seed=*".to_string()),
        ("viewer", format!("job={id}")),
    ] {
        let profile = tempfile::tempdir().unwrap();
        let shot = Path::new(&dir).join(format!("{name}.png"));
        let status = browser(profile.path())
            .arg(format!("--screenshot={}", shot.display()))
            .arg("--window-size=1400,1000")
            .arg(url(&index, &fragment))
            .output()
            .unwrap();
        assert!(shot.is_file(), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_writes_the_report_of_its_output_folder() {
    let sim = sim().await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.run("sweep.yaml", &[&sim], &["--no-report"]).await.code, 0);
    let id = newest(&p.rows()).keys().next().unwrap().clone();
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            &id,
            "--output",
            "again",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dom = dump_dom(&p.path("again/report/index.html"), "");
    assert_eq!(cards(&dom), BTreeSet::from([id]));
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            &newest(&p.rows()).keys().nth(1).unwrap().clone(),
            "--output",
            "again2",
            "--server",
            &sim.url(),
            "--no-report",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!p.path("again2/report").exists());
}

/// A page in headless Chromium driven over the DevTools protocol (loopback
/// websocket), for what `--dump-dom` cannot do: key presses.
pub(crate) struct Devtools {
    child: std::process::Child,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Devtools {
    pub(crate) async fn open(page: &str) -> Devtools {
        use std::io::BufRead;
        let profile = tempfile::tempdir().unwrap();
        let mut child = browser(profile.path())
            .arg("--remote-debugging-port=0")
            .arg("--remote-debugging-address=127.0.0.1")
            .arg("--window-size=1200,900")
            .arg(page)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("chromium prints its DevTools address");
        let port = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut target = None;
        for _ in 0..200 {
            let list: serde_json::Value =
                reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
            target = list.as_array().unwrap().iter().find_map(|t| {
                (t["type"] == "page" && t["url"].as_str().unwrap_or("").starts_with("file://"))
                    .then(|| t["webSocketDebuggerUrl"].as_str().unwrap().to_string())
            });
            if target.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (ws, _) = tokio_tungstenite::connect_async(target.expect("a page target"))
            .await
            .unwrap();
        let mut d = Devtools {
            child,
            ws,
            next: 1,
            _profile: profile,
        };
        for _ in 0..200 {
            if d.eval("document.body && document.body.getAttribute('data-ready')")
                .await
                == "1"
            {
                return d;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the page did not get ready");
    }

    pub(crate) async fn call(
        &mut self,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        let id = self.next;
        self.next += 1;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                msg.to_string(),
            ))
            .await
            .unwrap();
        while let Some(m) = self.ws.next().await {
            let m = m.unwrap();
            if let Ok(text) = m.to_text() {
                let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                if v["id"] == id {
                    return v["result"].clone();
                }
            }
        }
        panic!("devtools closed");
    }

    pub(crate) async fn eval(&mut self, expr: &str) -> String {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": format!("String({expr})"), "returnByValue": true}),
            )
            .await;
        r["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn key(&mut self, key: &str, code: u32) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                serde_json::json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code}),
            )
            .await;
        }
    }
}

impl Drop for Devtools {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrows_move_the_viewer_and_escape_closes_it() {
    let sim = sim().await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.run("sweep.yaml", &[&sim], &[]).await.code, 0);
    let index = p.out().join("report/index.html");
    let mut page = Devtools::open(&url(&index, "sort=cfg")).await;
    let order: Vec<String> = page
        .eval("Array.from(document.querySelectorAll('.card')).map(function (c) { return c.dataset.job; }).join(' ')")
        .await
        .split(' ')
        .map(str::to_string)
        .collect();
    assert_eq!(
        order.len(),
        12,
        "{}",
        page.eval("document.body.innerHTML").await
    );
    page.eval("document.querySelector('.card').click()").await;
    assert_eq!(
        page.eval("document.getElementById('viewer').hidden").await,
        "false"
    );
    assert!(
        page.eval("location.hash")
            .await
            .contains(&format!("job={}", order[0]))
    );
    page.key("ArrowRight", 39).await;
    assert!(
        page.eval("location.hash")
            .await
            .contains(&format!("job={}", order[1]))
    );
    page.key("ArrowLeft", 37).await;
    page.key("ArrowLeft", 37).await;
    assert!(
        page.eval("location.hash")
            .await
            .contains(&format!("job={}", order[11])),
        "wraps around"
    );
    let title = page
        .eval("document.getElementById('viewer-title').textContent")
        .await;
    assert!(title.starts_with("sweep#"), "{title}");
    page.key("Escape", 27).await;
    assert_eq!(
        page.eval("document.getElementById('viewer').hidden").await,
        "true"
    );
    assert!(!page.eval("location.hash").await.contains("job="));
    assert!(
        page.eval("location.hash").await.contains("sort=cfg"),
        "the view is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_shows_the_images_of_a_job_whose_log_lists_audio_first() {
    // A mixed-output workflow logs its files in the server's order: audio,
    // latents and meshes may come before the images.
    let p = Project::new();
    let out = p.out();
    std::fs::create_dir_all(out.join("images")).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([0, 200, 0]))
        .save(out.join("images/aaaa_7_0.png"))
        .unwrap();
    for f in [
        "aaaa_6_0.flac",
        "aaaa_9_0.mp3",
        "aaaa_11_0.latent",
        "aaaa_18_0.glb",
    ] {
        std::fs::write(out.join("images").join(f), b"x").unwrap();
    }
    let head = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\n";
    std::fs::write(
        out.join("runs.csv"),
        format!(
            "{head}aaaa,g#0,w.json,x,1,fox,ok,s,p,,,,0.1,0.2,\
             images/aaaa_6_0.flac;images/aaaa_9_0.mp3;images/aaaa_11_0.latent;images/aaaa_18_0.glb;images/aaaa_7_0.png,,\n"
        ),
    )
    .unwrap();
    let r = report(&p).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let index = out.join("report/index.html");
    // An 8 px image is shown as it is, without a thumbnail.
    let dom = dump_dom(&index, "");
    assert!(
        dom.contains("<img src=\"../images/aaaa_7_0.png\""),
        "the card shows the image: {dom}"
    );
    let dom = dump_dom(&index, "view=grid&x=seed&y=prompt");
    assert!(
        dom.contains("<img src=\"../images/aaaa_7_0.png\""),
        "the cell shows the image: {dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_replaced_between_reports_never_shows_a_stale_thumbnail() {
    let p = Project::new();
    let out = p.out();
    std::fs::create_dir_all(out.join("images")).unwrap();
    let head = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\n";
    std::fs::write(
        out.join("runs.csv"),
        format!("{head}aaaa,g#0,w.json,x,1,fox,ok,s,p,,,,0.1,0.2,images/aaaa_7_0.png,,\n"),
    )
    .unwrap();
    let image = out.join("images/aaaa_7_0.png");
    let thumb = comfy_batch::gallery::thumbs::thumb_name("images/aaaa_7_0.png");
    let index = out.join("report/index.html");
    // Each replacement is stamped later than anything before it, as a copy
    // made after the last report would be.
    let mut later = std::time::SystemTime::now();
    let mut replace = |bytes: Vec<u8>| {
        std::fs::write(&image, bytes).unwrap();
        later += std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&image)
            .unwrap()
            .set_modified(later)
            .unwrap();
    };
    let png = |w: u32, h: u32, rgb: [u8; 3]| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
            .write_to(&mut bytes, image::ImageFormat::Png)
            .unwrap();
        bytes.into_inner()
    };
    let shown = || {
        let dom = dump_dom(&index, "");
        let srcs: Vec<String> = elements(&dom, "img", "src")
            .into_iter()
            .map(|e| e["src"].clone())
            .collect();
        srcs
    };
    // Large: a thumbnail of it.
    replace(png(600, 300, [200, 10, 10]));
    let r = report(&p).await;
    assert!(!r.stdout.contains("unreadable"), "{}", r.stdout);
    assert_eq!(shown(), [format!("thumbs/{thumb}")]);
    // Small now: the original, not the red thumbnail of the old one.
    replace(png(8, 8, [10, 10, 200]));
    let r = report(&p).await;
    assert!(!r.stdout.contains("unreadable"), "{}", r.stdout);
    assert_eq!(shown(), ["../images/aaaa_7_0.png"]);
    // Large again: a new thumbnail, of the new image.
    replace(png(600, 300, [10, 200, 10]));
    report(&p).await;
    assert_eq!(shown(), [format!("thumbs/{thumb}")]);
    let t = image::open(out.join("report/thumbs").join(&thumb))
        .unwrap()
        .to_rgb8();
    let [r, g, _] = t.get_pixel(0, 0).0;
    assert!(g > 150 && r < 60, "the thumbnail is of the green image");
    // Small and cut short: shown as it is (as any unreadable image is) but
    // counted as unreadable.
    let whole = png(8, 8, [10, 10, 200]);
    replace(whole[..whole.len() - 12].to_vec());
    let r = report(&p).await;
    assert!(r.stdout.contains("(1 images unreadable)"), "{}", r.stdout);
    assert_eq!(shown(), ["../images/aaaa_7_0.png"]);
}

/// The prompts of [`synthetic_folder`], 500 jobs each in a row.
const PROMPTS: [&str; 5] = ["a red fox", "an owl at night", "a cat", "a dog", "a house"];

/// An output folder of `n` jobs written as a run would log them, without
/// images (each row names one, absent): job `i` is `j{i:05}`, prompt
/// `PROMPTS[i / 500 % 5]`, cfg `5 + i / 100 % 5`, seed `i % 100`; every
/// 97th job (from 3 on) failed with a hostile error naming it.
pub(crate) fn synthetic_folder(dir: &Path, n: usize) {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir).unwrap();
    let mut csv = String::from(
        "job_id,job,workflow,workflow_sha256,seed,prompt,cfg,steps,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error\n",
    );
    for i in 0..n {
        let (status, images, error) = if i % 97 == 3 {
            ("failed", String::new(), format!("boom-{i:05} {HOSTILE}"))
        } else {
            ("ok", format!("images/j{i:05}_9_0.png"), String::new())
        };
        writeln!(
            csv,
            "j{i:05},sweep#{i},t2i.json,abc,{},{},{},20,{status},http://127.0.0.1:1,p{i},,,,0.1,1.5,{images},\"{error}\"",
            i % 100,
            PROMPTS[i / 500 % 5],
            5 + i / 100 % 5,
        )
        .unwrap();
    }
    std::fs::write(dir.join("runs.csv"), csv).unwrap();
}

/// Every job row of the report in `report` (`DIR/report`), from the chunk
/// files of the data folder its page names, in order: what the page shows.
pub fn report_rows(report: &Path) -> Vec<serde_json::Value> {
    let page = std::fs::read_to_string(report.join("index.html")).unwrap();
    let at = page.find("data/").expect("the page names its data folder") + "data/".len();
    let id: String = page[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let dir = report.join("data").join(id);
    let mut chunks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "index.js"))
        .collect();
    chunks.sort();
    let mut rows = Vec::new();
    for chunk in chunks {
        let text = std::fs::read_to_string(&chunk).unwrap();
        let start = text.find(",[").expect("comfyBatchReport.chunk(N,[…]);") + 1;
        let end = text.rfind(");").unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text[start..end]).unwrap();
        rows.extend(parsed.as_array().unwrap().iter().cloned());
    }
    rows
}

/// The folders under `report/data/` (one per report's data).
fn data_folders(out: &Path) -> BTreeSet<String> {
    std::fs::read_dir(out.join("report/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_stays_the_same_size_however_many_jobs_and_its_data_is_in_chunk_files() {
    let p = Project::new();
    synthetic_folder(&p.path("small"), 300);
    synthetic_folder(&p.path("big"), 5_000);
    for dir in ["small", "big"] {
        let out = p.cli(&["report", dir]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let size = |dir: &str| {
        std::fs::metadata(p.path(dir).join("report/index.html"))
            .unwrap()
            .len()
    };
    // Only the job count's digits and the data folder's name differ.
    assert!(
        size("big").abs_diff(size("small")) < 16,
        "{} vs {} bytes",
        size("small"),
        size("big")
    );
    assert!(size("big") < 64 * 1024, "{} bytes", size("big"));
    let big = p.path("big");
    let folders = data_folders(&big);
    assert_eq!(folders.len(), 1, "{folders:?}");
    let data = big.join("report/data").join(folders.first().unwrap());
    let mut files: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "0000.js", "0001.js", "0002.js", "0003.js", "0004.js", "index.js"
        ]
    );
    // The rows are in the chunks, escaped as in the page: a hostile error
    // cannot close a script element, and the page itself holds no row.
    let page = std::fs::read_to_string(big.join("report/index.html")).unwrap();
    assert!(!page.contains("j04999") && !page.contains("boom-"));
    let last = std::fs::read_to_string(data.join("0004.js")).unwrap();
    assert!(last.contains("\"j04999\"") && last.contains("boom-04950"));
    for f in &files {
        let text = std::fs::read_to_string(data.join(f)).unwrap();
        assert!(!text.contains('<') && !text.contains('>'), "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_report_writes_a_new_data_folder_and_keeps_only_the_previous_one() {
    let p = Project::new();
    let out = p.path("run");
    let report = |n: usize| {
        synthetic_folder(&out, n);
        let p = &p;
        async move {
            let r = p.cli(&["report", "run"]).await;
            assert_eq!(r.code, 0, "{}", r.stderr);
            data_folders(&p.path("run"))
        }
    };
    let first = report(1_200).await;
    assert_eq!(first.len(), 1);
    // Nothing changed: the same folder, the page untouched.
    let stamp = std::fs::metadata(out.join("report/index.html"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(report(1_200).await, first);
    assert_eq!(
        std::fs::metadata(out.join("report/index.html"))
            .unwrap()
            .modified()
            .unwrap(),
        stamp
    );
    // New rows: a new folder; the one an open page may still load stays.
    let second = report(1_300).await;
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second.is_superset(&first));
    // The next one removes the first, whose page is two reports old.
    let third = report(1_400).await;
    assert_eq!(third.len(), 2, "{third:?}");
    assert!(third.is_disjoint(&first));
    let page = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    let newest: Vec<&String> = third.difference(&second).collect();
    assert_eq!(newest.len(), 1);
    assert!(page.contains(&format!("data/{}/", newest[0])));
    let dom = dump_dom(&out.join("report/index.html"), "");
    assert!(dom.contains("1400 of 1400 shown"), "{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_thousands_of_jobs_filters_searches_and_opens_fragments_across_chunks() {
    let p = Project::new();
    let out = p.path("run");
    synthetic_folder(&out, 2_500);
    let r = p.cli(&["report", "run"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let index = out.join("report/index.html");
    let failed = |i: usize| i % 97 == 3;

    // The gallery counts every job but makes cards only for the first screens.
    let dom = dump_dom(&index, "");
    assert!(dom.contains("2500 of 2500 shown"));
    let shown = cards(&dom);
    assert!(
        shown.contains("j00000") && shown.len() < 200,
        "{}",
        shown.len()
    );
    let failures = (0..2_500).filter(|i| failed(*i)).count();
    assert!(
        dom.contains("2500 jobs") && dom.contains(&format!("{failures} failed")),
        "{dom}"
    );

    // A grid whose cells come from all three chunks: seed 77, cfg × prompt.
    let dom = dump_dom(&index, "view=grid&x=cfg&y=prompt&s.seed=77");
    let got: BTreeMap<(String, String), String> = cells(&dom)
        .into_iter()
        .map(|c| {
            (
                (c["data-x"].clone(), c["data-y"].clone()),
                c["data-job"].clone(),
            )
        })
        .collect();
    let mut want = BTreeMap::new();
    for (pi, prompt) in PROMPTS.iter().enumerate() {
        for c in 0..5 {
            let i = pi * 500 + c * 100 + 77;
            want.insert(
                ((5 + c).to_string(), prompt.to_string()),
                format!("j{i:05}"),
            );
        }
    }
    assert_eq!(got, want);

    // Filters over the columns: the failed jobs of the last prompt (chunk 2).
    let dom = dump_dom(&index, "f.prompt=a%20house&status=failed");
    let want: BTreeSet<String> = (2000..2500)
        .filter(|i| failed(*i))
        .map(|i| format!("j{i:05}"))
        .collect();
    assert_eq!(cards(&dom), want);
    assert!(dom.contains(&format!("{} of 2500 shown", want.len())));
    let dom = dump_dom(&index, "f.cfg=7");
    assert!(dom.contains("500 of 2500 shown"), "{dom}");

    // Search reads every chunk: a job of the last one, its hostile error as text.
    let dom = dump_dom(&index, "q=boom-02428");
    assert_eq!(cards(&dom), BTreeSet::from(["j02428".to_string()]));
    assert!(dom.contains("1 of 2500 shown"));
    assert!(
        dom.contains("boom-02428 &lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("onerror=\"alert") && !dom.contains("<img src=\"x\""));

    // The viewer opened from the URL on a job no card shows yet.
    let dom = dump_dom(&index, "job=j02428");
    assert!(dom.contains("sweep#2428 · failed"), "{dom}");
    assert!(dom.contains("href=\"../prompts/j02428.json\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_jobs_card_and_viewer_show_its_batch_index_and_pack_size() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "packed.yaml",
        "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: pair\n    workflow: t2i\n    seeds: {count: 3, base: 7}\n    pack: 2\n",
    );
    let run = p.run("packed.yaml", &[&sim], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = newest(&p.rows());
    let index = p.out().join("report/index.html");
    let dom = dump_dom(&index, "");
    // Each card's tooltip: which image of its pack it is.
    for (id, row) in &rows {
        let shown = format!(
            "{id} · image {} of {} in pack {}",
            row.get("batch_index"),
            row.get("pack_size"),
            row.get("pack_id")
        );
        assert!(dom.contains(&format!("title=\"{shown}\"")), "{shown}");
    }
    // The viewer's table and its prompt link (the pack's one file).
    let (id, row) = rows
        .iter()
        .find(|(_, r)| r.get("batch_index") == "1")
        .unwrap();
    let dom = dump_dom(&index, &format!("job={id}"));
    for (k, v) in [
        ("batch index", "1"),
        ("pack size", "2"),
        ("pack id", row.get("pack_id")),
    ] {
        assert!(
            dom.contains(&format!("<td>{k}</td><td>{v}</td>")),
            "{k} = {v}"
        );
    }
    assert!(dom.contains(&format!("href=\"../prompts/{}.json\"", row.get("pack_id"))));
}
