//! I/O driver selection: io_uring where the kernel allows it, monoio's legacy epoll driver
//! otherwise, and an explicit choice that cannot run refused at startup.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use config::{IoBatch, IoMode};

/// The driver a worker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    /// Resolves the configured mode against what this kernel allows.
    ///
    /// io_uring support is probed by monoio (`detect_uring`): it opens a ring and checks
    /// every opcode monoio uses. Containers with seccomp profiles that block io_uring fail
    /// the probe. `MONOIO_FORCE_LEGACY_DRIVER=1` also makes the probe fail.
    pub fn select(mode: IoMode) -> Result<Driver, String> {
        let uring = monoio::utils::detect_uring();
        match mode {
            IoMode::Auto if uring => Ok(Driver::IoUring),
            IoMode::Auto | IoMode::Epoll => Ok(Driver::Epoll),
            IoMode::IoUring if uring => Ok(Driver::IoUring),
            IoMode::IoUring => Err("io = \"io_uring\" but this kernel or sandbox does not allow io_uring \
                 (the probe for io_uring_setup and the needed opcodes failed); use io = \"auto\" or \"epoll\""
                .to_string()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }

    /// Builds a runtime of this kind on the current thread and runs `fut` to completion.
    /// `ready` is called once the runtime exists (or with the error if it cannot be built).
    /// `batch` (`server.batch_wait_us`) applies to io_uring on Linux 6.12 or later.
    pub(crate) fn run<F: Future>(
        self,
        batch: Option<IoBatch>,
        ready: impl FnOnce(io::Result<()>),
        fut: F,
    ) -> Option<F::Output> {
        match self {
            Driver::IoUring => block_on(uring_runtime(batch.filter(|_| batch_supported())), ready, fut),
            Driver::Epoll => {
                block_on(monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build(), ready, fut)
            }
        }
    }
}

/// Reports whether the runtime could be built, then runs `fut` on it.
fn block_on<D: monoio::Driver, F: Future>(
    rt: io::Result<monoio::Runtime<D>>,
    ready: impl FnOnce(io::Result<()>),
    fut: F,
) -> Option<F::Output> {
    match rt {
        Ok(mut rt) => {
            ready(Ok(()));
            Some(rt.block_on(fut))
        }
        Err(e) => {
            ready(Err(e));
            None
        }
    }
}

/// An io_uring runtime with COOP_TASKRUN + SINGLE_ISSUER where the kernel has them (5.19+),
/// else a plain ring. The flags stop completions from interrupting the worker from other
/// cores; on this 2-core machine they took coregate-load from about 85k to 105k req/s
/// against nginx, and the gateway gains the same way.
///
/// With `batch`, the ring also has DEFER_TASKRUN, under which the kernel wakes a worker
/// waiting for several completions only once they are all there, and its parks wait for
/// batches (`vendor/monoio`, `batch.rs`; measured in the README, "Batched waits").
fn uring_runtime(
    batch: Option<IoBatch>,
) -> io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let mut coop = io_uring::IoUring::builder();
    coop.setup_coop_taskrun().setup_single_issuer();
    if batch.is_some() {
        coop.setup_defer_taskrun();
    }
    monoio::set_park_batch(batch.map_or(0, |b| b.completions), batch.map_or(0, |b| b.wait_us));
    let build = |ring| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .uring_builder(ring)
            .enable_timer()
            .build()
    };
    let rt = build(coop);
    if rt.is_ok() {
        // SINGLE_ISSUER came with Linux 6.0, so receives take IORING_RECVSEND_POLL_FIRST (5.19).
        RECV_POLL_FIRST.store(true, Ordering::Relaxed);
    }
    rt.or_else(|_| {
        monoio::set_park_batch(0, 0);
        build(io_uring::IoUring::builder())
    })
}

/// Batched waits need `min_wait_usec` in io_uring_enter's argument (Linux 6.12), and
/// DEFER_TASKRUN (6.1).
pub(crate) fn batch_supported() -> bool {
    kernel_at_least(6, 12)
}

