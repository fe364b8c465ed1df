//! A TCP relay that puts a distance between nginx and Esper, for `make
//! bench`'s case R at a distance: the same link as `t/tools/relay.py`, fast
//! enough for a thousand busy connections on one thread.
//!
//! Every byte is held half the round-trip time in each direction, in order,
//! as a link of that RTT would (bandwidth is not limited). A new connection
//! is accepted at once, and the relay connects onwards one RTT later, so
//! its bytes start to flow one RTT after the connect, as after a TCP
//! handshake at that distance: a TLS handshake over it costs one RTT more,
//! as it would. An end of stream is passed on after the same delay; a
//! connection reset is passed on as an end of stream.

use std::{
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpSocket, TcpStream,
    },
    sync::mpsc,
    time::sleep_until,
};

const USAGE: &str = "\
usage: esper-relay --to IP:PORT --rtt-ms MS [--listen IP:PORT] [--threads N]

  --to IP:PORT      where to relay each connection
  --rtt-ms MS       the round-trip time to add: MS / 2 each way, and MS before a
                    new connection is relayed onwards (may be fractional)
  --listen IP:PORT  where to listen (default 127.0.0.1:0); prints \"listening on ADDR\"
  --threads N       runtime threads (default 1)";

struct Options {
    listen: SocketAddr,
    to: SocketAddr,
    rtt: Duration,
    threads: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let (mut to, mut rtt, mut threads) = (None, None, 1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--to" => to = Some(value()?.parse().map_err(|e| format!("--to: {e}"))?),
            "--rtt-ms" => {
                let ms: f64 = value()?.parse().map_err(|e| format!("--rtt-ms: {e}"))?;
                rtt = Some(
                    Duration::try_from_secs_f64(ms / 1000.0)
                        .map_err(|e| format!("--rtt-ms: {e}"))?,
                );
            }
            "--threads" => {
                threads = value()?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--threads needs a positive number")?
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Options {
        listen,
        to: to.ok_or(format!("--to is required\n{USAGE}"))?,
        rtt: rtt.ok_or(format!("--rtt-ms is required\n{USAGE}"))?,
        threads,
    })
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    };
    let result = runtime.expect("a tokio runtime").block_on(async {
        let socket =
            if opts.listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(opts.listen)?;
        let listener = socket.listen(4096)?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (client, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors, say: the client sees its connection refused.
                Err(_) => continue,
            };
            tokio::spawn(relay(client, opts.to, opts.rtt));
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esper-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One connection: onwards one RTT after it was accepted, then both
/// directions, each held half the RTT.
async fn relay(client: TcpStream, to: SocketAddr, rtt: Duration) {
    sleep_until((Instant::now() + rtt).into()).await;
    let Ok(server) = TcpStream::connect(to).await else {
        return; // the client's connection closes
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let half = rtt / 2;
    tokio::join!(pipe(client_read, server_write, half), pipe(server_read, client_write, half));
}

/// Copies `from` to `to`, each chunk `delay` after it was read; the end of
/// `from` becomes the end of `to` after the same delay. Stops reading when
/// `to` can no longer be written.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Option<Bytes>)>();
    let deliver = async move {
        while let Some((at, chunk)) = due.recv().await {
            sleep_until(at.into()).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    break;
                }
            }
        }
        // Dropping the receiver tells the reader to stop.
    };
    let read = async move {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            buf.reserve(16 * 1024);
            let n = tokio::select! {
                n = from.read_buf(&mut buf) => n,
                () = queue.closed() => return,
            };
            let chunk = match n {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(buf.split().freeze()),
            };
            let end = chunk.is_none();
            if queue.send((Instant::now() + delay, chunk)).is_err() || end {
                return;
            }
        }
    };
    tokio::join!(read, deliver);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn parses_the_options() {
        let o = parse_args(args(&["--to", "127.0.0.1:9", "--rtt-ms", "2.5", "--threads", "2"]))
            .unwrap();
        assert_eq!(o.to, "127.0.0.1:9".parse().unwrap());
        assert_eq!(o.rtt, Duration::from_micros(2500));
        assert_eq!(o.threads, 2);
        assert_eq!(o.listen, "127.0.0.1:0".parse().unwrap());
        assert!(parse_args(args(&["--rtt-ms", "20"])).is_err());
        assert!(parse_args(args(&["--to", "127.0.0.1:9"])).is_err());
        assert!(parse_args(args(&["--to", "127.0.0.1:9", "--rtt-ms", "-1"])).is_err());
        assert!(
            parse_args(args(&["--to", "127.0.0.1:9", "--rtt-ms", "1", "--threads", "0"])).is_err()
        );
    }
}
