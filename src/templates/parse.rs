//! The Dynamic Prompts template grammar → [`Ast`]. Positions are character
//! offsets into the parsed text; [`super::place`] turns them into line and
//! column. Follows the `dynamicprompts` parser (0.31) where it is sane and
//! errs where it would silently accept a typo (see `docs/manifest.md`).

use super::TemplateErrorKind as K;

/// One parsed template or wildcard entry.
#[derive(Debug, Clone)]
pub(crate) enum Ast {
    /// Literal text.
    Text(String),
    /// Parts in order.
    Seq(Vec<Ast>),
    /// `{…|…}`.
    Variant(Box<VariantAst>),
    /// `__name__` (a name or a glob).
    Wildcard {
        /// The name as written.
        name: String,
        /// Offset of the opening `__`.
        at: usize,
    },
    /// `${name=value}` (`!` immediate, `?=` keeps an outer value).
    Assign {
        name: String,
        value: Box<Ast>,
        immediate: bool,
        keep_existing: bool,
    },
    /// `${name}` or `${name:default}`.
    Access {
        name: String,
        default: Option<Box<Ast>>,
        at: usize,
    },
}

/// `{min-max$$sep$$ w::a | b | …}`.
#[derive(Debug, Clone)]
pub(crate) struct VariantAst {
    /// Options with their weights (default 1).
    pub(crate) options: Vec<(f64, Ast)>,
    /// Fewest options picked.
    pub(crate) min: usize,
    /// Most options picked; `None`: all of them (`{2-$$…}`).
    pub(crate) max: Option<usize>,
    /// Joins picked options (default `,`).
    pub(crate) sep: String,
    /// Offset of the `{`.
    pub(crate) at: usize,
}

/// Whether two parts are the same text (positions ignored): the reference
/// never picks two equal options together in `{2$$…}`.
pub(crate) fn same(a: &Ast, b: &Ast) -> bool {
    match (a, b) {
        (Ast::Text(x), Ast::Text(y)) => x == y,
        (Ast::Seq(x), Ast::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Ast::Variant(x), Ast::Variant(y)) => {
            x.min == y.min
                && x.max == y.max
                && x.sep == y.sep
                && x.options.len() == y.options.len()
                && x.options
                    .iter()
                    .zip(&y.options)
                    .all(|(a, b)| a.0 == b.0 && same(&a.1, &b.1))
        }
        (Ast::Wildcard { name: x, .. }, Ast::Wildcard { name: y, .. }) => x == y,
        (
            Ast::Access {
                name: x,
                default: dx,
                ..
            },
            Ast::Access {
                name: y,
                default: dy,
                ..
            },
        ) => {
            x == y
                && match (dx, dy) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same(a, b),
                    _ => false,
                }
        }
        (
            Ast::Assign {
                name: x,
                value: vx,
                immediate: ix,
                keep_existing: kx,
            },
            Ast::Assign {
                name: y,
                value: vy,
                immediate: iy,
                keep_existing: ky,
            },
        ) => x == y && ix == iy && kx == ky && same(vx, vy),
        _ => false,
    }
}

/// A parse error at a character offset.
pub(crate) type Error = (usize, K);

/// Deepest nesting of variants accepted (a guard against stack overflow).
const MAX_DEPTH: usize = 100;

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

