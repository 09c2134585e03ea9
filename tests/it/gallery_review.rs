//! Review of the report page's chunk handling (only 8 chunks kept, match
//! positions as typed arrays, the viewer keeping its row): reports of more
//! than 8 chunks driven in headless Chromium through [`Devtools`] as a user
//! would, scrolling, stepping the viewer across chunk boundaries, filtering,
//! searching, sorting, reloading, with chunk files damaged or rewritten, and
//! hostile values that must stay text everywhere.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::gallery::{Devtools, synthetic_folder, url};
use crate::harness::Project;

/// What must never run: every hostile value sets `window.pwned`.
const XSS: &str = "</script><img src=x onerror=window.pwned=1>";

/// A report of `n` jobs of [`synthetic_folder`] in `p`'s `run/`.
async fn report_of(p: &Project, n: usize) -> PathBuf {
    let out = p.path("run");
    synthetic_folder(&out, n);
    let r = p.cli(&["report", "run"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    out.join("report/index.html")
}

/// Polls `expr` until it gives neither `""` nor `"false"`; its value.
async fn until(page: &mut Devtools, expr: &str, what: &str) -> String {
    let start = Instant::now();
    loop {
        let v = page.eval(expr).await;
        if !v.is_empty() && v != "false" {
            return v;
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "{what}: not in 60 s ({expr}); the page says {:?}",
                page.eval("document.getElementById('loading').textContent")
                    .await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until nothing is loading (the page's `data-ready`).
async fn settled(page: &mut Devtools) {
    // A scroll or a step starts its loads on the next frame.
    tokio::time::sleep(Duration::from_millis(150)).await;
    until(
        page,
        "document.body.getAttribute('data-ready') === '1'",
        "ready",
    )
    .await;
}

/// The job ids of the cards, in order.
async fn card_ids(page: &mut Devtools) -> Vec<String> {
    page.eval("Array.from(document.querySelectorAll('.card')).map(function (c) { return c.dataset.job; }).join(' ')")
        .await
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpage_gallery_scrolled_to_the_middle_and_back_shows_the_cards_there() {
    let p = Project::new();
    let index = report_of(&p, 12_000).await;
    let mut page = Devtools::open(&url(&index, "")).await;
    for (at, what) in [(0.5, "the middle"), (0.9, "near the end"), (0.0, "the top")] {
        page.eval(&format!(
            "window.scrollTo(0, (document.documentElement.scrollHeight - innerHeight) * {at})"
        ))
        .await;
        settled(&mut page).await;
        let ids = card_ids(&mut page).await;
        let nums: Vec<usize> = ids.iter().map(|id| id[1..].parse().unwrap()).collect();
        assert!(!nums.is_empty(), "{what}: no card");
        assert!(
            nums.windows(2).all(|w| w[1] == w[0] + 1),
            "{what}: the cards are the jobs in log order: {ids:?}"
        );
        // The card under the middle of the screen is one of them.
        let under = page
            .eval("(document.elementFromPoint(innerWidth / 2, innerHeight / 2) || document.body).closest('.card') ? document.elementFromPoint(innerWidth / 2, innerHeight / 2).closest('.card').dataset.job : ''")
            .await;
        assert!(
            ids.contains(&under),
            "{what}: nothing on screen ({under:?})"
        );
        let want = (12_000.0 * at) as usize;
        let got: usize = under[1..].parse().unwrap();
        assert!(
            got.abs_diff(want) < 200,
            "{what}: j{got:05} shown, about j{want:05} expected"
        );
    }
}

/// The `job=` of the fragment, or `""`.
async fn job_in_url(page: &mut Devtools) -> String {
    page.eval("(location.hash.match(/[#&]job=([^&]*)/) || ['', ''])[1]")
        .await
}

/// Waits for the viewer to show job `j{n:05}` (its title and the URL).
async fn viewing(page: &mut Devtools, n: usize) {
    until(
        page,
        &format!(
            "document.getElementById('viewer').hidden === false && \
             document.getElementById('viewer-title').textContent.indexOf('sweep#{n} ') === 0 && \
             location.hash.indexOf('job=j{n:05}') >= 0"
        ),
        &format!("the viewer on j{n:05}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpage_the_viewer_steps_across_chunks_in_the_gallerys_order() {
    let p = Project::new();
    let index = report_of(&p, 12_000).await;
    // By seed: j00000, j00100, … j11900, j00001, …: a chunk every 10 steps.
    let mut page = Devtools::open(&url(&index, "sort=seed")).await;
    settled(&mut page).await;
    page.eval("document.querySelector('.card').click()").await;
    viewing(&mut page, 0).await;
    let order: Vec<usize> = (0..100)
        .flat_map(|s| (0..12_000).filter(move |i| i % 100 == s))
        .collect();
    for n in &order[1..=130] {
        page.eval("document.getElementById('viewer-next').click()")
            .await;
        viewing(&mut page, *n).await;
    }
    for n in order[120..130].iter().rev() {
        page.eval("document.getElementById('viewer-prev').click()")
            .await;
        viewing(&mut page, *n).await;
    }
    // From the first, back wraps to the last: seed 99's last, chunk 11.
    page.eval("location.hash = 'sort=seed&job=j00000'").await;
    viewing(&mut page, 0).await;
    page.eval("document.getElementById('viewer-prev').click()")
        .await;
    viewing(&mut page, 11_999).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpage_two_quick_steps_move_two_jobs_and_escape_is_not_undone_by_a_load() {
    let p = Project::new();
    let index = report_of(&p, 12_000).await;
    // The first screens need chunk 0 only: j00999 is its last job.
    let mut page = Devtools::open(&url(&index, "")).await;
    settled(&mut page).await;
    page.eval("location.hash = 'job=j00999'").await;
    viewing(&mut page, 999).await;
    // Two presses before chunk 1 arrives: two jobs on, as within a chunk.
    page.eval(
        "(function () { var n = document.getElementById('viewer-next'); n.click(); n.click(); })()",
    )
    .await;
    until(
        &mut page,
        "location.hash.indexOf('job=j00999') < 0",
        "moved",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(job_in_url(&mut page).await, "j01001");
    viewing(&mut page, 1001).await;
    // Back from the first wraps to the last job, in chunk 11, not loaded;
    // Escape before it arrives: closed the viewer stays.
    page.eval("location.hash = 'job=j00000'").await;
    viewing(&mut page, 0).await;
    page.eval(
        "(function () { document.getElementById('viewer-prev').click(); \
         document.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape' })); })()",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(job_in_url(&mut page).await, "");
    assert_eq!(
        page.eval("document.getElementById('viewer').hidden").await,
        "true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpage_a_grid_over_every_chunk_with_a_page_axis() {
    let p = Project::new();
    let index = report_of(&p, 12_000).await;
    let mut page = Devtools::open(&url(&index, "view=grid&x=cfg&y=&page=prompt&s.seed=77")).await;
    settled(&mut page).await;
    let got = page
        .eval("Array.from(document.querySelectorAll('td.cell')).map(function (c) { return c.dataset.page + '|' + c.dataset.x + '|' + c.dataset.job; }).join('\\n')")
        .await;
    let mut want = std::collections::BTreeMap::<(String, String), Vec<String>>::new();
    for i in (0..12_000).filter(|i| i % 100 == 77) {
        let prompt = PROMPTS[i / 500 % 5];
        want.entry((prompt.to_string(), (5 + i / 100 % 5).to_string()))
            .or_default()
            .push(format!("j{i:05}"));
    }
    let got: std::collections::BTreeMap<(String, String), Vec<String>> = got
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (
                (f[0].to_string(), f[1].to_string()),
                f[2].split(' ').map(str::to_string).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // A job of the last chunk opens from its cell, and steps on.
    page.eval("document.querySelector('[data-item=\"j11977\"]').click()")
        .await;
    until(
        &mut page,
        "document.getElementById('viewer-title').textContent.indexOf('sweep#11977 ') === 0",
        "viewer of j11977",
    )
    .await;
}

/// [`synthetic_folder`]'s prompts, by 500 jobs.
const PROMPTS: [&str; 5] = ["a red fox", "an owl at night", "a cat", "a dog", "a house"];

/// `n` jobs whose every value is hostile: the label, a `style` (indexed,
/// two values), a `prompt` unique per job and long enough (460 bytes) that
/// over 18,000 jobs it is not indexed, an error, a server.
fn hostile_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut csv = String::from(
        "job_id,job,workflow,workflow_sha256,seed,prompt,style,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error\n",
    );
    let pad = "x".repeat(400);
    for i in 0..n {
        let style = if i % 2 == 0 {
            XSS
        } else {
            "javascript:window.pwned=1"
        };
        let (status, error) = if i % 7 == 0 {
            ("failed", format!("{XSS} e{i:05}"))
        } else {
            ("ok", String::new())
        };
        writeln!(
            csv,
            "h{i:05},\"{XSS}#{i}\",t2i.json,abc,{},\"{XSS} p{i:05} {pad}\",\"{style}\",{status},javascript:window.pwned=1,p{i},,,,0.1,{}.5,images/h{i:05}_9_0.png,\"{error}\"",
            i % 10,
            i % 13,
        )
        .unwrap();
    }
    std::fs::write(dir.join("runs.csv"), csv).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpage_hostile_values_stay_text_in_every_view_and_a_wide_prompt_filters_and_searches() {
    let p = Project::new();
    let out = p.path("run");
    hostile_folder(&out, 20_000);
    let r = p.cli(&["report", "run"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let index = out.join("report/index.html");
    let clean = "window.pwned === undefined && !document.querySelector('img[src=\"x\"]') && !document.querySelector('#cards script, #grid script, #viewer script')";
    let mut page = Devtools::open(&url(&index, "")).await;
    settled(&mut page).await;
    assert_eq!(
        page.eval("document.body.getAttribute('data-ready')").await,
        "1"
    );
    // The prompt is not indexed: no filter offers it, yet the fragment's
    // filter, search and sort read it from the rows.
    assert_eq!(
        page.eval("!!document.querySelector('[data-filter=\"prompt\"]')")
            .await,
        "false",
        "prompt should be too wide to index"
    );
    let label = page
        .eval("document.querySelector('.card .label').textContent")
        .await;
    assert_eq!(label, format!("{XSS}#0"));
    assert_eq!(page.eval(clean).await, "true");

    let cases: [(&str, &[&str]); 5] = [
        // A wide filter: one job, in chunk 17.
        (
            &format!(
                "f.prompt={}",
                urlencode(&format!("{XSS} p17321 {}", "x".repeat(400)))
            ),
            &["h17321"],
        ),
        // Search without a space: the wide prompt.
        ("q=p19999", &["h19999"]),
        // With a space, inside one field and across the label and the id.
        ("q=p18888%20xxx", &["h18888"]),
        ("q=%3E%2318888%20h18888", &["h18888"]),
        // The error.
        ("q=e19999", &["h19999"]),
    ];
    for (fragment, want) in cases {
        page.eval(&format!(
            "location.hash = {}",
            serde_json::to_string(fragment).unwrap()
        ))
        .await;
        settled(&mut page).await;
        until(
            &mut page,
            "!/so far/.test(document.getElementById('shown').textContent)",
            fragment,
        )
        .await;
        assert_eq!(card_ids(&mut page).await, want.to_vec(), "{fragment}");
        assert_eq!(page.eval(clean).await, "true", "{fragment}");
    }
    // Sorted by the wide prompt, descending: the last job first.
    page.eval("location.hash = 'sort=prompt&desc=1&f.style=javascript%3Awindow.pwned%3D1'")
        .await;
    settled(&mut page).await;
    until(
        &mut page,
        "!/so far/.test(document.getElementById('shown').textContent)",
        "sorted",
    )
    .await;
    let ids = card_ids(&mut page).await;
    assert_eq!(&ids[..3], ["h19999", "h19997", "h19995"]);
    assert_eq!(page.eval(clean).await, "true");

    // The viewer from the URL, on a job of the last chunk: every line text.
    page.eval("location.hash = 'job=h19993'").await;
    until(
        &mut page,
        "document.getElementById('viewer').hidden === false",
        "viewer",
    )
    .await;
    let title = page
        .eval("document.getElementById('viewer-title').textContent")
        .await;
    assert_eq!(title, format!("{XSS}#19993 · ok"));
    assert_eq!(page.eval(clean).await, "true");
    assert_eq!(
        page.eval("Array.from(document.querySelectorAll('#viewer a')).filter(function (a) { return /^javascript:/i.test(a.getAttribute('href')); }).length")
            .await,
        "0"
    );

    // The grid: the hostile style values are axis labels.
    page.eval("location.hash = 'view=grid&x=style&y=seed'")
        .await;
    settled(&mut page).await;
    let heads = page
        .eval("Array.from(document.querySelectorAll('thead th span')).map(function (s) { return s.textContent; }).join('\\n')")
        .await;
    assert!(heads.contains(XSS), "{heads}");
    assert_eq!(page.eval(clean).await, "true");
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}

/// The data folder the page at `index` reads.
fn data_dir(index: &Path) -> PathBuf {
    let page = std::fs::read_to_string(index).unwrap();
    let at = page.find("data/").unwrap() + "data/".len();
    let id: String = page[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    index.parent().unwrap().join("data").join(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpage_a_damaged_chunk_is_named_and_the_search_never_claims_a_final_count() {
    let p = Project::new();
    let index = report_of(&p, 12_000).await;
    let data = data_dir(&index);
    // Half a file, and a missing one.
    let half = data.join("0007.js");
    let text = std::fs::read(&half).unwrap();
    std::fs::write(&half, &text[..text.len() / 2]).unwrap();
    std::fs::remove_file(data.join("0010.js")).unwrap();
    let mut page = Devtools::open(&url(&index, "")).await;
    page.eval("location.hash = 'q=boom-1'").await;
    let says = until(
        &mut page,
        "document.getElementById('loading').hidden ? '' : document.getElementById('loading').textContent",
        "a message",
    )
    .await;
    let says = until(
        &mut page,
        "/data\\/[0-9a-f]+\\/(0007|0010)\\.js of this page could not be read/.test(document.getElementById('loading').textContent) ? document.getElementById('loading').textContent : ''",
        &format!("the damaged file named (it says {says:?})"),
    )
    .await;
    // The last that failed is named, never an intact one.
    assert!(!says.contains("0011.js"), "{says}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shown = page
        .eval("document.getElementById('shown').textContent")
        .await;
    assert!(shown.contains("so far"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpage_a_report_rewritten_twice_under_an_open_page_says_reload_and_a_reload_keeps_the_view()
{
    let p = Project::new();
    let index = report_of(&p, 12_000).await;
    let mut page = Devtools::open(&url(&index, "f.cfg=7&sort=seed&desc=1")).await;
    settled(&mut page).await;
    let before = card_ids(&mut page).await;
    assert_eq!(before[0], "j11799");
    // The next report keeps this page's data; the one after removes it.
    for n in [12_100, 12_200] {
        synthetic_folder(&p.path("run"), n);
        let r = p.cli(&["report", "run"]).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    page.eval("window.scrollTo(0, (document.documentElement.scrollHeight - innerHeight) / 2)")
        .await;
    until(
        &mut page,
        "/Reload the page/.test(document.getElementById('loading').textContent)",
        "reload asked",
    )
    .await;
    page.eval("location.reload()").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    settled(&mut page).await;
    // Chromium restores the scroll on a reload: back to the top.
    page.eval("window.scrollTo(0, 0)").await;
    settled(&mut page).await;
    assert_eq!(
        page.eval("location.hash").await,
        "#f.cfg=7&sort=seed&desc=1"
    );
    let shown = page
        .eval("document.getElementById('shown').textContent")
        .await;
    assert_eq!(shown, "2400 of 12200 shown");
    assert_eq!(card_ids(&mut page).await[0], "j11799");
}
