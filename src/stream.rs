//! The byte stream under a connection to Esper, and what it reads off an
//! HTTP/2 connection's frames: the server's stream limit.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Streams a new HTTP/2 connection is taken to allow until the server's
/// SETTINGS say otherwise: the least RFC 9113 recommends a server allows
/// (and hyper's own assumption, so neither side waits on the other).
pub const ASSUMED_STREAM_LIMIT: usize = 100;

/// A TCP or TLS stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A stream that does not offer vectored writes. Without them, the HTTP/2
/// codec copies a body of up to 1 KiB into its write buffer instead of
/// flushing it on its own, so the requests of a batch leave in one write
/// rather than one write each (and HTTP/1.1 writes head and body together
/// either way). On an HTTP/2 connection it also watches the frames that
/// come in for the server's SETTINGS_MAX_CONCURRENT_STREAMS, which hyper
/// keeps to itself.
pub struct Unvectored {
    inner: Box<dyn Stream>,
    frames: Option<Frames>,
}

impl Unvectored {
    pub fn new(inner: Box<dyn Stream>) -> Unvectored {
        Unvectored { inner, frames: None }
    }

    /// Watches the stream's HTTP/2 frames from now on; the limit the server
    /// sets is stored in the returned value (0 until then).
    pub fn watch_stream_limit(&mut self) -> Arc<AtomicUsize> {
        let limit = Arc::new(AtomicUsize::new(0));
        self.frames = Some(Frames { limit: limit.clone(), ..Frames::default() });
        limit
    }
}

impl AsyncRead for Unvectored {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(frames) = &mut this.frames {
            frames.feed(&buf.filled()[before..]);
        }
        read
    }
}

impl AsyncWrite for Unvectored {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

const FRAME_HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTING_BYTES: usize = 6;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// Follows the server's HTTP/2 frames (RFC 9113, section 4.1) by their
/// headers, skipping payloads, and reads SETTINGS frames' entries. A
/// malformed frame is hyper's to refuse; this only ever reads a limit.
#[derive(Default)]
struct Frames {
    limit: Arc<AtomicUsize>,
    header: [u8; FRAME_HEADER],
    header_bytes: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    /// Payload bytes of the current SETTINGS frame still to read.
    settings: usize,
    entry: [u8; SETTING_BYTES],
    entry_bytes: usize,
}

impl Frames {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
            } else if self.settings > 0 {
                let n = (SETTING_BYTES - self.entry_bytes).min(self.settings).min(data.len());
                self.entry[self.entry_bytes..self.entry_bytes + n].copy_from_slice(&data[..n]);
                self.entry_bytes += n;
                self.settings -= n;
                data = &data[n..];
                if self.entry_bytes == SETTING_BYTES {
                    self.entry_bytes = 0;
                    let [a, b, v @ ..] = self.entry;
                    if u16::from_be_bytes([a, b]) == MAX_CONCURRENT_STREAMS {
                        // Zero would leave no stream ever: one is the least.
                        let value = u32::from_be_bytes(v).max(1) as usize;
                        self.limit.store(value, Ordering::Relaxed);
                    }
                }
                if self.settings == 0 {
                    self.entry_bytes = 0;
                }
            } else {
                let n = (FRAME_HEADER - self.header_bytes).min(data.len());
                self.header[self.header_bytes..self.header_bytes + n].copy_from_slice(&data[..n]);
                self.header_bytes += n;
                data = &data[n..];
                if self.header_bytes == FRAME_HEADER {
                    self.header_bytes = 0;
                    let [l0, l1, l2, kind, flags, ..] = self.header;
                    let length = u32::from_be_bytes([0, l0, l1, l2]) as usize;
                    if kind == SETTINGS && flags & ACK == 0 {
                        self.settings = length;
                    } else {
                        self.skip = length;
                    }
                }
            }
        }
    }
}