/// Parses one template (or wildcard entry).
pub(crate) fn parse(text: &str) -> Result<Ast, Error> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        depth: 0,
    };
    let ast = p.sequence(Ctx::Top)?;
    if let Some(c) = p.peek() {
        // Only `}` stops the top level.
        return Err((
            p.pos,
            K::Unbalanced(format!(
                "'{c}' without an opening '{{' (write \\{c} for a literal brace)"
            )),
        ));
    }
    Ok(ast)
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Top,
    /// Inside a variant option (`|` and `}` end it).
    Option,
    /// A variable's value or default (`}` ends it, `|` is refused).
    Var,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn at(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.pos + i) == Some(&c))
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\n')) {
            self.pos += 1;
        }
    }

    /// Skips a `//` or `/* */` comment at the start of a part (as the
    /// reference does: inside literal text they are text).
    fn skip_chunk_comments(&mut self) {
        loop {
            if self.at("//") {
                while !matches!(self.peek(), None | Some('\n')) {
                    self.pos += 1;
                }
            } else if self.at("/*") {
                let start = self.pos;
                self.pos += 2;
                while self.pos < self.chars.len() && !self.at("*/") {
                    self.pos += 1;
                }
                if self.at("*/") {
                    self.pos += 2;
                } else {
                    self.pos = start;
                    return;
                }
            } else {
                return;
            }
        }
    }

    fn sequence(&mut self, ctx: Ctx) -> Result<Ast, Error> {
        let mut parts: Vec<Ast> = Vec::new();
        loop {
            self.skip_chunk_comments();
            let Some(c) = self.peek() else { break };
            match c {
                '}' => break,
                '|' if ctx != Ctx::Top => break,
                '{' => parts.push(self.variant()?),
                '$' if self.at("${") => {
                    let at = self.pos;
                    let part = self.variable()?;
                    if matches!(part, Ast::Assign { .. }) && ctx != Ctx::Top {
                        return Err((
                            at,
                            K::Syntax(
                                "a variable can only be set at the top of a template, not inside { } or ${ }"
                                    .into(),
                            ),
                        ));
                    }
                    parts.push(part);
                }
                '$' if self.at("$$") && ctx == Ctx::Option => {
                    return Err((
                        self.pos,
                        K::BadCount(
                            "'$$' here: a count goes first, as in {2$$a|b|c} or {1-3$$a|b|c}"
                                .into(),
                        ),
                    ));
                }
                '_' if self.at("__") => parts.push(self.wildcard()?),
                _ => {
                    let text = self.literal(ctx)?;
                    match parts.last_mut() {
                        Some(Ast::Text(prev)) => prev.push_str(&text),
                        _ => parts.push(Ast::Text(text)),
                    }
                }
            }
        }
        Ok(match parts.len() {
            0 => Ast::Text(String::new()),
            1 => parts.pop().unwrap_or(Ast::Text(String::new())),
            _ => Ast::Seq(parts),
        })
    }

    /// Literal text up to the next syntax; `#` comments run to the end of
    /// the line (text on both sides is joined with a space, as the
    /// reference does).
    fn literal(&mut self, ctx: Ctx) -> Result<String, Error> {
        let mut out = String::new();
        let mut after_comment = false;
        while let Some(c) = self.peek() {
            match c {
                '{' | '}' => break,
                '|' if ctx != Ctx::Top => break,
                '$' if self.at("${") || (self.at("$$") && ctx == Ctx::Option) => break,
                '_' if self.at("__") => break,
                '#' => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.pos += 1;
                    }
                    after_comment = !out.is_empty();
                    continue;
                }
                '\\' => {
                    let next = self.chars.get(self.pos + 1).copied();
                    if after_comment {
                        out.push(' ');
                        after_comment = false;
                    }
                    match next {
                        Some(e @ ('{' | '}' | '|' | '$' | '#' | '\\' | '_')) => {
                            out.push(e);
                            self.pos += 2;
                        }
                        _ => {
                            out.push('\\');
                            self.pos += 1;
                        }
                    }
                    continue;
                }
                _ => {}
            }
            if after_comment {
                out.push(' ');
                after_comment = false;
            }
            out.push(c);
            self.pos += 1;
        }
        Ok(out)
    }

    fn variant(&mut self) -> Result<Ast, Error> {
        let at = self.pos;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((
                at,
                K::Syntax(format!("variants nested more than {MAX_DEPTH} deep")),
            ));
        }
        self.pos += 1; // '{'
        self.skip_ws();
        self.sampler()?;
        let (min, max, sep) = self.bound()?;
        self.skip_ws();
        let mut options = Vec::new();
        loop {
            self.skip_ws();
            let weight = self.weight();
            let option = self.sequence(Ctx::Option)?;
            options.push((weight, option));
            match self.peek() {
                Some('|') => self.pos += 1,
                Some('}') => {
                    self.pos += 1;
                    break;
                }
                _ => {
                    return Err((
                        at,
                        K::Unbalanced(
                            "'{' is never closed (add '}', or write \\{ for a literal brace)"
                                .into(),
                        ),
                    ));
                }
            }
        }
        self.depth -= 1;
        let n = options.len();
        if let Some(max) = max
            && max > n
            && !(n == 1 && matches!(options[0].1, Ast::Wildcard { .. }))
        {
            return Err((
                at,
                K::BadCount(format!(
                    "{{…$$}} asks for up to {max} options but there {} only {n}",
                    if n == 1 { "is" } else { "are" }
                )),
            ));
        }
        Ok(Ast::Variant(Box::new(VariantAst {
            options,
            min,
            max,
            sep,
            at,
        })))
    }

    /// `!` (combinatorial) is accepted; `~` and `@` (random, cyclical) are
    /// refused: they would make a job depend on an unlogged draw.
    fn sampler(&mut self) -> Result<(), Error> {
        match self.peek() {
            Some('!') => {
                self.pos += 1;
                Ok(())
            }
            Some(c @ ('~' | '@')) => Err((
                self.pos,
                K::Unsupported(format!(
                    "the '{c}' sampler (random/cyclical) is not supported: every variant is expanded; use 'draw: {{random: N, seed: S}}' for random draws"
                )),
            )),
            _ => Ok(()),
        }
    }

    /// `N$$`, `N-M$$`, `-M$$`, `N-$$`, then an optional `sep$$`.
    fn bound(&mut self) -> Result<(usize, Option<usize>, String), Error> {
        let start = self.pos;
        let number = |p: &mut Parser| -> Option<String> {
            let s = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            (p.pos > s).then(|| p.chars[s..p.pos].iter().collect())
        };
        let lower = number(self);
        let hyphen = self.peek() == Some('-');
        if hyphen {
            self.pos += 1;
        }
        let upper = if hyphen { number(self) } else { None };
        let well_formed = (lower.is_some() || upper.is_some()) && self.at("$$");
        if !well_formed {
            self.pos = start;
            return Ok((1, Some(1), ",".into()));
        }
        self.pos += 2;
        let parse = |s: &str| -> Result<usize, Error> {
            s.parse::<usize>()
                .ok()
                .filter(|n| *n <= 1_000_000)
                .ok_or((start, K::BadCount(format!("count {s} is too large"))))
        };
        let (min, max) = match (lower, hyphen, upper) {
            (Some(l), false, _) => {
                let n = parse(&l)?;
                (n, Some(n))
            }
            (Some(l), true, None) => (parse(&l)?, None),
            (None, _, Some(u)) => (1, Some(parse(&u)?)),
            (Some(l), true, Some(u)) => (parse(&l)?, Some(parse(&u)?)),
            (None, _, None) => (1, Some(1)),
        };
        if let Some(max) = max
            && min > max
        {
            return Err((
                start,
                K::BadCount(format!("range {min}-{max} is reversed (write {max}-{min})")),
            ));
        }
        // A separator: printable ASCII or space, no `$ { }`, then `$$`.
        let s = self.pos;
        let mut i = s;
        while let Some(&c) = self.chars.get(i) {
            if (c == ' ' || c.is_ascii_graphic()) && !matches!(c, '$' | '{' | '}') {
                i += 1;
            } else {
                break;
            }
        }
        let sep = if i > s && self.chars.get(i) == Some(&'$') && self.chars.get(i + 1) == Some(&'$')
        {
            let sep: String = self.chars[s..i].iter().collect();
            self.pos = i + 2;
            sep
        } else {
            ",".into()
        };
        Ok((min, max, sep))
    }

    /// `0.5::` / `2::` before an option; 1 without.
    fn weight(&mut self) -> f64 {
        let s = self.pos;
        let mut i = s;
        if matches!(self.chars.get(i), Some('+' | '-')) {
            i += 1;
        }
        let digits_start = i;
        while self
            .chars
            .get(i)
            .is_some_and(|c| c.is_ascii_digit() || *c == '.')
        {
            i += 1;
        }
        if i > digits_start
            && self.chars.get(i) == Some(&':')
            && self.chars.get(i + 1) == Some(&':')
        {
            let text: String = self.chars[s..i].iter().collect();
            if let Ok(w) = text.parse::<f64>()
                && w.is_finite()
            {
                self.pos = i + 2;
                return w;
            }
        }
        1.0
    }

    fn wildcard(&mut self) -> Result<Ast, Error> {
        let at = self.pos;
        self.pos += 2;
        match self.peek() {
            Some('!') => self.pos += 1,
            Some(c @ ('~' | '@')) => {
                return Err((
                    self.pos,
                    K::Unsupported(format!(
                        "the '{c}' sampler on a wildcard is not supported: every entry is expanded"
                    )),
                ));
            }
            _ => {}
        }
        let s = self.pos;
        while let Some(c) = self.peek() {
            if self.at("__") || matches!(c, '(' | '$' | '{' | '}' | '#') {
                break;
            }
            self.pos += 1;
        }
        let name: String = self.chars[s..self.pos].iter().collect();
        if self.at("__") {
            self.pos += 2;
            if name.is_empty() {
                return Err((at, K::Syntax("empty wildcard name '____'".into())));
            }
            return Ok(Ast::Wildcard { name, at });
        }
        Err(match self.peek() {
            Some('(') => (
                self.pos,
                K::Unsupported(
                    "wildcard parameters '__name(var=value)__' are not supported".into(),
                ),
            ),
            Some('$' | '{') => (
                self.pos,
                K::Unsupported(
                    "a wildcard name built from variants or variables is not supported".into(),
                ),
            ),
            _ => (
                at,
                K::Syntax(format!(
                    "'__{name}' is never closed with '__' (a wildcard is written __name__)"
                )),
            ),
        })
    }

    fn variable(&mut self) -> Result<Ast, Error> {
        let at = self.pos;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((
                at,
                K::Syntax(format!("variables nested more than {MAX_DEPTH} deep")),
            ));
        }
        let result = self.variable_inner(at);
        self.depth -= 1;
        result
    }

    fn variable_inner(&mut self, at: usize) -> Result<Ast, Error> {
        self.pos += 2; // "${"
        self.skip_ws();
        let s = self.pos;
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '-')
        {
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.pos += 1;
            }
        }
        let name: String = self.chars[s..self.pos].iter().collect();
        if name.is_empty() {
            return Err((
                at,
                K::Syntax("'${' needs a variable name, as in ${animal}".into()),
            ));
        }
        self.skip_ws();
        let keep_existing = self.peek() == Some('?');
        if keep_existing {
            self.pos += 1;
        }
        let close = |p: &mut Parser| -> Result<(), Error> {
            p.skip_ws();
            if p.peek() == Some('}') {
                p.pos += 1;
                Ok(())
            } else {
                Err((
                    at,
                    K::Unbalanced(format!("'${{{name}' is never closed with '}}'")),
                ))
            }
        };
        match self.peek() {
            Some('=') => {
                self.pos += 1;
                let immediate = self.peek() == Some('!');
                if immediate {
                    self.pos += 1;
                }
                self.skip_ws();
                let value = self.sequence(Ctx::Var)?;
                if self.peek() == Some('|') {
                    return Err((
                        self.pos,
                        K::Syntax("'|' in a variable's value: put the options in { }".into()),
                    ));
                }
                close(self)?;
                Ok(Ast::Assign {
                    name,
                    value: Box::new(value),
                    immediate,
                    keep_existing,
                })
            }
            Some(':') if !keep_existing => {
                self.pos += 1;
                self.skip_ws();
                let default = self.sequence(Ctx::Var)?;
                if self.peek() == Some('|') {
                    return Err((
                        self.pos,
                        K::Syntax("'|' in a variable's default: put the options in { }".into()),
                    ));
                }
                close(self)?;
                Ok(Ast::Access {
                    name,
                    default: Some(Box::new(default)),
                    at,
                })
            }
            _ if !keep_existing => {
                close(self)?;
                Ok(Ast::Access {
                    name,
                    default: None,
                    at,
                })
            }
            _ => Err((
                at,
                K::Syntax(format!("'${{{name}?' must be followed by '='")),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(a) => panic!("parsed: {a:?}"),
            Err((at, k)) => format!("{at}: {k}"),
        }
    }

    #[test]
    fn bad_syntax_is_placed() {
        assert_eq!(
            err("a {b|c"),
            "2: unbalanced braces: '{' is never closed (add '}', or write \\{ for a literal brace)"
        );
        assert_eq!(
            err("a b}"),
            "3: unbalanced braces: '}' without an opening '{' (write \\} for a literal brace)"
        );
        assert!(err("{x$$a|b}").contains("bad $$ count"));
        assert!(err("{3-1$$a|b|c}").contains("reversed"));
        assert!(err("{3$$a|b}").contains("up to 3 options"));
        assert!(err("__abc").contains("never closed"));
        assert!(err("${x").contains("never closed"));
    }

    #[test]
    fn escapes_and_comments() {
        match parse(r"\{a\|b\} # note").unwrap() {
            Ast::Text(t) => assert_eq!(t, "{a|b} "),
            other => panic!("{other:?}"),
        }
    }
}
