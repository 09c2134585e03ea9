//! Building a plan's groups from the manifest: parameters from defaults and
//! sections, axes in expansion order, seeds, and per workflow the resolved
//! targets, checked values, base prompt and job-id recipe. Runs once per
//! (group, workflow); every problem goes to [`Errors`].

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::targets::{Graph, TargetError};
use super::templates::{Draws, TemplateSlot, draw_attempts, kept_variants};
use super::{
    Axis, Group, GroupParam, HashItem, HashValue, ImageSource, MAX_JOBS, Member, PlanError,
    PlanErrorKind, SeedAxis, Source, Variant, Workflow, seeds,
};
use crate::convert::NeedsValue;
use crate::manifest::{
    DrawSpec, JobSpec, Manifest, SeedSpec, Span, TemplateParam, ValueStyle, normalize,
};
use crate::patch::{self, Slot, class_of};
use crate::templates::{Origin, Template, TemplateError, Wildcards, place};

/// A workflow as shared by the groups using it: metadata, nodes, and the
/// inputs its conversion left for the manifest to set.
pub(super) type LoadedWorkflow = (Arc<Workflow>, Map<String, Value>, Vec<NeedsValue>);

/// Collects errors with their context (manifest file, group, workflow).
pub(super) struct Errors<'m> {
    pub(super) file: &'m Path,
    pub(super) list: Vec<PlanError>,
}

impl Errors<'_> {
    /// A template problem: in the manifest (placed inside the template
    /// text when it is on one line) or in a wildcard file.
    fn template(&mut self, tp: &TemplateParam, group: &str, e: TemplateError) {
        let (file, at, detail) = match &e.origin {
            Origin::Template(offset) => {
                let (line, col) = place(&tp.text, *offset);
                match tp.value_at {
                    Some((v, style)) if line == 1 && style != ValueStyle::Block => {
                        let quote = usize::from(style == ValueStyle::Quoted);
                        (
                            self.file.to_owned(),
                            Span {
                                line: v.line,
                                col: v.col + quote + col - 1,
                            },
                            e.kind.to_string(),
                        )
                    }
                    _ => (
                        self.file.to_owned(),
                        tp.at,
                        format!("{} (line {line}, column {col} of the template)", e.kind),
                    ),
                }
            }
            Origin::File { path, line, col } => (
                path.clone(),
                Span {
                    line: *line,
                    col: *col,
                },
                e.kind.to_string(),
            ),
        };
        self.list.push(PlanError {
            file,
            at,
            group: group.to_owned(),
            workflow: None,
            kind: PlanErrorKind::Template {
                name: tp.name.clone(),
                detail,
            },
        });
    }

    pub(super) fn push(
        &mut self,
        at: Span,
        group: &str,
        workflow: Option<&str>,
        kind: PlanErrorKind,
    ) {
        self.list.push(PlanError {
            file: self.file.to_owned(),
            at,
            group: group.to_owned(),
            workflow: workflow.map(str::to_owned),
            kind,
        });
    }
}

/// The sha256 of a file's content (zeros when unreadable: the plan reports
/// the missing file anyway).
fn file_digest(path: &std::path::Path) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = std::fs::File::open(path).and_then(|mut f| {
        loop {
            match f.read(&mut buf)? {
                0 => return Ok(()),
                n => hasher.update(&buf[..n]),
            }
        }
    });
    match read {
        Ok(()) => hasher.finalize().into(),
        Err(_) => [0; 32],
    }
}

/// A fixed image input's id bytes: tagged, so no JSON value hashes alike.
fn content_bytes(digest: &[u8; 32]) -> Vec<u8> {
    let mut bytes = b"sha256:".to_vec();
    bytes.extend_from_slice(digest);
    bytes
}

