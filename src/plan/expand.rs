//! The lazy walk over a plan: decodes each raw position into its axis
//! values and seed, computes the job id, and builds the patched prompt. The
//! hot path: nothing here resolves names or allocates beyond the job itself.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Group, HashValue, ImageInput, ImageSource, Job, Pack, Plan, Scratch, Source, Variant};
use crate::ids::{JobId, NodeId};
use crate::patch::{self, Prompt};

/// Bytes of the digest in a job id: 64 bits (16 hex), so ids of different
/// jobs stay apart well past the plan cap (48 bits collided at ~20M jobs).
/// [`Jobs`] and [`Plan::for_each_row`] must agree.
pub(crate) const JOB_ID_BYTES: usize = 8;

/// The job id input: workflow content, every resolved (node, input) value
/// sorted by slot (an input image by its content, a template by its
/// resolved text), and the seed; for a packed job, then its pack's size and
/// its batch index. Frozen (see `docs/manifest.md`); v2 since 64-bit,
/// content-hashed ids.
pub(super) fn digest(g: &Group, v: &Variant, s: &Scratch, seed: Option<u64>) -> [u8; 32] {
    digest_of(g, v, s, seed, true)
}

/// A packed job's pack id: [`digest`]'s input without the batch index, so
/// no job id (packed or not) has the same input.
fn pack_digest(g: &Group, v: &Variant, s: &Scratch, seed: Option<u64>) -> [u8; 32] {
    digest_of(g, v, s, seed, false)
}

fn digest_of(g: &Group, v: &Variant, s: &Scratch, seed: Option<u64>, with_index: bool) -> [u8; 32] {
    let idx = &s.idx;
    let mut h = Sha256::new();
    h.update(b"comfy-batch job v2\0");
    h.update(v.workflow.sha256.as_bytes());
    h.update(b"\0");
    for item in &v.hash {
        h.update(&item.key);
        match &item.value {
            HashValue::Fixed(bytes) => h.update(bytes),
            HashValue::Axis { axis, member } => {
                let m = &g.axes[*axis].members[*member];
                match m.template {
                    Some(t) => h.update(&s.encoded[t]),
                    None => h.update(&m.encoded[idx[*axis]]),
                }
            }
            HashValue::Content { axis, digests } => h.update(digests[idx[*axis]]),
        }
        h.update(b"\0");
    }
    match seed {
        Some(s) => {
            h.update(b"seed\0");
            let mut buf = [0u8; 20];
            h.update(decimal(s, &mut buf));
        }
        None => h.update(b"noseed"),
    }
    if let Some(p) = s.pack {
        let mut buf = [0u8; 20];
        h.update(b"\0pack\0");
        h.update(decimal(p.size, &mut buf));
        if with_index {
            h.update(b"\0batch_index\0");
            h.update(decimal(p.index, &mut buf));
        }
    }
    h.finalize().into()
}

/// The pack of the job `decode` left in `s` (none outside `pack:`
/// groups), and its shard unit: its plan `index`, or for a packed job the
/// number of its pack among the packs begun so far (`packs`, counted here:
/// a pack begins at batch index 0).
fn pack_and_unit(
    g: &Group,
    v: &Variant,
    s: &Scratch,
    seed: Option<u64>,
    index: usize,
    packs: &mut usize,
) -> (Option<Pack>, usize) {
    let Some(p) = s.pack else {
        return (None, index);
    };
    *packs += usize::from(p.index == 0);
    let pack = Pack {
        id: JobId::new(hex::encode(&pack_digest(g, v, s, seed)[..JOB_ID_BYTES])),
        batch_index: p.index,
        size: p.size,
    };
    (Some(pack), packs.saturating_sub(1))
}

