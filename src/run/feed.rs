//! What the scheduler hands out: jobs built one at a time as slots free
//! up, and, when a run stops early, the jobs it never handed out listed
//! without building them. A plan of a million jobs stopped by SIGTERM must
//! list the rest within the termination's bound: a prompt built per job
//! left took seconds; a row per job (its id, label and cells) does not.
//! Knows the plan's walks ([`Plan::jobs`], [`Plan::for_each_row`]), not
//! what the run does with them.

use crate::plan::{Cell, Job, Plan};

use super::RunError;
use super::events::JobBrief;

/// The jobs of a run, in order, each with its first attempt number.
pub trait JobFeed {
    /// The next job to hand out, built now; `None` once there is none.
    fn next_job(&mut self) -> Option<(Job, u32)>;

    /// Calls `each` with every job not handed out yet, in order, without
    /// building prompts where the feed can avoid it; the feed is empty
    /// afterwards. Stops at `each`'s first error.
    fn rest(
        &mut self,
        each: &mut dyn FnMut(JobBrief) -> Result<(), RunError>,
    ) -> Result<(), RunError>;
}

/// Any iterator of built jobs is a feed; its rest is built to be listed
/// (a rerun's chosen jobs, a test's few).
impl<I: Iterator<Item = (Job, u32)>> JobFeed for I {
    fn next_job(&mut self) -> Option<(Job, u32)> {
        self.next()
    }

    fn rest(
        &mut self,
        each: &mut dyn FnMut(JobBrief) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        self.try_for_each(|(job, _)| each(JobBrief::of(&job)))
    }
}

/// A plan's jobs that `wanted(shard_unit, id)` keeps (a pack is one unit
/// of `--shard`; outside packs the unit is the job's index), numbered by
/// `attempt(id)`; the rest listed from the plan's rows.
pub struct PlanFeed<'p, W, A> {
    plan: &'p Plan,
    jobs: Box<dyn Iterator<Item = Job> + 'p>,
    /// The plan index of the first job not yet looked at.
    next: usize,
    /// The rest was listed: nothing more is handed out.
    ended: bool,
    wanted: W,
    attempt: A,
}

impl<'p, W, A> PlanFeed<'p, W, A>
where
    W: Fn(usize, &str) -> bool,
    A: Fn(&str) -> u32,
{
    /// The jobs of `plan` that `wanted` keeps, in plan order.
    pub fn new(plan: &'p Plan, wanted: W, attempt: A) -> Self {
        PlanFeed {
            plan,
            jobs: Box::new(plan.jobs()),
            next: 0,
            ended: false,
            wanted,
            attempt,
        }
    }
}

impl<W, A> JobFeed for PlanFeed<'_, W, A>
where
    W: Fn(usize, &str) -> bool,
    A: Fn(&str) -> u32,
{
    fn next_job(&mut self) -> Option<(Job, u32)> {
        if self.ended {
            return None;
        }
        for job in self.jobs.by_ref() {
            self.next = job.index + 1;
            if (self.wanted)(job.shard_unit, job.id.as_str()) {
                let attempt = (self.attempt)(job.id.as_str());
                return Some((job, attempt));
            }
        }
        self.ended = true;
        None
    }

    fn rest(
        &mut self,
        each: &mut dyn FnMut(JobBrief) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(());
        }
        let columns = self.plan.columns();
        let (next, wanted) = (self.next, &self.wanted);
        self.plan.for_each_row(|row| {
            if row.index < next || !wanted(row.shard_unit, row.id) {
                return Ok(());
            }
            let params = columns
                .iter()
                .zip(row.cells)
                .filter_map(|(name, cell)| {
                    // As `JobBrief::of` gives a built job's values.
                    let text = match (*cell)? {
                        Cell::Json(v) => crate::runlog::cell(v),
                        Cell::Text(t) => crate::runlog::cell(&t.into()),
                    };
                    Some((name.clone(), text))
                })
                .collect();
            each(JobBrief {
                id: crate::ids::JobId::new(row.id),
                label: format!("{}#{}", row.group, row.number),
                seed: row.seed,
                params,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan of 8 jobs over two axes and a template's choice.
    fn plan(dir: &std::path::Path) -> Plan {
        std::fs::create_dir_all(dir.join("workflows")).unwrap();
        let wf = include_str!("../../workflows/t2i.json");
        std::fs::write(dir.join("workflows/t2i.json"), wf).unwrap();
        let path = dir.join("m.yaml");
        // A choice that reads as a JSON string: its cell is quoted.
        let text = "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: a\n    workflow: t2i\n    matrix: {cfg: [5, 6.5]}\n    templates:\n      prompt: '{\"quoted\"|plain}'\n    seeds: [1, 2]\n";
        std::fs::write(&path, text).unwrap();
        Plan::new(&crate::manifest::Manifest::load(&path).unwrap()).unwrap()
    }

    #[test]
    fn the_rest_from_rows_is_what_the_built_jobs_would_list() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let keep = |index: usize, _: &str| index != 4;
        let built: Vec<JobBrief> = plan
            .jobs()
            .filter(|j| keep(j.index, j.id.as_str()))
            .skip(2)
            .map(|j| JobBrief::of(&j))
            .collect();
        assert_eq!(built.len(), 5);
        let quoted = ("prompt".to_string(), r#""\"quoted\"""#.to_string());
        assert!(
            built.iter().any(|b| b.params.contains(&quoted)),
            "{built:?}"
        );
        let built: Vec<String> = built.iter().map(|b| format!("{b:?}")).collect();
        let mut feed = PlanFeed::new(&plan, keep, |_| 1);
        for _ in 0..2 {
            assert!(feed.next_job().is_some());
        }
        let mut listed = Vec::new();
        feed.rest(&mut |brief| {
            listed.push(format!("{brief:?}"));
            Ok(())
        })
        .unwrap();
        assert_eq!(listed, built);
        assert!(feed.next_job().is_none(), "listed means ended");
    }
}
