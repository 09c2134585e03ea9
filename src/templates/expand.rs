//! Compiling a parsed template (wildcards read, variables bound) into a
//! small arena of nodes that knows how many variants each part has, so a
//! variant is computed from its index alone (mixed radix; `{k$$…}` by
//! unranking weighted combinations): nothing is enumerated or stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use rand::Rng;
use rand_chacha::ChaCha20Rng;

use super::parse::{self, Ast, VariantAst, same};
use super::wildcards::{Entry, Wildcards};
use super::{TemplateError, TemplateErrorKind as K};

pub(crate) type NodeId = u32;

/// Most nodes a template may compile to (wildcards and variables are
/// inlined): a guard against a folder of huge files nested in each other.
const MAX_NODES: usize = 2_000_000;
/// Longest text a variant may resolve to, in bytes (wildcards that name
/// each other twice per entry double the text at every level).
pub(crate) const MAX_TEXT: u64 = 1_000_000;
/// Most cells (u128) of all `{k$$…}` unranking tables of one template,
/// together (256 MiB): each is (options + 1) × (max + 1).
const MAX_TABLE_CELLS: usize = 16_000_000;
/// Deepest chain of wildcards naming wildcards.
const MAX_NESTING: usize = 64;

#[derive(Debug)]
enum Node {
    Text(Box<str>),
    Seq {
        parts: Box<[NodeId]>,
        /// Product of the counts of the parts after each one.
        strides: Box<[u128]>,
    },
    Pick(Box<Pick>),
    /// Records the text `inner` produced under column `col`.
    Choice {
        col: u32,
        inner: NodeId,
    },
    /// An immediate variable (`${x=!…}`): expanded once, into a slot.
    Bind {
        slot: u32,
        col: u32,
        value: NodeId,
    },
    Ref {
        slot: u32,
    },
}

#[derive(Debug)]
struct Pick {
    options: Box<[NodeId]>,
    weights: Box<[f64]>,
    /// Options written the same share a class: never picked together.
    class: Box<[u32]>,
    counts: Box<[u128]>,
    /// `prefix[i]`: variants of the options before `i` (one pick).
    prefix: Box<[u128]>,
    min: usize,
    max: usize,
    sep: Box<str>,
    /// `table[i * (max + 1) + j]` = e_j(counts[i..]) (elementary symmetric
    /// sums), for unranking several picks; empty when `max < 2`.
    table: Box<[u128]>,
    /// Variants with exactly `min + i` picks: `k! * e_k`.
    per_k: Box<[u128]>,
}

/// A compiled template: the node arena, its variant count and the names
/// of the columns its choices are logged under.
#[derive(Debug)]
pub struct Template {
    nodes: Vec<Node>,
    counts: Vec<u128>,
    root: NodeId,
    columns: Vec<String>,
    slots: usize,
}

/// Reusable buffers for expanding one variant: its text and choices.
#[derive(Debug, Default)]
pub struct Expansion {
    /// The resolved text.
    pub text: String,
    /// (column index into [`Template::columns`], chosen text), in order.
    pub choices: Vec<(u32, String)>,
    vars: Vec<String>,
    /// Skip recording choices (when only the texts matter).
    text_only: bool,
}

impl Expansion {
    /// Buffers that record the text only, not the choices (faster).
    pub fn text_only() -> Expansion {
        Expansion {
            text_only: true,
            ..Expansion::default()
        }
    }
}

impl Template {
    /// How many variants `draw: all` gives (saturating at `u128::MAX`);
    /// some may repeat (the reference removes repeats, as `plan` does).
    pub fn count(&self) -> u128 {
        self.counts[self.root as usize]
    }

    /// Column names of the choices: wildcard names and variable names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Writes variant `index` (< [`Template::count`]) into `x`. False when
    /// the variant is void (a `{2$$…}` that picked two equal texts, which
    /// the reference drops).
    pub fn expand(&self, index: u128, x: &mut Expansion) -> bool {
        x.text.clear();
        x.choices.clear();
        x.vars.clear();
        x.vars.resize(self.slots, String::new());
        let mut out = std::mem::take(&mut x.text);
        let ok = self.decode(self.root, index, &mut out, x);
        x.text = out;
        ok
    }