/// `n` in decimal ASCII, written into `buf` (no allocation).
pub(super) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The iterator behind [`Plan::jobs`].
pub(super) struct Jobs<'p> {
    plan: &'p Plan,
    raw: u64,
    index: usize,
    skip_pos: usize,
    group: usize,
    in_group: usize,
    /// Packs begun so far (a packed job's shard unit).
    packs: usize,
    scratch: Scratch,
}

impl<'p> Jobs<'p> {
    pub(super) fn new(plan: &'p Plan) -> Self {
        Jobs {
            plan,
            raw: 0,
            index: 0,
            skip_pos: 0,
            group: 0,
            in_group: 0,
            packs: 0,
            scratch: Scratch::default(),
        }
    }
}

impl Iterator for Jobs<'_> {
    type Item = Job;

    fn next(&mut self) -> Option<Job> {
        let plan = self.plan;
        loop {
            if self.raw >= plan.raw_len {
                return None;
            }
            let mut g = plan.groups.get(self.group)?;
            while self.raw >= g.raw_start + g.raw_len() {
                self.group += 1;
                self.in_group = 0;
                g = plan.groups.get(self.group)?;
            }
            let raw = self.raw;
            self.raw += 1;
            if plan.skip.get(self.skip_pos) == Some(&raw) {
                self.skip_pos += 1;
                continue;
            }
            let (vi, seed) = plan.decode(g, raw - g.raw_start, raw, &mut self.scratch);
            let v = &g.variants[vi];
            let s = &self.scratch;
            let id = JobId::new(hex::encode(&digest(g, v, s, seed)[..JOB_ID_BYTES]));
            let mut prompt = v.base.clone();
            let idx = &s.idx;
            let value_of = |axis: usize, member: usize| -> Value {
                let m = &g.axes[axis].members[member];
                match m.template {
                    Some(t) => Value::String(s.exps[t].text.clone()),
                    None => m.values[idx[axis]].clone(),
                }
            };
            for (slot, axis, member) in &v.setters {
                patch::set(&mut prompt, slot, value_of(*axis, *member));
            }
            if let Some(seed) = seed {
                for slot in &v.seed_slots {
                    patch::set(&mut prompt, slot, Value::from(seed));
                }
            }
            let (pack, shard_unit) = pack_and_unit(g, v, s, seed, self.index, &mut self.packs);
            // Every job of a pack sends the same prompt: its files are named
            // by the pack id, and the sink gives each job its own image.
            match (&pack, &v.batch_slot) {
                (Some(p), Some(slot)) => {
                    patch::set(&mut prompt, slot, Value::from(p.size));
                    patch::set_prefixes(&mut prompt, &v.savers, &p.id);
                }
                _ => patch::set_prefixes(&mut prompt, &v.savers, &id),
            }
            let mut params: Vec<(String, Value)> = g
                .params
                .iter()
                .map(|p| {
                    let value = match &p.source {
                        Source::Fixed(v) => v.clone(),
                        Source::Axis { axis, member } => value_of(*axis, *member),
                    };
                    (p.name.clone(), value)
                })
                .collect();
            for (name, choice) in g.choice_cols.iter().zip(&s.choices) {
                if let Some(text) = choice {
                    params.push((name.clone(), Value::String(text.clone())));
                }
            }
            let images = v
                .images
                .iter()
                .map(|(slot, src)| ImageInput {
                    node: NodeId::new(slot.node.clone()),
                    input: slot.input.clone(),
                    path: match src {
                        ImageSource::Fixed(p) => p.clone(),
                        ImageSource::Axis { axis, paths, .. } => paths[idx[*axis]].clone(),
                    },
                })
                .collect();
            self.in_group += 1;
            let job = Job {
                index: self.index,
                id,
                label: format!("{}#{}", g.name, self.in_group),
                workflow: v.workflow.clone(),
                seed,
                params,
                prompt: Prompt(prompt),
                images,
                pack,
                shard_unit,
            };
            self.index += 1;
            return Some(job);
        }
    }
}

