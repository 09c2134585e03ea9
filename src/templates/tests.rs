//! Unit tests of the template parser, wildcard loading, expansion and
//! pinned draws, over small wildcard folders made in temp dirs.

use std::collections::BTreeSet;

use super::*;

fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

fn all(t: &Template) -> BTreeSet<String> {
    let mut x = Expansion::default();
    let mut out = BTreeSet::new();
    for i in 0..t.count() {
        if t.expand(i, &mut x) {
            out.insert(x.text.clone());
        }
    }
    out
}

fn expand(text: &str, files: &[(&str, &[u8])]) -> Vec<String> {
    let dir = folder(files);
    let mut w = Wildcards::new(dir.path().to_owned());
    let t = Template::compile(text, &mut w).unwrap();
    all(&t).into_iter().collect()
}

fn error(text: &str, files: &[(&str, &[u8])]) -> String {
    let dir = folder(files);
    let mut w = Wildcards::new(dir.path().to_owned());
    let e = Template::compile(text, &mut w).unwrap_err();
    let at = match &e.origin {
        Origin::Template(at) => format!("@{at}"),
        Origin::File { path, line, col } => format!(
            "{}:{line}:{col}",
            path.strip_prefix(dir.path()).unwrap().display()
        ),
    };
    format!("{at}: {}", e.kind).replace(&dir.path().display().to_string(), "[dir]")
}

#[test]
fn constructs_expand_to_their_variants() {
    let files: &[(&str, &[u8])] = &[
        ("animals.txt", b"cat\ndog\n# comment\n\n  bird  \ncat\n"),
        ("colors/warm.txt", b"red\norange\n"),
        ("colors/cold.txt", b"blue\n"),
    ];
    assert_eq!(expand("{a|b} {c|d}", files), ["a c", "a d", "b c", "b d"]);
    assert_eq!(expand("__animals__", files), ["bird", "cat", "dog"]);
    assert_eq!(expand("__colors/*__", files), ["blue", "orange", "red"]);
    assert_eq!(
        expand("{2$$a|b|c}", files),
        ["a,b", "a,c", "b,a", "b,c", "c,a", "c,b"]
    );
    assert_eq!(
        expand("{1-2$$ and $$a|b}", files),
        ["a", "a and b", "b", "b and a"]
    );
    assert_eq!(expand("{2$$a|a|b}", files), ["a,b", "b,a"]);
    assert_eq!(expand("{2$$a|{a|b}}", files), ["a,b", "b,a"]);
    assert_eq!(expand("{0.5::x|2::y}", files), ["x", "y"]);
    assert_eq!(
        expand("${c=__colors/warm__}${c} and ${c}", files),
        [
            "orange and orange",
            "orange and red",
            "red and orange",
            "red and red"
        ]
    );
    assert_eq!(
        expand("${c=!__colors/warm__}${c} and ${c}", files),
        ["orange and orange", "red and red"]
    );
    assert_eq!(expand(r"\{a\|b\}", files), ["{a|b}"]);
    assert_eq!(expand("${x:def}", files), ["def"]);
}

#[test]
fn choices_are_logged_per_wildcard_and_variable() {
    let dir = folder(&[("animals.txt", b"cat\ndog\n"), ("places.txt", b"a field\n")]);
    let mut w = Wildcards::new(dir.path().to_owned());
    let t = Template::compile("${who=!__animals__}a ${who} in __places__", &mut w).unwrap();
    assert_eq!(t.columns(), ["animals", "who", "places"]);
    let mut x = Expansion::default();
    assert!(t.expand(1, &mut x));
    assert_eq!(x.text, "a dog in a field");
    assert_eq!(
        x.choices,
        [
            (0, "dog".to_string()),
            (1, "dog".to_string()),
            (2, "a field".to_string())
        ]
    );
}

#[test]
fn nested_wildcards_and_counts() {
    let files: &[(&str, &[u8])] = &[
        ("pets.txt", b"a {small|big} __colors__ cat\na dog\n"),
        ("colors.txt", b"red\nblue\n"),
    ];
    let v = expand("__pets__", files);
    assert_eq!(v.len(), 5, "{v:?}");
    assert!(v.contains(&"a big blue cat".to_string()));
}

#[test]
fn bad_templates_and_wildcards_are_placed_errors() {
    let files: &[(&str, &[u8])] = &[
        ("animals.txt", b"cat\n"),
        ("a.txt", b"x\n__b__\n"),
        ("b.txt", b"__a__\n"),
        ("empty.txt", b"# nothing\n\n"),
        ("bad.txt", b"ok\ncaf\xe9\n"),
        ("broken.txt", b"fine\n  {x|y\n"),
    ];
    insta::assert_snapshot!(
        [
            error("a {b|c", files),
            error("a b}", files),
            error("__animal__", files),
            error("__a__", files),
            error("__empty__", files),
            error("__bad__", files),
            error("__broken__", files),
            error("${who}", files),
            error("__../../etc/passwd__", files),
            error("{3$$a|b}", files),
            error("{x$$a|b}", files),
            error("{~a|b}", files),
        ]
        .join("\n")
    );
}

