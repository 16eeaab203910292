//! Figures computed from the measured runs: medians per target, ratios of each round
//! against a reference measured in the same round, and the faults that make a run invalid.
//! Measuring and reporting are left to `runs` and `main`.

use std::collections::{BTreeMap, BTreeSet};

use crate::runs::{median, Round, Step};

/// Medians per target over the coregate-load rounds (and wrk throughput beside them).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub rps: f64,
    pub cpu_us_per_req: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub errors: u64,
    pub wrk_rps: Option<f64>,
    pub wrk_cpu_us_per_req: Option<f64>,
}

/// One [`Summary`] per target, by name.
pub fn summarise(rounds: &[Round]) -> BTreeMap<String, Summary> {
    let mut names: Vec<String> = rounds.iter().map(|r| r.target.clone()).collect();
    names.dedup();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let own: Vec<&Round> = rounds.iter().filter(|r| r.target == name && r.tool == "coregate-load").collect();
            let wrk: Vec<&Round> = rounds.iter().filter(|r| r.target == name && r.tool == "wrk").collect();
            let s = Summary {
                rps: median(own.iter().map(|r| r.rps).collect()),
                cpu_us_per_req: median(own.iter().map(|r| r.cpu_us_per_req).collect()),
                p99_us: median(own.iter().map(|r| r.p99_us as f64).collect()),
                p999_us: median(own.iter().map(|r| r.p999_us as f64).collect()),
                errors: own.iter().map(|r| r.errors).sum(),
                wrk_rps: (!wrk.is_empty()).then(|| median(wrk.iter().map(|r| r.rps).collect())),
                wrk_cpu_us_per_req: (!wrk.is_empty()).then(|| median(wrk.iter().map(|r| r.cpu_us_per_req).collect())),
            };
            (name, s)
        })
        .collect()
}

/// A figure of one target divided by the same figure of a reference measured in the same
/// round with the same tool: slow drifts of a shared machine move both sides alike, so the
/// spread of these ratios is smaller than that of the medians they come from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Paired {
    pub what: String,
    pub tool: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
}

/// How one figure of a round is read.
pub type Figure = fn(&Round) -> f64;

/// A ratio the report states: its name, numerator and denominator targets, the figure, and
/// the goal of issue 6 where there is one.
pub struct Ratio {
    pub what: &'static str,
    pub num: &'static str,
    pub den: &'static str,
    pub figure: Figure,
    pub goal: Option<Goal>,
}

/// A goal on a ratio: at most or at least this value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    pub fn holds(self, v: f64) -> bool {
        match self {
            Goal::AtMost(g) => v <= g,
            Goal::AtLeast(g) => v >= g,
        }
    }
}

fn cpu(r: &Round) -> f64 {
    r.cpu_us_per_req
}

fn rps(r: &Round) -> f64 {
    r.rps
}

/// Proxy CPU per request at most 1/1.3 of each peer's (the throughput goal is stated in place).
const CPU_GOAL: Option<Goal> = Some(Goal::AtMost(1.0 / 1.3));

