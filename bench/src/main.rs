//! coregate-bench: runs coregate, nginx and HAProxy side by side as reverse proxies to one
//! upstream, with the same worker count and keep-alive to the upstream, and reports proxy
//! CPU per request, throughput, the direct ceiling, an open-loop latency sweep and idle
//! connection memory, as JSON, Markdown and SVG charts.
//!
//! It only drives processes and reads /proc; it knows nothing of the gateway's internals.

mod plot;
mod pool;
mod procs;
mod runs;
mod summary;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use procs::{have, Env, Nginx, Proc, Variant};
use runs::{idle_memory, median, raise_nofile, Batch, Loader, Memory, Round, Step};
use summary::{faults, paired_ratios, summarise, Paired, Summary};

const HELP: &str = "\
coregate-bench: coregate against nginx and HAProxy, side by side

USAGE:
    coregate-bench [--quick] [OPTIONS]

OPTIONS:
    --quick               a run of seconds (CI): 1 round of 1 s, 3 sweep steps, 500 idle connections
    --rounds N            closed-loop rounds per target (default 5)
    --duration SECS       seconds per closed-loop run (default 5)
    --step-duration SECS  seconds per sweep step (default 3)
    --workers N           proxy workers/processes/threads (default 1)
    --connections N       load connections (default 64)
    --idle N              idle connections for the memory test (default 10000; 0 skips it)
    --upstream KIND       nginx (default where installed) or bundled
    --no-epoll            skip the coregate epoll run
    --no-policies         skip coregate with the policy chain (API key + rate limit +
                          header transform), which is compared with plain coregate
    --pipeline N          add coregate pipelining up to N requests per upstream write
                          (`upstreams[].pipeline = N`, 2 to 64, with `server.batch_wait_us
                          = 50`): coregate-io_uring-pipelined, compared with nginx, HAProxy
                          and plain coregate; then the
                          mean batch per tool, counted by a second pipelined coregate
                          with its admin listener on (up to 3 runs per tool)
    --cache               add coregate and nginx answering from their response caches
                          (every request a hit after the first): coregate-io_uring-cache
                          and nginx-cache, compared with each other
    --https-upstream      add coregate and nginx proxying to an HTTPS upstream (nginx
                          serving the demo certificate, which both verify):
                          coregate-io_uring-https and nginx-https, compared with each other
                          (needs nginx)
    --tls                 add coregate, nginx and HAProxy terminating TLS (TLS 1.3, the
                          demo certificate; keep-alive, so one handshake per connection):
                          coregate-io_uring-tls, nginx-tls and haproxy-tls, compared with
                          each other (no idle-memory reading for them); the run is invalid
                          when their handshakes negotiate different protocols or suites
    --floor               add coregate-pipe to the closed-loop rounds: a byte pipe on raw
                          io_uring (no HTTP work), as monoio drives the ring (pipe-plain)
                          and with multishot receives, a buffer ring and registered files
                          (pipe-ideal): the kernel's share that any proxy pays (1 worker)
    --out DIR             where to write report.json, report.md and *.svg (default bench-out)
    --replot DIR          only redraw the charts of DIR/report.json (no measurement)
    --pool DIR...         only pool the paired ratios of several saved runs (their
                          report.json) and judge the goals on all their rounds, with a 95%
                          interval that counts the spread between runs (no measurement)

Cores: the proxies share cores 0..N-1 (N = workers); the upstream and the load generator use
the rest. Install nginx, HAProxy and wrk with scripts/install-peers; missing peers are skipped.
";

