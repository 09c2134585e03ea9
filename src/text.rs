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

#[cfg(test)]
mod tests {
    use super::*;

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