/// Canonical JSON of a value, as hashed into job ids.
fn encode(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Whether an axis over `name` switches models (checkpoint), directly or
/// through an alias: such axes go outermost so the server reloads rarely.
fn is_expensive(name: &str, aliases: &[(String, String)]) -> bool {
    let model = |n: &str| n == "checkpoint" || n.ends_with(".ckpt_name");
    model(name) || aliases.iter().any(|(a, t)| a == name && model(t))
}

/// Builds one group: parameters, axes, seeds and one variant per workflow.
/// Problems go to `errors`; `None` when the group cannot be planned.
pub(super) fn plan_group(
    manifest: &Manifest,
    spec: &JobSpec,
    gi: usize,
    aliases: &[(String, String)],
    variants_src: Vec<LoadedWorkflow>,
    wildcards: &mut Wildcards,
    errors: &mut Errors<'_>,
) -> Option<Group> {
    let before = errors.list.len();
    let gname = spec.name.as_str();
    let mut sections = Sections::new(manifest, gname);
    sections.read(spec, wildcards, errors);
    let Sections {
        mut params,
        axes,
        mut slots,
        draws,
        choice_cols,
        ..
    } = sections;
    let axes = order_axes(axes, &mut params, &mut slots, aliases);
    let seeds = seed_axis(spec, gname, errors);
    // A pack's images differ only by their seed's place: without a seed
    // list there is no place to take.
    if spec.pack.is_some() && spec.seeds.is_none() {
        errors.push(
            spec.pack_at,
            gname,
            None,
            PlanErrorKind::Pack(
                "pack: groups the jobs of a seed list; give seeds: (a list, {count, base} or {range})"
                    .into(),
            ),
        );
    }

    // Variants.
    let mut variants = Vec::new();
    for (wf, nodes, needs) in variants_src {
        if let Some(v) = plan_variant(
            manifest, spec, aliases, &params, &axes, wf, nodes, &needs, errors,
        ) {
            variants.push(v);
        }
    }
    if errors.list.len() > before || variants.is_empty() {
        return None;
    }
    let seeds = if variants.iter().all(|v| v.seed_slots.is_empty()) {
        SeedAxis::None
    } else {
        seeds
    };
    let per_variant = axes
        .iter()
        .fold(seeds.len(), |n, a| n.saturating_mul(a.len as u64));
    Some(Group {
        name: spec.name.clone(),
        index: gi,
        raw_start: 0,
        per_variant,
        variants,
        axes,
        seeds,
        params,
        templates: slots,
        draws,
        choice_cols,
        pack: spec.pack,
    })
}

/// A group's parameters and axes as its sections add them: the defaults
/// first, then `set:`, `matrix:`, `zip:` and `templates:` in file order.
struct Sections<'s> {
    gname: &'s str,
    params: Vec<GroupParam>,
    axes: Vec<Axis>,
    slots: Vec<TemplateSlot>,
    draws: Option<Draws>,
    choice_cols: Vec<String>,
}

impl<'s> Sections<'s> {
    /// The manifest's defaults, before any section.
    fn new(manifest: &Manifest, gname: &'s str) -> Self {
        // Parameters: defaults, then the group's sections in file order.
        let params: Vec<GroupParam> = manifest
            .defaults
            .iter()
            .map(|p| GroupParam {
                name: p.name.clone(),
                at: p.at,
                source: Source::Fixed(p.value.clone()),
                from_defaults: true,
            })
            .collect();
        Sections {
            gname,
            params,
            axes: Vec::new(),
            slots: Vec::new(),
            draws: None,
            choice_cols: Vec::new(),
        }
    }

    /// Adds a parameter (or overrides a default); its index, or None on error.
    fn add(
        &mut self,
        name: &str,
        at: Span,
        source: Source,
        errors: &mut Errors<'_>,
    ) -> Option<usize> {
        let (params, gname) = (&mut self.params, self.gname);
        if let Some(i) = params.iter().position(|p| p.name == name) {
            let existing = &mut params[i];
            if existing.from_defaults {
                existing.source = source;
                existing.at = at;
                existing.from_defaults = false;
                return Some(i);
            }
            errors.push(
                at,
                gname,
                None,
                PlanErrorKind::Conflict {
                    name: name.to_owned(),
                    detail: format!("it is already given at line {}", existing.at.line),
                },
            );
            return None;
        }
        params.push(GroupParam {
            name: name.to_owned(),
            at,
            source,
            from_defaults: false,
        });
        Some(params.len() - 1)
    }

