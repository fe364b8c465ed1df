//! esper-relay holds each direction half the RTT, connects onwards one RTT
//! after the accept, passes the end of a stream on, and carries many
//! connections at once.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

const RTT: Duration = Duration::from_millis(100);
/// What a loaded machine may add to a delay before it is a failure.
const SLACK: Duration = Duration::from_millis(150);

struct Relay(Child, SocketAddr);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay(to: SocketAddr) -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_esper-relay"))
        .args(["--to", &to.to_string(), "--rtt-ms", &RTT.as_millis().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("esper-relay starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("listening on ").expect("listening on ADDR").parse().unwrap();
    Relay(child, addr)
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn within(what: &str, took: Duration, least: Duration) {
    assert!(took >= least, "{what}: {took:?}, less than {least:?}");
    assert!(took < least + SLACK, "{what}: {took:?}, far more than {least:?}");
}

#[test]
fn delays_both_directions_and_passes_the_end_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay = relay(listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let accepted = Instant::now();
        s.write_all(b"hello").unwrap();
        assert_eq!(read_exact(&mut s, 4), b"ping");
        s.write_all(b"pong").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap(); // the client's end, passed on
        assert_eq!(rest, b"");
        s.write_all(b"bye").unwrap();
        accepted
    });

    let t0 = Instant::now();
    let mut c = TcpStream::connect(relay.1).unwrap();
    // Onwards one RTT after the connect, and the greeting back in half.
    assert_eq!(read_exact(&mut c, 5), b"hello");
    within("first bytes from the server", t0.elapsed(), RTT + RTT / 2);
    let t1 = Instant::now();
    c.write_all(b"ping").unwrap();
    assert_eq!(read_exact(&mut c, 4), b"pong");
    within("a round trip", t1.elapsed(), RTT);
    let t2 = Instant::now();
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye");
    within("the end there and an answer and its end back", t2.elapsed(), RTT);
    let accepted = server.join().unwrap();
    within("the onward connect", accepted - t0, RTT);
}

#[test]
fn carries_many_connections_at_once() {
    const CONNECTIONS: usize = 200;
    // An echo server with a backlog for every connection at once (std's is 128).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(4096).unwrap()
    });
    let relay = relay(listener.local_addr().unwrap());
    thread::spawn(move || {
        runtime.block_on(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        })
    });
    let t0 = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let to = relay.1;
            thread::spawn(move || {
                let mut c = TcpStream::connect(to).unwrap();
                for round in 0..3 {
                    let msg = format!("client {i} round {round}");
                    c.write_all(msg.as_bytes()).unwrap();
                    assert_eq!(read_exact(&mut c, msg.len()), msg.as_bytes());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // The connect's RTT and three round trips each, all at once: not one
    // after another.
    let took = t0.elapsed();
    assert!(took >= 4 * RTT, "{took:?}");
    assert!(took < 4 * RTT + Duration::from_secs(1), "{CONNECTIONS} connections took {took:?}");
}
