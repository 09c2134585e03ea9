//! `bench run` end to end, with figures too small to mean anything: the
//! benchmark must run on a fresh machine (it starts its own simulators).

use crate::harness::comfy_batch;

#[test]
fn many_servers_run_and_print_each_servers_share_and_the_runners_cost() {
    let out = comfy_batch()
        .args(["bench", "run", "--servers", "2", "--step-ms", "1"])
        .args(["--busy-jobs", "8", "--no-report"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let servers = stdout
        .lines()
        .filter(|l| l.contains(" jobs, busy "))
        .count();
    assert_eq!(servers, 2, "{stdout}");
    assert!(
        stdout.contains("many servers: 2 servers, 8 jobs x 20 steps at 1 ms/step"),
        "{stdout}"
    );
    assert!(stdout.contains("runner (--no-report): CPU "), "{stdout}");
}

#[test]
fn runs_too_close_in_size_give_no_cpu_split() {
    // Four jobs beside five: the slope between them is the CPU's noise
    // (it printed -11 ms fixed per run and 6.5 ms per job).
    let out = comfy_batch()
        .args(["bench", "run", "--servers", "4", "--step-ms", "1"])
        .args(["--busy-jobs", "5", "--no-report"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.lines().any(|l| l.contains("-job run's CPU")),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "runner CPU per further job and fixed per run: not measured, 5 jobs are too close"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("(--busy-jobs 55 or more)"), "{stdout}");
}

#[test]
fn bench_run_pack_sends_the_busy_jobs_in_batches_and_the_server_works_less() {
    // 16 jobs × 20 steps × 5 ms: 1.6 s of sampling one by one; in 2 batches
    // of 8, 2 × 20 × 5 ms × 5.2 = 1.04 s.
    let busy = |extra: &[&str]| -> (String, f64) {
        let out = comfy_batch()
            .args(["bench", "run", "--only", "busy", "--step-ms", "5"])
            .args(["--busy-jobs", "16"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let seconds = stdout
            .split("server busy ")
            .nth(1)
            .and_then(|t| t.split('s').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no busy figure: {stdout}"));
        (stdout, seconds)
    };
    let (one_by_one, alone) = busy(&[]);
    let (packed, batched) = busy(&["--pack", "8"]);
    assert!(
        one_by_one.contains("busy share: 16 jobs x 20 steps"),
        "{one_by_one}"
    );
    assert!(
        packed.contains("busy share: 16 jobs in packs of 8 x 20 steps"),
        "{packed}"
    );
    assert!(alone >= 1.6, "{one_by_one}");
    assert!(batched >= 1.04 && batched < alone, "{packed}\n{one_by_one}");
}
