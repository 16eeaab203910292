//! coregate-pipe relays bytes both ways unchanged, in both modes, through real sockets: an
//! echo upstream started here on 127.0.0.1:0, several connections, payloads larger than one
//! buffer of the pipe so that they cross many receives and sends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An upstream that echoes every connection back, one thread per connection.
fn echo_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

struct Pipe(Child);

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts coregate-pipe in `mode` and returns it with the address it listens on.
fn start(mode: &str, upstream: SocketAddr) -> (Pipe, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coregate-pipe"))
        .args(["127.0.0.1:0", &upstream.to_string(), mode])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start coregate-pipe");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected output {line:?}"));
    let addr = addr.parse().expect("an address");
    (Pipe(child), addr)
}

fn relays_unchanged(mode: &str) {
    let (_pipe, addr) = start(mode, echo_upstream());
    for conn in 0..3u32 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ conn as u8).collect();
        let mut w = s.try_clone().expect("clone");
        let sent = data.clone();
        let writer = std::thread::spawn(move || w.write_all(&sent));
        let mut back = vec![0; data.len()];
        s.read_exact(&mut back).expect("echoed bytes");
        writer.join().expect("writer").expect("write");
        assert!(back == data, "{mode}: connection {conn} came back changed");
        // Small exchanges after the bulk, as requests would be.
        for i in 0..50u8 {
            s.write_all(&[i; 17]).expect("write");
            let mut b = [0; 17];
            s.read_exact(&mut b).expect("read");
            assert_eq!(b, [i; 17]);
        }
    }
}

#[test]
fn plain_mode_relays_bytes_unchanged() {
    relays_unchanged("plain");
}

#[test]
fn ideal_mode_relays_bytes_unchanged() {
    relays_unchanged("ideal");
}
