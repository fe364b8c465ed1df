//! New connections to one Esper origin: every resolved address tried, with
//! a short delay between attempts (Happy Eyeballs, RFC 8305), TCP
//! keepalive, then TLS with the profile's ALPN offer.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use esper_protocol::Failure;
use rustls::pki_types::ServerName;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::resolve::Resolver;
use crate::stream::Unvectored;
use crate::transport::lock;

/// RFC 8305's recommended delay before the next address is tried while
/// the previous attempt is still in progress.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// TCP keepalive: a connection to Esper that went away without a word is
/// found out by the kernel too, also while no HTTP/2 ping runs.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;
/// A new connection that has not connected and finished TLS by then is
/// given up and its socket closed: a peer that accepts and never answers
/// holds no socket longer than this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// New connections this process made to Esper, and their TLS handshakes:
/// reported when the worker exits (`runtime::report`).
pub struct Handshakes {
    pub connections: AtomicU64,
    pub full: AtomicU64,
    pub resumed: AtomicU64,
}

pub static HANDSHAKES: Handshakes = Handshakes {
    connections: AtomicU64::new(0),
    full: AtomicU64::new(0),
    resumed: AtomicU64::new(0),
};

pub enum Host {
    Name(Arc<Resolver>),
    Ip(IpAddr),
}

pub struct Connector {
    pub host: Host,
    pub port: u16,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The address where TLS last succeeded: tried first.
    preferred: Mutex<Option<SocketAddr>>,
    /// The address where TLS last failed or stalled: tried last.
    avoided: Mutex<Option<SocketAddr>>,
}

/// A new connection, and what TLS said about it.
pub struct Connected {
    pub io: Unvectored,
    /// The protocol the server chose by ALPN, if any.
    pub alpn: Option<Vec<u8>>,
}

impl Connector {
    pub fn new(
        host: Host,
        port: u16,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    ) -> Connector {
        Connector { host, port, tls, preferred: Mutex::new(None), avoided: Mutex::new(None) }
    }

    /// A new TCP connection, with TLS for https, within [`CONNECT_TIMEOUT`]
    /// for both. The address it went to is tried first next time, once TLS
    /// is done there too; one where TLS failed or stalled is tried last.
    pub async fn connect(&self) -> Result<Connected, Failure> {
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let (address, tcp) = tokio::time::timeout_at(deadline, self.tcp())
            .await
            .map_err(|_| Failure::Transport(not_within("connect")))??;
        HANDSHAKES.connections.fetch_add(1, Ordering::Relaxed);
        let Some((connector, name)) = &self.tls else {
            *lock(&self.preferred) = Some(address);
            return Ok(Connected { io: Unvectored::new(Box::new(tcp)), alpn: None });
        };
        let handshake = tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp));
        let tls = match handshake.await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(self.avoid(address, format!("TLS handshake: {e}"))),
            Err(_) => return Err(self.avoid(address, not_within("TLS handshake"))),
        };
        *lock(&self.preferred) = Some(address);
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let kind = if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            &HANDSHAKES.resumed
        } else {
            &HANDSHAKES.full
        };
        kind.fetch_add(1, Ordering::Relaxed);
        Ok(Connected { io: Unvectored::new(Box::new(tls)), alpn })
    }

    /// Tries `address` last from now on, and says why.
    fn avoid(&self, address: SocketAddr, reason: String) -> Failure {
        let mut preferred = lock(&self.preferred);
        if *preferred == Some(address) {
            *preferred = None;
        }
        *lock(&self.avoided) = Some(address);
        Failure::Transport(format!("{address}: {reason}"))
    }

    /// The addresses in the order they are tried: the one that worked last
    /// first, then the families taking turns (RFC 8305, section 4).
    async fn addresses(&self) -> Result<Vec<SocketAddr>, Failure> {
        let resolved: Vec<SocketAddr> = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(resolver) => resolver.addresses().await?.to_vec(),
        };
        let preferred = *lock(&self.preferred);
        let avoided = lock(&self.avoided).filter(|a| resolved.len() > 1 && resolved.contains(a));
        let first = preferred
            .filter(|p| resolved.contains(p))
            .or(resolved.iter().copied().find(|a| Some(*a) != avoided));
        let Some(first) = first else {
            return Err(Failure::Transport("no address".to_owned()));
        };
        let rest = resolved.iter().copied().filter(|a| *a != first && Some(*a) != avoided);
        let (mut same, mut other): (Vec<_>, Vec<_>) =
            rest.partition(|a| a.is_ipv6() == first.is_ipv6());
        same.reverse();
        other.reverse();
        let mut ordered = vec![first];
        while !same.is_empty() || !other.is_empty() {
            ordered.extend(other.pop());
            ordered.extend(same.pop());
        }
        ordered.extend(avoided);
        Ok(ordered)
    }

    /// Connects to the first address that answers: the next address is
    /// tried when the previous attempt fails or after [`ATTEMPT_DELAY`],
    /// the attempts still running go on, and the first to connect wins.
    async fn tcp(&self) -> Result<(SocketAddr, TcpStream), Failure> {
        let mut waiting = self.addresses().await?.into_iter();
        let mut attempts = JoinSet::new();
        let mut last_error = String::new();
        loop {
            if attempts.is_empty() {
                let Some(address) = waiting.next() else {
                    return Err(Failure::Transport(format!("connect: {last_error}")));
                };
                attempts.spawn(attempt(address));
            }
            let more = waiting.len() > 0;
            tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok((address, Ok(tcp)))) => return Ok((address, tcp)),
                    Some(Ok((address, Err(e)))) => {
                        last_error = format!("{address}: {e}");
                        if let Some(next) = waiting.next() {
                            attempts.spawn(attempt(next));
                        }
                    }
                    Some(Err(e)) => last_error = e.to_string(),
                    None => {}
                },
                () = tokio::time::sleep(ATTEMPT_DELAY), if more => {
                    if let Some(next) = waiting.next() {
                        attempts.spawn(attempt(next));
                    }
                }
            }
        }
    }
}

/// A step of connecting that did not end within [`CONNECT_TIMEOUT`].
fn not_within(step: &str) -> String {
    format!("{step}: not done within {} s", CONNECT_TIMEOUT.as_secs())
}

async fn attempt(address: SocketAddr) -> (SocketAddr, std::io::Result<TcpStream>) {
    let connected = TcpStream::connect(address).await.and_then(|tcp| {
        tcp.set_nodelay(true)?;
        let keepalive = TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
        Ok(tcp)
    });
    (address, connected)
}