    /// Reads the group's sections.
    fn read(&mut self, spec: &JobSpec, wildcards: &mut Wildcards, errors: &mut Errors<'_>) {
        // Sections in file order (axes keep manifest order).
        let mut sections: Vec<(&str, Span)> = Vec::new();
        if let Some(p) = spec.set.first() {
            sections.push(("set", p.at));
        }
        if let Some(l) = spec.matrix.first() {
            sections.push(("matrix", l.at));
        }
        if !spec.zip.is_empty() {
            sections.push(("zip", spec.zip_at));
        }
        if !spec.templates.is_empty() {
            sections.push(("templates", spec.templates_at));
        }
        sections.sort_by_key(|(_, at)| *at);
        for (section, _) in sections {
            match section {
                "set" => self.set(spec, errors),
                "templates" => self.templates(spec, wildcards, errors),
                "matrix" => self.matrix(spec, errors),
                _ => self.zip(spec, errors),
            }
        }
    }

    /// `set:`: fixed values.
    fn set(&mut self, spec: &JobSpec, errors: &mut Errors<'_>) {
        for p in &spec.set {
            self.add(&p.name, p.at, Source::Fixed(p.value.clone()), errors);
        }
    }

    /// `templates:`: each compiled, then one axis per template, or one
    /// axis of draws for them all.
    fn templates(&mut self, spec: &JobSpec, wildcards: &mut Wildcards, errors: &mut Errors<'_>) {
        let mut compiled = Vec::new();
        for tp in &spec.templates {
            match Template::compile(&tp.text, wildcards) {
                Ok(t) => compiled.push((tp, t)),
                Err(e) => errors.template(tp, self.gname, e),
            }
        }
        if compiled.len() != spec.templates.len() {
            return;
        }
        match spec.draw {
            DrawSpec::All => self.templates_all(compiled, errors),
            DrawSpec::Random { count, seed } => {
                self.templates_random(spec, compiled, count, seed, errors)
            }
        }
    }

    /// `draw: all`: one axis per template, over its kept variants.
    fn templates_all(
        &mut self,
        compiled: Vec<(&TemplateParam, Template)>,
        errors: &mut Errors<'_>,
    ) {
        for (tp, t) in compiled {
            let kept = match kept_variants(&t) {
                Ok(k) => k,
                Err(detail) => {
                    errors.push(
                        tp.at,
                        self.gname,
                        None,
                        PlanErrorKind::Template {
                            name: tp.name.clone(),
                            detail,
                        },
                    );
                    continue;
                }
            };
            let len = kept.as_ref().map_or(t.count() as usize, Vec::len);
            let axis = self.axes.len();
            if let Some(param) = self.add(&tp.name, tp.at, Source::Axis { axis, member: 0 }, errors)
            {
                let slot = self.add_slot(t, axis, kept);
                self.axes.push(Axis {
                    len,
                    members: vec![Member {
                        param,
                        template: Some(slot),
                        values: Vec::new(),
                        encoded: Vec::new(),
                    }],
                });
            }
        }
    }

    /// `draw: {random: N, seed: S}`: one axis of N draws for all the templates.
    fn templates_random(
        &mut self,
        spec: &JobSpec,
        compiled: Vec<(&TemplateParam, Template)>,
        count: u64,
        seed: u64,
        errors: &mut Errors<'_>,
    ) {
        let ts: Vec<&Template> = compiled.iter().map(|(_, t)| t).collect();
        let attempts = match draw_attempts(&ts, count, seed) {
            Ok(a) => a,
            Err(detail) => {
                errors.push(
                    spec.draw_at,
                    self.gname,
                    None,
                    PlanErrorKind::Template {
                        name: compiled[0].0.name.clone(),
                        detail,
                    },
                );
                return;
            }
        };
        let axis = self.axes.len();
        let mut members = Vec::new();
        for (tp, t) in compiled {
            let member = members.len();
            if let Some(param) = self.add(&tp.name, tp.at, Source::Axis { axis, member }, errors) {
                let slot = self.add_slot(t, axis, None);
                members.push(Member {
                    param,
                    template: Some(slot),
                    values: Vec::new(),
                    encoded: Vec::new(),
                });
            }
        }
        self.axes.push(Axis {
            len: attempts.len(),
            members,
        });
        self.draws = Some(Draws { seed, attempts });
    }