/// One cell of a [`Row`]: a JSON value as the manifest gave it, or text.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// A parameter value (strings print bare, others as JSON).
    Json(&'a Value),
    /// A template's text or a choice.
    Text(&'a str),
}

/// One job as a row of `plan --format csv` or `runs.csv`, without its
/// prompt (which the rows never print, and which costs most to build).
#[derive(Debug)]
pub struct Row<'a> {
    /// Position in the plan.
    pub index: usize,
    /// The job id, hex.
    pub id: &'a str,
    /// The group (the `job` column is `group#number`).
    pub group: &'a str,
    /// 1-based number in the group.
    pub number: usize,
    /// The workflow.
    pub workflow: &'a super::Workflow,
    /// The seed, if any.
    pub seed: Option<u64>,
    /// One cell per [`Plan::columns`] entry; `None` where the job has none.
    pub cells: &'a [Option<Cell<'a>>],
    /// The job's pack (`pack:` groups): as [`Job::pack`].
    pub pack: Option<Pack>,
    /// As [`Job::shard_unit`].
    pub shard_unit: usize,
}

/// Where a plan column's value comes from in one group.
#[derive(Clone, Copy)]
enum ColSource {
    Param(usize),
    Choice(usize),
    Absent,
}

impl Plan {
    /// Calls `f` with every job's row, in plan order: the same ids, seeds and
    /// values as [`Plan::jobs`], without building prompts.
    pub fn for_each_row<E>(&self, mut f: impl FnMut(&Row<'_>) -> Result<(), E>) -> Result<(), E> {
        let mut scratch = Scratch::default();
        let mut skip_pos = 0;
        let mut index = 0;
        let mut hexbuf = [0u8; 2 * JOB_ID_BYTES];
        let mut packs = 0usize;
        for g in &self.groups {
            let sources: Vec<ColSource> = self
                .columns
                .iter()
                .map(|c| {
                    if let Some(p) = g.params.iter().position(|p| &p.name == c) {
                        ColSource::Param(p)
                    } else if let Some(i) = g.choice_cols.iter().position(|x| x == c) {
                        ColSource::Choice(i)
                    } else {
                        ColSource::Absent
                    }
                })
                .collect();
            let mut number = 0;
            for local in 0..g.raw_len() {
                let raw = g.raw_start + local;
                if self.skip.get(skip_pos) == Some(&raw) {
                    skip_pos += 1;
                    continue;
                }
                let (vi, seed) = self.decode(g, local, raw, &mut scratch);
                let v = &g.variants[vi];
                let d = digest(g, v, &scratch, seed);
                let _ = hex::encode_to_slice(&d[..JOB_ID_BYTES], &mut hexbuf);
                let id = std::str::from_utf8(&hexbuf).unwrap_or("");
                let s = &scratch;
                let cells: Vec<Option<Cell<'_>>> = sources
                    .iter()
                    .map(|src| match *src {
                        ColSource::Param(p) => Some(match &g.params[p].source {
                            Source::Fixed(v) => Cell::Json(v),
                            Source::Axis { axis, member } => {
                                let m = &g.axes[*axis].members[*member];
                                match m.template {
                                    Some(t) => Cell::Text(&s.exps[t].text),
                                    None => Cell::Json(&m.values[s.idx[*axis]]),
                                }
                            }
                        }),
                        ColSource::Choice(i) => s.choices[i].as_deref().map(Cell::Text),
                        ColSource::Absent => None,
                    })
                    .collect();
                let (pack, shard_unit) = pack_and_unit(g, v, s, seed, index, &mut packs);
                number += 1;
                f(&Row {
                    pack,
                    shard_unit,
                    index,
                    id,
                    group: &g.name,
                    number,
                    workflow: &v.workflow,
                    seed,
                    cells: &cells,
                })?;
                index += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_to_string() {
        for n in [0, 7, 10, 4630144433714857, u64::MAX] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
