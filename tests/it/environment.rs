//! The environment of every run (issue #27 item 1): `environment.json`
//! snapshots per server, appended on a resume after an upgrade, each row
//! leading to the snapshot in force when it ran, kept by `merge`, shown by
//! `status`.

use comfy_batch::environment::Environment;
use comfy_batch::sim::{Sim, SimConfig, SimSystem};

use crate::harness::{Project, read_rows, sampler_jobs, sim_with};

fn system(version: &str, device: &str) -> SimConfig {
    SimConfig {
        system: SimSystem {
            comfyui_version: version.into(),
            pytorch_version: format!("torch-for-{version}"),
            device: device.into(),
        },
        ..SimConfig::default()
    }
}

fn read_env(dir: &std::path::Path) -> Environment {
    let bytes = std::fs::read(dir.join("environment.json")).expect("environment.json written");
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_run_on_two_servers_records_a_snapshot_of_each() {
    let a = sim_with(system("0.8.0", "NVIDIA RTX 4090")).await;
    let b = sim_with(system("0.9.1", "cpu-box")).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(6));
    let out = p.run("jobs.yaml", &[&a, &b], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let env = read_env(&p.out());
    assert_eq!(env.snapshots.len(), 2, "{env:#?}");
    for (sim, version, device) in [(&a, "0.8.0", "NVIDIA RTX 4090"), (&b, "0.9.1", "cpu-box")] {
        let s = env
            .snapshots
            .iter()
            .find(|s| s.server == sim.url())
            .unwrap_or_else(|| panic!("no snapshot of {}: {env:#?}", sim.url()));
        assert_eq!(s.values.comfyui_version.as_deref(), Some(version));
        assert_eq!(
            s.values.pytorch_version.as_deref(),
            Some(&*format!("torch-for-{version}"))
        );
        assert_eq!(s.values.devices[0].name, device);
        assert_eq!(s.values.devices[0].kind, "cpu");
        // A hash per node class the workflow uses, from the preflight's fetch.
        assert!(
            s.values.nodes.contains_key("KSampler"),
            "{:?}",
            s.values.nodes
        );
        assert!(s.values.nodes.contains_key("SaveImage"));
        assert!(s.values.nodes.values().all(|h| h.len() == 64));
        // The checkpoint the prompts name, by its header metadata's hash.
        assert_eq!(
            s.values.models.keys().collect::<Vec<_>>(),
            ["checkpoints/v1-5-pruned-emaonly.safetensors"]
        );
    }
    // Both run one catalogue: equal node hashes.
    assert_eq!(env.snapshots[0].values.nodes, env.snapshots[1].values.nodes);
    // The catalogue was fetched once per class and server: no second fetch.
    assert_eq!(a.stats().catalogue_requests, 0);

    let status = p.cli(&["status", "out"]).await;
    assert!(
        status.stdout.contains("environment (2):"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("ComfyUI 0.9.1"), "{}", status.stdout);
    assert!(
        status.stdout.contains("cpu NVIDIA RTX 4090 (16 GiB)"),
        "{}",
        status.stdout
    );
    // Every row leads to the snapshot of its server.
    let rows: usize = status
        .stdout
        .lines()
        .filter(|l| l.starts_with("  #"))
        .map(|l| {
            let n = l.rsplit_once(" (").unwrap().1;
            n.split(' ').next().unwrap().parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(rows, 6, "{}", status.stdout);
}

#[tokio::test]
async fn a_resume_after_an_upgrade_appends_a_snapshot_and_rows_lead_to_theirs() {
    let old = sim_with(system("0.8.0", "gpu")).await;
    let addr = old.url().trim_start_matches("http://").to_string();
    let p = Project::new();
    let manifest = |seeds: &str| {
        format!(
            "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: fox\n    workflow: t2i\n    seeds: [{seeds}]\n"
        )
    };
    p.write("jobs.yaml", manifest("1, 2"));
    let url = old.url();
    let out = p
        .run_urls("jobs.yaml", std::slice::from_ref(&url), &[])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Run again unchanged: same values, no new snapshot.
    p.write("jobs.yaml", manifest("1, 2, 3"));
    let out = p
        .run_urls("jobs.yaml", std::slice::from_ref(&url), &[])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(read_env(&p.out()).snapshots.len(), 1);

    // "Upgrade" the server: same address, another version.
    old.shutdown().await;
    let new = Sim::start(system("0.9.0", "gpu"), addr.parse().unwrap())
        .await
        .expect("the upgraded sim starts on the same address");
    assert_eq!(new.url(), url);
    p.write("jobs.yaml", manifest("1, 2, 3, 4, 5"));
    let out = p
        .run_urls("jobs.yaml", std::slice::from_ref(&url), &[])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let env = read_env(&p.out());
    let versions: Vec<_> = env
        .snapshots
        .iter()
        .map(|s| {
            (
                s.server.as_str(),
                s.values.comfyui_version.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [(&*url, "0.8.0"), (&*url, "0.9.0")]);
    for row in read_rows(&p.out().join("runs.csv")) {
        let (i, _) = env
            .in_force(row.get("server"), row.get("started_at"))
            .unwrap_or_else(|| panic!("row of seed {} leads nowhere", row.get("seed")));
        let expected = if matches!(row.get("seed"), "4" | "5") {
            1
        } else {
            0
        };
        assert_eq!(i, expected, "seed {}", row.get("seed"));
    }
    let status = p.cli(&["status", "out"]).await;
    assert!(
        status.stdout.contains("environment (2):"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("ComfyUI 0.8.0"), "{}", status.stdout);
    assert!(status.stdout.contains("(3 rows)"), "{}", status.stdout);
    assert!(status.stdout.contains("(2 rows)"), "{}", status.stdout);
    new.shutdown().await;
}

#[tokio::test]
async fn merge_keeps_every_sources_snapshots() {
    let a = sim_with(system("0.8.0", "gpu-a")).await;
    let b = sim_with(system("0.8.0", "gpu-b")).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(4));
    for (shard, sim) in [("1/2", &a), ("2/2", &b)] {
        let dir = format!("shard{}", &shard[..1]);
        let url = sim.url();
        let args = [
            "run",
            "jobs.yaml",
            "--output",
            &dir,
            "--server",
            &url,
            "--shard",
            shard,
        ];
        let out = p.cli(&args).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = p
        .cli(&["merge", "all", "shard1", "shard2", "--no-report"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env = read_env(&p.path("all"));
    let mut devices: Vec<_> = env
        .snapshots
        .iter()
        .map(|s| s.values.devices[0].name.as_str())
        .collect();
    devices.sort();
    assert_eq!(devices, ["gpu-a", "gpu-b"]);
    // Merging again doubles nothing.
    let out = p
        .cli(&["merge", "all", "shard1", "shard2", "--no-report"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(read_env(&p.path("all")).snapshots.len(), 2);
    let status = p.cli(&["status", "all"]).await;
    assert!(
        status.stdout.contains("environment (2):"),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn an_unreadable_record_is_named_once_and_left_as_it_is() {
    let sim = sim_with(SimConfig::default()).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(1));
    let out = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let garbage = "{\"snapshots\": [truncated";
    p.write("out/environment.json", garbage);
    p.write("jobs.yaml", sampler_jobs(2));
    let out = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "the run goes on: {}", out.stderr);
    let lines: Vec<_> = out
        .stderr
        .lines()
        .filter(|l| l.contains("environment.json"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("not an environment record") && lines[0].contains("not recorded"),
        "{}",
        lines[0]
    );
    assert_eq!(
        std::fs::read_to_string(p.out().join("environment.json")).unwrap(),
        garbage,
        "nothing recorded is lost"
    );
    assert_eq!(p.rows().len(), 2);
}
