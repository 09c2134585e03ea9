//! The template axes of a group: each `templates:` entry compiled against
//! the wildcards folder, checked for void and repeated variants (the
//! reference drops both), or drawn at random; and, per job, the texts and
//! choices of the variant at the job's axis position. Only indices are
//! stored: a template with 10^6 variants is never held in memory.

use std::collections::HashSet;

use super::MAX_JOBS;
use crate::hash::hash64;
use crate::templates::{Expansion, Template, draw_stream};

/// Templates with more variants than this are not checked for repeats (the
/// check holds a hash per variant): `plan` refuses them.
pub(crate) const MAX_CHECKED: u128 = 1 << 22;
/// The most draws of `draw: {random: N}` (each kept draw is remembered to
/// skip repeats).
pub(crate) const MAX_DRAWS: u64 = 1_000_000;

/// One compiled template of a group and where its values go.
#[derive(Debug)]
pub(super) struct TemplateSlot {
    pub(super) template: Template,
    /// The axis it varies on.
    pub(super) axis: usize,
    /// Variant index per axis position, when some variants are dropped
    /// (void or repeated); `None`: position = variant index.
    pub(super) kept: Option<Vec<u64>>,
    /// Template column → the group's choice column.
    pub(super) cols: Vec<usize>,
}

/// `draw: {random: N, seed: S}`: the attempt numbers kept (distinct).
#[derive(Debug)]
pub(super) struct Draws {
    pub(super) seed: u64,
    pub(super) attempts: Vec<u64>,
}

/// Per-job buffers: axis positions, each template's expansion, its text
/// as JSON (for the job id) and the merged choices.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(super) idx: Vec<usize>,
    pub(super) exps: Vec<Expansion>,
    pub(super) encoded: Vec<Vec<u8>>,
    /// Per group choice column: the chosen texts joined by " | ", or None.
    pub(super) choices: Vec<Option<String>>,
    /// The job's place in its pack (`pack:` groups), set by `decode`.
    pub(super) pack: Option<PackPos>,
}

/// Where a packed job sits: its image's index in the latent batch, and
/// how many images its pack holds (the last pack of a group may be short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackPos {
    pub(super) index: u64,
    pub(super) size: u64,
}

/// The variants `draw: all` keeps: `None` when every variant is kept,
/// else the kept indices (first of each text, void ones dropped).
pub(super) fn kept_variants(t: &Template) -> Result<Option<Vec<u64>>, String> {
    let n = t.count();
    if n > u128::from(MAX_JOBS) {
        return Err(format!(
            "it expands to {} variants; the limit is {MAX_JOBS} (use 'draw: {{random: N, seed: S}}' to sample it)",
            show(n)
        ));
    }
    if n > MAX_CHECKED {
        return Err(format!(
            "it expands to {n} variants, more than the {MAX_CHECKED} checked for repeats; split it or use 'draw: {{random: N, seed: S}}'"
        ));
    }
    // One 64-bit hash per variant; only texts whose hashes collide are
    // compared exactly (so a hash collision never drops a variant).
    let mut x = Expansion::text_only();
    let mut hashes = Vec::with_capacity(n as usize);
    let mut void = false;
    for i in 0..n {
        if t.expand(i, &mut x) {
            hashes.push(hash64(&[&x.text]));
        } else {
            void = true;
        }
    }
    hashes.sort_unstable();
    let shared: HashSet<u64> = hashes
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    if hashes.is_empty() {
        // A group of 0 jobs would "run" with exit 0 and nothing done.
        return Err(
            "every variant is void (a {N$$…} that can only pick equal options, as {2$$a|a}): it gives no jobs"
                .into(),
        );
    }
    drop(hashes);
    if !void && shared.is_empty() {
        return Ok(None);
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut kept = Vec::new();
    for i in 0..n {
        if !t.expand(i, &mut x) {
            continue;
        }
        if shared.contains(&hash64(&[&x.text])) && !seen.insert(x.text.clone()) {
            continue;
        }
        kept.push(i as u64);
    }
    Ok(Some(kept))
}

/// A count for messages: exact, or "more than 10^38" when saturated.
fn show(n: u128) -> String {
    if n == u128::MAX {
        "more than 10^38".into()
    } else {
        n.to_string()
    }
}

/// The attempts `draw: {random: count, seed}` keeps: attempt `a` samples
/// every template in order from [`draw_stream`]`(seed, a)`; void draws and
/// repeats of an earlier draw are skipped.
pub(super) fn draw_attempts(ts: &[&Template], count: u64, seed: u64) -> Result<Vec<u64>, String> {
    if count > MAX_DRAWS {
        return Err(format!(
            "random: {count} is more than the {MAX_DRAWS} draws allowed; use 'draw: all' for every variant"
        ));
    }
    let total = ts.iter().fold(1u128, |a, t| a.saturating_mul(t.count()));
    if u128::from(count) > total {
        return Err(format!(
            "random: {count} asks for more draws than the {} variants there are; use 'draw: all'",
            show(total)
        ));
    }
    let limit = count.saturating_mul(20).saturating_add(1000);
    let mut x = Expansion::default();
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(count as usize);
    let mut texts: Vec<String> = vec![String::new(); ts.len()];
    for attempt in 0..limit {
        let mut rng = draw_stream(seed, attempt);
        let mut ok = true;
        for (t, text) in ts.iter().zip(texts.iter_mut()) {
            ok &= t.sample(&mut rng, &mut x);
            text.clone_from(&x.text);
        }
        let parts: Vec<&str> = texts.iter().map(String::as_str).collect();
        if ok && seen.insert(crate::hash::hash128(&parts)) {
            kept.push(attempt);
            if kept.len() as u64 == count {
                return Ok(kept);
            }
        }
    }
    Err(format!(
        "only {} distinct draws found in {limit} attempts; lower 'random:' or use 'draw: all'",
        kept.len()
    ))
}

/// Fills `s` with the template texts and choices of the job at axis
/// positions `s.idx` (of a group with `slots` and maybe `draws`).
pub(super) fn materialize(
    slots: &[TemplateSlot],
    draws: Option<&Draws>,
    choice_cols: usize,
    s: &mut Scratch,
) {
    if slots.is_empty() {
        return;
    }
    s.exps.resize_with(slots.len(), Expansion::default);
    s.encoded.resize_with(slots.len(), Vec::new);
    match draws {
        Some(d) => {
            let pos = s.idx[slots[0].axis];
            let mut rng = draw_stream(d.seed, d.attempts[pos]);
            for (slot, x) in slots.iter().zip(s.exps.iter_mut()) {
                slot.template.sample(&mut rng, x);
            }
        }
        None => {
            for (slot, x) in slots.iter().zip(s.exps.iter_mut()) {
                let pos = s.idx[slot.axis];
                let index = slot.kept.as_ref().map_or(pos as u64, |k| k[pos]);
                slot.template.expand(u128::from(index), x);
            }
        }
    }
    s.choices.clear();
    s.choices.resize(choice_cols, None);
    for (i, slot) in slots.iter().enumerate() {
        let enc = &mut s.encoded[i];
        enc.clear();
        // A JSON string, exactly as `serde_json::to_vec(&Value::String)`.
        let _ = serde_json::to_writer(&mut *enc, &s.exps[i].text);
        for (col, text) in &s.exps[i].choices {
            let c = slot.cols[*col as usize];
            match &mut s.choices[c] {
                Some(prev) => {
                    prev.push_str(" | ");
                    prev.push_str(text);
                }
                none => *none = Some(text.clone()),
            }
        }
    }
}
