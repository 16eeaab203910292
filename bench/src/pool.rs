//! Paired ratios pooled over several saved runs (`coregate-bench --pool DIR...`): the goals
//! judged on every round of several runs of the same code, with an interval that counts the
//! spread between runs as well as between rounds. Measuring is left to `runs`, one run's
//! figures to `summary`.
//!
//! Why: on a shared 2-core machine the median of one run moves between runs of the same code
//! by more than the distance to a goal (issue 6: 0.86, 0.76, 0.79 in runs R, S and T), so a
//! single run cannot say whether a goal holds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use crate::runs::{median, Round};
use crate::summary::{range, ratio_values, Goal, RATIOS, TOOLS};

/// Bootstrap resamples per interval; with a fixed seed the report repeats exactly.
const RESAMPLES: usize = 4000;
const SEED: u64 = 0x636f_7265_6761_7465;

/// The 95% interval of the median of `runs` pooled: each resample draws as many runs as
/// there are, with replacement, then as many rounds of each drawn run as it has, with
/// replacement (a two-level bootstrap: runs are the larger source of spread here).
pub fn interval(runs: &[Vec<f64>], rng: &mut SmallRng) -> (f64, f64) {
    let mut medians = Vec::with_capacity(RESAMPLES);
    let mut sample = Vec::new();
    for _ in 0..RESAMPLES {
        sample.clear();
        for _ in 0..runs.len() {
            let run = &runs[rng.gen_range(0..runs.len())];
            sample.extend((0..run.len()).map(|_| run[rng.gen_range(0..run.len())]));
        }
        medians.push(median(sample.clone()));
    }
    medians.sort_by(|a, b| a.total_cmp(b));
    (medians[RESAMPLES * 25 / 1000], medians[RESAMPLES * 975 / 1000 - 1])
}

/// What the interval says of a goal: met when all of it is on the goal's side, not met when
/// none of it is, open otherwise.
pub fn verdict(goal: Goal, (lo, hi): (f64, f64)) -> &'static str {
    match (goal.holds(lo), goal.holds(hi)) {
        (true, true) => "met",
        (false, false) => "not met",
        _ => "open",
    }
}

/// The `report.json` saved in `dir`, or the part of it that `T` names.
pub fn read_saved<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T, String> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn load(dir: &Path) -> Result<Vec<Round>, String> {
    #[derive(serde::Deserialize)]
    struct Saved {
        rounds: Vec<Round>,
    }
    Ok(read_saved::<Saved>(dir)?.rounds)
}

/// The Markdown report of the ratios pooled over the runs saved in `dirs`.
pub fn pooled(dirs: &[PathBuf]) -> Result<String, String> {
    if dirs.is_empty() {
        return Err("--pool needs at least one run directory (with a report.json)".into());
    }
    let runs = dirs.iter().map(|d| load(d)).collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut s = String::new();
    let _ = writeln!(s, "# Paired ratios pooled over {}\n", names.join(", "));
    let _ = writeln!(
        s,
        "Each round's ratio against its reference in the same round and with the same load tool, \
         pooled over the runs. The 95% interval of the median is a two-level bootstrap ({RESAMPLES} \
         resamples: runs with replacement, then rounds within them), so the spread between runs \
         counts{}. A goal is met when the whole interval is on its side.\n",
        if runs.len() == 1 { " (one run here: the interval shows the spread between rounds only)" } else { "" }
    );
    let _ = writeln!(
        s,
        "| ratio | tool | runs | rounds | median | range | 95% interval | per-run medians | goal | verdict |"
    );
    let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- | --- |");
    for tool in TOOLS {
        for ratio in &RATIOS {
            let per_run: Vec<Vec<f64>> =
                runs.iter().map(|r| ratio_values(r, tool, ratio)).filter(|v| !v.is_empty()).collect();
            if per_run.is_empty() {
                continue;
            }
            let all: Vec<f64> = per_run.concat();
            let (min, max) = range(&all);
            let (lo, hi) = interval(&per_run, &mut rng);
            let medians: Vec<String> = per_run.iter().map(|v| format!("{:.3}", median(v.clone()))).collect();
            let (goal, verdict) = match ratio.goal {
                Some(g @ Goal::AtMost(v)) => (format!("<= {v:.3}"), verdict(g, (lo, hi))),
                Some(g @ Goal::AtLeast(v)) => (format!(">= {v:.3}"), verdict(g, (lo, hi))),
                None => ("-".into(), "-"),
            };
            let _ = writeln!(
                s,
                "| {} | {tool} | {} | {} | {:.3} | {min:.3}-{max:.3} | {lo:.3}-{hi:.3} | {} | {goal} | {verdict} |",
                ratio.what,
                per_run.len(),
                all.len(),
                median(all.clone()),
                medians.join(" "),
            );
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_widens_with_the_spread_between_runs() {
        let mut rng = SmallRng::seed_from_u64(1);
        // Two runs that agree: the interval is narrow and around their common level.
        let alike = vec![vec![0.75, 0.76, 0.74, 0.75, 0.76], vec![0.76, 0.75, 0.75, 0.74, 0.76]];
        let (lo, hi) = interval(&alike, &mut rng);
        assert!(lo >= 0.74 && hi <= 0.76 && lo <= 0.75 && hi >= 0.75, "{lo} {hi}");
        // The same rounds, but one run sits much higher: the interval now reaches it.
        let apart = vec![vec![0.75, 0.76, 0.74, 0.75, 0.76], vec![0.86, 0.85, 0.87, 0.86, 0.85]];
        let (lo2, hi2) = interval(&apart, &mut rng);
        assert!(lo2 <= 0.76 && hi2 >= 0.85, "{lo2} {hi2}");
    }

    #[test]
    fn verdicts_need_the_whole_interval() {
        let g = Goal::AtMost(0.769);
        assert_eq!(verdict(g, (0.70, 0.76)), "met");
        assert_eq!(verdict(g, (0.75, 0.80)), "open");
        assert_eq!(verdict(g, (0.78, 0.80)), "not met");
        assert_eq!(verdict(Goal::AtLeast(0.9), (0.91, 0.95)), "met");
        assert_eq!(verdict(Goal::AtLeast(0.9), (0.85, 0.89)), "not met");
    }
}
