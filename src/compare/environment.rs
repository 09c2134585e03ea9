//! The environment differences between two folders, one line each
//! (`pytorch 2.5.1 → 2.6.0`, `KSampler definition changed`): each side's
//! record ([`crate::environment`]) read through the folder, every value
//! its snapshots hold (a run over two servers or an upgrade has several).

use std::collections::{BTreeMap, BTreeSet};

use crate::environment::{Environment, FILE, Values};
use crate::folder::RunFolder;

/// A field's name and how to read its values from a snapshot.
type Field<'a> = (&'a str, &'a dyn Fn(&Values) -> Vec<String>);

/// A side's record: `Ok(None)` when it has none, `Err` when unreadable.
fn record(folder: &RunFolder) -> Result<Option<Environment>, String> {
    let path = folder.root().join(FILE);
    let mut file = match folder.file(FILE) {
        Ok(f) => f,
        Err(crate::folder::Refusal::Missing) => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bytes = file
        .read_all()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Environment::parse(&bytes, &path)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Every value of one field among a record's snapshots, joined.
fn field(env: &Environment, get: impl Fn(&Values) -> Vec<String>) -> String {
    let all: BTreeSet<String> = env.snapshots.iter().flat_map(|s| get(&s.values)).collect();
    if all.is_empty() {
        "?".into()
    } else {
        all.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// Every hash a record's snapshots give each name (node class or model).
fn hashes(
    env: &Environment,
    get: impl Fn(&Values) -> &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &env.snapshots {
        for (name, hash) in get(&s.values) {
            out.entry(name.clone()).or_default().insert(hash.clone());
        }
    }
    out
}

/// What differs between the environments of `a` and `b`, one line each,
/// for people; empty when nothing does. A side without a record (or
/// both) says so.
pub fn differences(a: &RunFolder, b: &RunFolder) -> Vec<String> {
    let (ea, eb) = match (record(a), record(b)) {
        (Ok(Some(x)), Ok(Some(y))) => (x, y),
        (Ok(None), Ok(None)) => {
            return vec![format!(
                "neither folder has {FILE}: the environments are unknown"
            )];
        }
        (ra, rb) => {
            let say = |side: &str, r: Result<Option<Environment>, String>| match r {
                Ok(Some(_)) => None,
                Ok(None) => Some(format!("{side} has no {FILE}: its environment is unknown")),
                Err(e) => Some(format!("{side}: {e}")),
            };
            return [say("A", ra), say("B", rb)].into_iter().flatten().collect();
        }
    };
    let mut out = Vec::new();
    let text = |v: &Option<String>| v.clone().into_iter().collect::<Vec<_>>();
    let fields: [Field; 5] = [
        ("comfyui", &|v| text(&v.comfyui_version)),
        ("python", &|v| text(&v.python_version)),
        ("pytorch", &|v| text(&v.pytorch_version)),
        ("os", &|v| text(&v.os)),
        ("device", &|v| {
            v.devices.iter().map(|d| d.name.clone()).collect::<Vec<_>>()
        }),
    ];
    for (name, get) in fields {
        let (x, y) = (field(&ea, get), field(&eb, get));
        if x != y {
            out.push(format!("{name} {x} → {y}"));
        }
    }
    for (what, get) in [
        (
            "definition",
            (|v: &Values| &v.nodes) as fn(&Values) -> &BTreeMap<String, String>,
        ),
        ("model", |v: &Values| &v.models),
    ] {
        let (ha, hb) = (hashes(&ea, get), hashes(&eb, get));
        let names: BTreeSet<&String> = ha.keys().chain(hb.keys()).collect();
        for name in names {
            let line = match (ha.get(name), hb.get(name)) {
                (Some(x), Some(y)) if x != y => format!("{name} {what} changed"),
                (Some(_), None) => format!("{name} {what} only in A"),
                (None, Some(_)) => format!("{name} {what} only in B"),
                _ => continue,
            };
            out.push(if what == "model" {
                format!("model {line}", line = line.replacen(" model", "", 1))
            } else {
                line
            });
        }
    }
    out.into_iter()
        .map(|l| crate::text::clip(&crate::text::one_line(&l), 300))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Device;

    fn folder(dir: &std::path::Path, env: Option<&Environment>) -> RunFolder {
        let header = crate::runlog::header(&[]).join(",");
        std::fs::write(dir.join(crate::runlog::LOG), format!("{header}\n")).unwrap();
        if let Some(env) = env {
            env.write(dir).unwrap();
        }
        RunFolder::open(dir).unwrap()
    }

    fn values(device: &str, ksampler: &str) -> Values {
        Values {
            pytorch_version: Some("2.5.1".into()),
            devices: vec![Device {
                name: device.into(),
                kind: "cuda".into(),
                vram_total: None,
            }],
            nodes: [
                ("KSampler".to_string(), ksampler.to_string()),
                ("VAEDecode".to_string(), "v".to_string()),
            ]
            .into(),
            ..Values::default()
        }
    }

    #[test]
    fn a_changed_device_and_node_definition_are_named_and_equal_values_are_not() {
        let (da, db, dc) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let t0 = std::time::SystemTime::UNIX_EPOCH;
        let mut ea = Environment::default();
        ea.record("http://a", t0, values("NVIDIA RTX 4090", "h1"));
        let mut eb = Environment::default();
        eb.record("http://b", t0, values("cpu", "h2"));
        let (a, b, none) = (
            folder(da.path(), Some(&ea)),
            folder(db.path(), Some(&eb)),
            folder(dc.path(), None),
        );
        assert_eq!(
            differences(&a, &b),
            [
                "device NVIDIA RTX 4090 → cpu",
                "KSampler definition changed"
            ]
        );
        assert!(differences(&a, &a).is_empty());
        assert_eq!(
            differences(&a, &none),
            ["B has no environment.json: its environment is unknown"]
        );
        assert_eq!(
            differences(&none, &none),
            ["neither folder has environment.json: the environments are unknown"]
        );
    }
}
