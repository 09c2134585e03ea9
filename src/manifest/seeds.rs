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

struct SeedVisitor;

impl<'de> Visitor<'de> for SeedVisitor {
    type Value = SeedSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeedSpec, A::Error> {
        let mut seeds = Vec::new();
        while let Some(seed) = seq.next_element::<u64>()? {
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
        let mut range: Option<Vec<u64>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "count" => count = Some(map.next_value::<u64>()?),
                "base" => base = Some(map.next_value::<u64>()?),
                "range" => range = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, &["count", "base", "range"])),
            }
        }
        match (count, base, range) {
            (Some(count), Some(base), None) => {
                if count == 0 {
                    return Err(de::Error::custom("seeds: count must be at least 1"));
                }
                Ok(SeedSpec::Count { count, base })
            }
            (None, None, Some(r)) => match r.as_slice() {
                [start, end] if start <= end => Ok(SeedSpec::Range {
                    start: *start,
                    end: *end,
                }),
                [start, end] => Err(de::Error::custom(format!(
                    "seeds: range [{start}, {end}] is empty: the first seed must not exceed the last"
                ))),
                _ => Err(de::Error::custom(
                    "seeds: range takes exactly two seeds, [FIRST, LAST]",
                )),
            },
            (Some(_), None, None) => Err(de::Error::custom(
                "seeds: {count: N} needs a base too, e.g. {count: 4, base: 42}",
            )),
            (None, Some(_), None) => Err(de::Error::custom(
                "seeds: {base: S} needs a count too, e.g. {count: 4, base: 42}",
            )),
            _ => Err(de::Error::custom(format!("seeds: expected {EXPECTING}"))),
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
                .contains("at least 1")
        );
        assert!(parse("[-1]").is_err());
        assert!(parse("[]").is_err());
    }
}
