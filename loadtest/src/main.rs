//! The `coregate-load` binary: the load generator, or `coregate-load upstream`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use loadtest::args::{self, Command, LoadArgs};
use loadtest::client::{run_thread, Mode, Plan};
use loadtest::report::{progress_line, summary, RunReport};
use loadtest::runtime::run_threads;
use loadtest::stats::Stats;
use loadtest::upstream;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match args::parse(&argv) {
        Ok(Command::Help) => {
            print!("{}", args::HELP);
            ExitCode::SUCCESS
        }
        Ok(Command::Upstream(a)) => match upstream::bind(a.listen, a.workers) {
            Ok((listeners, addr)) => {
                println!("coregate-load upstream listening on {addr} ({} workers)", a.workers);
                upstream::serve(a, listeners);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("coregate-load upstream: cannot listen on {}: {e}", a.listen);
                ExitCode::FAILURE
            }
        },
        Ok(Command::Load(a)) => load(&a),
        Err(e) => {
            eprintln!("coregate-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn load(a: &LoadArgs) -> ExitCode {
    let mut json = serde_json::Map::new();
    if let Some((start, step, end)) = a.ramp {
        println!("ramp {start}..={end} req/s in steps of {step}, {:?} each, to {}", a.step_duration, a.url.addr);
        println!(
            "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
            "asked", "achieved", "p50", "p90", "p99", "p99.9", "errors"
        );
        let mut steps = Vec::new();
        let mut rate = start;
        while rate <= end + 1e-9 {
            let r = run(a, Mode::Open { rate }, a.step_duration, Duration::ZERO, false);
            let l = &r.latency_us;
            println!(
                "{:>10.0} {:>10.0} {:>10} {:>10} {:>10} {:>10} {:>8}{}",
                rate,
                r.rps,
                loadtest::report::human_us(l.p50),
                loadtest::report::human_us(l.p90),
                loadtest::report::human_us(l.p99),
                loadtest::report::human_us(l.p999),
                r.errors,
                if r.kept_up() { "" } else { "  (could not keep up)" }
            );
            steps.push(r);
            rate += step;
        }
        json.insert("steps".into(), serde_json::to_value(&steps).expect("serialisable"));
    } else {
        let mode = match a.rate {
            Some(rate) => Mode::Open { rate },
            None => Mode::Closed,
        };
        println!(
            "{} {} for {:?} with {} connections on {} threads{}",
            match mode {
                Mode::Closed => "closed loop",
                Mode::Open { .. } => "open loop",
            },
            a.url.addr,
            a.duration,
            a.connections,
            a.threads,
            a.rate.map(|r| format!(" at {r} req/s")).unwrap_or_default()
        );
        let r = run(a, mode, a.duration, a.warmup, std::io::stderr().is_terminal());
        print!("{}", summary(&r));
        json = match serde_json::to_value(&r).expect("serialisable") {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a struct serialises to an object"),
        };
    }
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&json).expect("serialisable");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("coregate-load: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// One measured run with every thread; merges the threads' results.
fn run(a: &LoadArgs, mode: Mode, duration: Duration, warmup: Duration, live: bool) -> RunReport {
    let request = Bytes::from(a.request());
    let start = Instant::now() + Duration::from_millis(20);
    let record_from = start + warmup;
    let end = record_from + duration;
    let (tx, rx) = crossbeam_channel::unbounded::<Stats>();
    let threads = a.threads;
    let per = a.connections / threads;
    let extra = a.connections % threads;
    let plans: Vec<Plan> = (0..threads)
        .map(|t| {
            let first = t * per + t.min(extra);
            let count = per + usize::from(t < extra);
            Plan {
                addr: a.url.addr,
                tls: a.tls.clone(),
                request: request.clone(),
                head_request: a.method.eq_ignore_ascii_case("HEAD"),
                pipeline: a.pipeline,
                mode,
                first,
                count,
                total: a.connections,
                timeout: a.timeout,
                start,
                record_from,
                end,
            }
        })
        .collect();
    let printer = live.then(|| {
        std::thread::spawn(move || {
            let mut so_far = Stats::default();
            let mut last = Instant::now();
            let mut interval = Stats::default();
            let mut received = 0;
            while let Ok(s) = rx.recv() {
                so_far.merge(&s);
                interval.merge(&s);
                received += 1;
                if received % threads == 0 {
                    let now = Instant::now();
                    let line = progress_line(
                        now.saturating_duration_since(record_from).as_secs_f64(),
                        &interval,
                        (now - last).as_secs_f64(),
                        &so_far,
                    );
                    eprint!("\r{line}   ");
                    last = now;
                    interval = Stats::default();
                }
            }
            eprintln!();
        })
    });
    let plans = std::sync::Arc::new(plans);
    let results = run_threads(threads, a.pin, {
        let tx = live.then_some(tx);
        move |i| run_thread(plans[i].clone(), tx.clone())
    });
    if let Some(p) = printer {
        let _ = p.join();
    }
    let mut total = Stats::default();
    for r in &results {
        total.merge(r);
    }
    RunReport::new(
        &total,
        duration.as_secs_f64(),
        match mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed => None,
        },
        a.tls.is_some(),
    )
}
