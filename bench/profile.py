#!/usr/bin/env python3
"""Where a decision's CPU goes: perf samples of the nginx worker (all its
threads) during a load on one bench location, grouped by what the code does.

    python3 bench/profile.py                 # case B: esper on, HTTP/1.1 pool, plain http
    python3 bench/profile.py --case B-TLS    # the module to an https Esper (the TLS terminator)
    python3 bench/profile.py --case P        # nginx's own proxy_pass of the same POST

Needs `perf` (Debian: linux-perf). Samples cpu-clock (no hardware counters
needed) with DWARF call graphs; each sample is charged to the innermost frame
of its stack that belongs to a group (so malloc, memcpy and kernel time go to
the code that called them). Same nginx, mock and configuration as bench.py.
"""

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

# (group, pattern on the symbol); the first group whose pattern matches the
# innermost matching frame wins. Order matters only within one frame.
GROUPS = [
    ("payload building", r"esper_protocol::payload|ngx_http_esper_module::request::|serde_json::ser|serde::ser|"
                         r"serde_core::ser"),
    ("answer parsing", r"esper_protocol::answer|serde_json::de|serde_json::read|serde_core::de|serde::de"),
    ("wake-up (eventfd read, on_wake, resuming the request)",
     r"ngx_http_esper_module::worker::on_wake|ngx_http_esper_module::handler::(on_answer|resumed|judge|enforce|"
     r"arrived|on_deadline)|ngx_http_esper_module::headers::|ngx_http_esper_module::response::"),
    ("HTTP client (hyper, h2, rustls, sockets)",
     r"hyper::|hyper_util::|\bh2::|\bhttp::|httparse|bytes::|rustls::|\bring::|ring_core|webpki|"
     r"tokio::net|tokio::io|ngx_http_esper_module::(origin|client|tls)::|url::|"
     r"aes_|gcm_|chacha|poly1305|sha256|sha512|x25519|fiat_|bn_mul|p256"),
    ("hand-off (admission, spawn, tokio scheduler and I/O driver, completions, eventfd write)",
     r"ngx_http_esper_module::worker::|tokio::|mio::|std::thread|std::sys::sync|parking_lot"),
    ("module's access handler (other)", r"ngx_http_esper_module::|esper_protocol::|ngx_http_esper_"),
    ("nginx itself", r"^ngx_|^main$"),
]
COMPILED = [(name, re.compile(p)) for name, p in GROUPS]
HAND_OFF = GROUPS[4][0]
# The hand-off group, split the same way (innermost matching frame).
HAND_OFF_PARTS = [(name, re.compile(p)) for name, p in [
    ("completions and eventfd write", r"worker::Completions|eventfd"),
    ("thread park / unpark (futex, context switches)", r"park|futex|Condvar|std::sys::sync"),
    ("I/O driver (epoll, mio, readiness)", r"tokio::runtime::io|mio::|tokio::runtime::driver"),
    ("timers", r"tokio::runtime::time|tokio::time"),
    ("task spawn, queues, polling", r"tokio::runtime::task|tokio::runtime::scheduler|tokio::runtime::context|"
                                    r"spawn|tokio::sync"),
    ("admission, the call and the batched hand-off (worker::call, on_hand_off)",
     r"ngx_http_esper_module::worker::"),
]]


def classify(frames):
    for sym, dso in frames:
        for name, rx in COMPILED:
            if rx.search(sym):
                return name
        if dso.endswith("/nginx") and not sym.startswith("["):
            return "nginx itself"
    return "unattributed (libc or kernel without a known caller)"


def sub_classify(frames, parts):
    for sym, _ in frames:
        for name, rx in parts:
            if rx.search(sym):
                return name
    return "other"