    /// Writes one random variant drawn from `rng` into `x` (weights
    /// honoured). False when the draw is void (see [`Template::expand`]).
    pub fn sample(&self, rng: &mut ChaCha20Rng, x: &mut Expansion) -> bool {
        x.text.clear();
        x.choices.clear();
        x.vars.clear();
        x.vars.resize(self.slots, String::new());
        let mut out = std::mem::take(&mut x.text);
        let ok = self.draw(self.root, rng, &mut out, x);
        x.text = out;
        ok
    }

    fn decode(&self, id: NodeId, index: u128, out: &mut String, x: &mut Expansion) -> bool {
        match &self.nodes[id as usize] {
            Node::Text(t) => {
                out.push_str(t);
                true
            }
            Node::Seq { parts, strides } => {
                let mut ok = true;
                for (p, stride) in parts.iter().zip(strides.iter()) {
                    let n = self.counts[*p as usize].max(1);
                    ok &= self.decode(*p, (index / stride) % n, out, x);
                }
                ok
            }
            Node::Pick(pick) => self.decode_pick(pick, index, out, x),
            Node::Choice { col, inner } => {
                let start = out.len();
                let ok = self.decode(*inner, index, out, x);
                if !x.text_only {
                    x.choices.push((*col, out[start..].to_owned()));
                }
                ok
            }
            Node::Bind { slot, col, value } => {
                let mut buf = String::new();
                let ok = self.decode(*value, index, &mut buf, x);
                x.choices.push((*col, buf.clone()));
                x.vars[*slot as usize] = buf;
                ok
            }
            Node::Ref { slot } => {
                out.push_str(&x.vars[*slot as usize]);
                true
            }
        }
    }

    fn decode_pick(&self, pick: &Pick, index: u128, out: &mut String, x: &mut Expansion) -> bool {
        if pick.min == 1 && pick.max == 1 {
            // The common case: one option, found by binary search.
            let i = pick.prefix.partition_point(|p| *p <= index) - 1;
            return self.decode(pick.options[i], index - pick.prefix[i], out, x);
        }
        let mut index = index;
        let mut k = pick.min;
        for (i, n) in pick.per_k.iter().enumerate() {
            k = pick.min + i;
            if index < *n {
                break;
            }
            index -= n;
        }
        let fact = factorial(k);
        let perm = (index % fact) as usize;
        let mut rest = index / fact;
        let width = pick.max + 1;
        let n = pick.options.len();
        let mut chosen: Vec<(usize, u128)> = Vec::with_capacity(k);
        let mut j = k;
        for i in 0..n {
            if j == 0 {
                break;
            }
            let without = pick.table[(i + 1) * width + j];
            if rest < without {
                continue;
            }
            rest -= without;
            let c = pick.counts[i].max(1);
            chosen.push((i, rest % c));
            rest /= c;
            j -= 1;
        }
        // The order of the picks: the permutation of rank `perm`.
        let mut order = Vec::with_capacity(k);
        let mut pool: Vec<(usize, u128)> = chosen;
        let mut p = perm;
        for m in (1..=pool.len()).rev() {
            let f = factorial(m - 1) as usize;
            order.push(pool.remove(p / f.max(1)));
            p %= f.max(1);
        }
        let mut texts = Vec::with_capacity(k);
        let mut ok = true;
        for (i, inner) in &order {
            let mut s = String::new();
            ok &= self.decode(pick.options[*i], *inner, &mut s, x);
            texts.push(s);
        }
        let classes: Vec<u32> = order.iter().map(|(i, _)| pick.class[*i]).collect();
        ok && join(&texts, &classes, &pick.sep, out)
    }

