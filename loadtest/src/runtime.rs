//! Thread-per-core runtimes for the load generator and the upstream: one pinned thread per
//! worker, io_uring where the kernel allows it, epoll otherwise.

use std::future::Future;
use std::thread;

/// Runs `make(i)` on `n` threads, each with its own monoio runtime, pinned to core `i` (mod
/// cores) when `pin` is set; returns the outputs in thread order.
pub fn run_threads<F, Fut, T>(n: usize, pin: bool, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let cores = if pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let make = make.clone();
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            thread::Builder::new()
                .name(format!("coregate-load-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    block_on(make(i))
                })
                .expect("spawn thread")
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("worker thread panicked")).collect()
}

/// Runs one future on a new runtime on this thread.
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    if monoio::utils::detect_uring() {
        // COOP_TASKRUN + SINGLE_ISSUER: completions are run when this thread enters the
        // kernel instead of by inter-processor interrupts. Measured against nginx on this
        // 2-core machine: about 105k req/s with them, 85k without (single thread, 64
        // connections). Kernels without the flags get a plain ring.
        let mut coop = io_uring::IoUring::builder();
        coop.setup_coop_taskrun().setup_single_issuer();
        for ring in [coop, io_uring::IoUring::builder()] {
            let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(1024)
                .uring_builder(ring)
                .enable_timer()
                .build();
            if let Ok(mut rt) = rt {
                return rt.block_on(fut);
            }
        }
    }
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("epoll runtime").block_on(fut)
}

/// Number of usable cores.
pub fn cores() -> usize {
    thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
