//! The `draw:` field of a group with `templates:`: `all` (every variant) or
//! `{random: N, seed: S}` (N reproducible draws). A hand-written visitor, so
//! a wrong shape says which shapes are accepted.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::seeds::WholeVisitor;

/// How a group's templates are expanded; used by `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrawSpec {
    /// Every variant of every template (combinatorial; the default).
    #[default]
    All,
    /// `count` distinct variants drawn from the documented stream keyed by
    /// `seed` (see `docs/manifest.md`).
    Random {
        /// How many draws.
        count: u64,
        /// The stream's key.
        seed: u64,
    },
}

const EXPECTING: &str = "'all' or {random: N, seed: S}";

impl<'de> Deserialize<'de> for DrawSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DV;
        impl<'de> Visitor<'de> for DV {
            type Value = DrawSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DrawSpec, E> {
                if v == "all" {
                    Ok(DrawSpec::All)
                } else {
                    Err(E::custom(format!("draw '{v}' is not {EXPECTING}")))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DrawSpec, A::Error> {
                let mut count = None;
                let mut seed = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "random" => {
                            count = Some(map.next_value_seed(Whole(WholeVisitor {
                                what: "a draw count",
                                min: 1,
                                max: u64::MAX,
                            }))?)
                        }
                        "seed" => {
                            seed = Some(map.next_value_seed(Whole(WholeVisitor {
                                what: "a draw seed",
                                min: 0,
                                max: u64::MAX,
                            }))?)
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown key '{other}' in draw: (expected {EXPECTING})"
                            )));
                        }
                    }
                }
                match (count, seed) {
                    (Some(count), Some(seed)) => Ok(DrawSpec::Random { count, seed }),
                    (None, _) => Err(de::Error::custom(format!(
                        "draw needs 'random: N' ({EXPECTING})"
                    ))),
                    (_, None) => Err(de::Error::custom(format!(
                        "draw needs 'seed: S' so the draw is reproducible ({EXPECTING})"
                    ))),
                }
            }
        }
        d.deserialize_any(DV)
    }
}

struct Whole(WholeVisitor);

impl<'de> de::DeserializeSeed<'de> for Whole {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self.0)
    }
}