    fn draw(&self, id: NodeId, rng: &mut ChaCha20Rng, out: &mut String, x: &mut Expansion) -> bool {
        match &self.nodes[id as usize] {
            Node::Text(t) => {
                out.push_str(t);
                true
            }
            Node::Seq { parts, .. } => {
                let mut ok = true;
                for p in parts.iter() {
                    ok &= self.draw(*p, rng, out, x);
                }
                ok
            }
            Node::Pick(pick) => {
                let k = if pick.min == pick.max {
                    pick.min
                } else {
                    pick.min + uniform(rng, (pick.max - pick.min + 1) as u64) as usize
                };
                let mut left: Vec<usize> = (0..pick.options.len()).collect();
                let mut texts = Vec::with_capacity(k);
                let mut classes = Vec::with_capacity(k);
                let mut ok = true;
                for _ in 0..k {
                    let weights: Vec<f64> = left.iter().map(|i| pick.weights[*i]).collect();
                    let at = weighted(rng, &weights);
                    let i = left.remove(at);
                    if k == 1 {
                        return self.draw(pick.options[i], rng, out, x);
                    }
                    let mut s = String::new();
                    ok &= self.draw(pick.options[i], rng, &mut s, x);
                    texts.push(s);
                    classes.push(pick.class[i]);
                }
                ok && join(&texts, &classes, &pick.sep, out)
            }
            Node::Choice { col, inner } => {
                let start = out.len();
                let ok = self.draw(*inner, rng, out, x);
                x.choices.push((*col, out[start..].to_owned()));
                ok
            }
            Node::Bind { slot, col, value } => {
                let mut buf = String::new();
                let ok = self.draw(*value, rng, &mut buf, x);
                x.choices.push((*col, buf.clone()));
                x.vars[*slot as usize] = buf;
                ok
            }
            Node::Ref { slot } => {
                out.push_str(&x.vars[*slot as usize]);
                true
            }
        }
    }
}

/// Joins picked texts as the reference does: void when two picks are the
/// same option or the same text; one pick is itself; otherwise joined by
/// `sep`, with one leading and one trailing `sep` removed.
fn join(texts: &[String], classes: &[u32], sep: &str, out: &mut String) -> bool {
    for i in 0..texts.len() {
        for j in 0..i {
            if classes[i] == classes[j] || texts[i] == texts[j] {
                return false;
            }
        }
    }
    if texts.len() == 1 {
        out.push_str(&texts[0]);
        return true;
    }
    let joined = texts.join(sep);
    let mut s = joined.as_str();
    if !sep.is_empty() {
        s = s.strip_prefix(sep).unwrap_or(s);
        s = s.strip_suffix(sep).unwrap_or(s);
    }
    out.push_str(s);
    true
}

fn factorial(k: usize) -> u128 {
    (1..=k as u128).fold(1u128, |a, b| a.saturating_mul(b))
}

/// A uniform index in `[0, n)`: the high 64 bits of `next_u64() * n`
/// (frozen: part of the documented draw stream).
pub(crate) fn uniform(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// An index drawn in proportion to `weights` from one `next_u64() >> 11`
/// (a 53-bit fraction of the total); uniform when no weight is positive.
pub(crate) fn weighted(rng: &mut ChaCha20Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().map(|w| w.max(0.0)).sum();
    if total <= 0.0 || weights.iter().all(|w| *w == weights[0]) {
        return uniform(rng, weights.len() as u64) as usize;
    }
    let target = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w.max(0.0);
        if target < acc {
            return i;
        }
    }
    weights.len() - 1
}

/// Where the text being compiled comes from (errors are placed in it).
#[derive(Debug, Clone)]
enum Loc {
    Template,
    Entry {
        file: PathBuf,
        line: usize,
        col: usize,
    },
}

#[derive(Debug, Clone)]
enum Var {
    /// `${x=…}`: each use expands the value anew.
    Macro(Rc<Ast>, Loc),
    /// `${x=!…}`: one value per variant.
    Slot(u32),
}

type Env = Vec<(String, Var)>;

struct Compiler<'w> {
    wildcards: &'w mut Wildcards,
    nodes: Vec<Node>,
    counts: Vec<u128>,
    /// Longest text of each node, in bytes (saturating).
    lens: Vec<u64>,
    slot_lens: Vec<u64>,
    /// Variable uses compiled so far: a wildcard compiled without any can
    /// be reused whatever variables are in scope.
    accesses: u64,
    columns: Vec<String>,
    slots: u32,
    /// Wildcards being compiled (cycle detection).
    stack: Vec<String>,
    /// Variables being expanded (self reference).
    expanding: Vec<String>,
    /// Compiled wildcards that depend on no variable.
    cache: HashMap<String, NodeId>,
    /// Cells of the unranking tables so far (see [`MAX_TABLE_CELLS`]).
    table_cells: usize,
}