/// The running kernel's release, from uname(2), is `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: uname(2) fills the zeroed struct it is given and nothing else.
    let release = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return false;
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    };
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Whether io_uring receives may ask to wait for readability first (set once a ring with
/// SINGLE_ISSUER was made: the kernel is 6.0 or later).
static RECV_POLL_FIRST: AtomicBool = AtomicBool::new(false);

/// True where a read posted ahead of its data (a pooled connection's next response) can
/// skip the attempt that cannot find anything: on io_uring it then arms its poll at once.
/// Measured: see `vendor/README.md`. The epoll driver ignores the flag.
pub(crate) fn recv_poll_first() -> bool {
    RECV_POLL_FIRST.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};

    use crate::io::testing::on_both_drivers;

    /// The inode of the socket behind `fd`, as `/proc` names it (`socket:[inode]`).
    fn inode(fd: i32) -> String {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        link.to_string_lossy().into_owned()
    }

    /// Every file in the registered file tables of this process's io_uring rings, from
    /// their `fdinfo` (one `  slot: socket:[inode]` line per occupied slot).
    fn registered_files() -> Vec<String> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let is_ring =
                std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:[io_uring]");
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy()));
            if let (true, Ok(info)) = (is_ring, info) {
                files.extend(info.lines().filter_map(|l| l.split_once(": ")).map(|(_, f)| f.trim().to_string()));
            }
        }
        files
    }

    /// A socket that carries more than one exchange on io_uring moves into the ring's
    /// registered file table (vendor/monoio, `SharedFd::uring_fd`), and closing it must
    /// empty its slot as well as close its descriptor: the table holds a reference of its
    /// own, and without that the peer would never see the end of the stream. The same
    /// exchanges and close on epoll.
    #[test]
    fn a_long_lived_socket_gets_a_registered_slot_and_still_closes() {
        on_both_drivers(|uring| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut a = TcpStream::connect_addr(listener.local_addr().unwrap()).await.unwrap();
            let (mut b, _) = listener.accept().await.unwrap();
            for _ in 0..4 {
                a.write_all(b"ping".to_vec()).await.0.unwrap();
                assert_eq!(b.read_exact(vec![0; 4]).await.1, b"ping");
                b.write_all(b"pong".to_vec()).await.0.unwrap();
                assert_eq!(a.read_exact(vec![0; 4]).await.1, b"pong");
            }
            let (a_file, b_file) = (inode(a.as_raw_fd()), inode(b.as_raw_fd()));
            if uring {
                let files = registered_files();
                assert!(files.contains(&a_file) && files.contains(&b_file), "{a_file}, {b_file} not in {files:?}");
            }
            drop(a);
            let end = monoio::time::timeout(Duration::from_secs(5), b.read(vec![0; 8])).await;
            assert_eq!(end.expect("the peer saw no end of stream").0.unwrap(), 0);
            assert!(!registered_files().contains(&a_file), "the closed socket kept its slot");
        });
    }

    /// Batched waits (`server.batch_wait_us`): with sixteen exchanges at once the loop is
    /// busy and its parks wait for batches; a lone exchange afterwards still completes (the
    /// wait ends at `min_wait_usec` with one completion there), so nothing stalls when the
    /// load falls. Kernels before 6.12 have no batched wait: there the ring must not ask.
    #[test]
    fn a_batching_ring_waits_for_batches_and_still_serves_a_lone_exchange() {
        let batch = config::IoBatch { completions: 8, wait_us: 200 };
        let mut rt = super::uring_runtime(Some(batch).filter(|_| super::batch_supported())).unwrap();
        let before = monoio::batched_parks();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut pairs = Vec::new();
            for _ in 0..16 {
                let a = TcpStream::connect_addr(listener.local_addr().unwrap()).await.unwrap();
                pairs.push((a, listener.accept().await.unwrap().0));
            }
            let ping = |(mut a, mut b): (TcpStream, TcpStream), rounds| async move {
                for _ in 0..rounds {
                    a.write_all(b"ping".to_vec()).await.0.unwrap();
                    assert_eq!(b.read_exact(vec![0; 4]).await.1, b"ping");
                    b.write_all(b"pong".to_vec()).await.0.unwrap();
                    assert_eq!(a.read_exact(vec![0; 4]).await.1, b"pong");
                }
                (a, b)
            };
            let lone = pairs.pop().unwrap();
            let busy: Vec<_> = pairs.into_iter().map(|p| monoio::spawn(ping(p, 50))).collect();
            for task in busy {
                task.await;
            }
            let batched = monoio::batched_parks() - before;
            assert_eq!(batched > 0, super::batch_supported(), "{batched} batched parks");
            let lone = monoio::time::timeout(Duration::from_secs(10), ping(lone, 20)).await;
            lone.expect("a lone exchange stalled on a batching ring");
        });
        monoio::set_park_batch(0, 0);
    }
}
