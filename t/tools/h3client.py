#!/usr/bin/env python3
"""HTTP/3 client of t/http3.t, on aioquic (t/tools/requirements.txt).

Opens ONE QUIC connection to 127.0.0.1:PORT and sends every request of a JSON
list (read from stdin) on it concurrently, each on its own stream (the list may also be the one
argument):

    {"method": "GET", "path": "/x?a=1",          # defaults: GET, /
     "authority": "localhost",                   # :authority (default localhost)
     "headers": [["x-a", "1"], ...],             # after the pseudo-headers
     "body": ["part 1", "part 2"],               # sent as DATA frames, never a
     "chunk_delay_ms": 50,                       #   content-length; a string is one part
     "keep_open": true,                          # no FIN after the body (or headers)
     "start_after_ms": 0,                        # when to open the stream
     "cancel_after_ms": 300}                     # RESET_STREAM + STOP_SENDING then
                                                 #   (H3_REQUEST_CANCELLED), unless answered

Prints one JSON array, one entry per request in the same order:

    {"stream_id": 0, "status": 200, "headers": {"name": "v1, v2"},
     "body": "...", "cancelled": false, "elapsed_ms": 12}

A stream the client cancelled before its answer ended has "cancelled": true
(and whatever had arrived); a stream nginx reset has "reset": true; one not
finished at --timeout has "error": "timeout". Exits 0 when every stream either
ended or was cancelled as asked, 1 otherwise; always within --timeout seconds
plus a second for closing the connection.
"""

import argparse
import asyncio
import json
import ssl
import sys
import time

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset


class Stream:
    def __init__(self, spec):
        self.spec = spec
        self.stream_id = None
        self.status = None
        self.headers = {}
        self.body = bytearray()
        self.cancelled = False
        self.reset = False
        self.started = None
        self.elapsed_ms = None
        self.done = asyncio.Event()

    def finish(self):
        if not self.done.is_set():
            self.elapsed_ms = round((time.monotonic() - self.started) * 1000)
            self.done.set()

    def result(self, timed_out):
        r = {
            "stream_id": self.stream_id,
            "status": self.status,
            "headers": self.headers,
            "body": self.body.decode("utf-8", "replace"),
            "cancelled": self.cancelled,
            "elapsed_ms": self.elapsed_ms,
        }
        if self.reset:
            r["reset"] = True
        if timed_out and not self.done.is_set():
            r["error"] = "timeout"
        return r


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.streams = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.streams:
            s = self.streams[event.stream_id]
            s.reset = True
            s.finish()
        for ev in self.h3.handle_event(event):
            s = self.streams.get(ev.stream_id)
            if s is None or s.cancelled:
                continue
            if isinstance(ev, HeadersReceived):
                for name, value in ev.headers:
                    name, value = name.decode(), value.decode("utf-8", "replace")
                    if name == ":status":
                        # An interim (1xx) answer is replaced by the final one.
                        s.status = int(value)
                        s.headers = {}
                    elif name in s.headers:
                        s.headers[name] += ", " + value
                    else:
                        s.headers[name] = value
            elif isinstance(ev, DataReceived):
                s.body.extend(ev.data)
            if ev.stream_ended:
                s.finish()

    async def run(self, s, port):
        spec = s.spec
        await asyncio.sleep(spec.get("start_after_ms", 0) / 1000)
        s.started = time.monotonic()
        s.stream_id = self._quic.get_next_available_stream_id()
        self.streams[s.stream_id] = s
        headers = [
            (b":method", spec.get("method", "GET").encode()),
            (b":scheme", b"https"),
            (b":authority", spec.get("authority", "localhost").encode()),
            (b":path", spec.get("path", "/").encode()),
        ] + [(k.lower().encode(), v.encode()) for k, v in spec.get("headers", [])]
        body = spec.get("body")
        parts = [body] if isinstance(body, str) else list(body or [])
        keep_open = spec.get("keep_open", False)
        cancel = spec.get("cancel_after_ms")
        if cancel is not None:
            asyncio.get_running_loop().call_later(cancel / 1000, self.cancel, s)
        self.h3.send_headers(s.stream_id, headers, end_stream=not parts and not keep_open)
        self.transmit()
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(spec.get("chunk_delay_ms", 0) / 1000)
            if s.done.is_set():
                break
            last = i == len(parts) - 1 and not keep_open
            self.h3.send_data(s.stream_id, part.encode(), end_stream=last)
            self.transmit()
        await s.done.wait()

    def cancel(self, s):
        if s.done.is_set():
            return
        s.cancelled = True
        code = ErrorCode.H3_REQUEST_CANCELLED
        self._quic.reset_stream(s.stream_id, code)
        try:
            self._quic.stop_stream(s.stream_id, code)
        except ValueError:
            pass
        self.transmit()
        s.finish()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ca", help="trust this CA (otherwise no verification)")
    parser.add_argument("--server-name", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=20)
    parser.add_argument("requests", nargs="?", help="the JSON list (default: read from stdin)")
    args = parser.parse_args()
    specs = json.loads(args.requests) if args.requests is not None else json.load(sys.stdin)

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=args.server_name)
    if args.ca:
        config.load_verify_locations(args.ca)
    else:
        config.verify_mode = ssl.CERT_NONE
    config.idle_timeout = args.timeout + 5

    streams = [Stream(spec) for spec in specs]
    timed_out = False
    connected = False
    ok = True
    try:
        async with asyncio.timeout(args.timeout + 1):
            async with connect(args.host, args.port, configuration=config, create_protocol=Client,
                               wait_connected=True) as client:
                connected = True
                try:
                    async with asyncio.timeout(args.timeout):
                        await asyncio.gather(*(client.run(s, args.port) for s in streams))
                except TimeoutError:
                    timed_out = True
                client.close()
    except TimeoutError:
        if not connected:
            print(json.dumps({"error": f"no QUIC connection to {args.host}:{args.port} within the timeout"}))
            return 1
        timed_out = True
    except Exception as e:  # handshake failure, connection refused: say so, in JSON
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    results = [s.result(timed_out) for s in streams]
    for s, r in zip(streams, results):
        if "error" in r or (s.reset and not s.cancelled) or (s.status is None and not s.cancelled):
            ok = False
    print(json.dumps(results))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