    /// A template's slot, its choice columns shared with the group's other
    /// templates; its index.
    fn add_slot(&mut self, template: Template, axis: usize, kept: Option<Vec<u64>>) -> usize {
        let (slots, choice_cols) = (&mut self.slots, &mut self.choice_cols);
        let cols = template
            .columns()
            .iter()
            .map(|c| match choice_cols.iter().position(|x| x == c) {
                Some(i) => i,
                None => {
                    choice_cols.push(c.clone());
                    choice_cols.len() - 1
                }
            })
            .collect();
        slots.push(TemplateSlot {
            template,
            axis,
            kept,
            cols,
        });
        slots.len() - 1
    }

    /// `matrix:`: one axis per list.
    fn matrix(&mut self, spec: &JobSpec, errors: &mut Errors<'_>) {
        for l in &spec.matrix {
            let axis = self.axes.len();
            if let Some(param) = self.add(&l.name, l.at, Source::Axis { axis, member: 0 }, errors) {
                self.axes.push(Axis {
                    len: l.values.len(),
                    members: vec![Member {
                        param,
                        template: None,
                        encoded: l.values.iter().map(encode).collect(),
                        values: l.values.clone(),
                    }],
                });
            }
        }
    }

    /// `zip:`: one axis for all its lists, of equal lengths.
    fn zip(&mut self, spec: &JobSpec, errors: &mut Errors<'_>) {
        let lens: Vec<(String, usize)> = spec
            .zip
            .iter()
            .map(|l| (l.name.clone(), l.values.len()))
            .collect();
        if lens.iter().any(|(_, n)| *n != lens[0].1) {
            errors.push(
                spec.zip_at,
                self.gname,
                None,
                PlanErrorKind::ZipLength { lists: lens },
            );
            return;
        }
        let axis = self.axes.len();
        let mut members = Vec::new();
        for l in &spec.zip {
            let member = members.len();
            if let Some(param) = self.add(&l.name, l.at, Source::Axis { axis, member }, errors) {
                members.push(Member {
                    param,
                    template: None,
                    encoded: l.values.iter().map(encode).collect(),
                    values: l.values.clone(),
                });
            }
        }
        self.axes.push(Axis {
            len: lens[0].1,
            members,
        });
    }
}

/// The group's axes in their order; `params` and `slots` follow them.
fn order_axes(
    axes: Vec<Axis>,
    params: &mut [GroupParam],
    slots: &mut [TemplateSlot],
    aliases: &[(String, String)],
) -> Vec<Axis> {
    // Axis order: checkpoint axes outermost, then manifest order.
    let mut order: Vec<usize> = (0..axes.len()).collect();
    order.sort_by_key(|a| {
        let expensive = axes[*a]
            .members
            .iter()
            .any(|m| is_expensive(&params[m.param].name, aliases));
        !expensive
    });
    let mut remap = vec![0; axes.len()];
    for (new, old) in order.iter().enumerate() {
        remap[*old] = new;
    }
    let mut taken: Vec<Option<Axis>> = axes.into_iter().map(Some).collect();
    let axes: Vec<Axis> = order.iter().filter_map(|o| taken[*o].take()).collect();
    for slot in slots.iter_mut() {
        slot.axis = remap[slot.axis];
    }
    for p in params.iter_mut() {
        if let Source::Axis { axis, .. } = &mut p.source {
            *axis = remap[*axis];
        }
    }
    // Member indices follow the member order in each axis.
    for (a, axis) in axes.iter().enumerate() {
        for (m, member) in axis.members.iter().enumerate() {
            if let Some(p) = params.get_mut(member.param) {
                p.source = Source::Axis { axis: a, member: m };
            }
        }
    }
    axes
}

