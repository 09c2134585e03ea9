//! The report page's JS heap while a view reads every chunk (issue #24
//! item 3): a search over all jobs keeps match positions, not rows, so the
//! heap it leaves behind does not grow with the jobs. Headless Chromium is
//! driven through [`Devtools`] (the one DevTools client, in `gallery.rs`):
//! the search is typed into the URL fragment, the heap is sampled every
//! 100 ms while it runs and read again after a forced collection.
//!
//! The 1M-job figure of docs/ci.md "The report at scale" comes from the
//! ignored `measure_a_search_over_a_given_report`, pointed at a report:
//!
//! ```sh
//! COMFY_BATCH_HEAP_PAGE=/dev/shm/b1m/run/report/index.html \
//!   cargo test -q --test it gallery_heap -- --ignored --nocapture
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use crate::gallery::{Devtools, synthetic_folder, url};
use crate::harness::Project;

const MB: f64 = 1024.0 * 1024.0;

/// What one search over a report did to the page's heap.
struct Figures {
    /// Used JS heap after the page was ready, after a full collection.
    before: f64,
    /// The most used heap sampled while the search ran (garbage included).
    peak: f64,
    /// The largest heap (used or not) sampled while it ran.
    peak_total: f64,
    /// Used JS heap once the search ended, after a full collection.
    after: f64,
    /// From the fragment set to the last card painted.
    secs: f64,
    /// The page's "N of M shown".
    shown: String,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "heap before {:.1} MB, peak {:.1} MB (of {:.1} MB), after {:.1} MB; search {:.1} s ({})",
            self.before / MB,
            self.peak / MB,
            self.peak_total / MB,
            self.after / MB,
            self.secs,
            self.shown
        )
    }
}

/// The JS heap in bytes, used and total, after a full collection when
/// `collect`.
async fn heap(page: &mut Devtools, collect: bool) -> (f64, f64) {
    if collect {
        page.call("HeapProfiler.collectGarbage", serde_json::json!({}))
            .await;
    }
    let usage = page
        .call("Runtime.getHeapUsage", serde_json::json!({}))
        .await;
    let size = |k: &str| usage[k].as_f64().expect("Runtime.getHeapUsage");
    (size("usedSize"), size("totalSize"))
}

/// Opens `index`, searches all jobs for `query` (through the fragment, as
/// a link or the search box does) and measures the heap; gives up after
/// `limit`.
async fn search_heap(index: &Path, query: &str, limit: Duration) -> Figures {
    let mut page = Devtools::open(&url(index, "")).await;
    let (before, mut peak_total) = heap(&mut page, true).await;
    let quoted = serde_json::to_string(query).unwrap();
    // Done: the box shows the query (the view was rebuilt for it), nothing
    // is loading, and the count is final.
    let done = format!(
        "(function () {{ var q = document.getElementById('q'), s = document.getElementById('shown'); \
         return q && q.value === {quoted} && document.body.getAttribute('data-ready') === '1' \
         && !/so far/.test(s.textContent) ? s.textContent : ''; }})()"
    );
    let start = Instant::now();
    page.eval(&format!(
        "location.hash = 'q=' + encodeURIComponent({quoted})"
    ))
    .await;
    let mut peak = before;
    let shown = loop {
        let (used, total) = heap(&mut page, false).await;
        peak = peak.max(used);
        peak_total = peak_total.max(total);
        let shown = page.eval(&done).await;
        if !shown.is_empty() {
            break shown;
        }
        assert!(
            start.elapsed() < limit,
            "the search did not end in {limit:?}: {}",
            page.eval("document.getElementById('loading').textContent")
                .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    let (after, _) = heap(&mut page, true).await;
    Figures {
        before,
        peak,
        peak_total,
        after,
        secs,
        shown,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_over_every_chunk_leaves_no_rows_behind() {
    let p = Project::new();
    let out = p.path("run");
    synthetic_folder(&out, 40_000);
    let r = p.cli(&["report", "run"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Job 39967 is the last that failed: its error is in the last chunk.
    let f = search_heap(
        &out.join("report/index.html"),
        "boom-39967",
        Duration::from_secs(60),
    )
    .await;
    eprintln!("40,000 jobs: {f}");
    assert_eq!(f.shown, "1 of 40000 shown");
    // 40 chunks of 1,000 rows were read: kept alive, their rows take about
    // 10 MB of heap (and more as objects); the few chunks kept for the
    // screen about 2 MB.
    assert!(
        f.after - f.before < 5.0 * MB,
        "the search left {:.1} MB behind: {f}",
        (f.after - f.before) / MB
    );
}

/// The figure for docs/ci.md: `COMFY_BATCH_HEAP_PAGE` names a report's
/// page (any `.html` beside `data/`, e.g. another build's page copied
/// there), `COMFY_BATCH_HEAP_QUERY` the search (default `bench#99999`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: needs COMFY_BATCH_HEAP_PAGE"]
async fn measure_a_search_over_a_given_report() {
    let page = std::env::var_os("COMFY_BATCH_HEAP_PAGE").expect("COMFY_BATCH_HEAP_PAGE");
    let query = std::env::var("COMFY_BATCH_HEAP_QUERY").unwrap_or_else(|_| "bench#99999".into());
    let f = search_heap(Path::new(&page), &query, Duration::from_secs(900)).await;
    println!("{}: search {query:?}: {f}", Path::new(&page).display());
}