/// The ratios the goals are stated in, and those that explain them.
pub const RATIOS: [Ratio; 19] = [
    Ratio {
        what: "CPU per request, coregate / nginx",
        num: "coregate-io_uring",
        den: "nginx",
        figure: cpu,
        goal: CPU_GOAL,
    },
    Ratio {
        what: "CPU per request, coregate / HAProxy",
        num: "coregate-io_uring",
        den: "haproxy",
        figure: cpu,
        goal: CPU_GOAL,
    },
    Ratio {
        what: "CPU per request, coregate epoll / nginx",
        num: "coregate-epoll",
        den: "nginx",
        figure: cpu,
        goal: None,
    },
    Ratio {
        what: "throughput, coregate / direct",
        num: "coregate-io_uring",
        den: "direct",
        figure: rps,
        goal: Some(Goal::AtLeast(0.9)),
    },
    Ratio {
        what: "CPU per request, coregate pipelined / nginx",
        num: "coregate-io_uring-pipelined",
        den: "nginx",
        figure: cpu,
        goal: CPU_GOAL,
    },
    Ratio {
        what: "CPU per request, coregate pipelined / HAProxy",
        num: "coregate-io_uring-pipelined",
        den: "haproxy",
        figure: cpu,
        goal: CPU_GOAL,
    },
    Ratio {
        what: "CPU per request, coregate pipelined / coregate",
        num: "coregate-io_uring-pipelined",
        den: "coregate-io_uring",
        figure: cpu,
        goal: None,
    },
    Ratio {
        what: "throughput, coregate with policies / coregate",
        num: "coregate-io_uring-policies",
        den: "coregate-io_uring",
        figure: rps,
        goal: None,
    },
    Ratio {
        what: "CPU per request, coregate with policies / coregate",
        num: "coregate-io_uring-policies",
        den: "coregate-io_uring",
        figure: cpu,
        goal: None,
    },
    Ratio {
        what: "CPU per request, coregate cache hits / nginx proxy_cache hits",
        num: "coregate-io_uring-cache",
        den: "nginx-cache",
        figure: cpu,
        goal: None,
    },
    Ratio {
        what: "throughput, coregate cache hits / nginx proxy_cache hits",
        num: "coregate-io_uring-cache",
        den: "nginx-cache",
        figure: rps,
        goal: None,
    },
    Ratio {
        what: "CPU per request, coregate / nginx, both to an HTTPS upstream",
        num: "coregate-io_uring-https",
        den: "nginx-https",
        figure: cpu,
        goal: None,
    },
    Ratio {
        what: "throughput, coregate / nginx, both to an HTTPS upstream",
        num: "coregate-io_uring-https",
        den: "nginx-https",
        figure: rps,
        goal: None,
    },
    Ratio {
        what: "CPU per request, coregate / nginx, both terminating TLS",
        num: "coregate-io_uring-tls",
        den: "nginx-tls",
        figure: cpu,
        goal: None,
    },
    Ratio {
        what: "CPU per request, coregate / HAProxy, both terminating TLS",
        num: "coregate-io_uring-tls",
        den: "haproxy-tls",
        figure: cpu,
        goal: None,
    },
    Ratio {
        what: "throughput, coregate / nginx, both terminating TLS",
        num: "coregate-io_uring-tls",
        den: "nginx-tls",
        figure: rps,
        goal: None,
    },
    Ratio { what: "CPU per request, byte pipe / nginx", num: "pipe-plain", den: "nginx", figure: cpu, goal: None },
    Ratio {
        what: "CPU per request, byte pipe (ideal io_uring) / nginx",
        num: "pipe-ideal",
        den: "nginx",
        figure: cpu,
        goal: None,
    },
    Ratio {
        what: "CPU per request, coregate / byte pipe",
        num: "coregate-io_uring",
        den: "pipe-plain",
        figure: cpu,
        goal: None,
    },
];

/// The load tools, in report order.
pub const TOOLS: [&str; 2] = ["coregate-load", "wrk"];

/// `ratio` in every round where `tool` measured both of its targets (the denominator above 0).
pub fn ratio_values(rounds: &[Round], tool: &str, ratio: &Ratio) -> Vec<f64> {
    let find = |name: &str, round: usize| {
        rounds.iter().find(|r| r.tool == tool && r.target == name && r.round == round).map(ratio.figure)
    };
    (0..=rounds.iter().map(|r| r.round).max().unwrap_or(0))
        .filter_map(|round| Some(find(ratio.num, round)? / find(ratio.den, round).filter(|d| *d > 0.0)?))
        .collect()
}