/// The group's seeds: its `seeds:`, or fresh ones without it.
fn seed_axis(spec: &JobSpec, gname: &str, errors: &mut Errors<'_>) -> SeedAxis {
    match &spec.seeds {
        Some(SeedSpec::List(v)) => SeedAxis::List(v.clone()),
        Some(SeedSpec::Count { count, base }) => {
            if *count > MAX_JOBS {
                errors.push(
                    spec.seeds_at,
                    gname,
                    None,
                    PlanErrorKind::Seeds(format!("count {count} exceeds {MAX_JOBS}")),
                );
                SeedAxis::None
            } else {
                SeedAxis::List(seeds::from_base(*base, *count))
            }
        }
        Some(SeedSpec::Range { start, end }) => {
            let len = u128::from(*end) - u128::from(*start) + 1;
            if len > u128::from(MAX_JOBS) {
                errors.push(
                    spec.seeds_at,
                    gname,
                    None,
                    PlanErrorKind::Seeds(format!(
                        "range [{start}, {end}] holds {len} seeds, more than {MAX_JOBS}"
                    )),
                );
                SeedAxis::None
            } else {
                SeedAxis::Range {
                    start: *start,
                    len: len as u64,
                }
            }
        }
        None => SeedAxis::Fresh,
    }
}

