//! coregate-pipe: a byte pipe on raw io_uring, the floor beside coregate-bench's CPU
//! comparison. Each client connection gets an upstream connection of its own and bytes are
//! relayed both ways unparsed: no HTTP, no policies, no timeouts, no pool. Its CPU per request
//! is what any proxy pays the kernel to move the same four segments, so a report can say how
//! much of a proxy's cost is its own work.
//!
//! Two modes:
//! - `plain`: one receive at a time into a buffer per direction, file descriptors looked up
//!   per operation, a ring with COOP_TASKRUN and SINGLE_ISSUER: the way coregate uses io_uring
//!   through monoio.
//! - `ideal`: multishot receives into a provided buffer ring, registered files, and
//!   DEFER_TASKRUN: the io_uring features monoio 0.2.4 does not expose.
//!
//! A measuring instrument for loopback, not a proxy to deploy: it trusts its peers (no
//! limits, no timeouts), connects upstream with a blocking `connect` when it accepts, and
//! handles one connection pair per slot until either side closes. Prints `listening on ADDR`
//! once it accepts.

use std::collections::VecDeque;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const USAGE: &str = "usage: coregate-pipe LISTEN_ADDR UPSTREAM_ADDR plain|ideal";
/// Buffers in the provided ring (a power of two) and their size.
const RING_BUFS: u16 = 4096;
const BUF_SIZE: usize = 16 * 1024;
/// Registered file slots (two per pair) at most; the kernel also caps them at the open-file
/// limit.
const FILE_SLOTS: u64 = 1 << 16;
const BUF_GROUP: u16 = 1;

const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;

/// Operation kind, direction (0: from the client, 1: from the upstream) and pair slot.
fn tag(kind: u64, side: usize, slot: usize) -> u64 {
    kind | ((side as u64) << 2) | ((slot as u64) << 8)
}

fn untag(u: u64) -> (u64, usize, usize) {
    (u & 3, ((u >> 2) & 1) as usize, (u >> 8) as usize)
}

/// Bytes received from one side and not yet sent to the other.
struct Chunk {
    /// A buffer of the ring (ideal) or `None` for the direction's own buffer (plain).
    bid: Option<u16>,
    start: usize,
    end: usize,
}

struct Pair {
    fds: [RawFd; 2],
    /// Per direction: chunks waiting, the first one being sent.
    queued: [VecDeque<Chunk>; 2],
    /// Per direction's receiving side, plain mode only.
    bufs: [Box<[u8]>; 2],
    in_flight: u32,
    open: bool,
}

/// The provided buffer ring (ideal mode): its entries (page-aligned, shared with the
/// kernel), the buffers, and the tail this process publishes.
struct BufRing {
    entries: *mut types::BufRingEntry,
    pool: Box<[u8]>,
    tail: u16,
}

impl BufRing {
    fn buf(&self, bid: u16) -> *const u8 {
        self.pool[bid as usize * BUF_SIZE..].as_ptr()
    }

    /// Returns buffer `bid` to the ring (visible to the kernel at the next `publish`).
    fn give_back(&mut self, bid: u16) {
        // SAFETY: `entries` holds RING_BUFS entries and the index is masked into range; the
        // kernel reads only entries before the published tail, and this one is past it.
        let e = unsafe { &mut *self.entries.add((self.tail & (RING_BUFS - 1)) as usize) };
        e.set_addr(self.buf(bid) as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field of the first entry, per the buffer-ring layout; the kernel
        // reads it concurrently, hence the atomic store.
        unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(self.entries).cast_mut()) }
            .store(self.tail, Ordering::Release);
    }
}

struct Pipe {
    ring: IoUring,
    ideal: bool,
    upstream: String,
    pairs: Vec<Pair>,
    free: Vec<usize>,
    bufs: BufRing,
    /// Directions whose multishot receive ended for want of buffers.
    starved: Vec<(usize, usize)>,
}

