//! Text widgets with `dynamicPrompts: true`: the frontend strips C-style
//! comments before it queues (and draws `{a|b}` variants, which comfy-batch
//! never does at random).

/// Removes `/* … */` and `// …` (to the end of the line) as the frontend's
/// regular expression `/\/\*[\s\S]*?\*\/|\/\/.*/g` does: scanning left to
/// right, an unterminated `/*` is left as it is, and `//` eats up to, not
/// including, the next line terminator.
pub(crate) fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let Some(at) = rest.find('/') else {
            out.push_str(rest);
            return out;
        };
        let after = &rest[at + 1..];
        if after.starts_with('*')
            && let Some(end) = after[1..].find("*/")
        {
            out.push_str(&rest[..at]);
            rest = &after[1 + end + 2..];
        } else if after.starts_with('/') {
            out.push_str(&rest[..at]);
            // JavaScript's `.` stops at \n, \r, U+2028 and U+2029.
            let end = rest[at..]
                .find(['\n', '\r', '\u{2028}', '\u{2029}'])
                .map_or(rest.len(), |e| at + e);
            rest = &rest[end..];
        } else {
            out.push_str(&rest[..=at]);
            rest = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_stripped_like_the_frontend() {
        assert_eq!(strip_comments("a // b\nc"), "a \nc");
        assert_eq!(strip_comments("a /* b\n b */c"), "a c");
        assert_eq!(strip_comments("a /* open"), "a /* open");
        assert_eq!(strip_comments("x/y"), "x/y");
        assert_eq!(strip_comments("see http://x.org\nnext"), "see http:\nnext");
        assert_eq!(strip_comments("a/**/b//c\r\nd"), "ab\r\nd");
        assert_eq!(strip_comments("a/*/ b */c"), "ac");
        assert_eq!(strip_comments("é // ü\nß"), "é \nß");
    }
}
