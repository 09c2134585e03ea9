//! What a CI's environment tells a run, from its variables as given (the
//! caller looks them up; `cli` is the only module that reads the process's
//! environment): `--shard auto` (the shard index and count of GitLab
//! `parallel:`, CircleCI, Buildkite, or a Kubernetes Indexed Job), and
//! where GitHub Actions wants the job summary and annotations.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::CiOptions;
use crate::plan::Shard;

/// `--shard`: a fixed `K/N`, or `auto` / `auto/N` from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    /// `K/N` as given.
    Fixed(Shard),
    /// From the CI's variables; `count` given explicitly with `auto/N`
    /// (needed for Kubernetes, whose pods know only their index).
    Auto {
        /// `N` of `auto/N`.
        count: Option<usize>,
    },
}

impl FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<ShardArg, String> {
        let t = s.trim();
        if t == "auto" {
            return Ok(ShardArg::Auto { count: None });
        }
        if let Some(n) = t.strip_prefix("auto/") {
            return match n.trim().parse::<usize>() {
                Ok(count) if count >= 1 => Ok(ShardArg::Auto { count: Some(count) }),
                _ => Err(format!(
                    "invalid shard '{s}': N of auto/N must be a number >= 1 (e.g. auto/4)"
                )),
            };
        }
        t.parse::<Shard>().map(ShardArg::Fixed).map_err(|e| {
            format!(
                "invalid shard '{}': {} (expected K/N with 1 <= K <= N, e.g. 2/4, or auto / auto/N from the CI's environment)",
                e.input, e.reason
            )
        })
    }
}

impl fmt::Display for ShardArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardArg::Fixed(s) => write!(f, "{s}"),
            ShardArg::Auto { count: None } => f.write_str("auto"),
            ShardArg::Auto { count: Some(n) } => write!(f, "auto/{n}"),
        }
    }
}

/// The CI variables `--shard auto` reads: (CI, index variable, whether it
/// is 0-based, count variable).
const SOURCES: [(&str, &str, bool, Option<&str>); 4] = [
    ("GitLab", "CI_NODE_INDEX", false, Some("CI_NODE_TOTAL")),
    (
        "CircleCI",
        "CIRCLE_NODE_INDEX",
        true,
        Some("CIRCLE_NODE_TOTAL"),
    ),
    (
        "Buildkite",
        "BUILDKITE_PARALLEL_JOB",
        true,
        Some("BUILDKITE_PARALLEL_JOB_COUNT"),
    ),
    ("Kubernetes", "JOB_COMPLETION_INDEX", true, None),
];

/// What one CI's variables say: the 1-based index, the count if they give
/// it, and the variables as `CI NAME=VALUE, NAME=VALUE` for messages.
struct Reading {
    k: usize,
    total: Option<usize>,
    vars: String,
}

/// A resolved `--shard`: the shard, and for `auto` the CI variables it
/// came from (one line for the run's output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The shard.
    pub shard: Shard,
    /// `shard K/N from GitLab CI_NODE_INDEX=…, CI_NODE_TOTAL=…` for `auto`.
    pub source: Option<String>,
}