/// Compiles template `text` against a wildcards folder.
pub(crate) fn compile(text: &str, wildcards: &mut Wildcards) -> Result<Template, TemplateError> {
    let ast = parse::parse(text).map_err(|(at, kind)| TemplateError::in_template(at, kind))?;
    let mut c = Compiler {
        wildcards,
        nodes: Vec::new(),
        counts: Vec::new(),
        lens: Vec::new(),
        slot_lens: Vec::new(),
        accesses: 0,
        columns: Vec::new(),
        slots: 0,
        stack: Vec::new(),
        expanding: Vec::new(),
        cache: HashMap::new(),
        table_cells: 0,
    };
    // Columns in the order the template names them.
    c.prescan(&ast);
    let root = c.node(&ast, &Vec::new(), &Loc::Template)?;
    let len = c.lens[root as usize];
    if len > MAX_TEXT {
        return Err(TemplateError::in_template(
            0,
            K::TooLarge(format!(
                "a variant can be {} bytes long; the limit is {MAX_TEXT}",
                if len == u64::MAX {
                    "more than 10^19".to_string()
                } else {
                    len.to_string()
                }
            )),
        ));
    }
    Ok(Template {
        nodes: c.nodes,
        counts: c.counts,
        root,
        columns: c.columns,
        slots: c.slots as usize,
    })
}

fn err(loc: &Loc, at: usize, kind: K) -> TemplateError {
    match loc {
        Loc::Template => TemplateError::in_template(at, kind),
        Loc::Entry { file, line, col } => TemplateError::in_file(file, *line, col + at, kind),
    }
}