impl Pipe {
    fn new(upstream: String, ideal: bool) -> std::io::Result<Self> {
        let mut b = IoUring::builder();
        b.setup_coop_taskrun().setup_single_issuer();
        if ideal {
            b.setup_defer_taskrun();
        }
        let ring = b.build(4096)?;
        let mut pipe = Pipe {
            ring,
            ideal,
            upstream,
            pairs: Vec::new(),
            free: Vec::new(),
            bufs: BufRing { entries: std::ptr::null_mut(), pool: Box::default(), tail: 0 },
            starved: Vec::new(),
        };
        if ideal {
            pipe.bufs.pool = vec![0u8; RING_BUFS as usize * BUF_SIZE].into_boxed_slice();
            let len = RING_BUFS as usize * std::mem::size_of::<types::BufRingEntry>();
            // SAFETY: an anonymous private mapping, checked below; never unmapped (it lives as
            // long as the process).
            let mem = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if mem == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            pipe.bufs.entries = mem.cast();
            // SAFETY: the mapping is page-aligned, RING_BUFS entries long and outlives the ring.
            unsafe { pipe.ring.submitter().register_buf_ring(mem as u64, RING_BUFS, BUF_GROUP)? };
            for bid in 0..RING_BUFS {
                pipe.bufs.give_back(bid);
            }
            pipe.bufs.publish();
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: a valid pointer to an rlimit.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            pipe.ring.submitter().register_files_sparse(lim.rlim_cur.min(FILE_SLOTS) as u32)?;
        }
        Ok(pipe)
    }