impl ShardArg {
    /// The shard, reading the environment through `env` for `auto`. Every
    /// CI whose variables are set is read; they must agree (a runner of
    /// one CI inside another's job would otherwise pick a shard silently).
    pub fn resolve(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, String> {
        let count = match self {
            ShardArg::Fixed(shard) => {
                return Ok(Resolved {
                    shard,
                    source: None,
                });
            }
            ShardArg::Auto { count } => count,
        };
        let get = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut readings = Vec::new();
        for &(ci, var, zero_based, total_var) in &SOURCES {
            let Some(raw) = get(var) else { continue };
            let index: usize = raw
                .parse()
                .map_err(|_| format!("{self}: {var}={raw} is not a number"))?;
            let mut vars = format!("{ci} {var}={raw}");
            let total = match total_var.and_then(|t| get(t).map(|v| (t, v))) {
                Some((t, v)) => {
                    vars.push_str(&format!(", {t}={v}"));
                    Some(
                        v.parse::<usize>()
                            .map_err(|_| format!("{self}: {t}={v} is not a number"))?,
                    )
                }
                None => None,
            };
            let k = if zero_based { index + 1 } else { index };
            readings.push(Reading { k, total, vars });
        }
        let Some(first) = readings.first() else {
            return Err(format!(
                "{self}: no shard in the environment (looked for GitLab CI_NODE_INDEX/CI_NODE_TOTAL, CircleCI CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL, Buildkite BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT, Kubernetes JOB_COMPLETION_INDEX with auto/N); pass --shard K/N"
            ));
        };
        let gives = |r: &Reading| match r.total {
            Some(n) => format!("{}/{n}", r.k),
            None => format!("index {}", r.k),
        };
        for other in &readings[1..] {
            let totals_differ = matches!((first.total, other.total), (Some(a), Some(b)) if a != b);
            if other.k != first.k || totals_differ {
                return Err(format!(
                    "{self}: the CIs disagree: {} gives {} but {} gives {}; unset one or pass --shard K/N",
                    first.vars,
                    gives(first),
                    other.vars,
                    gives(other)
                ));
            }
        }
        let env_total = readings.iter().find_map(|r| r.total.map(|n| (n, &r.vars)));
        let total = match (count, env_total) {
            (Some(n), Some((e, vars))) if n != e => {
                return Err(format!("{self}: N = {n} but {vars} gives {e} shards"));
            }
            (Some(n), _) | (None, Some((n, _))) => n,
            (None, None) => {
                return Err(format!(
                    "{self}: {} gives the index but nothing gives the count; pass --shard auto/N (N = the job's completions)",
                    first.vars
                ));
            }
        };
        let vars: Vec<&str> = readings.iter().map(|r| r.vars.as_str()).collect();
        let shard = format!("{}/{total}", first.k)
            .parse::<Shard>()
            .map_err(|e| format!("{self}: from {}: {e}", first.vars))?;
        Ok(Resolved {
            shard,
            source: Some(format!("shard {shard} from {}", vars.join(" and "))),
        })
    }
}

/// The CI outputs of a run: `--junit FILE`, and under GitHub Actions (as
/// its variables, looked up through `env`, say) the step summary and
/// annotations. `log` is the run's `runs.csv`.
pub fn ci_options(
    junit: Option<PathBuf>,
    log: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> CiOptions {
    CiOptions {
        junit,
        step_summary: env("GITHUB_STEP_SUMMARY")
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from),
        annotations: env("GITHUB_ACTIONS").as_deref() == Some("true"),
        log: log.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn auto(count: Option<usize>, vars: &[(&str, &str)]) -> Result<Shard, String> {
        ShardArg::Auto { count }
            .resolve(&env(vars))
            .map(|r| r.shard)
    }

    #[test]
    fn parses_fixed_and_auto() {
        assert_eq!("auto".parse(), Ok(ShardArg::Auto { count: None }));
        assert_eq!("auto/4".parse(), Ok(ShardArg::Auto { count: Some(4) }));
        assert_eq!(
            "2/4".parse(),
            Ok(ShardArg::Fixed(Shard { index: 2, count: 4 }))
        );
        assert!("auto/0".parse::<ShardArg>().is_err());
        let err = "5/4".parse::<ShardArg>().unwrap_err();
        assert!(
            err.contains("K must be between 1 and N") && err.contains("auto"),
            "{err}"
        );
    }

    #[test]
    fn each_ci_gives_a_one_based_shard() {
        let s = |k, n| Ok(Shard { index: k, count: n });
        assert_eq!(
            auto(None, &[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "3")]),
            s(2, 3)
        );
        assert_eq!(
            auto(
                None,
                &[("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "4")]
            ),
            s(1, 4)
        );
        assert_eq!(
            auto(
                None,
                &[
                    ("BUILDKITE_PARALLEL_JOB", "3"),
                    ("BUILDKITE_PARALLEL_JOB_COUNT", "4")
                ]
            ),
            s(4, 4)
        );
        assert_eq!(auto(Some(8), &[("JOB_COMPLETION_INDEX", "7")]), s(8, 8));
    }

    #[test]
    fn auto_errors_are_clear() {
        let none = auto(None, &[]).unwrap_err();
        assert!(
            none.contains("no shard in the environment") && none.contains("--shard K/N"),
            "{none}"
        );
        let k8s = auto(None, &[("JOB_COMPLETION_INDEX", "1")]).unwrap_err();
        assert!(k8s.contains("auto/N"), "{k8s}");
        let mismatch =
            auto(Some(3), &[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "4")]).unwrap_err();
        assert!(
            mismatch.contains("N = 3 but GitLab CI_NODE_INDEX=1, CI_NODE_TOTAL=4 gives 4"),
            "{mismatch}"
        );
        let range = auto(Some(2), &[("JOB_COMPLETION_INDEX", "2")]).unwrap_err();
        assert!(range.contains("K must be between 1 and N"), "{range}");
        let nan = auto(None, &[("CI_NODE_INDEX", "x"), ("CI_NODE_TOTAL", "2")]).unwrap_err();
        assert!(nan.contains("not a number"), "{nan}");
    }

    #[test]
    fn two_cis_must_agree_and_are_both_named() {
        let both = ShardArg::Auto { count: Some(4) }
            .resolve(&env(&[
                ("BUILDKITE_PARALLEL_JOB", "2"),
                ("JOB_COMPLETION_INDEX", "2"),
            ]))
            .unwrap();
        assert_eq!(both.shard, Shard { index: 3, count: 4 });
        assert_eq!(
            both.source.as_deref(),
            Some(
                "shard 3/4 from Buildkite BUILDKITE_PARALLEL_JOB=2 and Kubernetes JOB_COMPLETION_INDEX=2"
            )
        );
        let index = auto(
            Some(4),
            &[("CI_NODE_INDEX", "2"), ("JOB_COMPLETION_INDEX", "2")],
        )
        .unwrap_err();
        assert!(
            index.contains("GitLab CI_NODE_INDEX=2 gives index 2 but Kubernetes JOB_COMPLETION_INDEX=2 gives index 3"),
            "{index}"
        );
        let count = auto(
            None,
            &[
                ("CI_NODE_INDEX", "1"),
                ("CI_NODE_TOTAL", "2"),
                ("CIRCLE_NODE_INDEX", "0"),
                ("CIRCLE_NODE_TOTAL", "3"),
            ],
        )
        .unwrap_err();
        assert!(count.contains("gives 1/2 but CircleCI"), "{count}");
    }

    #[test]
    fn github_outputs_come_from_its_variables() {
        let o = ci_options(
            None,
            Path::new("out/runs.csv"),
            &env(&[
                ("GITHUB_STEP_SUMMARY", "/tmp/s.md"),
                ("GITHUB_ACTIONS", "true"),
            ]),
        );
        assert_eq!(o.step_summary.as_deref(), Some(Path::new("/tmp/s.md")));
        assert!(o.annotations);
        let o = ci_options(None, Path::new("r.csv"), &env(&[]));
        assert!(o.step_summary.is_none() && !o.annotations);
    }
}