/// The smallest and largest of `v`.
pub fn range(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// The ratios of [`RATIOS`], for each load tool that measured both sides in at least one
/// round.
pub fn paired_ratios(rounds: &[Round]) -> Vec<Paired> {
    let mut out = Vec::new();
    for tool in TOOLS {
        for ratio in &RATIOS {
            let v = ratio_values(rounds, tool, ratio);
            if v.is_empty() {
                continue;
            }
            let (min, max) = range(&v);
            out.push(Paired {
                what: ratio.what.into(),
                tool: tool.into(),
                median: median(v.clone()),
                min,
                max,
                rounds: v.len(),
            });
        }
    }
    out
}

/// What each TLS target's handshakes negotiated with coregate-load, one entry per target
/// ("nginx-tls TLSv1.3 TLS13_AES_256_GCM_SHA384"), and whether all targets agree.
pub fn negotiated(rounds: &[Round]) -> (Vec<String>, bool) {
    let mut by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in rounds {
        if let Some(tls) = &r.tls {
            by.entry(r.target.as_str()).or_default().extend(tls.split(", "));
        }
    }
    let agree = by.values().all(|v| Some(v) == by.values().next());
    let each = by.iter().map(|(t, v)| format!("{t} {}", Vec::from_iter(v.iter().copied()).join(" and "))).collect();
    (each, agree)
}

/// What makes the measurement invalid: a closed-loop run that completed nothing or had
/// errors, an open-loop run with errors at or below the baseline's saturation rate `base`
/// (past it, timeouts are the measured overload), or TLS targets that negotiated different
/// protocols or suites (nginx before 1.23.4 speaks TLS 1.2 unless told otherwise: the
/// comparison would weigh two protocols). Empty when every run was clean.
pub fn faults<'a>(rounds: &[Round], steps: impl IntoIterator<Item = &'a Step>, base: f64) -> Vec<String> {
    let closed = rounds.iter().filter(|r| r.requests == 0 || r.errors > 0).map(|r| {
        format!("{} by {} in round {}: {} requests, {} errors", r.target, r.tool, r.round, r.requests, r.errors)
    });
    let open = steps
        .into_iter()
        .filter(|s| s.errors > 0 && s.offered <= base * 1.001)
        .map(|s| format!("{} at {:.0} req/s offered: {} errors", s.target, s.offered, s.errors));
    let (each, agree) = negotiated(rounds);
    let differ = (!agree).then(|| format!("the TLS targets negotiated differently: {}", each.join("; ")));
    closed.chain(open).chain(differ).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(target: &str, tool: &str, round: usize, rps: f64, cpu: f64) -> Round {
        Round {
            target: target.into(),
            tool: tool.into(),
            round,
            rps,
            requests: 1,
            errors: 0,
            cpu_us_per_req: cpu,
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
            tls: None,
        }
    }

    #[test]
    fn ratios_pair_rounds_and_tools() {
        // The machine slows down in round 1: both sides of each ratio move together.
        let rounds = vec![
            round("direct", "coregate-load", 0, 100.0, 0.0),
            round("coregate-io_uring", "coregate-load", 0, 90.0, 8.0),
            round("nginx", "coregate-load", 0, 80.0, 10.0),
            round("direct", "coregate-load", 1, 50.0, 0.0),
            round("coregate-io_uring", "coregate-load", 1, 40.0, 18.0),
            round("nginx", "coregate-load", 1, 40.0, 20.0),
            round("coregate-io_uring", "wrk", 0, 70.0, 7.0),
            round("nginx", "wrk", 0, 70.0, 14.0),
        ];
        let r = paired_ratios(&rounds);
        let find = |what: &str, tool: &str| r.iter().find(|p| p.what == what && p.tool == tool).cloned();
        let cpu = find("CPU per request, coregate / nginx", "coregate-load").expect("pair");
        assert_eq!(cpu.rounds, 2);
        assert!((cpu.min - 0.8).abs() < 1e-9 && (cpu.max - 0.9).abs() < 1e-9);
        assert!((cpu.median - 0.85).abs() < 1e-9);
        let tput = find("throughput, coregate / direct", "coregate-load").expect("pair");
        assert!((tput.median - 0.85).abs() < 1e-9, "{tput:?}");
        // wrk has no direct round here, and no HAProxy anywhere: no such ratios.
        assert!(find("throughput, coregate / direct", "wrk").is_none());
        assert!(find("CPU per request, coregate / HAProxy", "coregate-load").is_none());
        assert!((find("CPU per request, coregate / nginx", "wrk").expect("pair").median - 0.5).abs() < 1e-9);
        // Medians per target use the coregate-load rounds; wrk's stand beside them.
        let s = summarise(&rounds);
        assert!((s["nginx"].cpu_us_per_req - 15.0).abs() < 1e-9);
        assert_eq!(s["nginx"].wrk_rps, Some(70.0));
    }

    #[test]
    fn faults_name_failed_runs_but_not_overload() {
        let mut rounds = vec![round("nginx", "wrk", 0, 70.0, 14.0), round("direct", "wrk", 0, 90.0, 0.0)];
        let step = |offered: f64, errors: u64| Step {
            target: "coregate-io_uring".into(),
            offered,
            achieved: offered,
            errors,
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
        };
        let mut steps = vec![step(500.0, 0), step(1100.0, 7)];
        assert!(faults(&rounds, &steps, 1000.0).is_empty());
        rounds[0].errors = 3;
        rounds[1].requests = 0;
        steps[0].errors = 1;
        let f = faults(&rounds, &steps, 1000.0);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].starts_with("nginx by wrk in round 0") && f[2].contains("500 req/s"));
    }

    #[test]
    fn tls_targets_that_negotiate_differently_make_the_run_invalid() {
        let tls = |target: &str, n: usize, what: &str| Round {
            tls: Some(what.into()),
            ..round(target, "coregate-load", n, 10.0, 1.0)
        };
        let v13 = "TLSv1.3 TLS13_AES_256_GCM_SHA384";
        let mut rounds = vec![tls("coregate-io_uring-tls", 0, v13), tls("nginx-tls", 0, v13), tls("nginx-tls", 1, v13)];
        rounds.push(round("nginx", "coregate-load", 0, 10.0, 1.0));
        assert!(faults(&rounds, &[], 1.0).is_empty());
        let (each, agree) = negotiated(&rounds);
        assert!(agree);
        assert_eq!(each, [format!("coregate-io_uring-tls {v13}"), format!("nginx-tls {v13}")]);
        rounds.push(tls("nginx-tls", 2, "TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"));
        let f = faults(&rounds, &[], 1.0);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("nginx-tls TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 and TLSv1.3"), "{f:?}");
    }
}
