//! The simulator's part in checking reproducibility (issue #27 item 5):
//! `/system_stats` values set by flags, so two simulators differ;
//! `/view_metadata` for its models; and drift that perturbs the pixels of
//! chosen prompts slightly and deterministically, leaving the rest
//! byte-identical.

use comfy_batch::sim::{SimConfig, SimSystem};

use crate::harness::{Project, read_rows, sampler_jobs, sim_with};

/// The images of `out`, by seed.
fn images_by_seed(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    read_rows(&dir.join("runs.csv"))
        .into_iter()
        .map(|row| {
            let image = row.images().pop().unwrap();
            (
                row.get("seed").to_string(),
                std::fs::read(dir.join(image)).unwrap(),
            )
        })
        .collect()
}

fn pixels(png: &[u8]) -> Vec<u8> {
    image::load_from_memory(png).unwrap().to_rgb8().into_raw()
}

#[tokio::test]
async fn drift_changes_the_chosen_seeds_pixels_slightly_and_nothing_else() {
    let plain = sim_with(SimConfig::default()).await;
    let drifting = sim_with(SimConfig {
        drift_seeds: vec![2],
        ..SimConfig::default()
    })
    .await;
    let after = sim_with(SimConfig {
        drift_after: Some(2),
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(3));
    let mut seen = Vec::new();
    for (name, sim) in [
        ("plain", &plain),
        ("seeds", &drifting),
        ("after", &after),
        ("again", &drifting),
    ] {
        let url = sim.url();
        let args = [
            "run",
            "jobs.yaml",
            "--output",
            name,
            "--server",
            &url,
            "--concurrency",
            "1",
        ];
        let out = p.cli(&args).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        seen.push(images_by_seed(&p.path(name)));
    }
    let [plain, seeds, after, again] = <[_; 4]>::try_from(seen).unwrap();
    assert_eq!(plain.len(), 3);
    for seed in ["1", "3"] {
        assert_eq!(plain[seed], seeds[seed], "seed {seed} untouched");
    }
    // Deterministic: the same drift twice is the same bytes.
    assert_eq!(seeds, again);
    // After two prompts, the third drifts.
    for seed in ["1", "2"] {
        assert_eq!(plain[seed], after[seed], "seed {seed} before the drift");
    }
    for (drifted, seed) in [(&seeds, "2"), (&after, "3")] {
        assert_ne!(plain[seed], drifted[seed], "seed {seed} drifted");
        let (a, b) = (pixels(&plain[seed]), pixels(&drifted[seed]));
        assert_eq!(a.len(), b.len());
        let most = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        assert_eq!(most, 1, "slightly: one level at most");
    }
}

#[tokio::test]
async fn the_sim_flags_set_system_stats_and_view_metadata_answers_for_its_models() {
    let sim = sim_with(SimConfig {
        system: SimSystem {
            comfyui_version: "0.9.9".into(),
            pytorch_version: "2.6.0".into(),
            device: "flagged".into(),
        },
        ..SimConfig::default()
    })
    .await;
    let stats = crate::harness::get_json(&format!("{}/system_stats", sim.url())).await;
    assert_eq!(stats["system"]["comfyui_version"], "0.9.9");
    assert_eq!(stats["system"]["pytorch_version"], "2.6.0");
    assert_eq!(stats["devices"][0]["name"], "flagged");
    let meta = crate::harness::get_json(&format!(
        "{}/view_metadata/checkpoints?filename=sd15.safetensors",
        sim.url()
    ))
    .await;
    assert_eq!(meta["modelspec.title"], "sd15");
    // Not a listed safetensors model: 404, as ComfyUI.
    for query in [
        "checkpoints?filename=nope.safetensors",
        "controlnet?filename=control_v11p_sd15_canny.pth",
    ] {
        let status = reqwest::get(format!("{}/view_metadata/{query}", sim.url()))
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 404, "{query}");
    }
}