def parse_script(text):
    """perf script output: a header line per sample, then its frames."""
    samples = []
    cur = None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                samples.append(cur)
            cur = None
            continue
        if not line.startswith((" ", "\t")):
            head = line.split()
            cur = {"comm": head[0], "tid": head[1], "frames": []}
            continue
        if cur is None:
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\(([^)]*)\)\s*$", line)
        if m:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
            cur["frames"].append((sym, m.group(2)))
    if cur:
        samples.append(cur)
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="B", choices=sorted(bench.PATHS), help="bench case (location) to load")
    ap.add_argument("--seconds", type=int, default=8, help="length of the perf recording")
    ap.add_argument("--frequency", type=int, default=999, help="samples per second per thread")
    ap.add_argument("--top", type=int, default=25, help="symbols (self time) listed")
    args = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("perf is missing (apt-get install -y linux-perf)")

    tmp = bench.TMP
    os.makedirs(tmp, exist_ok=True)
    mock, mock_port = bench.start_mock()
    nginx = terminator = None
    data = os.path.join(tmp, "perf.data")
    try:
        tls_dir = os.path.join(tmp, "tls")
        shutil.rmtree(tls_dir, ignore_errors=True)
        bench.make_certificates(tls_dir)
        terminator = bench.Nginx(bench.TERMINATOR_CONF, tls_dir, mock=mock_port)
        nginx = bench.Nginx(bench.NGINX_CONF, tmp, module=bench.module_path(), mock=mock_port, tls=terminator.port,
                            tls_dir=tls_dir, proxy_call=bench.PROXY_CALL.format(payload=bench.PAYLOAD),
                            proxy_tls=bench.PROXY_TLS.format(tls_dir=tls_dir))
        url = f"http://127.0.0.1:{nginx.port}/{bench.PATHS[args.case]}/index.html"
        bench.wrk(url, 50, 1)
        out = {}
        load = threading.Thread(target=lambda: out.update(r=bench.wrk(url, 50, args.seconds + 4)))
        load.start()
        time.sleep(2)
        calls0, cpu0 = bench.mock_count(mock_port), nginx.cpu_seconds()
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(args.frequency),
                        "--call-graph", "dwarf,16384", "-p", str(nginx.worker), "-o", data,
                        "--", "sleep", str(args.seconds)], check=True, stdout=subprocess.DEVNULL)
        calls, cpu = bench.mock_count(mock_port) - calls0, nginx.cpu_seconds() - cpu0
        load.join()
    finally:
        for n in (nginx, terminator):
            if n:
                n.stop()
        mock.terminate()
        mock.wait()

    text = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,ip,sym,dso"],
                          capture_output=True, text=True).stdout
    samples = parse_script(text)
    total = len(samples)
    if not total or not calls:
        sys.exit(f"no samples ({total}) or no calls ({calls})")
    groups = collections.Counter()
    by_thread = collections.defaultdict(collections.Counter)
    selfsym = collections.Counter()
    hand_off = collections.Counter()
    for s in samples:
        g = classify(s["frames"])
        groups[g] += 1
        if g == HAND_OFF:
            hand_off[sub_classify(s["frames"], HAND_OFF_PARTS)] += 1
        thread = "nginx thread" if s["comm"] == "nginx" else f"{s['comm']} thread"
        by_thread[thread][g] += 1
        selfsym[s["frames"][0][0] if s["frames"] else "?"] += 1
    per_sample_us = 1e6 / args.frequency
    sampled_us = total * per_sample_us / calls
    print(f"case {args.case}: {calls:,} calls to the mock in {args.seconds} s ({calls / args.seconds:,.0f}/s, "
          f"wrk {out['r']['rps']:,.0f} requests/s over its whole run); worker CPU "
          f"{cpu / calls * 1e6:.1f} µs per decision (/proc), {sampled_us:.1f} µs sampled; {total:,} samples")
    print()
    print("| group | share | µs per decision | " + " | ".join(sorted(by_thread)) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in by_thread) + " |")
    for g, n in groups.most_common():
        cols = " | ".join(f"{by_thread[t][g] / total * 100:.1f} %" for t in sorted(by_thread))
        print(f"| {g} | {n / total * 100:.1f} % | {n * per_sample_us / calls:.1f} | {cols} |")
    if hand_off:
        print()
        print("the hand-off, split:")
        for name, n in hand_off.most_common():
            print(f"  {n / total * 100:5.1f} %  {n * per_sample_us / calls:5.1f} µs  {name}")
    print()
    print(f"top {args.top} symbols by self time:")
    for sym, n in selfsym.most_common(args.top):
        print(f"  {n / total * 100:5.1f} %  {sym[:140]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
