//! Python-compatible text for values, so that error messages read exactly as
//! the real (Python) server prints them: `repr`, `str`, number formatting and
//! the `int()` / `float()` / `str()` / `bool()` conversions validation uses.

use serde_json::{Map, Number, Value};

/// A number after Python's `int()`: kept wide so `int(1e20)` does not wrap.
pub(crate) type PyInt = i128;

/// Python `repr()` of a float (`1.0`, `0.5`, `1e-07`, `inf`).
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let abs = f.abs();
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    if !(1e-4..1e16).contains(&abs) {
        // Python switches to exponent notation here, with at least two
        // exponent digits.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("+", exp),
        };
        let digits = if digits.len() < 2 {
            format!("0{digits}")
        } else {
            digits.to_string()
        };
        return format!("{mantissa}e{sign}{digits}");
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// Python `repr()` of a string: single quotes unless the text holds a single
/// quote and no double quote.
pub(crate) fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        float_repr(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Python `repr()` of a JSON value seen as the Python object `json.loads`
/// would have made.
pub(crate) fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => number_text(n),
        Value::String(s) => str_repr(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", str_repr(k), repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Python `str()` of a JSON value: strings bare, everything else as `repr`.
pub(crate) fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

/// The Python type name of a JSON value, as used in `TypeError` messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Parses digits the way Python's `int(str)` does: surrounding whitespace,
/// an optional sign, underscores between digits.
fn parse_py_int(s: &str) -> Option<PyInt> {
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let n: PyInt = clean.parse().ok()?;
    Some(if neg { -n } else { n })
}

/// Python `int(v)`: the value or the exception message.
pub(crate) fn to_int(v: &Value) -> Result<PyInt, String> {
    match v {
        Value::Bool(b) => Ok(PyInt::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(PyInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(PyInt::from(u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_nan() {
                    Err("cannot convert float NaN to integer".into())
                } else if f.is_infinite() {
                    Err("cannot convert float infinity to integer".into())
                } else {
                    Ok(f.trunc() as PyInt)
                }
            }
        }
        Value::String(s) => parse_py_int(s)
            .ok_or_else(|| format!("invalid literal for int() with base 10: {}", str_repr(s))),
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            type_name(other)
        )),
    }
}

/// Python `float(v)`: the value or the exception message.
pub(crate) fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => {
            let t = s.trim().to_ascii_lowercase();
            let t = t.replace('_', "");
            let parsed = match t.as_str() {
                "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
                "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
                "nan" | "+nan" | "-nan" => Some(f64::NAN),
                other if !other.is_empty() => other.parse::<f64>().ok(),
                _ => None,
            };
            parsed.ok_or_else(|| format!("could not convert string to float: {}", str_repr(s)))
        }
        other => Err(format!(
            "float() argument must be a string or a real number, not '{}'",
            type_name(other)
        )),
    }
}

/// Python truthiness, as `bool(v)`.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A Python int back as JSON; values beyond 64 bits become floats (JSON
/// cannot carry them through serde_json otherwise).
pub(crate) fn int_value(i: PyInt) -> Value {
    if let Ok(v) = i64::try_from(i) {
        Value::from(v)
    } else if let Ok(v) = u64::try_from(i) {
        Value::from(v)
    } else {
        Number::from_f64(i as f64).map_or(Value::Null, Value::Number)
    }
}

/// A Python float back as JSON (`NaN`/`inf` have no JSON form: `null`).
pub(crate) fn float_value(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A number for comparisons with Python semantics (ints exact, else floats).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(PyInt),
    Float(f64),
}

impl Num {
    pub(crate) fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Bool(b) => Some(Num::Int(PyInt::from(*b))),
            Value::Number(n) => Some(if let Some(i) = n.as_i64() {
                Num::Int(PyInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Num::Int(PyInt::from(u))
            } else {
                Num::Float(n.as_f64().unwrap_or(f64::NAN))
            }),
            _ => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// `self < other` as Python compares mixed ints and floats.
    pub(crate) fn lt(self, other: Num) -> bool {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a < b,
            (a, b) => a.as_f64() < b.as_f64(),
        }
    }
}

/// Python `==` between two JSON-decoded values (`1 == 1.0 == True`).
pub(crate) fn py_eq(a: &Value, b: &Value) -> bool {
    match (Num::of(a), Num::of(b)) {
        (Some(x), Some(y)) => match (x, y) {
            (Num::Int(p), Num::Int(q)) => p == q,
            (p, q) => p.as_f64() == q.as_f64(),
        },
        _ => a == b,
    }
}

/// `str()` of a Python list of JSON values (`['a', 'b']`).
pub(crate) fn list_repr(items: &[Value]) -> String {
    repr(&Value::Array(items.to_vec()))
}

/// A JSON object from pairs, keeping their order.
pub(crate) fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_like_python() {
        assert_eq!(float_repr(1.0), "1.0");
        assert_eq!(float_repr(0.5), "0.5");
        assert_eq!(float_repr(1e-7), "1e-07");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(123.25), "123.25");
    }

    #[test]
    fn conversions_follow_python() {
        assert_eq!(to_int(&json!(3.7)), Ok(3));
        assert_eq!(to_int(&json!(" 12 ")), Ok(12));
        assert_eq!(
            to_int(&json!("wide")),
            Err("invalid literal for int() with base 10: 'wide'".into())
        );
        assert_eq!(to_float(&json!("1e3")), Ok(1000.0));
        assert!(truthy(&json!("false")));
        assert!(!truthy(&json!(0)));
        assert_eq!(list_repr(&[json!("a"), json!("it's")]), "['a', \"it's\"]");
    }
}
