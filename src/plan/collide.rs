//! A plan's job ids checked for a collision before anything runs: two
//! different jobs under one id would share files, prompt ids and log rows.

use super::Plan;

impl Plan {
    /// A line naming two different jobs that share one id, if any. Identical
    /// jobs were collapsed by the plan already, so any id seen twice is a
    /// hash collision; `run` refuses such a plan.
    pub fn colliding_ids(&self) -> Option<String> {
        let key = |id: &str| u64::from_str_radix(id, 16).unwrap_or(0);
        // Rows have the ids without the prompts, which cost most to build.
        let mut ids = Vec::with_capacity(self.len());
        let _ = self.for_each_row(|row| -> Result<(), ()> {
            ids.push(key(row.id));
            Ok(())
        });
        let twice = repeated(ids)?;
        let labels: Vec<String> = self
            .jobs()
            .filter(|j| key(j.id.as_str()) == twice)
            .map(|j| format!("{} ({})", j.label, j.id))
            .collect();
        Some(format!(
            "jobs {} are different but share one id (a hash collision); change one of them, e.g. its seed",
            labels.join(" and ")
        ))
    }
}

/// A value that occurs twice, if any.
fn repeated(mut ids: Vec<u64>) -> Option<u64> {
    ids.sort_unstable();
    ids.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn an_id_seen_twice_is_found() {
        assert_eq!(repeated(vec![5, 1, 9, 3]), None);
        assert_eq!(repeated(vec![5, 1, 9, 1, 3]), Some(1));
        assert_eq!(repeated(Vec::new()), None);
    }

    /// The pair the review found colliding under 48-bit ids.
    #[test]
    fn ids_are_64_bits_and_the_reviewed_pair_differs() {
        let dir = tempfile::tempdir().unwrap();
        let wf = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/t2i.json")).unwrap();
        std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
        std::fs::write(dir.path().join("workflows/t2i.json"), wf).unwrap();
        let path = dir.path().join("m.yaml");
        let text = "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: a\n    workflow: t2i\n    seeds: [13773221, 26107027]\n";
        std::fs::write(&path, text).unwrap();
        let manifest = Manifest::load(&path).unwrap();
        let plan = Plan::new(&manifest).unwrap();
        let ids: Vec<String> = plan.jobs().map(|j| j.id.to_string()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|id| id.len() == 16), "{ids:?}");
        assert_ne!(ids[0], ids[1]);
        assert_ne!(
            ids[0][..12],
            ids[1][..12],
            "the 48-bit prefixes differ too: {ids:?}"
        );
        assert_eq!(plan.colliding_ids(), None);
    }
}
