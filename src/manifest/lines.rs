//! A marked-event pass over the manifest text: serde_yaml gives no spans, so
//! this pass records where every mapping key and sequence item starts (for
//! error messages naming `file:line:col`), rejects duplicate keys and checks
//! the keys at the manifest's fixed positions against the known field names.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::{ManifestErrorKind, Problem, Span};

/// Keys allowed at the top level, in documentation order.
pub(crate) const TOP_KEYS: &[&str] = &[
    "version",
    "server",
    "output",
    "concurrency",
    "workflows",
    "params",
    "defaults",
    "jobs",
    "wildcards",
    "grids",
];
/// Keys allowed in one job group.
pub(crate) const JOB_KEYS: &[&str] = &[
    "name",
    "workflow",
    "matrix",
    "zip",
    "set",
    "seeds",
    "templates",
    "draw",
    "pack",
];
/// Keys allowed in one `grids:` entry.
pub(crate) const GRID_KEYS: &[&str] = &["name", "x", "y", "page", "where", "group"];
/// Keys allowed in a `seeds:` mapping.
pub(crate) const SEED_KEYS: &[&str] = &["count", "base", "range"];

/// Positions of keys and sequence items by path (`["jobs", "0", "matrix",
/// "cfg"]`); looked up only, never iterated, so output order never depends on
/// hashing.
#[derive(Debug, Default, Clone)]
pub(crate) struct Lines {
    spans: HashMap<Vec<String>, Span>,
    values: HashMap<Vec<String>, (Span, ValueStyle)>,
}

/// How a scalar value is written, to place a position inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueStyle {
    /// Unquoted: the text starts where the value does.
    Plain,
    /// `'…'` or `"…"`: the text starts one column later.
    Quoted,
    /// A block scalar (`|`, `>`): the text starts on a later line.
    Block,
}

impl Lines {
    /// Where the key or item at `path` starts; the document start if unknown.
    pub(crate) fn at(&self, path: &[&str]) -> Span {
        let key: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        self.spans
            .get(&key)
            .copied()
            .unwrap_or(Span { line: 1, col: 1 })
    }

    /// Where the scalar value at `path` starts, and its style.
    pub(crate) fn value(&self, path: &[&str]) -> Option<(Span, ValueStyle)> {
        let key: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        self.values.get(&key).copied()
    }

    /// Like [`Lines::at`], but `None` when the path is absent.
    pub(crate) fn get(&self, path: &[&str]) -> Option<Span> {
        let key: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        self.spans.get(&key).copied()
    }
}

enum Frame {
    Map {
        /// The key just read, waiting for its value.
        key: Option<String>,
        seen: Vec<String>,
    },
    Seq {
        next: usize,
    },
}

struct Recorder {
    /// Path of the container on top of the stack.
    path: Vec<String>,
    stack: Vec<Frame>,
    spans: HashMap<Vec<String>, Span>,
    values: HashMap<Vec<String>, (Span, ValueStyle)>,
    /// Mapping keys only (not sequence items), in document order.
    keys: Vec<(Vec<String>, Span)>,
    problems: Vec<Problem>,
    /// Whether the scalar being recorded is plain (unquoted, untagged).
    plain: bool,
    /// Documents started so far; events after the first are ignored.
    documents: usize,
}

