//! `--shard K/N`: the K-th of N deterministic partitions of a plan (CI
//! matrices, Kubernetes indexed jobs). Job `index` goes to shard
//! `index % N + 1`, so shards are disjoint, complete and balanced.

use std::fmt;
use std::str::FromStr;

/// One partition of a plan, 1-based: `2/4` is the second of four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which partition, 1..=count.
    pub index: usize,
    /// How many partitions.
    pub count: usize,
}

/// Why a `--shard` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard '{input}': {reason} (expected K/N with 1 <= K <= N, e.g. 2/4)")]
pub struct ShardError {
    /// The value as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let err = |reason| ShardError {
            input: s.to_owned(),
            reason,
        };
        let (k, n) = s.split_once('/').ok_or_else(|| err("no '/'"))?;
        let index: usize = k.trim().parse().map_err(|_| err("K is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| err("N is not a number"))?;
        if count == 0 {
            return Err(err("N must be at least 1"));
        }
        if index == 0 || index > count {
            return Err(err("K must be between 1 and N"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the job at plan position `index` (0-based) is in this shard.
    pub fn contains(&self, index: usize) -> bool {
        index % self.count == self.index - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(Shard { index: 1, count: 1 }.to_string(), "1/1");
    }

    #[test]
    fn invalid_shards_name_the_format() {
        for bad in ["", "3", "0/4", "5/4", "1/0", "a/2", "1/b", "-1/2"] {
            let err = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(err.contains("expected K/N"), "{bad}: {err}");
        }
        assert_eq!(
            "5/4".parse::<Shard>().unwrap_err().to_string(),
            "invalid shard '5/4': K must be between 1 and N (expected K/N with 1 <= K <= N, e.g. 2/4)"
        );
    }

    #[test]
    fn shard_sets_are_disjoint_and_complete() {
        for count in 1..=7 {
            let shards: Vec<Shard> = (1..=count).map(|index| Shard { index, count }).collect();
            for job in 0..100 {
                let owners = shards.iter().filter(|s| s.contains(job)).count();
                assert_eq!(owners, 1, "job {job} with {count} shards");
            }
        }
    }
}