    fn push(&mut self, e: squeue::Entry) {
        // SAFETY: every buffer an entry points to (a pair's own buffers, the ring's pool)
        // stays allocated until the operation completes: pairs are freed only when nothing
        // is in flight, and the pool lives as long as the ring.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            let _ = self.ring.submit();
        }
    }

    fn recv(&mut self, slot: usize, side: usize) {
        let e = if self.ideal {
            opcode::RecvMulti::new(types::Fixed((slot * 2 + side) as u32), BUF_GROUP).build()
        } else {
            let p = &mut self.pairs[slot];
            opcode::Recv::new(types::Fd(p.fds[side]), p.bufs[side].as_mut_ptr(), BUF_SIZE as u32).build()
        };
        self.pairs[slot].in_flight += 1;
        self.push(e.user_data(tag(RECV, side, slot)));
    }

    /// Sends the first chunk received from `side` to the other side.
    fn send(&mut self, slot: usize, side: usize) {
        let Some(c) = self.pairs[slot].queued[side].front() else { return };
        let base = match c.bid {
            Some(b) => self.bufs.buf(b),
            None => self.pairs[slot].bufs[side].as_ptr(),
        };
        // SAFETY: start < end <= the buffer's length.
        let (ptr, len) = (unsafe { base.add(c.start) }, (c.end - c.start) as u32);
        let e = if self.ideal {
            opcode::Send::new(types::Fixed((slot * 2 + 1 - side) as u32), ptr, len).build()
        } else {
            opcode::Send::new(types::Fd(self.pairs[slot].fds[1 - side]), ptr, len).build()
        };
        self.pairs[slot].in_flight += 1;
        self.push(e.user_data(tag(SEND, side, slot)));
    }

    fn accepted(&mut self, client: RawFd) {
        let upstream = match TcpStream::connect(&self.upstream) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("coregate-pipe: connecting to {}: {e}", self.upstream);
                // SAFETY: the accepted descriptor is ours and used nowhere else.
                unsafe { libc::close(client) };
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a pointer to an int of the size given.
        unsafe {
            libc::setsockopt(client, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&one as *const libc::c_int).cast(), 4)
        };
        let fds = [client, upstream.into_raw_fd()];
        let slot = self.free.pop().unwrap_or_else(|| {
            self.pairs.push(Pair {
                fds,
                queued: [VecDeque::new(), VecDeque::new()],
                bufs: [vec![0; BUF_SIZE].into_boxed_slice(), vec![0; BUF_SIZE].into_boxed_slice()],
                in_flight: 0,
                open: true,
            });
            self.pairs.len() - 1
        });
        if self.ideal && self.ring.submitter().register_files_update((slot * 2) as u32, &fds).is_err() {
            eprintln!("coregate-pipe: no registered file slot for a new pair");
            for fd in fds {
                // SAFETY: both descriptors are ours and used nowhere else.
                unsafe { libc::close(fd) };
            }
            self.free.push(slot);
            return;
        }
        let p = &mut self.pairs[slot];
        p.fds = fds;
        p.open = true;
        self.recv(slot, 0);
        self.recv(slot, 1);
    }

    /// Stops a pair: shutting both sockets down completes what is in flight; the last
    /// completion frees the pair.
    fn close(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        if p.open {
            p.open = false;
            for fd in p.fds {
                // SAFETY: the pair's own descriptors, still open.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
    }

    fn completed(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        p.in_flight -= 1;
        if p.open || p.in_flight > 0 {
            return;
        }
        let fds = p.fds;
        for q in &mut p.queued {
            for c in q.drain(..) {
                if let Some(b) = c.bid {
                    self.bufs.give_back(b);
                }
            }
        }
        if self.ideal {
            let _ = self.ring.submitter().register_files_update((slot * 2) as u32, &[-1, -1]);
        }
        for fd in fds {
            // SAFETY: the pair's own descriptors; nothing uses them any more.
            unsafe { libc::close(fd) };
        }
        self.free.push(slot);
    }

    fn on_recv(&mut self, slot: usize, side: usize, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let more = self.ideal && cqueue::more(flags);
        if !self.pairs[slot].open || res <= 0 {
            if let Some(b) = bid {
                self.bufs.give_back(b);
            }
            if res == -libc::ENOBUFS && self.pairs[slot].open {
                self.starved.push((slot, side));
            } else if !more {
                self.close(slot);
            }
        } else {
            let q = &mut self.pairs[slot].queued[side];
            q.push_back(Chunk { bid, start: 0, end: res as usize });
            if q.len() == 1 {
                self.send(slot, side);
            }
            if self.ideal && !more {
                self.recv(slot, side);
            }
        }
        if !more {
            self.completed(slot);
        }
    }

    fn on_send(&mut self, slot: usize, side: usize, res: i32) {
        let open = self.pairs[slot].open;
        if res < 0 || !open {
            self.close(slot);
        } else {
            let q = &mut self.pairs[slot].queued[side];
            let c = q.front_mut().expect("a send has its chunk");
            c.start += res as usize;
            if c.start < c.end {
                self.send(slot, side);
            } else {
                let done = q.pop_front().expect("checked");
                if let Some(b) = done.bid {
                    self.bufs.give_back(b);
                }
                if !q.is_empty() {
                    self.send(slot, side);
                } else if !self.ideal {
                    self.recv(slot, side);
                }
            }
        }
        self.completed(slot);
    }

    fn run(&mut self, listener: RawFd) -> std::io::Result<()> {
        let accept = || opcode::Accept::new(types::Fd(listener), std::ptr::null_mut(), std::ptr::null_mut()).build();
        self.push(accept().user_data(tag(ACCEPT, 0, 0)));
        let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            done.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            let tail = self.bufs.tail;
            for (u, res, flags) in done.drain(..) {
                let (kind, side, slot) = untag(u);
                match kind {
                    ACCEPT => {
                        self.push(accept().user_data(tag(ACCEPT, 0, 0)));
                        if res >= 0 {
                            self.accepted(res);
                        }
                    }
                    RECV => self.on_recv(slot, side, res, flags),
                    _ => self.on_send(slot, side, res),
                }
            }
            if self.bufs.tail != tail {
                self.bufs.publish();
                for (slot, side) in std::mem::take(&mut self.starved) {
                    self.recv(slot, side);
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, mode] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let ideal = match mode.as_str() {
        "plain" => false,
        "ideal" => true,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = TcpListener::bind(listen).and_then(|l| Ok((Pipe::new(upstream.clone(), ideal)?, l))).and_then(
        |(mut pipe, l)| {
            // The address with the port chosen (LISTEN_ADDR may end in :0), once it accepts.
            println!("listening on {}", l.local_addr()?);
            std::io::Write::flush(&mut std::io::stdout())?;
            pipe.run(l.as_raw_fd())
        },
    );
    if let Err(e) = result {
        eprintln!("coregate-pipe: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