#[test]
fn huge_expansions_are_counted_not_enumerated() {
    let words: String = (0..1000).map(|i| format!("w{i}\n")).collect();
    let dir = folder(&[("w.txt", words.as_bytes())]);
    let mut w = Wildcards::new(dir.path().to_owned());
    let t = Template::compile("__w__ __w__ __w__", &mut w).unwrap();
    assert_eq!(t.count(), 1_000_000_000);
    let mut x = Expansion::default();
    assert!(t.expand(999_999_999, &mut x));
    assert_eq!(x.text, "w999 w999 w999");
    let t = Template::compile("{3$$__w__}", &mut w).unwrap();
    assert_eq!(t.count(), 1000 * 999 * 998);
    assert!(t.expand(12345, &mut x));
}

#[test]
fn random_draws_are_pinned() {
    let dir = folder(&[("animals.txt", b"cat\ndog\nbird\nfox\n")]);
    let mut w = Wildcards::new(dir.path().to_owned());
    let t = Template::compile("a {0.1::red|5::blue} __animals__", &mut w).unwrap();
    let mut x = Expansion::default();
    let draws: Vec<String> = (0..6)
        .map(|i| {
            assert!(t.sample(&mut draw_stream(7, i), &mut x));
            x.text.clone()
        })
        .collect();
    // Frozen: the documented stream. Never update these values.
    insta::assert_debug_snapshot!(draws);
}

#[test]
fn hostile_input_fails_fast_and_placed() {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("all.txt".into(), b"__*__\n".to_vec()),
        ("me.txt".into(), b"__me__\n".to_vec()),
        ("zero.txt".into(), Vec::new()),
        ("broken.yaml".into(), b"a: [1, 2\n".to_vec()),
    ];
    // Every entry names the next level twice: 2^40 copies of the text.
    for i in 1..=40 {
        files.push((
            format!("d{i}.txt"),
            format!("__d{}__ __d{}__\n", i + 1, i + 1).into_bytes(),
        ));
    }
    files.push(("d41.txt".into(), b"end ${x:z}\n".to_vec()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let deep = format!("{}x{}", "{".repeat(500), "}".repeat(500));
    let deep_vars = format!("{}x{}", "${a:".repeat(500), "}".repeat(500));
    let start = std::time::Instant::now();
    insta::assert_snapshot!(
        [
            error("__all__", &refs),
            error("__me__", &refs),
            error("__zero__", &refs),
            error("__broken__", &refs),
            error("__d1__", &refs),
            error("${x=y}__d1__", &refs),
            error(&deep, &refs),
            error(&deep_vars, &refs),
            error("${a=${a}}${a}", &refs),
            error("{99999999999999999999$$a}", &refs),
            error("__/etc/passwd__", &refs),
            error(r"__C:\x__", &refs),
            error("a__b", &refs),
            error("____", &refs),
        ]
        .join("\n")
    );
    // Generous: the machine is shared; the point is "not exponential".
    assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
}

#[test]
fn a_glob_member_naming_a_sibling_is_no_cycle() {
    // `__h/*__` matches h/a and h/b; h/a's entry `__h/b__` names a sibling,
    // not itself: the reference expands it (y, x, y).
    let files: &[(&str, &[u8])] = &[("h/a.txt", b"x\n__h/b__\n"), ("h/b.txt", b"y\n")];
    assert_eq!(expand("__h/*__", files), ["x", "y"]);
    assert_eq!(expand("{__h/*__|z}", files), ["x", "y", "z"]);
    // A member naming the glob itself still is one.
    let files: &[(&str, &[u8])] = &[("h/a.txt", b"x\n__h/*__\n"), ("h/b.txt", b"y\n")];
    assert!(error("__h/*__", files).contains("cycle"));
}

#[test]
fn many_open_ended_picks_are_refused_not_allocated() {
    // Each `{2-$$__w__}` over 2,100 entries needs a 2,101 × 2,101 table of
    // u128 (70 MB); a short template repeating it must not take gigabytes.
    let words: String = (0..2100).map(|i| format!("w{i}\n")).collect();
    let dir = folder(&[("w.txt", words.as_bytes())]);
    let mut w = Wildcards::new(dir.path().to_owned());
    assert!(Template::compile("{2-$$__w__}", &mut w).is_ok());
    let e =
        Template::compile("{2-$$__w__} {2-$$__w__} {2-$$__w__} {2-$$__w__}", &mut w).unwrap_err();
    assert!(matches!(*e.kind, TemplateErrorKind::TooLarge(_)), "{e}");
}
