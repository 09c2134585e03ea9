//! The `seeds:` field: an explicit list, `{count, base}` or `{range: [a, b]}`.
//! Parsed by a hand-written visitor (not `#[serde(untagged)]`) so a wrong
//! shape gets an error that says which shapes are accepted.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// How a job group chooses its seeds; expanded by `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedSpec {
    /// Explicit seeds, used as written (any `u64`).
    List(Vec<u64>),
    /// `count` seeds drawn from the documented ChaCha20 stream seeded by
    /// `base` (see `docs/manifest.md`): the same on every machine.
    Count {
        /// How many seeds.
        count: u64,
        /// The stream's seed.
        base: u64,
    },
    /// Every seed from `start` to `end`, both included.
    Range {
        /// First seed.
        start: u64,
        /// Last seed (included).
        end: u64,
    },
}

const EXPECTING: &str = "a list of seeds, {count: N, base: S} or {range: [FIRST, LAST]}";

/// One seed: a whole number in `0..=u64::MAX`. Its own visitor so a
/// negative, fractional or too large seed says so, instead of serde's
/// `invalid type: integer `-1`, expected u64`.
struct Seed(u64);

/// What a seed, a `base` or a `count` must be (`what` names it in messages).
pub(super) struct WholeVisitor {
    /// What the number is, as the subject of a sentence (`a seed`).
    pub(super) what: &'static str,
    /// The smallest value allowed.
    pub(super) min: u64,
    /// The largest value allowed.
    pub(super) max: u64,
}

impl WholeVisitor {
    /// `-1 is negative; a seed is a whole number from 0 to …`.
    fn fail<E: de::Error>(&self, value: impl fmt::Display, why: &str) -> E {
        E::custom(format!(
            "{value} {why}; {} is a whole number from {} to {}",
            self.what, self.min, self.max
        ))
    }
}

impl Visitor<'_> for WholeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: a whole number from {} to {}",
            self.what, self.min, self.max
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v < self.min {
            return Err(self.fail(v, "is too small"));
        }
        if v > self.max {
            return Err(self.fail(v, "is too large"));
        }
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.fail(v, "is negative")),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.fail(v, "is too large")),
        }
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<u64, E> {
        match u128::try_from(v) {
            Ok(v) => self.visit_u128(v),
            Err(_) => Err(self.fail(v, "is negative")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(self.fail(v, "is not a whole number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        Err(self.fail(format!("'{v}'"), "is not a number"))
    }
}

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WholeVisitor {
            what: "a seed",
            min: 0,
            max: u64::MAX,
        })
        .map(Seed)
    }
}

/// `count:` of `{count, base}`: at least 1.
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WholeVisitor {
            what: "the count",
            min: 1,
            max: u64::MAX,
        })
        .map(Count)
    }
}

/// `base:` of `{count, base}`: any `u64`.
struct Base(u64);

impl<'de> Deserialize<'de> for Base {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WholeVisitor {
            what: "the base",
            min: 0,
            max: u64::MAX,
        })
        .map(Base)
    }
}

struct SeedVisitor;

impl<'de> Visitor<'de> for SeedVisitor {
    type Value = SeedSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeedSpec, A::Error> {
        let mut seeds = Vec::new();
        while let Some(Seed(seed)) = seq.next_element()? {
            seeds.push(seed);
        }
        if seeds.is_empty() {
            return Err(de::Error::invalid_length(0, &"at least one seed"));
        }
        Ok(SeedSpec::List(seeds))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SeedSpec, A::Error> {
        let mut count = None;
        let mut base = None;
        let mut range: Option<Vec<Seed>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "count" => count = Some(map.next_value::<Count>()?.0),
                "base" => base = Some(map.next_value::<Base>()?.0),
                "range" => range = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, &["count", "base", "range"])),
            }
        }
        match (count, base, range) {
            (Some(count), Some(base), None) => Ok(SeedSpec::Count { count, base }),
            (None, None, Some(r)) => match r.as_slice() {
                [Seed(start), Seed(end)] if start <= end => Ok(SeedSpec::Range {
                    start: *start,
                    end: *end,
                }),
                [Seed(start), Seed(end)] => Err(de::Error::custom(format!(
                    "range [{start}, {end}] is empty: the first seed must not exceed the last"
                ))),
                _ => Err(de::Error::custom(
                    "range takes exactly two seeds, [FIRST, LAST]",
                )),
            },
            (Some(_), None, None) => Err(de::Error::custom(
                "{count: N} needs a base too, e.g. {count: 4, base: 42}",
            )),
            (None, Some(_), None) => Err(de::Error::custom(
                "{base: S} needs a count too, e.g. {count: 4, base: 42}",
            )),
            _ => Err(de::Error::custom(format!("expected {EXPECTING}"))),
        }
    }
}

impl<'de> Deserialize<'de> for SeedSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SeedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SeedSpec, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_three_shapes() {
        assert_eq!(
            parse("[1, 2, 18446744073709551615]"),
            Ok(SeedSpec::List(vec![1, 2, u64::MAX]))
        );
        assert_eq!(
            parse("{count: 4, base: 42}"),
            Ok(SeedSpec::Count { count: 4, base: 42 })
        );
        assert_eq!(
            parse("{range: [100, 103]}"),
            Ok(SeedSpec::Range {
                start: 100,
                end: 103
            })
        );
    }

    #[test]
    fn wrong_shapes_say_what_is_expected() {
        let err = parse("7").unwrap_err();
        assert!(err.contains(EXPECTING), "{err}");
        assert!(parse("{range: [5, 1]}").unwrap_err().contains("is empty"));
        assert!(parse("{count: 3}").unwrap_err().contains("needs a base"));
        assert!(
            parse("{count: 0, base: 1}")
                .unwrap_err()
                .contains("0 is too small; the count")
        );
        let err = parse("[1, -1]").unwrap_err();
        assert!(
            err.contains("-1 is negative; a seed is a whole number from 0 to 18446744073709551615"),
            "{err}"
        );
        let err = parse("[18446744073709551616]").unwrap_err();
        assert!(
            err.contains("18446744073709551616 is too large; a seed"),
            "{err}"
        );
        let err = parse("{count: -1, base: 1}").unwrap_err();
        assert!(
            err.contains("-1 is negative; the count is a whole number from 1"),
            "{err}"
        );
        let err = parse("{count: 2.5, base: 1}").unwrap_err();
        assert!(
            err.contains("2.5 is not a whole number; the count"),
            "{err}"
        );
        let err = parse("[abc]").unwrap_err();
        assert!(err.contains("'abc' is not a number; a seed"), "{err}");
        assert!(parse("[]").is_err());
    }
}