fn span(mark: Marker) -> Span {
    Span {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

impl Recorder {
    /// Called for every node start (scalar, container, alias). Returns the
    /// path segment the node is stored under, if it is a value.
    fn node(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            Some(Frame::Map { key, seen }) => match key.take() {
                None => {
                    // A key. Non-scalar keys are recorded under "?".
                    let name = scalar.unwrap_or("?").to_owned();
                    if name == "<<" && self.plain {
                        self.problems.push(Problem {
                            span: span(mark),
                            kind: ManifestErrorKind::Syntax(
                                "merge keys ('<<: *anchor') are not supported; write the values \
                                 out, or put values shared by every group under 'defaults:'"
                                    .into(),
                            ),
                        });
                    }
                    let mut full = self.path.clone();
                    full.push(name.clone());
                    if seen.contains(&name) {
                        self.problems.push(Problem {
                            span: span(mark),
                            kind: ManifestErrorKind::DuplicateKey(name.clone()),
                        });
                    } else {
                        seen.push(name.clone());
                        self.spans.insert(full.clone(), span(mark));
                        self.keys.push((full, span(mark)));
                    }
                    *key = Some(name);
                    // A key is not a value: the caller does not descend.
                    None
                }
                Some(k) => Some(k),
            },
            Some(Frame::Seq { next }) => {
                let seg = next.to_string();
                *next += 1;
                let mut full = self.path.clone();
                full.push(seg.clone());
                self.spans.insert(full, span(mark));
                Some(seg)
            }
            None => Some(String::new()),
        }
    }

    fn open(&mut self, frame: Frame, mark: Marker) {
        let seg = self.node(None, mark);
        // The document root has the empty path.
        if let Some(seg) = seg.filter(|s| !s.is_empty()) {
            self.path.push(seg);
        } else if !self.stack.is_empty() {
            // A mapping used as a key: give it a placeholder segment.
            self.path.push("?".into());
        }
        self.stack.push(frame);
    }

    fn close(&mut self) {
        self.stack.pop();
        if !self.stack.is_empty() {
            self.path.pop();
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if let Event::DocumentStart = ev {
            self.documents += 1;
            if self.documents == 2 {
                self.problems.push(Problem {
                    span: span(mark),
                    kind: ManifestErrorKind::Syntax(
                        "a second YAML document ('---') starts here; a manifest is one document"
                            .into(),
                    ),
                });
            }
        }
        if self.documents > 1 {
            return;
        }
        match ev {
            Event::Scalar(value, style, _, tag) => {
                self.plain = style == TScalarStyle::Plain && tag.is_none();
                let seg = self.node(Some(&value), mark);
                let is_value = seg.is_some();
                if let Some(seg) = seg {
                    let mut full = self.path.clone();
                    full.push(seg);
                    let vs = match style {
                        TScalarStyle::Plain => ValueStyle::Plain,
                        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                            ValueStyle::Quoted
                        }
                        _ => ValueStyle::Block,
                    };
                    self.values.insert(full, (span(mark), vs));
                }
                if is_value
                    && self.plain
                    && let Some(why) = bad_number(&value)
                {
                    self.problems.push(Problem {
                        span: span(mark),
                        kind: ManifestErrorKind::Invalid(why),
                    });
                }
                self.plain = false;
            }
            Event::Alias(_) => {
                self.node(None, mark);
            }
            Event::MappingStart(..) => self.open(
                Frame::Map {
                    key: None,
                    seen: Vec::new(),
                },
                mark,
            ),
            Event::SequenceStart(..) => self.open(Frame::Seq { next: 0 }, mark),
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            _ => {}
        }
    }
}

/// Scans `text`: positions, duplicate keys, unknown keys at fixed places.
/// A syntax error is returned as the only problem, with its position.
pub(crate) fn scan(text: &str) -> (Lines, Vec<Problem>) {
    let mut rec = Recorder {
        path: Vec::new(),
        stack: Vec::new(),
        spans: HashMap::new(),
        values: HashMap::new(),
        keys: Vec::new(),
        problems: Vec::new(),
        plain: false,
        documents: 0,
    };
    if let Err(e) = Parser::new_from_str(text).load(&mut rec, true) {
        let at = span(*e.marker());
        let mut info = e.info().to_owned();
        if info.contains("recursion limit exceeded") {
            info = "nested too deeply (recursion limit exceeded)".into();
        }
        if info.contains("unknown anchor") {
            // Name the alias: `*name` starts at the error's column.
            let name: String = text
                .lines()
                .nth(at.line.saturating_sub(1))
                .unwrap_or("")
                .chars()
                .skip(at.col - 1)
                .skip_while(|c| *c == '*')
                .take_while(|c| !c.is_whitespace() && !",[]{}".contains(*c))
                .collect();
            info = format!(
                "alias '*{name}' refers to no anchor: define '&{name}' earlier in the file"
            );
        }
        let problem = Problem {
            span: at,
            kind: ManifestErrorKind::Syntax(info),
        };
        return (Lines::default(), vec![problem]);
    }
    let mut problems = rec.problems;
    for (path, at) in &rec.keys {
        let known: &[&str] = match path.len() {
            1 => TOP_KEYS,
            3 if path[0] == "jobs" && path[1].parse::<usize>().is_ok() => JOB_KEYS,
            4 if path[0] == "jobs" && path[2] == "seeds" => SEED_KEYS,
            3 if path[0] == "grids" && path[1].parse::<usize>().is_ok() => GRID_KEYS,
            _ => continue,
        };
        let key = path[path.len() - 1].as_str();
        let merge_reported = key == "<<" && problems.iter().any(|p| p.span == *at);
        if !known.contains(&key) && !merge_reported {
            problems.push(Problem {
                span: *at,
                kind: ManifestErrorKind::UnknownKey {
                    key: key.to_owned(),
                    suggestion: crate::text::nearest(key, known.iter().copied()),
                },
            });
        }
    }
    problems.sort_by_key(|p| (p.span.line, p.span.col));
    (
        Lines {
            spans: rec.spans,
            values: rec.values,
        },
        problems,
    )
}

/// Why a plain scalar that YAML reads as a number cannot be one of ours:
/// NaN and infinities (JSON and ComfyUI have none), integers beyond 64 bits,
/// floats beyond `f64`. serde would otherwise turn these into a null, a
/// string or an obscure error far from the value.
fn bad_number(s: &str) -> Option<String> {
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if [".nan", ".NaN", ".NAN"].contains(&s) || [".inf", ".Inf", ".INF"].contains(&unsigned) {
        return Some(format!(
            "'{s}' is not a finite number; JSON and ComfyUI take finite numbers only (quote it for text)"
        ));
    }
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if digits(unsigned) {
        if s.parse::<i64>().is_err() && s.parse::<u64>().is_err() {
            return Some(format!(
                "number {s} is out of range: whole numbers go from {} to {}",
                i64::MIN,
                u64::MAX
            ));
        }
        return None;
    }
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let float_like = (digits(int) || digits(frac))
        && (int.is_empty() || digits(int))
        && (frac.is_empty() || digits(frac))
        && exponent.is_none_or(digits);
    if float_like && s.parse::<f64>().is_ok_and(f64::is_infinite) {
        return Some(format!(
            "number {s} is out of range: the largest is about {:e}",
            f64::MAX
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_key_and_item_positions() {
        let text = "version: 1\njobs:\n  - name: fox\n    matrix:\n      cfg: [5, 6]\n";
        let (lines, problems) = scan(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(lines.at(&["version"]), Span { line: 1, col: 1 });
        assert_eq!(lines.at(&["jobs", "0"]).line, 3);
        assert_eq!(lines.at(&["jobs", "0", "name"]), Span { line: 3, col: 5 });
        assert_eq!(
            lines.at(&["jobs", "0", "matrix", "cfg"]),
            Span { line: 5, col: 7 }
        );
        assert_eq!(
            lines.get(&["jobs", "0", "matrix", "cfg", "1"]),
            Some(Span { line: 5, col: 16 })
        );
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second_one() {
        let (_, problems) = scan("version: 1\ndefaults:\n  cfg: 5\n  cfg: 6\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].span, Span { line: 4, col: 3 });
        assert!(matches!(&problems[0].kind, ManifestErrorKind::DuplicateKey(k) if k == "cfg"));
    }

    #[test]
    fn unknown_keys_get_the_nearest_valid_key() {
        let (_, problems) = scan("version: 1\njobs:\n  - name: a\n    matirx: {}\nworkflow: {}\n");
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.span.line, p.kind.to_string()))
            .collect();
        assert_eq!(
            found,
            vec![
                (4, "unknown key 'matirx'; did you mean 'matrix'?".to_owned()),
                (
                    5,
                    "unknown key 'workflow'; did you mean 'workflows'?".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn numbers_json_cannot_carry_are_refused_where_written() {
        let (_, problems) = scan(
            "defaults:\n  a: [.nan, -.inf, 1e400, 18446744073709551616, -9223372036854775809]\n  \
             b: [1, -1, 18446744073709551615, 1.5e300, \"1e400\", !!str .nan, x.nan, 1e, .5]\n  \
             .inf: key\n",
        );
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.span.line, p.span.col, p.kind.to_string()))
            .collect();
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found.iter().all(|(line, ..)| *line == 2), "{found:?}");
        assert_eq!(found[0].1, 7);
        assert!(
            found[0].2.contains("'.nan' is not a finite number"),
            "{found:?}"
        );
        assert!(
            found[2].2.contains("number 1e400 is out of range"),
            "{found:?}"
        );
        assert!(
            found[3]
                .2
                .contains("number 18446744073709551616 is out of range"),
            "{found:?}"
        );
    }

    #[test]
    fn merge_keys_and_unknown_anchors_are_explained() {
        let (_, problems) = scan("defaults: &x {b: 1}\njobs:\n  - <<: *x\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].span, Span { line: 3, col: 5 });
        assert!(problems[0].kind.to_string().contains("merge keys"));
        let (_, problems) = scan("defaults: [1, *nope]\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].kind.to_string(),
            "invalid yaml: alias '*nope' refers to no anchor: define '&nope' earlier in the file"
        );
    }

    #[test]
    fn a_second_document_is_refused_where_it_starts() {
        let (_, problems) = scan("---\nversion: 1\n...\n");
        assert!(problems.is_empty(), "{problems:?}");
        let (_, problems) = scan("version: 1\njobs: []\n---\nversion: 1\nfoo: 2\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].span.line, 3);
        assert!(
            problems[0]
                .kind
                .to_string()
                .contains("a second YAML document")
        );
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let (_, problems) = scan("version: 1\njobs:\n  - name: [a\n");
        assert_eq!(problems.len(), 1);
        assert!(matches!(problems[0].kind, ManifestErrorKind::Syntax(_)));
        assert!(problems[0].span.line >= 3);
    }
}
