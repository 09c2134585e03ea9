//! Text helpers for messages shared by the stages: every user-visible line
//! (diagnostics, CSV `error` cells, progress lines) goes through these, so
//! none of them depends on another stage for its formatting.

/// Folds whitespace and newlines so a message fits one CSV cell and one
/// terminal line. Control characters (NUL, terminal escapes, which a
/// server's caption or error may hold) count as whitespace.
pub fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cell` made inert for a spreadsheet: one that would start a formula
/// there (`=`, `+`, `-`, `@`, a tab or a carriage return first) gets a `'`
/// in front, as OWASP's CSV-injection advice says. For text meant for
/// people (the GitHub summary's tables), never for `runs.csv`, which is
/// data a `rerun` reads back exactly.
pub(crate) fn defuse_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// `text` cut in the middle to at most about `max` characters, so a message
/// quoting a user's value (a 1 MB prompt…) stays one readable line.
pub(crate) fn clip(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let head = max * 2 / 3;
    let tail = max.saturating_sub(head + 1);
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(count - tail));
    out
}

/// A URL's text as it may be shown: the password of its user info as
/// `***` (all of it when there is no password: a lone user name is often a
/// token), and the value of each query pair whose name `secret` picks. Not
/// a parser, so that text which failed to parse as a URL is redacted too
/// (a manifest's `server:` that is no http URL):
/// the user info is whatever lies between `://` and the last `@` before the
/// query (too much rather than too little). A `?` followed by an `@` with
/// no `=` or `&` between them is taken for part of a password typed
/// unencoded (`http://me:s3?cret@host`), not the start of the query.
pub(crate) fn redact_url(text: &str, secret: &dyn Fn(&str) -> bool) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    let user_end = text[start..].rfind('@').filter(|at| {
        let before = &text[start..start + at];
        !before
            .split_once('?')
            .is_some_and(|(_, after)| after.contains(['=', '&']))
    });
    let query_from = user_end.map_or(start, |at| start + at);
    let (text, query) = match text[query_from..].find('?') {
        Some(q) => (&text[..query_from + q], Some(&text[query_from + q + 1..])),
        None => (text, None),
    };
    let mut out = match text[start..].rfind('@') {
        Some(at) => {
            let user = match text[start..start + at].split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{}{user}{}", &text[..start], &text[start + at..])
        }
        None => text.to_string(),
    };
    if let Some(query) = query {
        let (query, fragment) = match query.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (query, None),
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if secret(name) => format!("{name}=***"),
                None if secret(pair) => "***".to_string(),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
    }
    out
}

/// The one "did you mean" of every message: up to `max` of `candidates`
/// nearest to `word`, nearest first (ties in the candidates' order). Near
/// means at most one edit (a letter added, removed, changed, or two
/// swapped) per three letters and two in all (names sharing a long
/// `.safetensors` are not near for it), letter case ignored, to the whole candidate
/// or to its last `/` segment (a wildcard or model in a subfolder is typed
/// by its own name).
pub(crate) fn nearest_few<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Vec<String> {
    let word = word.to_lowercase();
    let word_len = word.chars().count();
    let edits = |c: &str| {
        let c_len = c.chars().count();
        let len = c_len.max(word_len);
        // Lengths this far apart need too many edits: not measured (the
        // distance costs their product, and a rejected value may be 1 MB).
        if c_len.abs_diff(word_len) > MAX_EDITS.min(len / 3) {
            return None;
        }
        let e = strsim::osa_distance(&word, &c.to_lowercase());
        (e <= MAX_EDITS.min(len / 3)).then_some(e)
    };
    let mut near: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let tail = c.rsplit('/').next().unwrap_or(c);
            let e = [edits(c), edits(tail)].into_iter().flatten().min()?;
            Some((e, c))
        })
        .collect();
    // Stable: equal edits keep the candidates' order.
    near.sort_by_key(|(e, _)| *e);
    near.into_iter()
        .take(max)
        .map(|(_, c)| c.to_owned())
        .collect()
}

/// The most edits a near name may need, whatever its length.
const MAX_EDITS: usize = 2;

/// The candidate nearest to `word`, as [`nearest_few`] measures, if any is
/// near.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    nearest_few(word, candidates, 1).pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_ignores_case_and_folders_and_keeps_the_candidates_order_on_ties() {
        assert_eq!(
            nearest("cgf", ["seed", "cfg", "prompt"]),
            Some("cfg".into())
        );
        assert_eq!(nearest("Matirx", ["jobs", "matrix"]), Some("matrix".into()));
        assert_eq!(
            nearest("warm", ["colors/warm", "cold"]),
            Some("colors/warm".into())
        );
        assert_eq!(nearest("zzz", ["cfg", "seed"]), None);
        assert_eq!(nearest("nope.safetensors", ["sd15.safetensors"]), None);
        assert_eq!(nearest(&"e".repeat(1 << 20), ["euler"]), None);
        assert_eq!(
            nearest_few("colr", ["colors", "color", "a/color", "x"], 2),
            ["color", "a/color"]
        );
    }

    #[test]
    fn one_line_and_clip() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
        // A server's text (a caption, an error) may carry NULs or terminal
        // escapes: never into a CSV cell or onto the terminal.
        assert_eq!(one_line("red\u{1b}[31m fox\0\u{7f}é"), "red [31m fox é");
        assert_eq!(clip("abcdef", 10), "abcdef");
        let long = "x".repeat(50) + &"y".repeat(50);
        let cut = clip(&long, 30);
        assert_eq!(cut.chars().count(), 30);
        assert!(cut.starts_with("xxx") && cut.ends_with("yyy") && cut.contains('…'));
    }
}
