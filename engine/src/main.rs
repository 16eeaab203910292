//! The `coregate` binary: `coregate --config FILE` runs the gateway, `coregate check FILE`
//! validates a configuration. Signals: SIGTERM/SIGINT drain and exit; a second one exits now;
//! SIGHUP reloads the configuration file (`Server::reload`).

use std::path::Path;
use std::process::ExitCode;

use config::Config;
use engine::Server;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

const HELP: &str = "\
coregate: a thread-per-core HTTP/1.1 API gateway

USAGE:
    coregate --config FILE      run the gateway with FILE (TOML)
    coregate check FILE         validate FILE, print every error, exit non-zero if any
    coregate --help             show this help
    coregate --version          show the version

SIGNALS:
    SIGTERM, SIGINT    stop accepting, finish requests in flight (up to timeouts.drain), exit
                       (a second signal exits at once)
    SIGHUP             reload: read FILE again; new connections get its configuration
                       while the old one's requests finish (an invalid file is logged and
                       the running configuration stays)

Endpoints given by name (\"NAME:PORT\") are resolved at start and on SIGHUP; with
upstreams[].resolve, again at that interval, reloading when an address changed. A
remote JWT key set ([auth.jwt.jwks]) is fetched at start, on SIGHUP, every refresh, and
for a token naming a key it lacks (at most every 10 s).

ENVIRONMENT:
    RUST_LOG                    log filter (default: info), e.g. RUST_LOG=debug
    MONOIO_FORCE_LEGACY_DRIVER  set to 1 to make io = \"auto\" choose epoll

See README.md for the configuration reference.
";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["--help" | "-h" | "help"] => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        ["--version" | "-V"] => {
            println!("coregate {}{}", env!("CARGO_PKG_VERSION"), env!("COREGATE_BUILD"));
            ExitCode::SUCCESS
        }
        ["check", file] => check(Path::new(file)),
        ["--config" | "-c", file] => run(Path::new(file)),
        _ => {
            eprint!("coregate: unexpected arguments {args:?}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            for w in cfg.warnings() {
                println!("warning: {w}");
            }
            println!(
                "{}: ok ({} listen address(es), {} TLS, {} upstream(s), {} route(s), {} worker(s))",
                path.display(),
                cfg.server.listen.len(),
                cfg.tls.listen.len(),
                cfg.upstreams.len(),
                cfg.routes.len(),
                cfg.server.workers
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)\n{errors}", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{}: {} error(s)\n{errors}", path.display(), errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("coregate: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in cfg.warnings() {
        log::warn!("{w}");
    }
    let mut server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("coregate: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Signals arrive on a channel, so that the loop can also wake to resolve upstream names
    // again (`upstreams[].resolve`) and fetch the remote JWT key set (`[auth.jwt.jwks]`).
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || signals.forever().try_for_each(|sig| sig_tx.send(sig)));
    let mut resolving = ticker(server.resolve_interval());
    let mut fetching = ticker(server.jwks_interval());
    let jwks_wanted = server.jwks_wanted();
    loop {
        crossbeam_channel::select! {
            recv(sig_rx) -> sig => match sig {
                Ok(SIGHUP) => {
                    reload(path, &mut server);
                    resolving = ticker(server.resolve_interval());
                    fetching = ticker(server.jwks_interval());
                }
                Ok(sig) => {
                    log::info!("signal {sig}: draining");
                    break;
                }
                Err(_) => break,
            },
            recv(resolving) -> _ => resolve_again(&mut server),
            recv(fetching) -> _ => {
                refresh_jwks(&mut server, Server::refresh_jwks);
                fetching = ticker(server.jwks_interval());
            }
            recv(jwks_wanted) -> _ => {
                refresh_jwks(&mut server, |s| s.refresh_jwks_for_unknown_key(std::time::Instant::now()));
                fetching = ticker(server.jwks_interval());
            }
        }
    }
    server.shutdown();
    std::thread::spawn(move || {
        if sig_rx.iter().any(|sig| sig != SIGHUP) {
            log::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    });
    server.join();
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// Ticks every `interval` (never without one).
fn ticker(interval: Option<std::time::Duration>) -> crossbeam_channel::Receiver<std::time::Instant> {
    interval.map_or_else(crossbeam_channel::never, crossbeam_channel::tick)
}

/// The remote JWT key set fetched again (by `fetch`); a change reloads.
fn refresh_jwks(server: &mut Server, fetch: impl FnOnce(&mut Server) -> Result<bool, engine::StartError>) {
    match fetch(server) {
        Ok(true) => log::info!("auth.jwt.jwks: a new key set; reloaded, the previous configuration drains"),
        Ok(false) => {}
        Err(e) => log::warn!("auth.jwt.jwks: {e}; the keys fetched before stay"),
    }
}

/// The names of upstreams with `resolve` looked up again; a change reloads.
fn resolve_again(server: &mut Server) {
    match server.resolve_again(&config::system_resolver) {
        Ok((reloaded, failed)) => {
            for f in failed {
                log::warn!("resolve: {f}; the upstream keeps its addresses");
            }
            if reloaded {
                log::info!("resolve: upstream addresses changed; reloaded, the previous configuration drains");
            }
        }
        Err(e) => log::error!("resolve: {e}; the running configuration stays"),
    }
}

/// SIGHUP: `path` again, as a new generation of workers (`Server::reload`).
fn reload(path: &Path, server: &mut Server) {
    match Config::load(path) {
        Ok(cfg) => {
            for w in cfg.warnings() {
                log::warn!("{w}");
            }
            let (routes, upstreams) = (cfg.routes.len(), cfg.upstreams.len());
            match server.reload(cfg) {
                Ok(()) => log::info!(
                    "SIGHUP: reloaded {} ({routes} route(s), {upstreams} upstream(s)); the previous configuration drains",
                    path.display()
                ),
                Err(e) => log::error!("SIGHUP: {e}; the running configuration stays"),
            }
        }
        Err(errors) => {
            // One log line: the errors joined.
            let all = errors.to_string().lines().map(str::trim).collect::<Vec<_>>().join("; ");
            log::error!("SIGHUP: {}: nothing reloaded: {all}", path.display());
        }
    }
}