impl Compiler<'_> {
    fn push(&mut self, node: Node, count: u128) -> Result<NodeId, TemplateError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(TemplateError::in_template(
                0,
                K::TooLarge(format!(
                    "it grows to more than {MAX_NODES} parts once wildcards and variables are filled in"
                )),
            ));
        }
        let len = match &node {
            Node::Text(t) => t.len() as u64,
            Node::Seq { parts, .. } => parts
                .iter()
                .fold(0u64, |a, p| a.saturating_add(self.lens[*p as usize])),
            Node::Pick(p) => {
                let mut l: Vec<u64> = p.options.iter().map(|o| self.lens[*o as usize]).collect();
                l.sort_unstable_by(|a, b| b.cmp(a));
                let picked = l.iter().take(p.max).fold(0u64, |a, b| a.saturating_add(*b));
                picked.saturating_add((p.sep.len() * p.max.saturating_sub(1)) as u64)
            }
            Node::Choice { inner, .. } => self.lens[*inner as usize],
            Node::Bind { slot, value, .. } => {
                let l = self.lens[*value as usize];
                if self.slot_lens.len() <= *slot as usize {
                    self.slot_lens.resize(*slot as usize + 1, 0);
                }
                self.slot_lens[*slot as usize] = l;
                0
            }
            Node::Ref { slot } => self.slot_lens.get(*slot as usize).copied().unwrap_or(0),
        };
        self.nodes.push(node);
        self.counts.push(count);
        self.lens.push(len);
        Ok((self.nodes.len() - 1) as NodeId)
    }

    fn column(&mut self, name: &str) -> u32 {
        match self.columns.iter().position(|c| c == name) {
            Some(i) => i as u32,
            None => {
                self.columns.push(name.to_owned());
                (self.columns.len() - 1) as u32
            }
        }
    }

    /// Registers the columns of wildcards and variables as written.
    fn prescan(&mut self, ast: &Ast) {
        match ast {
            Ast::Text(_) => {}
            Ast::Seq(parts) => parts.iter().for_each(|p| self.prescan(p)),
            Ast::Variant(v) => v.options.iter().for_each(|(_, o)| self.prescan(o)),
            Ast::Wildcard { name, .. } => {
                self.column(name);
            }
            Ast::Assign { name, value, .. } => {
                self.prescan(value);
                self.column(name);
            }
            Ast::Access { name, default, .. } => {
                if let Some(d) = default {
                    self.prescan(d);
                }
                self.column(name);
            }
        }
    }

    fn text(&mut self, s: &str) -> Result<NodeId, TemplateError> {
        self.push(Node::Text(s.into()), 1)
    }

    fn node(&mut self, ast: &Ast, env: &Env, loc: &Loc) -> Result<NodeId, TemplateError> {
        match ast {
            Ast::Text(s) => self.text(s),
            Ast::Seq(parts) => self.seq(parts, env, loc),
            Ast::Assign { .. } => self.seq(std::slice::from_ref(ast), env, loc),
            Ast::Variant(v) => self.variant(v, env, loc),
            Ast::Wildcard { name, at } => {
                let (options, col) = self.wildcard_options(name, *at, env, loc)?;
                let inner = self.pick(options, 1, 1, ",", &[])?;
                let count = self.counts[inner as usize];
                self.push(Node::Choice { col, inner }, count)
            }
            Ast::Access { name, default, at } => {
                self.accesses += 1;
                let found = env
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone());
                match found {
                    Some(Var::Slot(slot)) => self.push(Node::Ref { slot }, 1),
                    Some(Var::Macro(value, vloc)) => {
                        if self.expanding.contains(name) {
                            return Err(err(
                                loc,
                                *at,
                                K::Syntax(format!("variable '{name}' refers to itself")),
                            ));
                        }
                        self.expanding.push(name.clone());
                        let inner = self.node(&value, env, &vloc);
                        self.expanding.pop();
                        let inner = inner?;
                        let col = self.column(name);
                        let count = self.counts[inner as usize];
                        self.push(Node::Choice { col, inner }, count)
                    }
                    None => match default {
                        Some(d) => {
                            let inner = self.node(d, env, loc)?;
                            let col = self.column(name);
                            let count = self.counts[inner as usize];
                            self.push(Node::Choice { col, inner }, count)
                        }
                        None => {
                            let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
                            Err(err(
                                loc,
                                *at,
                                K::UndefinedVariable {
                                    name: name.clone(),
                                    suggestion: crate::text::nearest(name, names),
                                },
                            ))
                        }
                    },
                }
            }
        }
    }

    fn seq(&mut self, parts: &[Ast], env: &Env, loc: &Loc) -> Result<NodeId, TemplateError> {
        // Assignments first, for the whole sequence (as the reference).
        let mut inner: Env = env.clone();
        let mut ids = Vec::new();
        for part in parts {
            if let Ast::Assign {
                name,
                value,
                immediate,
                keep_existing,
            } = part
            {
                if *keep_existing && env.iter().any(|(n, _)| n == name) {
                    continue;
                }
                if *immediate {
                    let value = self.node(value, env, loc)?;
                    let slot = self.slots;
                    self.slots += 1;
                    let col = self.column(name);
                    let count = self.counts[value as usize];
                    ids.push(self.push(Node::Bind { slot, col, value }, count)?);
                    inner.push((name.clone(), Var::Slot(slot)));
                } else {
                    inner.push((
                        name.clone(),
                        Var::Macro(Rc::new((**value).clone()), loc.clone()),
                    ));
                }
            }
        }
        for part in parts {
            if !matches!(part, Ast::Assign { .. }) {
                ids.push(self.node(part, &inner, loc)?);
            }
        }
        if ids.len() == 1 {
            return Ok(ids[0]);
        }
        let mut strides = vec![1u128; ids.len()];
        let mut acc = 1u128;
        for (i, id) in ids.iter().enumerate().rev() {
            strides[i] = acc;
            acc = acc.saturating_mul(self.counts[*id as usize]);
        }
        self.push(
            Node::Seq {
                parts: ids.into(),
                strides: strides.into(),
            },
            acc,
        )
    }

    fn variant(&mut self, v: &VariantAst, env: &Env, loc: &Loc) -> Result<NodeId, TemplateError> {
        if let [(_, Ast::Wildcard { name, at })] = v.options.as_slice()
            && (v.min, v.max) != (1, Some(1))
        {
            // `{2$$__animals__}`: the entries are the options.
            let (options, col) = self.wildcard_options(name, *at, env, loc)?;
            let n = options.len();
            let max = v.max.unwrap_or(n);
            if max > n {
                return Err(err(
                    loc,
                    v.at,
                    K::BadCount(format!(
                        "{{…$$__{name}__}} asks for up to {max} entries but the wildcard has only {n}"
                    )),
                ));
            }
            let classes: Vec<u32> = (0..n as u32).collect();
            let inner = self.pick_classes(options, v.min, max, &v.sep, &[], classes)?;
            let count = self.counts[inner as usize];
            return self.push(Node::Choice { col, inner }, count);
        }
        let mut options = Vec::with_capacity(v.options.len());
        for (_, o) in &v.options {
            options.push(self.node(o, env, loc)?);
        }
        let weights: Vec<f64> = v.options.iter().map(|(w, _)| *w).collect();
        let n = options.len();
        let max = v.max.unwrap_or(n);
        let mut classes = Vec::with_capacity(n);
        for (i, (_, o)) in v.options.iter().enumerate() {
            let first = v.options[..i]
                .iter()
                .position(|(_, p)| same(p, o))
                .unwrap_or(i);
            classes.push(first as u32);
        }
        self.pick_classes(options, v.min, max, &v.sep, &weights, classes)
    }

    fn pick(
        &mut self,
        options: Vec<NodeId>,
        min: usize,
        max: usize,
        sep: &str,
        weights: &[f64],
    ) -> Result<NodeId, TemplateError> {
        let classes = (0..options.len() as u32).collect();
        self.pick_classes(options, min, max, sep, weights, classes)
    }

    fn pick_classes(
        &mut self,
        options: Vec<NodeId>,
        min: usize,
        max: usize,
        sep: &str,
        weights: &[f64],
        class: Vec<u32>,
    ) -> Result<NodeId, TemplateError> {
        let n = options.len();
        let counts: Vec<u128> = options.iter().map(|o| self.counts[*o as usize]).collect();
        let mut prefix = Vec::with_capacity(n);
        let mut acc = 0u128;
        for c in &counts {
            prefix.push(acc);
            acc = acc.saturating_add(*c);
        }
        let width = max + 1;
        let table = if max >= 2 || min != 1 {
            let cells = (n + 1).saturating_mul(width);
            self.table_cells = self.table_cells.saturating_add(cells);
            if self.table_cells > MAX_TABLE_CELLS {
                return Err(TemplateError::in_template(
                    0,
                    K::TooLarge(format!(
                        "{{{min}-{max}$$…}} over {n} options has too many variants (with the template's other {{k$$…}}, more than {MAX_TABLE_CELLS} table cells); use a fixed count or fewer options"
                    )),
                ));
            }
            let mut t = vec![0u128; (n + 1) * width];
            t[n * width] = 1;
            for i in (0..n).rev() {
                t[i * width] = 1;
                for j in 1..width {
                    t[i * width + j] = t[(i + 1) * width + j]
                        .saturating_add(counts[i].saturating_mul(t[(i + 1) * width + j - 1]));
                }
            }
            t
        } else {
            Vec::new()
        };
        let per_k: Vec<u128> = (min..=max)
            .map(|k| {
                if table.is_empty() {
                    acc
                } else {
                    factorial(k).saturating_mul(table[k])
                }
            })
            .collect();
        let total = per_k.iter().fold(0u128, |a, b| a.saturating_add(*b));
        let weights = if weights.len() == n {
            weights.to_vec()
        } else {
            vec![1.0; n]
        };
        self.push(
            Node::Pick(Box::new(Pick {
                options: options.into(),
                weights: weights.into(),
                class: class.into(),
                counts: counts.into(),
                prefix: prefix.into(),
                min,
                max,
                sep: sep.into(),
                table: table.into(),
                per_k: per_k.into(),
            })),
            total,
        )
    }

    /// The compiled entries of a wildcard (deduplicated, sorted by text, as
    /// the reference), and its column.
    fn wildcard_options(
        &mut self,
        name: &str,
        at: usize,
        env: &Env,
        loc: &Loc,
    ) -> Result<(Vec<NodeId>, u32), TemplateError> {
        if name.starts_with('/')
            || name.contains('\\')
            || name.contains(':')
            || name.split('/').any(|s| s == ".." || s == ".")
        {
            return Err(err(
                loc,
                at,
                K::Syntax(format!(
                    "wildcard name '{name}' must be a path inside the wildcards folder (no '..', '.', '\\', ':' or leading '/')"
                )),
            ));
        }
        let col = self.column(name);
        let names = self.wildcards.resolve(name)?;
        if names.is_empty() {
            let all = self.wildcards.names();
            return Err(err(
                loc,
                at,
                K::UnknownWildcard {
                    name: name.to_owned(),
                    nearest: crate::text::nearest_few(name, all.iter().map(String::as_str), 3),
                    folder: self.wildcards.root().to_owned(),
                    unreadable: self.wildcards.unreadable().to_vec(),
                },
            ));
        }
        if self.stack.len() >= MAX_NESTING {
            return Err(err(
                loc,
                at,
                K::TooLarge(format!("wildcards nest more than {MAX_NESTING} deep")),
            ));
        }
        if let Some(hit) = names.iter().find(|n| self.stack.contains(n)) {
            let mut chain = self.stack.clone();
            chain.push(hit.clone());
            let start = chain.iter().position(|n| n == hit).unwrap_or(0);
            return Err(err(loc, at, K::Cycle(chain[start..].to_vec())));
        }
        let key = names.join("\u{0}");
        // The same wildcard under the same variables compiles the same.
        let mut env_key = key.clone();
        for (n, v) in env {
            match v {
                Var::Slot(s) => env_key.push_str(&format!("\u{1}{n}=s{s}")),
                Var::Macro(rc, _) => env_key.push_str(&format!("\u{1}{n}=m{:p}", Rc::as_ptr(rc))),
            }
        }
        let hit = self.cache.get(&key).or_else(|| self.cache.get(&env_key));
        if let Some(&cached) = hit
            && let Node::Choice { inner, .. } = &self.nodes[cached as usize]
            && let Node::Pick(p) = &self.nodes[*inner as usize]
        {
            return Ok((p.options.to_vec(), col));
        }
        // Each entry with the collection it comes from (of several, for a
        // glob): only that one is on the stack while it compiles, so a
        // member naming a sibling is no cycle.
        let mut entries: Vec<(Entry, usize)> = Vec::new();
        for (ni, n) in names.iter().enumerate() {
            entries.extend(self.wildcards.entries(n)?.iter().cloned().map(|e| (e, ni)));
        }
        // Deduplicated (first kept) and sorted by text, as the reference.
        let mut seen = std::collections::HashSet::new();
        entries.retain(|(e, _)| seen.insert(e.text.clone()));
        entries.sort_by(|a, b| a.0.text.cmp(&b.0.text));
        if entries.is_empty() {
            return Err(err(
                loc,
                at,
                K::EmptyWildcard {
                    name: name.to_owned(),
                    names,
                },
            ));
        }
        let accesses = self.accesses;
        let mut options = Vec::with_capacity(entries.len());
        let mut result = Ok(());
        for (e, ni) in &entries {
            let eloc = Loc::Entry {
                file: e.file.clone(),
                line: e.line,
                col: e.col,
            };
            if !e.text.contains(['{', '}', '_', '$', '#', '\\', '/']) {
                match self.text(&e.text) {
                    Ok(id) => options.push(id),
                    Err(x) => {
                        result = Err(x);
                        break;
                    }
                }
                continue;
            }
            self.stack.push(names[*ni].clone());
            let compiled = parse::parse(&e.text)
                .map_err(|(p, kind)| err(&eloc, p, kind))
                .and_then(|ast| self.node(&ast, env, &eloc));
            self.stack.pop();
            match compiled {
                Ok(id) => options.push(id),
                Err(x) => {
                    result = Err(x);
                    break;
                }
            }
        }
        result?;
        let inner = self.pick(options.clone(), 1, 1, ",", &[])?;
        let count = self.counts[inner as usize];
        let id = self.push(Node::Choice { col, inner }, count)?;
        // No variable used inside: the same whatever is in scope.
        if self.accesses == accesses {
            self.cache.insert(key, id);
        } else {
            self.cache.insert(env_key, id);
        }
        Ok((options, col))
    }
}