/// Resolves and checks every parameter of a group against one workflow.
#[expect(clippy::too_many_arguments, reason = "one call site, all context")]
fn plan_variant(
    manifest: &Manifest,
    spec: &JobSpec,
    aliases: &[(String, String)],
    params: &[GroupParam],
    axes: &[Axis],
    wf: Arc<Workflow>,
    nodes: Map<String, Value>,
    needs: &[NeedsValue],
    errors: &mut Errors<'_>,
) -> Option<Variant> {
    let before = errors.list.len();
    let gname = spec.name.as_str();
    let wname = Some(wf.name.as_str());
    let graph = Graph::new(&nodes);
    let target_error = |name: &str, e: TargetError| match e {
        TargetError::Unknown { suggestion } => PlanErrorKind::UnknownParameter {
            name: name.to_owned(),
            suggestion,
        },
        TargetError::Ambiguous { why, candidates } => PlanErrorKind::AmbiguousTarget {
            name: name.to_owned(),
            why,
            candidates,
        },
        TargetError::Input(detail) | TargetError::NotFound(detail) => PlanErrorKind::BadTarget {
            name: name.to_owned(),
            detail,
        },
    };
    // The seed input.
    let mut seed_unresolved = false;
    let seed_slots = match graph.resolve("seed", aliases) {
        Ok(slots) => slots,
        Err(TargetError::Unknown { .. } | TargetError::NotFound(_)) => Vec::new(),
        Err(e) => {
            seed_unresolved = true;
            errors.push(spec.seeds_at, gname, wname, target_error("seed", e));
            Vec::new()
        }
    };
    for slot in &seed_slots {
        if let Err(e) = patch::check(&nodes, slot, &Value::from(0u64)) {
            errors.push(
                spec.seeds_at,
                gname,
                wname,
                PlanErrorKind::WrongType {
                    name: "seed".into(),
                    detail: e.to_string(),
                },
            );
        }
    }
    if seed_slots.is_empty() && spec.seeds.is_some() && !seed_unresolved {
        errors.push(
            spec.seeds_at,
            gname,
            wname,
            PlanErrorKind::Seeds(
                "the workflow has no seed input (add an alias 'seed: ID.input' under params:)"
                    .into(),
            ),
        );
    }
    let mut base = nodes.clone();
    let mut setters = Vec::new();
    let mut hash = Vec::new();
    let mut taken: Vec<(Slot, &str)> = seed_slots.iter().map(|s| (s.clone(), "the seed")).collect();
    let mut user_prefix = Vec::new();
    let mut images = Vec::new();
    for p in params {
        let at = p.at;
        let slots = match graph.resolve(&p.name, aliases) {
            Ok(s) => s,
            Err(e) => {
                errors.push(at, gname, wname, target_error(&p.name, e));
                continue;
            }
        };
        // A template's texts are strings; checked with an empty one.
        let empty = Value::String(String::new());
        let is_template = matches!(&p.source, Source::Axis { axis, member } if axes[*axis].members[*member].template.is_some());
        let values: Vec<&Value> = match &p.source {
            Source::Fixed(v) => vec![v],
            Source::Axis { .. } if is_template => vec![&empty],
            Source::Axis { axis, member } => axes[*axis].members[*member].values.iter().collect(),
        };
        for slot in &slots {
            if let Some((_, other)) = taken.iter().find(|(s, _)| s == slot) {
                errors.push(
                    at,
                    gname,
                    wname,
                    PlanErrorKind::Conflict {
                        name: p.name.clone(),
                        detail: format!(
                            "it sets input '{}' of node {}, as {other} does",
                            slot.input, slot.node
                        ),
                    },
                );
                continue;
            }
            taken.push((slot.clone(), &p.name));
            // Check every value once, report the first wrong one.
            if let Some(e) = values
                .iter()
                .find_map(|v| patch::check(&nodes, slot, v).err())
            {
                if let (true, patch::PatchError::WrongType { expected, .. }) = (is_template, &e) {
                    // Checked with an empty text the user never wrote.
                    errors.push(
                        at,
                        gname,
                        wname,
                        PlanErrorKind::Template {
                            name: p.name.clone(),
                            detail: format!(
                                "a template gives text, but input '{}' of node {} takes a {expected}; give its values with matrix: or set:",
                                slot.input, slot.node
                            ),
                        },
                    );
                    continue;
                }
                errors.push(
                    at,
                    gname,
                    wname,
                    PlanErrorKind::WrongType {
                        name: p.name.clone(),
                        detail: e.to_string(),
                    },
                );
                continue;
            }
            // null is the marker `convert` leaves in a live input, not a
            // value: the server would run it as no image.
            if values.iter().any(|v| v.is_null())
                && needs
                    .iter()
                    .any(|n| n.node == slot.node && n.input == slot.input)
            {
                errors.push(
                    at,
                    gname,
                    wname,
                    PlanErrorKind::WrongType {
                        name: p.name.clone(),
                        detail: format!(
                            "input '{}' of node {} needs a value, which null is not",
                            slot.input, slot.node
                        ),
                    },
                );
                continue;
            }
            let class = nodes.get(&slot.node).map(class_of).unwrap_or("");
            // Any saver's prefix (video, audio… too): the user's own is kept.
            if slot.input == "filename_prefix" {
                user_prefix.push(slot.node.clone());
            }
            if slot.input == "image" && class.starts_with("LoadImage") && is_template {
                errors.push(
                    at,
                    gname,
                    wname,
                    PlanErrorKind::Template {
                        name: p.name.clone(),
                        detail: "an image input takes a file, not a template".into(),
                    },
                );
                continue;
            }
            let mut content: Option<Vec<[u8; 32]>> = None;
            if slot.input == "image" && class.starts_with("LoadImage") {
                let resolve = |v: &Value| normalize(&manifest.dir.join(v.as_str().unwrap_or("")));
                let mut paths = Vec::new();
                for v in &values {
                    let path = resolve(v);
                    // A file listed twice is one problem.
                    if paths.contains(&path) {
                        paths.push(path);
                        continue;
                    }
                    if path.is_dir() {
                        errors.push(
                            at,
                            gname,
                            wname,
                            PlanErrorKind::ImageIsDirectory {
                                name: p.name.clone(),
                                path: path.clone(),
                            },
                        );
                    } else if !path.is_file() {
                        errors.push(
                            at,
                            gname,
                            wname,
                            PlanErrorKind::MissingImage {
                                name: p.name.clone(),
                                path: path.clone(),
                            },
                        );
                    }
                    paths.push(path);
                }
                // The job id follows the image's content, not its path: an
                // edited input is a new job, a moved one is not.
                content = Some(paths.iter().map(|p| file_digest(p)).collect());
                let src = match &p.source {
                    Source::Fixed(_) => ImageSource::Fixed(paths.remove(0)),
                    Source::Axis { axis, .. } => ImageSource::Axis { axis: *axis, paths },
                };
                images.push((slot.clone(), src));
            }
            let mut key = slot.node.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(slot.input.as_bytes());
            key.push(0);
            match (&p.source, content) {
                (Source::Fixed(v), content) => {
                    patch::set(&mut base, slot, v.clone());
                    let value = match content {
                        Some(digests) => content_bytes(&digests[0]),
                        None => encode(v),
                    };
                    hash.push(HashItem {
                        key,
                        value: HashValue::Fixed(value),
                    });
                }
                (Source::Axis { axis, member }, content) => {
                    setters.push((slot.clone(), *axis, *member));
                    let value = match content {
                        Some(digests) => HashValue::Content {
                            axis: *axis,
                            digests,
                        },
                        None => HashValue::Axis {
                            axis: *axis,
                            member: *member,
                        },
                    };
                    hash.push(HashItem { key, value });
                }
            }
        }
    }
    // A live input (a camera frame…) the manifest does not set: the
    // server would reject the job, so the plan does first.
    for need in needs {
        if !taken
            .iter()
            .any(|(s, _)| s.node == need.node && s.input == need.input)
        {
            // The detail names the file, as the other workflow errors do.
            errors.push(
                spec.workflow_at,
                gname,
                None,
                PlanErrorKind::Workflow {
                    name: wf.name.clone(),
                    detail: format!(
                        "{}: {need}; set it in the manifest ('{}.{}')",
                        wf.path.display(),
                        need.node,
                        need.input
                    ),
                },
            );
        }
    }
    if errors.list.len() > before {
        return None;
    }
    let batch_slot = match spec.pack {
        Some(_) => match pack_refusal(&graph, &nodes, aliases, &taken) {
            Ok(slot) => Some(slot),
            Err(detail) => {
                errors.push(spec.pack_at, gname, wname, PlanErrorKind::Pack(detail));
                return None;
            }
        },
        None => None,
    };
    hash.sort_by(|a, b| a.key.cmp(&b.key));
    let savers = patch::save_image_nodes(&nodes)
        .into_iter()
        .filter(|n| !user_prefix.contains(n))
        .collect();
    Some(Variant {
        workflow: wf,
        base,
        setters,
        seed_slots,
        hash,
        savers,
        images,
        batch_slot,
    })
}

