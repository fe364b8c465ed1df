#!/usr/bin/env python3
"""A TCP relay that puts a distance between nginx and Esper: every byte is
held half the round-trip time in each direction, in order, as a link of that
RTT would (bandwidth is not limited), and a new connection's bytes start
to flow one RTT after it is accepted, as after a TCP handshake at that
distance. Used by t/handshakes.t; `make bench` case R uses its twin in
Rust, esper-relay (esper-mock/src/bin/esper-relay.rs), which carries a
thousand busy connections on one thread.

usage: relay.py --to HOST:PORT --rtt-ms MS [--listen IP:PORT] [--accepts FILE]

Prints "listening on IP:PORT" once it accepts. With --accepts, the number of
connections accepted so far is written to FILE after each one. Stops on
SIGTERM or SIGINT.
"""

import argparse
import asyncio
import signal
import sys
import time


async def pipe(reader, writer, delay):
    """Copies reader to writer, each chunk delay seconds after it arrived."""
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((time.monotonic() + delay, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--to", required=True)
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--accepts")
    args = parser.parse_args()
    to_host, to_port = args.to.rsplit(":", 1)
    delay = args.rtt_ms / 2000.0
    accepted = 0

    async def relay(client_reader, client_writer):
        nonlocal accepted
        accepted += 1
        if args.accepts:
            with open(args.accepts, "w") as f:
                f.write(str(accepted))
        await asyncio.sleep(2 * delay)
        try:
            server_reader, server_writer = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                pipe(client_reader, server_writer, delay),
                pipe(server_reader, client_writer, delay),
            )
        except asyncio.CancelledError:
            # The relay stops: its connections go with it.
            pass

    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(relay, host, int(port), backlog=4096)
    address = server.sockets[0].getsockname()
    print(f"listening on {address[0]}:{address[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