struct Args {
    rounds: usize,
    duration: f64,
    step_duration: f64,
    workers: usize,
    connections: usize,
    idle: usize,
    upstream: String,
    epoll: bool,
    policies: bool,
    cache: bool,
    /// Add the HTTPS-upstream pair.
    https: bool,
    /// Add the TLS-terminating trio.
    tls: bool,
    floor: bool,
    /// Add coregate pipelining this deep to the upstream (`--pipeline`).
    pipeline: Option<usize>,
    out: PathBuf,
    sweep_fractions: Vec<f64>,
    replot: bool,
    /// Saved runs to pool (`--pool`), instead of measuring.
    pool: Vec<PathBuf>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        rounds: 5,
        duration: 5.0,
        step_duration: 3.0,
        workers: 1,
        connections: 64,
        idle: 10_000,
        upstream: if have("nginx") { "nginx".into() } else { "bundled".into() },
        epoll: true,
        policies: true,
        cache: false,
        https: false,
        tls: false,
        floor: false,
        pipeline: None,
        out: PathBuf::from("bench-out"),
        sweep_fractions: vec![0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1],
        replot: false,
        pool: Vec::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    let num = |v: Option<&String>, f: &str| -> Result<f64, String> {
        v.and_then(|s| s.parse().ok()).ok_or(format!("{f} needs a number"))
    };
    while let Some(f) = it.next() {
        match f.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => {
                a.rounds = 1;
                a.duration = 1.0;
                a.step_duration = 1.0;
                a.idle = 500;
                a.sweep_fractions = vec![0.25, 0.5, 0.9];
            }
            "--rounds" => a.rounds = num(it.next(), f)? as usize,
            "--duration" => a.duration = num(it.next(), f)?,
            "--step-duration" => a.step_duration = num(it.next(), f)?,
            "--workers" => a.workers = num(it.next(), f)? as usize,
            "--connections" => a.connections = num(it.next(), f)? as usize,
            "--idle" => a.idle = num(it.next(), f)? as usize,
            "--upstream" => a.upstream = it.next().cloned().ok_or("--upstream needs nginx or bundled")?,
            "--no-epoll" => a.epoll = false,
            "--no-policies" => a.policies = false,
            "--floor" => a.floor = true,
            "--pipeline" => match num(it.next(), f)? as usize {
                n @ 2..=64 => a.pipeline = Some(n),
                _ => return Err("--pipeline needs a depth from 2 to 64".into()),
            },
            "--cache" => a.cache = true,
            "--https-upstream" => a.https = true,
            "--tls" => a.tls = true,
            "--out" => a.out = PathBuf::from(it.next().ok_or("--out needs a directory")?),
            "--replot" => {
                a.out = PathBuf::from(it.next().ok_or("--replot needs a directory")?);
                a.replot = true;
            }
            "--pool" => {
                // Every argument up to the next option names a run directory.
                while let Some(dir) = it.clone().next().filter(|d| !d.starts_with("--")) {
                    it.next();
                    a.pool.push(PathBuf::from(dir));
                }
                if a.pool.is_empty() {
                    return Err("--pool needs run directories".into());
                }
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    if a.rounds == 0 || a.workers == 0 || a.connections == 0 || a.duration <= 0.0 {
        return Err("--rounds, --workers, --connections and --duration must be positive".into());
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    match parse_args() {
        Ok(Some(a)) => match if !a.pool.is_empty() {
            pool::pooled(&a.pool).map(|md| println!("{md}"))
        } else if a.replot {
            replot(&a)
        } else {
            run(&a)
        } {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("coregate-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(None) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coregate-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn core_list(range: std::ops::Range<usize>) -> String {
    range.map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}

fn run(a: &Args) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin_dir = exe.parent().ok_or("no binary directory")?.to_path_buf();
    for b in ["coregate", "coregate-load", "coregate-pipe"] {
        if !bin_dir.join(b).exists() {
            return Err(format!("{} is missing: run cargo build --release first", bin_dir.join(b).display()));
        }
    }
    // Which coregate runs, for the report: a profile-guided build (scripts/build-pgo) says
    // so in its version. Asked before measuring, so that a failure costs no run.
    let coregate = bin_dir.join("coregate");
    let build = std::process::Command::new(&coregate)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .map_err(|e| format!("{}: {e}", coregate.display()))?;
    if !have("taskset") {
        return Err("taskset (util-linux) is required to pin cores".into());
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (proxy_cores, other_cores) = if cores > a.workers {
        (core_list(0..a.workers), core_list(a.workers..cores))
    } else {
        (core_list(0..cores), core_list(0..cores))
    };
    let nofile = raise_nofile();
    let idle = a.idle.min((nofile.saturating_sub(1024) / 2) as usize);
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    // Absolute, because nginx resolves paths against its own prefix.
    let work = std::fs::canonicalize(&a.out).map_err(|e| e.to_string())?.join("work");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let env = Env { bin_dir: bin_dir.clone(), work: work.clone(), nofile };
    eprintln!("cores: proxies on [{proxy_cores}], upstream and load on [{other_cores}]; {} workers", a.workers);

    let upstream = match a.upstream.as_str() {
        "nginx" if have("nginx") => env.upstream_nginx(&other_cores, false)?,
        "nginx" => return Err("--upstream nginx but nginx is not installed (scripts/install-peers)".into()),
        _ => env.upstream_bundled(&other_cores)?,
    };
    let up = upstream.addr;
    let mut targets: Vec<Proc> = vec![env.coregate(&proxy_cores, a.workers, up, "io_uring", Variant::Plain)?];
    if a.epoll {
        targets.push(env.coregate(&proxy_cores, a.workers, up, "epoll", Variant::Plain)?);
    }
    if a.policies {
        targets.push(env.coregate(&proxy_cores, a.workers, up, "io_uring", Variant::Policies)?);
    }
    if let Some(depth) = a.pipeline {
        targets.push(env.coregate(&proxy_cores, a.workers, up, "io_uring", Variant::Pipelined(depth))?);
    }
    if a.cache {
        targets.push(env.coregate(&proxy_cores, a.workers, up, "io_uring", Variant::Cache)?);
    }
    // The HTTPS upstream runs beside the plain one, on the same cores; only the -https
    // targets use it.
    let https_upstream = match a.https {
        true if have("nginx") => Some(env.upstream_nginx(&other_cores, true)?),
        true => return Err("--https-upstream needs nginx (scripts/install-peers)".into()),
        false => None,
    };
    if let Some(hu) = &https_upstream {
        targets.push(env.coregate(&proxy_cores, a.workers, hu.addr, "io_uring", Variant::Https)?);
    }
    if a.tls {
        targets.push(env.coregate(&proxy_cores, a.workers, up, "io_uring", Variant::Tls)?);
    }
    // The memory test holds two sets of idle connections at once.
    let max_conns = 2 * idle + 4096;
    if have("nginx") {
        targets.push(env.nginx(&proxy_cores, a.workers, up, max_conns, Nginx::Plain)?);
        if a.cache {
            targets.push(env.nginx(&proxy_cores, a.workers, up, max_conns, Nginx::Cache)?);
        }
        if let Some(hu) = &https_upstream {
            targets.push(env.nginx(&proxy_cores, a.workers, hu.addr, max_conns, Nginx::Https)?);
        }
        if a.tls {
            targets.push(env.nginx(&proxy_cores, a.workers, up, max_conns, Nginx::Tls)?);
        }
    } else {
        eprintln!("nginx not installed: skipped");
    }
    if have("haproxy") {
        targets.push(env.haproxy(&proxy_cores, a.workers, up, max_conns, false)?);
        if a.tls {
            targets.push(env.haproxy(&proxy_cores, a.workers, up, max_conns, true)?);
        }
    } else {
        eprintln!("haproxy not installed: skipped");
    }
    // The byte pipes run in the closed-loop rounds only: they are a floor for CPU per
    // request, not proxies whose latency or idle memory means anything.
    let mut floors: Vec<Proc> = Vec::new();
    if a.floor && a.workers == 1 {
        floors.push(env.pipe(&proxy_cores, up, "plain")?);
        floors.push(env.pipe(&proxy_cores, up, "ideal")?);
    } else if a.floor {
        eprintln!("--floor: coregate-pipe has one thread; skipped with {} workers", a.workers);
    }
    let closed_targets: Vec<&Proc> = targets.iter().chain(&floors).collect();
    let load_bin = bin_dir.join("coregate-load");
    let loader = Loader { load_bin: &load_bin, cores: other_cores.clone(), connections: a.connections, work: &work };
    let tools: Vec<&str> = if have("wrk") { vec!["coregate-load", "wrk"] } else { vec!["coregate-load"] };

    // Closed loop, alternating the order of targets from round to round.
    let mut rounds: Vec<Round> = Vec::new();
    for r in 0..a.rounds {
        for tool in &tools {
            let direct = loader.closed(tool, None, up, a.duration, r)?;
            eprintln!("round {r} {tool:>13} {:>16}: {:>9.0} req/s", "direct", direct.rps);
            rounds.push(direct);
            for k in 0..closed_targets.len() {
                let t = closed_targets[(k + r) % closed_targets.len()];
                // An unmeasured half second first, so that no target pays for warming up
                // the upstream and the caches after the previous one.
                loader.closed(tool, Some(t), up, 0.5, r)?;
                let x = loader.closed(tool, Some(t), up, a.duration, r)?;
                eprintln!(
                    "round {r} {tool:>13} {:>16}: {:>9.0} req/s  {:>6.2} µs CPU/req  errors {}",
                    t.name, x.rps, x.cpu_us_per_req, x.errors
                );
                rounds.push(x);
            }
        }
    }
    // The mean batch per tool, from a pipelined coregate of its own whose admin listener
    // counts the batches (the measured one keeps no metrics): up to three alternating runs.
    let mut batches: Vec<Batch> = Vec::new();
    if let Some(depth) = a.pipeline {
        let counted = env.coregate(&proxy_cores, a.workers, up, "io_uring", Variant::Counted(depth))?;
        for r in 0..a.rounds.min(3) {
            for tool in &tools {
                loader.closed(tool, Some(&counted), up, 0.5, r)?;
                let b = loader.batches(tool, &counted, up, a.duration, r)?;
                eprintln!("batches {r} {tool:>13}: {:.2} requests per upstream write at {:.0} req/s", b.mean, b.rps);
                batches.push(b);
            }
        }
    }
    let summary = summarise(&rounds);
    let base = summary.get("nginx").or_else(|| summary.get("coregate-io_uring")).map(|s| s.rps).unwrap_or(1000.0);

    // Open-loop sweep at the same offered rates for every target (fractions of the
    // baseline's saturation throughput).
    let mut steps: Vec<Step> = Vec::new();
    for f in &a.sweep_fractions {
        let rate = (base * f).max(100.0);
        for t in &targets {
            let s = loader.open(Some(t), up, rate, a.step_duration)?;
            eprintln!(
                "sweep {:>8.0} req/s {:>16}: achieved {:>8.0}  p50 {:>6} µs  p99 {:>7} µs  p99.9 {:>7} µs",
                rate, t.name, s.achieved, s.p50_us, s.p99_us, s.p999_us
            );
            steps.push(s);
        }
    }

    // The latency goal's point, half of nginx's saturation, measured again in alternating
    // repetitions (one sweep step per target is a single sample of a noisy tail), with the
    // upstream alone beside them: the floor that the load generator and upstream set.
    let mut half: Vec<Step> = Vec::new();
    let mut trio: Vec<Option<&Proc>> = vec![None];
    trio.extend(targets.iter().filter(|t| t.name == "coregate-io_uring" || t.name == "nginx").map(Some));
    if trio.len() == 3 {
        for r in 0..a.rounds {
            for k in 0..3 {
                let t = trio[(k + r) % 3];
                let s = loader.open(t, up, base * 0.5, a.step_duration)?;
                eprintln!("half-load {r} {:>16}: p99 {:>7} µs  p99.9 {:>7} µs", s.target, s.p99_us, s.p999_us);
                half.push(s);
            }
        }
    }

    let mut memory: Vec<Memory> = Vec::new();
    if idle > 0 {
        // The memory test's connections speak plain HTTP.
        for t in targets.iter().filter(|t| !t.tls) {
            for m in idle_memory(t, idle)? {
                eprintln!(
                    "memory {:>16}: {:.2} KiB per idle connection ({} connections{})",
                    t.name,
                    m.kib_per_connection,
                    m.connections,
                    if m.after_request { ", one request each" } else { "" }
                );
                memory.push(m);
            }
        }
    }

    let setup = format!(
        "{build}; {} workers; proxies pinned to cores [{proxy_cores}], upstream ({}) and load generator to [{other_cores}]; \
         {} keep-alive connections; {} rounds x {} s closed loop; sweep steps of {} s",
        a.workers, a.upstream, a.connections, a.rounds, a.duration, a.step_duration
    );
    let (tls, _) = summary::negotiated(&rounds);
    let setup = match tls.is_empty() {
        true => setup,
        false => format!("{setup}; TLS negotiated with coregate-load: {}", tls.join(", ")),
    };
    let ratios = paired_ratios(&rounds);
    let json = serde_json::json!({
        "setup": setup,
        "summary": summary,
        "paired_ratios": ratios,
        "half_load": half,
        "batches": batches,
        "rounds": rounds,
        "sweep": steps,
        "memory": memory,
    });
    std::fs::write(a.out.join("report.json"), serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n")
        .map_err(|e| e.to_string())?;
    let md = markdown(&Report {
        setup: &setup,
        summary: &summary,
        ratios: &ratios,
        steps: &steps,
        half: &half,
        batches: &batches,
        memory: &memory,
        base,
    });
    std::fs::write(a.out.join("report.md"), &md).map_err(|e| e.to_string())?;
    charts(a, &summary, &steps)?;
    println!("{md}");
    eprintln!("wrote {}/report.json, report.md, cpu.svg, throughput.svg, latency.svg", a.out.display());
    // A run with errors measured something other than proxying: the report stays for a look,
    // and the exit status says the run is not valid (CI runs the quick mode for this).
    let faults = faults(&rounds, steps.iter().chain(&half), base);
    if !faults.is_empty() {
        return Err(format!("{} runs had errors: {}", faults.len(), faults.join("; ")));
    }
    Ok(())
}

/// Redraws the charts of an earlier report from its JSON.
fn replot(a: &Args) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Saved {
        summary: BTreeMap<String, Summary>,
        sweep: Vec<Step>,
    }
    let saved: Saved = pool::read_saved(&a.out)?;
    charts(a, &saved.summary, &saved.sweep)?;
    eprintln!("wrote {}/cpu.svg, throughput.svg, latency.svg", a.out.display());
    Ok(())
}

/// What one run measured, as the Markdown report shows it.
struct Report<'a> {
    setup: &'a str,
    summary: &'a BTreeMap<String, Summary>,
    ratios: &'a [Paired],
    steps: &'a [Step],
    half: &'a [Step],
    batches: &'a [Batch],
    memory: &'a [Memory],
    /// nginx's saturation throughput, which the open-loop rates are fractions of.
    base: f64,
}

fn markdown(r: &Report<'_>) -> String {
    let Report { setup, summary, ratios, steps, half, batches, memory, base } = *r;
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# coregate-bench report\n\n{setup}\n");
    let _ = writeln!(s, "## Closed loop (medians)\n");
    let _ = writeln!(s, "| target | req/s | proxy CPU µs/req | vs nginx CPU | p99 µs | p99.9 µs | errors | wrk req/s | wrk CPU µs/req |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let nginx_cpu = summary.get("nginx").map(|n| n.cpu_us_per_req);
    for (name, x) in summary {
        let ratio = match (nginx_cpu, name.as_str()) {
            (_, "direct") => "-".to_string(),
            (Some(n), _) if n > 0.0 => format!("{:.2}x", x.cpu_us_per_req / n),
            _ => "-".to_string(),
        };
        let cpu = if name == "direct" { "-".to_string() } else { format!("{:.2}", x.cpu_us_per_req) };
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {cpu} | {ratio} | {:.0} | {:.0} | {} | {} | {} |",
            x.rps,
            x.p99_us,
            x.p999_us,
            x.errors,
            x.wrk_rps.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into()),
            x.wrk_cpu_us_per_req.filter(|_| name != "direct").map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
        );
    }
    if let (Some(plain), Some(pol)) = (summary.get("coregate-io_uring"), summary.get("coregate-io_uring-policies")) {
        let _ = writeln!(
            s,
            "\nPolicy chain (API key + rate limit + header transform) against plain proxying: throughput {:+.1}%, proxy CPU per request {:+.1}%.",
            (pol.rps / plain.rps - 1.0) * 100.0,
            (pol.cpu_us_per_req / plain.cpu_us_per_req - 1.0) * 100.0
        );
    }
    if !ratios.is_empty() {
        let _ = writeln!(s, "\n## Paired ratios (each round against its reference in the same round)\n");
        let _ = writeln!(s, "| ratio | tool | median | min | max | rounds |");
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: |");
        for r in ratios {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {} |",
                r.what, r.tool, r.median, r.min, r.max, r.rounds
            );
        }
    }
    if !half.is_empty() {
        let _ = writeln!(
            s,
            "\n## Latency at half of nginx's saturation ({:.0} req/s, alternating repetitions)\n",
            base * 0.5
        );
        let _ = writeln!(s, "| target | repetitions | median p50 µs | median p99 µs | median p99.9 µs | p99s (µs) |");
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | --- |");
        for name in ["direct", "coregate-io_uring", "nginx"] {
            let own: Vec<&Step> = half.iter().filter(|h| h.target == name).collect();
            let med = |f: fn(&Step) -> u64| median(own.iter().map(|h| f(h) as f64).collect());
            let all: Vec<String> = own.iter().map(|h| h.p99_us.to_string()).collect();
            let _ = writeln!(
                s,
                "| {name} | {} | {:.0} | {:.0} | {:.0} | {} |",
                own.len(),
                med(|h| h.p50_us),
                med(|h| h.p99_us),
                med(|h| h.p999_us),
                all.join(" ")
            );
        }
    }
    if !batches.is_empty() {
        let _ = writeln!(
            s,
            "\n## Pipelined batches (a coregate-io_uring-pipelined of its own, with the admin listener; not in the CPU figures)\n"
        );
        let _ = writeln!(s, "| tool | runs | median requests per upstream write | min | max | median req/s |");
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
        let tools: std::collections::BTreeSet<&str> = batches.iter().map(|b| b.tool.as_str()).collect();
        for tool in tools {
            let own: Vec<&Batch> = batches.iter().filter(|b| b.tool == tool).collect();
            let means: Vec<f64> = own.iter().map(|b| b.mean).collect();
            let _ = writeln!(
                s,
                "| {tool} | {} | {:.2} | {:.2} | {:.2} | {:.0} |",
                own.len(),
                median(means.clone()),
                means.iter().copied().fold(f64::INFINITY, f64::min),
                means.iter().copied().fold(0.0, f64::max),
                median(own.iter().map(|b| b.rps).collect())
            );
        }
    }
    if !steps.is_empty() {
        let _ = writeln!(s, "\n## Open-loop latency sweep (offered load as a fraction of {base:.0} req/s)\n");
        let _ = writeln!(s, "| offered req/s | target | achieved | p50 µs | p99 µs | p99.9 µs | errors |");
        let _ = writeln!(s, "| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
        for st in steps {
            let _ = writeln!(
                s,
                "| {:.0} | {} | {:.0} | {} | {} | {} | {} |",
                st.offered, st.target, st.achieved, st.p50_us, st.p99_us, st.p999_us, st.errors
            );
        }
    }
    if !memory.is_empty() {
        let _ = writeln!(s, "\n## Idle connections\n");
        let _ = writeln!(s, "| target | connections | RSS before KiB | RSS after KiB | KiB per connection |");
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: |");
        for m in memory {
            let _ = writeln!(
                s,
                "| {} | {}{} | {} | {} | {:.2} |",
                m.target,
                m.connections,
                if m.after_request { ", one request each, then idle" } else { ", just opened" },
                m.rss_before_kib,
                m.rss_after_kib,
                m.kib_per_connection
            );
        }
    }
    s
}

fn charts(a: &Args, summary: &BTreeMap<String, Summary>, steps: &[Step]) -> Result<(), String> {
    let proxies: Vec<(&String, &Summary)> = summary.iter().filter(|(n, _)| n.as_str() != "direct").collect();
    plot::bars(
        &a.out.join("cpu.svg"),
        "Proxy CPU per request (lower is better)",
        "µs",
        &proxies.iter().map(|(n, s)| ((*n).clone(), s.cpu_us_per_req)).collect::<Vec<_>>(),
    )?;
    plot::bars(
        &a.out.join("throughput.svg"),
        "Throughput, closed loop (higher is better)",
        "req/s",
        &summary.iter().map(|(n, s)| (n.clone(), s.rps)).collect::<Vec<_>>(),
    )?;
    let mut series = Vec::new();
    for (name, _) in &proxies {
        let pts: Vec<&Step> = steps.iter().filter(|s| &&s.target == name).collect();
        if pts.is_empty() {
            continue;
        }
        series.push((format!("{name} p99"), pts.iter().map(|s| (s.offered, s.p99_us.max(1) as f64)).collect()));
        series.push((format!("{name} p99.9"), pts.iter().map(|s| (s.offered, s.p999_us.max(1) as f64)).collect()));
    }
    plot::curves(&a.out.join("latency.svg"), "Latency against offered load", &series)
}