/// The latent `batch_size` a pack sets, or why the graph cannot take a
/// pack (one line naming the node): an input image (img2img), no latent
/// source with a `batch_size` (found as the `batch_size` parameter is), a
/// `batch_size` the manifest sets itself (`taken`), or an output that is
/// not one file per batch item.
fn pack_refusal(
    graph: &Graph<'_>,
    nodes: &Map<String, Value>,
    aliases: &[(String, String)],
    taken: &[(Slot, &str)],
) -> Result<Slot, String> {
    for (id, node) in nodes {
        let class = class_of(node);
        if class.starts_with("LoadImage") {
            return Err(format!(
                "node {} loads an input image (img2img): a pack's images come from one empty latent",
                graph.describe(id)
            ));
        }
    }
    let slot = match graph.resolve("batch_size", aliases) {
        Ok(slots) if slots.len() == 1 => slots[0].clone(),
        Ok(_) | Err(_) => {
            let samplers = graph.samplers();
            return Err(match samplers.first() {
                Some(s) => format!(
                    "no latent source with a 'batch_size' feeds the sampler {}",
                    graph.describe(s)
                ),
                None => "no sampler and no latent source with a 'batch_size'".into(),
            });
        }
    };
    if let Some((_, name)) = taken.iter().find(|(s, _)| *s == slot) {
        return Err(format!(
            "'{name}' sets input 'batch_size' of node {}, which pack: sets to the pack's size",
            graph.describe(&slot.node)
        ));
    }
    for (id, node) in nodes {
        let class = class_of(node);
        let per_item = matches!(class, "SaveImage" | "PreviewImage");
        let saves = node
            .get("inputs")
            .and_then(|i| i.get("filename_prefix"))
            .is_some()
            || class.contains("Websocket");
        if saves && !per_item {
            return Err(format!(
                "the output node {} does not write one file per batch item (SaveImage and PreviewImage do)",
                graph.describe(id)
            ));
        }
    }
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_axes_are_expensive_directly_or_by_alias() {
        let aliases = vec![("model".to_owned(), "Load Checkpoint.ckpt_name".to_owned())];
        assert!(is_expensive("checkpoint", &aliases));
        assert!(is_expensive("4.ckpt_name", &aliases));
        assert!(is_expensive("model", &aliases));
        assert!(!is_expensive("cfg", &aliases));
    }
}
