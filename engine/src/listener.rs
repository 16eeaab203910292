//! Listening sockets: one SO_REUSEPORT socket per worker and address, bound before the
//! workers start so that port 0 resolves to one port shared by all workers, and kept across
//! reloads. Accepting is the workers'.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

const BACKLOG: i32 = 4096;

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies the listener's
    // options into each new socket): one setsockopt here instead of one per connection
    // (with a new connection per request: CPU per request 0.987, 6 alternating wrk pairs).
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// One listen address: as configured and as bound, and its sockets, one per worker.
pub(crate) struct Kept {
    configured: SocketAddr,
    bound: SocketAddr,
    per_worker: Vec<TcpListener>,
}

/// The listening sockets of the running generation of workers, kept so that a reload hands
/// the same sockets, with their accept queues, to the next generation: a connection waiting
/// in a queue while the generations change is accepted by the new one, not refused or reset
/// (nginx's reload keeps its listening sockets the same way). Workers get duplicates
/// (`dup(2)`).
#[derive(Default)]
pub(crate) struct Sockets {
    kept: Vec<Kept>,
}

/// The sockets for one generation: `per_worker[i]` for worker `i`, in `addrs`' order.
pub(crate) struct Opened {
    pub per_worker: Vec<Vec<TcpListener>>,
    /// The addresses actually bound (port 0 replaced by the port the kernel chose).
    pub bound: Vec<SocketAddr>,
    /// What [`Sockets::keep`] should keep once the generation runs.
    pub keep: Vec<Kept>,
}

impl Sockets {
    /// Sockets for `workers` workers on `addrs`, each kept one used at most once: an
    /// address with a port takes the kept socket bound there (however it was configured),
    /// an address with port 0 the one configured the same way (`127.0.0.1:0` keeps its
    /// port across reloads); the others are bound anew.
    pub(crate) fn open(&self, addrs: &[SocketAddr], workers: usize) -> io::Result<Opened> {
        let usable = |k: &Kept| k.per_worker.len() == workers;
        let mut claimed = vec![false; self.kept.len()];
        let mut claim = |matches: &dyn Fn(&Kept) -> bool| {
            let i = self.kept.iter().enumerate().position(|(i, k)| !claimed[i] && usable(k) && matches(k))?;
            claimed[i] = true;
            Some(i)
        };
        // Explicit ports first, so that a `:0` entry cannot take a socket named elsewhere.
        let mut chosen: Vec<Option<usize>> =
            addrs.iter().map(|a| (a.port() != 0).then(|| claim(&|k| k.bound == *a)).flatten()).collect();
        for (a, c) in addrs.iter().zip(&mut chosen) {
            if a.port() == 0 {
                *c = claim(&|k| k.configured == *a);
            }
        }
        let mut opened = Opened {
            per_worker: (0..workers).map(|_| Vec::with_capacity(addrs.len())).collect(),
            bound: Vec::with_capacity(addrs.len()),
            keep: Vec::with_capacity(addrs.len()),
        };
        for (&addr, chosen) in addrs.iter().zip(chosen) {
            let sockets = match chosen {
                Some(i) => {
                    self.kept[i].per_worker.iter().map(TcpListener::try_clone).collect::<io::Result<Vec<_>>>()?
                }
                None => bind_workers(addr, workers)?,
            };
            let bound = sockets[0].local_addr()?;
            opened.bound.push(bound);
            for (list, l) in opened.per_worker.iter_mut().zip(&sockets) {
                list.push(l.try_clone()?);
            }
            opened.keep.push(Kept { configured: addr, bound, per_worker: sockets });
        }
        Ok(opened)
    }

    /// Keeps `kept` (from the [`Sockets::open`] of the generation now running) and lets go
    /// of sockets no longer configured: they close once the generation that used them stops.
    pub(crate) fn keep(&mut self, kept: Vec<Kept>) {
        self.kept = kept;
    }
}

/// Binds `workers` sockets on `addr`, the first resolving port 0 for the others.
fn bind_workers(addr: SocketAddr, workers: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..workers {
        all.push(bind_one(actual)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection queued on a kept socket is accepted through the next generation's
    /// duplicate after the previous generation's has closed; a new address gets new sockets.
    #[test]
    fn a_reopened_address_keeps_its_sockets_and_queue() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut sockets = Sockets::default();
        let first = sockets.open(&[any], 2).unwrap();
        sockets.keep(first.keep);
        let queued = std::net::TcpStream::connect(first.bound[0]).unwrap();
        drop(first.per_worker);
        let second = sockets.open(&[any], 2).unwrap();
        assert_eq!(second.bound, first.bound);
        let other = sockets.open(&["127.0.0.2:0".parse().unwrap()], 2).unwrap();
        assert_ne!(other.bound[0].ip(), first.bound[0].ip());
        sockets.keep(second.keep);
        // The connection sits in one of the two SO_REUSEPORT queues (non-blocking sockets).
        let (accepted, _) = (0..2)
            .find_map(|w| second.per_worker[w][0].accept().ok())
            .expect("the queued connection is accepted by the next generation");
        assert_eq!(accepted.peer_addr().unwrap(), queued.local_addr().unwrap());
        // Its port named explicitly: the same socket; `:0` beside it then gets a new one.
        let third = sockets.open(&[first.bound[0], any], 2).unwrap();
        assert_eq!(third.bound[0], first.bound[0]);
        assert_ne!(third.bound[1], first.bound[0]);
        let queued = std::net::TcpStream::connect(first.bound[0]).unwrap();
        drop(second.per_worker);
        let accepted = (0..2).find_map(|w| third.per_worker[w][0].accept().ok()).expect("kept");
        assert_eq!(accepted.0.peer_addr().unwrap(), queued.local_addr().unwrap());
    }

    #[test]
    fn accepted_sockets_have_nodelay() {
        let opened = Sockets::default().open(&["127.0.0.1:0".parse().unwrap()], 1).unwrap();
        let _client = std::net::TcpStream::connect(opened.bound[0]).unwrap();
        let listener = &opened.per_worker[0][0];
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
