#!/usr/bin/env python3
"""`make bench`: the decision path side by side with nginx's own auth_request
and with a plain proxy_pass of the same call.

One nginx binary (the vendored one, built with auth_request), one worker, one
mock Esper (compiled, --no-record), one load generator (wrk), loopback only.
For the TLS cases a second nginx (the same binary) terminates TLS with a test
CA in front of the mock. Case R runs a third nginx with two workers, and, at a
distance (R20-*, R100-*), a fourth with two workers behind delaying relays
(esper-relay) to a TLS terminator that speaks HTTP/2, loaded by h2load. Every
case runs in this one invocation; the cases of INTERLEAVED run several times,
interleaved, and the medians are reported. Writes bench/results.md,
bench/results.json and bench/latency.png (not with --only).
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
TMP = os.path.join(BENCH, "tmp")
REPORT_LUA = os.path.join(BENCH, "report.lua")
TICKS = os.sysconf("SC_CLK_TCK")

# The same small JSON body in size and shape as the module's payload, for the
# auth_request case and for measuring the mock alone.
PAYLOAD = json.dumps({
    "source": "nginx", "observed_at": "2026-01-01T00:00:00.000Z",
    "idempotency_key": "0123456789abcdef0123456789abcdef",
    "return_url": "http://127.0.0.1/c/index.html",
    "request": {"method": "GET", "path": "/c/index.html", "client_ip": "127.0.0.1",
                "user_agent": "wrk", "headers": {"host": "127.0.0.1"},
                "query_params": {}, "route_params": {}},
    "fields": {"host": "127.0.0.1"},
}, separators=(",", ":"))

# Case R: the mock answers after this long (mock_delay_ms, read from the
# payload's request.query_params: the module forwards the query string; the
# auth_request case sends it in its fixed body).
R_DELAY_MS = 20
R_CONNECTIONS = 1000
R_LIGHT_CONNECTIONS = 200
R_WORKERS = 2
R_PAYLOAD = json.dumps(dict(json.loads(PAYLOAD), request=dict(
    json.loads(PAYLOAD)["request"], query_params={"mock_delay_ms": str(R_DELAY_MS)})), separators=(",", ":"))

# The cases measured side by side, interleaved, `--runs` times each.
INTERLEAVED = ["A", "A0", "B", "B2", "P", "C", "B-TLS", "P-TLS", "C-TLS", "G-lookup"]
TLS_CASES = ["B-TLS", "P-TLS", "C-TLS"]
PATHS = {"A": "a", "A0": "a0", "B": "b", "B2": "h2", "P": "p", "C": "c", "B-TLS": "b-tls", "P-TLS": "p-tls",
         "C-TLS": "c-tls", "G-lookup": "bz"}

# The same POST to the mock as auth_request's, through nginx's proxy module:
# case C's subrequest, case P's proxied request (its answer is relayed), and
# their TLS twins.
PROXY_CALL = """
            proxy_method POST;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Content-Type application/json;
            proxy_set_header x-esper-api-key bench-key;
            proxy_pass_request_body off;
            proxy_set_body '{payload}';"""
PROXY_TLS = """
            proxy_ssl_trusted_certificate {tls_dir}/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name 127.0.0.1;
            proxy_ssl_session_reuse on;"""

NGINX_CONF = """
load_module {module};
worker_processes 1;
worker_rlimit_nofile 30000;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    esper_api_url http://127.0.0.1:{mock};
    esper_api_key bench-key;
    upstream esper {{ server 127.0.0.1:{mock}; keepalive 64; }}
    upstream esper_tls {{ server 127.0.0.1:{tls}; keepalive 64; }}
    esper_enforcement_zone zone=bench_zone:10m ttl=5m;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        root {tmp}/html;
        location /a/ {{ alias {tmp}/html/; }}
        location /a0/ {{ return 200 "ok\\n"; }}
        location /b/ {{ esper on; alias {tmp}/html/; }}
        location /h2/ {{ esper on; esper_http2 on; alias {tmp}/html/; }}
        location /hold/ {{ esper on; esper_timeout 30s; esper_max_pending 8192; alias {tmp}/html/; }}
        location /hold-h2/ {{ esper on; esper_timeout 30s; esper_max_pending 8192; esper_http2 on; alias {tmp}/html/; }}
        location /c/ {{ auth_request /auth; alias {tmp}/html/; }}
        location /p/ {{
            rewrite ^ /api/v1/runtime/mitigation break;
            proxy_pass http://esper;{proxy_call}
        }}
        location /b-tls/ {{
            esper on;
            esper_api_url https://127.0.0.1:{tls};
            esper_ssl_trusted_certificate {tls_dir}/ca.pem;
            alias {tmp}/html/;
        }}
        location /p-tls/ {{
            rewrite ^ /api/v1/runtime/mitigation break;
            proxy_pass https://esper_tls;{proxy_call}{proxy_tls}
        }}
        location /c-tls/ {{ auth_request /auth-tls; alias {tmp}/html/; }}
        location = /auth-tls {{
            internal;
            proxy_pass https://esper_tls/api/v1/runtime/mitigation;{proxy_call}{proxy_tls}
        }}
        location /bz/ {{ esper on; esper_enforcement bench_zone; alias {tmp}/html/; }}
        location /flood/ {{ esper on; alias {tmp}/html/; }}
        location /flood-zone/ {{ esper on; esper_enforcement bench_zone; alias {tmp}/html/; }}
        location = /esper-metrics {{ esper_metrics; }}
        location = /auth {{
            internal;
            proxy_pass http://esper/api/v1/runtime/mitigation;{proxy_call}
        }}
        location /e/ {{
            esper on;
            esper_timeout 100ms;
            esper_failure_action block;
            alias {tmp}/html/;
        }}
    }}
}}
"""


# The TLS terminator in front of the mock, for B-TLS, P-TLS and C-TLS: the
# same for every case. Only a connection's first request is logged, with
# whether its handshake resumed a session: the log counts TLS handshakes.
# Clients may keep their connections (keepalive_requests and
# keepalive_timeout far beyond a run), so the count shows how often a
# client opens a connection, not how often this server closes one.
TERMINATOR_CONF = """
worker_processes 1;
worker_rlimit_nofile 30000;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    map $connection_requests $first_request {{ 1 1; default 0; }}
    log_format handshake '$msec $connection $ssl_session_reused $ssl_protocol';
    access_log {prefix}/handshakes.log handshake if=$first_request;
    upstream mock {{ server 127.0.0.1:{mock}; keepalive 256; }}
    ssl_session_cache shared:bench_tls:10m;
    ssl_session_timeout 1h;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} ssl backlog=8192;
        ssl_certificate {prefix}/leaf.pem;
        ssl_certificate_key {prefix}/leaf.key;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

# Case R: production latency. Two workers, the mock answers after
# R_DELAY_MS, 1,000 clients; the module over HTTP/1.1 and with esper_http2
# on, against auth_request (its upstream may keep as many connections as
# there are clients) and against P's plain proxy_pass of the same call: the
# most nginx's own upstream exchange makes of this machine at this load.
# Each case has a mock of its own (the same binary, one thread), so the
# connections open to "Esper" are counted per case.
R_CONF = """
load_module {module};
worker_processes {workers};
worker_rlimit_nofile 30000;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    esper_api_key bench-key;
    upstream esper {{ server 127.0.0.1:{mock_c}; keepalive 1024; }}
    upstream esper_p {{ server 127.0.0.1:{mock_p}; keepalive 1024; }}
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location /b/ {{ esper on; esper_api_url http://127.0.0.1:{mock_b}; alias {tmp}/html/; }}
        location /h2/ {{ esper on; esper_http2 on; esper_api_url http://127.0.0.1:{mock_b2}; alias {tmp}/html/; }}
        location /c/ {{ auth_request /auth; alias {tmp}/html/; }}
        location = /auth {{
            internal;
            proxy_pass http://esper/api/v1/runtime/mitigation;{proxy_call}
        }}
        location /p/ {{
            rewrite ^ /api/v1/runtime/mitigation break;
            proxy_pass http://esper_p;{proxy_call}
        }}
    }}
}}
"""


# Case R at a distance: Esper over TLS behind a delaying relay
# (`esper-relay`, a second binary of esper-mock), a server allowing
# R_STREAMS streams per HTTP/2 connection. The chain is
# nginx -> relay (the RTT) -> TLS terminator (nginx, h2 and http/1.1 by
# ALPN) -> mock, so that the RTT applies to the TCP connect and the TLS
# handshake too. One relay per case (its port counts the case's
# connections), one terminator and one mock for all.
R_RTTS_MS = (20, 100)
R_STREAMS = 100
R_FAR_MODES = ("auto", "on", "off", "P")
R_FAR_WARM_UP_S = 2

FAR_TERMINATOR_CONF = """
worker_processes 1;
worker_rlimit_nofile 30000;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    upstream mock {{ server 127.0.0.1:{mock}; keepalive 4096; }}
    ssl_session_cache shared:bench_far:10m;
    ssl_session_timeout 1h;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams {streams};
    server {{
        listen 127.0.0.1:{port} ssl backlog=8192;
        http2 on;
        ssl_certificate {prefix}/leaf.pem;
        ssl_certificate_key {prefix}/leaf.key;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

FAR_CONF = """
load_module {module};
worker_processes {workers};
worker_rlimit_nofile 30000;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    esper_api_key bench-key;
    esper_ssl_trusted_certificate {tls_dir}/ca.pem;
    # A decision fails (and is counted, 403) only after 5 s: over a new
    # HTTP/1.1 connection at 100 ms a call takes 3 RTT (connect, TLS, call),
    # and the cold start of 1,000 of them at once takes seconds of CPU on a
    # busy 2-core machine (each run of `off` starts from a pool that the
    # other cases' runs left idle).
    esper_timeout 5s;
    esper_failure_action block;
    keepalive_requests 10000000;
{upstreams}
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location = /esper-metrics {{ esper_metrics; }}
{locations}
    }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def nginx_binary():
    return open(os.path.join(ROOT, "target/release/nginx-build-dir")).read().strip() + "/nginx"


def module_path():
    """The module built here, or ESPER_BENCH_MODULE: another build of it for
    the same nginx, to compare two commits with the same bench."""
    return os.environ.get("ESPER_BENCH_MODULE") or os.path.join(ROOT, "target/release/libngx_http_esper_module.so")


class Nginx:
    """An nginx of its own prefix directory (config, pid, logs) under TMP."""

    def __init__(self, template, prefix, workers=1, **fmt):
        self.binary = nginx_binary()
        self.prefix = prefix
        self.port = free_port()
        self.workers_wanted = workers
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        os.makedirs(os.path.join(TMP, "html"), exist_ok=True)
        with open(os.path.join(TMP, "html/index.html"), "w") as f:
            f.write("ok\n")
        conf = template.format(tmp=TMP, prefix=prefix, port=self.port, workers=workers, **fmt)
        self.conf = os.path.join(prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        run([self.binary, "-p", prefix + "/", "-c", self.conf])
        wait_port(self.port)
        self.master = int(open(os.path.join(prefix, "nginx.pid")).read())
        self.workers = []
        self.refresh_workers()

    def refresh_workers(self, old=(), timeout=10):
        """Waits until the master has its workers (none of `old`), and keeps their pids."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["pgrep", "-P", str(self.master)], capture_output=True, text=True).stdout
            children = [int(p) for p in out.split() if int(p) not in old]
            if len(children) >= self.workers_wanted:
                self.workers = children[:self.workers_wanted]
                self.worker = self.workers[0]
                return
            time.sleep(0.05)
        sys.exit(f"nginx {self.prefix}: workers did not start")

    def cpu_seconds(self):
        """User and system time of the worker processes, all their threads."""
        total = 0
        for pid in self.workers:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / TICKS

    def rss_kb(self):
        """VmRSS of the worker processes, summed."""
        total = 0
        for pid in self.workers:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def stop(self):
        try:
            os.kill(self.master, signal.SIGQUIT)
        except ProcessLookupError:
            return
        deadline = time.time() + 10
        while time.time() < deadline and os.path.exists(f"/proc/{self.master}"):
            time.sleep(0.05)


def make_certificates(d, leaf_key="rsa:2048"):
    """A test CA and a leaf for 127.0.0.1 (as t/lib/EsperTest.pm makes them;
    `leaf_key` as openssl req -newkey takes it)."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    for cmd in (
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=esper-bench-ca -keyout {d}/ca.key -out {d}/ca.pem",
        f"openssl req -newkey {leaf_key} -nodes -subj /CN=127.0.0.1 -keyout {d}/leaf.key -out {d}/leaf.csr",
        f"openssl x509 -req -in {d}/leaf.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial -days 2 "
        f"-extfile {d}/leaf.ext -out {d}/leaf.pem",
    ):
        run(cmd.split())


class Handshakes:
    """TLS handshakes at the terminator: the lines of its log so far."""

    def __init__(self, terminator):
        self.path = os.path.join(terminator.prefix, "handshakes.log")

    def lines(self):
        try:
            with open(self.path) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def mark(self):
        return len(self.lines())

    def since(self, mark):
        new = self.lines()[mark:]
        resumed = sum(1 for l in new if l.split()[2:3] == ["r"])
        return {"handshakes": len(new), "resumed": resumed, "full": len(new) - resumed,
                "times": [float(l.split()[0]) for l in new]}


def wait_port(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def wrk(url, connections, seconds, body=None, user_agent=None, threads=1):
    env = dict(os.environ)
    if body:
        env["WRK_BODY"] = body
    headers = ["-H", f"User-Agent: {user_agent}"] if user_agent else []
    out = run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
               *headers, "-s", REPORT_LUA, url], env=env).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    result = json.loads(line[5:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def h2load(url, connections, seconds, warm_up, on_main=None, threads=2):
    """An HTTP/1.1 load of `connections` clients (one request at a time
    each) for `warm_up` + `seconds`, by h2load, whose clients keep their
    connections from the warm-up into the measured part; the result, in
    wrk()'s shape, counts only the requests that ended in the measured
    `seconds`. `on_main` is called when the measured part starts."""
    log = os.path.join(TMP, "h2load.log")
    proc = subprocess.Popen(["h2load", "--h1", f"-t{threads}", f"-c{connections}", f"-D{seconds}",
                             f"--warm-up-time={warm_up}", f"--log-file={log}", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start = time.time()
    if on_main:
        time.sleep(warm_up)
        on_main()
    out = proc.communicate()[0]
    if proc.returncode != 0:
        sys.exit(f"h2load failed: {out}")
    main_from = (start + warm_up) * 1e6
    main_to = main_from + seconds * 1e6
    latencies, failed = [], 0
    with open(log) as f:
        for line in f:
            started, status, took = line.split("\t")[:3]
            end = int(started) + int(took)
            if main_from <= end < main_to:
                latencies.append(int(took))
                failed += not status.startswith("2")
    latencies.sort()
    n = len(latencies)
    pct = lambda q: latencies[min(n - 1, int(n * q / 100))] if n else 0
    return {"requests": n, "duration_us": seconds * 1e6, "rps": n / seconds,
            "errors": {"connect": 0, "read": 0, "write": 0, "status": failed, "timeout": 0},
            "latency_us": {q: pct(float(q)) for q in ("50", "75", "90", "99", "99.9", "99.99")},
            "max_us": latencies[-1] if n else 0, "mean_us": sum(latencies) / n if n else 0}


def measured(nginx, url, connections, seconds, user_agent=None, handshakes=None, threads=1):
    """A wrk run with the workers' CPU time and RSS (and, given the
    terminator's log, the TLS handshakes made during it)."""
    cpu = nginx.cpu_seconds()
    mark = handshakes.mark() if handshakes else None
    r = wrk(url, connections, seconds, user_agent=user_agent, threads=threads)
    r["cpu_s_per_1k"] = (nginx.cpu_seconds() - cpu) / r["requests"] * 1000 if r["requests"] else None
    r["rss_kb"] = nginx.rss_kb()
    if handshakes:
        time.sleep(0.2)
        h = handshakes.since(mark)
        del h["times"]
        r["tls"] = h
    return r


def mock_count(mock_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{mock_port}/__mock/count", timeout=5) as resp:
        return json.load(resp)["runtime"]


def metrics(nginx):
    """The module's counters (esper_metrics), as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{nginx.port}/esper-metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name.replace(" ", "")] = float(value)
            except ValueError:
                pass
    return out


def metric_delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


FLOOD_CONNECTIONS = 50
ORDINARY_CONNECTIONS = 10


def flood(nginx, mock_port, seconds, location, run_no):
    """G: one blocked entity (one client IP and User-Agent) at full speed, 50
    connections, for `seconds` + 2 s; an ordinary client (another
    User-Agent, allowed, 10 connections) in the same location is measured
    beside it for `seconds`, from 1 s after the flood starts. The flooding
    entity's User-Agent is new each run, so a zone entry from an earlier run
    never spares it the first calls."""
    flood_url = f"http://127.0.0.1:{nginx.port}/{location}/index.html?mock_action=block"
    ordinary_url = f"http://127.0.0.1:{nginx.port}/{location}/index.html?mock_action=allow"
    m0, calls0 = metrics(nginx), mock_count(mock_port)
    out = {}
    t = threading.Thread(target=lambda: out.update(flood=wrk(flood_url, FLOOD_CONNECTIONS, seconds + 2,
                                                             user_agent=f"flood-bot-{location}-{run_no}")))
    t.start()
    time.sleep(1)
    ordinary = measured(nginx, ordinary_url, ORDINARY_CONNECTIONS, seconds, user_agent="ordinary-client")
    t.join()
    m1, calls1 = metrics(nginx), mock_count(mock_port)
    f = out["flood"]
    flood_s = f["duration_us"] / 1e6
    # Only the flooding entity is answered block: Esper's block decisions are
    # its calls (answered ones; a call cut off when wrk stops is not counted).
    flood_calls = metric_delta(m0, m1, 'esper_decisions_total{action="block"}')
    calls = calls1 - calls0
    return {
        "location": location, "flood": f, "ordinary": ordinary,
        "flood_rps": f["rps"],
        "flood_blocked": f["errors"]["status"],
        "flood_blocked_share": f["errors"]["status"] / f["requests"] if f["requests"] else 0.0,
        "flood_calls": flood_calls,
        "flood_calls_per_s": flood_calls / flood_s,
        "esper_calls": calls, "esper_calls_per_s": calls / flood_s,
        "enforced": metric_delta(m0, m1, 'esper_enforced_requests_total{action="block"}'),
        "ordinary_rps": ordinary["rps"],
        "ordinary_p99_us": ordinary["latency_us"]["99"],
        "ordinary_errors": sum(ordinary["errors"].values()),
    }


def median_flood(runs):
    keys = ["flood_rps", "flood_blocked_share", "flood_calls", "flood_calls_per_s", "esper_calls",
            "esper_calls_per_s", "enforced", "ordinary_rps", "ordinary_p99_us"]
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["flood_calls_max"] = max(r["flood_calls"] for r in runs)
    out["flood_blocked_share_min"] = min(r["flood_blocked_share"] for r in runs)
    out["ordinary_errors"] = sum(r["ordinary_errors"] for r in runs)
    out["runs"] = len(runs)
    return out


def median_of(runs):
    keys = ["rps", "cpu_s_per_1k", "rss_kb"]
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["latency_us"] = {q: statistics.median(r["latency_us"][q] for r in runs) for q in runs[0]["latency_us"]}
    out["max_us"] = statistics.median(r["max_us"] for r in runs)
    out["errors"] = sum(sum(r["errors"].values()) for r in runs)
    out["runs"] = len(runs)
    if "tls" in runs[0]:
        requests = sum(r["requests"] for r in runs)
        out["tls"] = {k: sum(r["tls"][k] for r in runs) for k in runs[0]["tls"]}
        out["tls"]["requests"] = requests
        out["tls"]["per_100k"] = out["tls"]["handshakes"] / requests * 100_000
    return out


def isolation(nginx, seconds, runs):
    """D: load on an esper off location alone, then beside 200 connections
    whose decisions the mock holds for 200 ms each; interleaved, medians."""
    off_url = f"http://127.0.0.1:{nginx.port}/a/index.html"
    slow_url = f"http://127.0.0.1:{nginx.port}/b/index.html?mock_delay_ms=200"
    alone, beside, slow = [], [], []
    for _ in range(runs):
        alone.append(measured(nginx, off_url, 50, seconds))
        t = threading.Thread(target=lambda: slow.append(wrk(slow_url, 200, seconds + 2)))
        t.start()
        time.sleep(1)
        beside.append(measured(nginx, off_url, 50, seconds))
        t.join()
    alone_m, beside_m = median_of(alone), median_of(beside)
    return {"alone": alone_m, "beside": beside_m, "slow": slow,
            "throughput_ratio": beside_m["rps"] / alone_m["rps"]}


def memory(nginx, mock_port, limit_s, location, hold_location):
    """F: RSS after 100k and 1M decided requests, then with 5,000 pending
    (in `hold_location`, whose deadline outlasts the mock's 8 s hold)."""
    url = f"http://127.0.0.1:{nginx.port}/{location}/index.html"
    start = mock_count(mock_port)
    proc = subprocess.Popen(["wrk", "-t1", "-c50", f"-d{limit_s}s", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marks = {}
    deadline = time.time() + limit_s
    while time.time() < deadline and proc.poll() is None:
        done = mock_count(mock_port) - start
        for mark in (100_000, 1_000_000):
            if done >= mark and mark not in marks:
                marks[mark] = nginx.rss_kb()
        if 1_000_000 in marks:
            break
        time.sleep(0.1)
    proc.terminate()
    proc.wait()
    time.sleep(0.5)

    # 5,000 decisions pending at once, twice: the first round also grows the
    # heaps of the worker's two threads (memory kept for later reuse), the
    # second shows what pending decisions take once that has happened.
    cold = pending_round(nginx, mock_port, hold_location)
    steady = pending_round(nginx, mock_port, hold_location)
    return {
        "rss_kb_at_100k": marks.get(100_000), "rss_kb_at_1m": marks.get(1_000_000),
        "growth_kb_100k_to_1m": (marks[1_000_000] - marks[100_000]) if len(marks) == 2 else None,
        "cold": cold, "steady": steady,
    }


def pending_round(nginx, mock_port, hold_location, pending=5000):
    """Holds `pending` decisions at the mock at once (8 s each, then a block,
    so a decided request is told apart from one that met its deadline) and
    measures the worker's RSS while they wait."""
    before = nginx.rss_kb()
    count_before = mock_count(mock_port)
    socks = []
    for i in range(pending):
        s = socket.create_connection(("127.0.0.1", nginx.port))
        s.sendall(f"GET /{hold_location}/index.html?mock_action=block&mock_delay_ms=8000&n={i} HTTP/1.1\r\n"
                  "Host: b\r\nConnection: close\r\n\r\n".encode())
        socks.append(s)
    deadline = time.time() + 10
    while time.time() < deadline and mock_count(mock_port) - count_before < pending:
        time.sleep(0.05)
    held = mock_count(mock_port) - count_before
    during = nginx.rss_kb()
    answered = 0
    for s in socks:
        s.settimeout(20)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        s.close()
        if data.startswith(b"HTTP/1.1 403"):
            answered += 1
    return {"pending": pending, "held_at_mock": held, "answered": answered,
            "rss_kb_before": before, "rss_kb_during": during,
            "kb_per_pending": (during - before) / pending}


def connections_to(port):
    """Established TCP connections whose far end is 127.0.0.1:`port`."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    return sum(1 for l in out.splitlines() if l.strip())


def start_mock():
    port = free_port()
    proc = subprocess.Popen([os.path.join(ROOT, "target/release/esper-mock"), "--listen",
                             f"127.0.0.1:{port}", "--no-record", "--api-key", "bench-key"],
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    return proc, port


def production(seconds, runs, clients=R_CONNECTIONS):
    """R: `clients` clients, two workers, every decision (and auth_request's
    subrequest) answered after R_DELAY_MS; interleaved, medians. During each
    run the connections open to the case's mock and the workers' RSS are
    sampled twice a second."""
    mocks = {k: start_mock() for k in ("R-B", "R-B2", "R-C", "R-P")}
    nginx = None
    raw = {k: [] for k in mocks}
    try:
        nginx = Nginx(R_CONF, os.path.join(TMP, "r"), workers=R_WORKERS, module=module_path(),
                      mock_b=mocks["R-B"][1], mock_b2=mocks["R-B2"][1], mock_c=mocks["R-C"][1],
                      mock_p=mocks["R-P"][1],
                      proxy_call=PROXY_CALL.format(payload=R_PAYLOAD))
        base = f"http://127.0.0.1:{nginx.port}"
        urls = {"R-B": f"{base}/b/index.html?mock_delay_ms={R_DELAY_MS}",
                "R-B2": f"{base}/h2/index.html?mock_delay_ms={R_DELAY_MS}",
                "R-C": f"{base}/c/index.html",
                "R-P": f"{base}/p/index.html"}
        for url in urls.values():
            wrk(url, clients, 2, threads=2)  # warm up pools and connections
        # The warm-up ends with its own burst of connections: the module
        # closes such a surplus after 5 s idle (esper-client/src/h1.rs, esper-client/src/h2.rs), so that the
        # connections counted are those the measured load keeps open.
        time.sleep(6)
        for i in range(runs):
            for k, url in urls.items():
                mock_port = mocks[k][1]
                conns, rss = [], []
                stop = threading.Event()

                def sample():
                    while not stop.wait(0.5):
                        conns.append(connections_to(mock_port))
                        rss.append(nginx.rss_kb())

                t = threading.Thread(target=sample)
                t.start()
                r = measured(nginx, url, clients, seconds, threads=2)
                stop.set()
                t.join()
                r["esper_connections"] = conns
                r["rss_kb_samples"] = rss
                raw[k].append(r)
                print(f"run {i + 1}/{runs} {k} ({clients} clients): {r['rps']:,.0f} requests/s, p99 "
                      f"{r['latency_us']['99'] / 1000:.1f} ms, {max(conns or [0])} connections to the mock",
                      file=sys.stderr)
    finally:
        if nginx:
            nginx.stop()
        for proc, _ in mocks.values():
            proc.terminate()
            proc.wait()
    ideal = clients / (R_DELAY_MS / 1000)
    out = {}
    for k, rs in raw.items():
        m = median_of(rs)
        m["mean_us"] = statistics.median(r["mean_us"] for r in rs)
        m["added_p99_us"] = m["latency_us"]["99"] - R_DELAY_MS * 1000
        m["ideal_rps"] = ideal
        m["of_ideal"] = m["rps"] / ideal
        m["in_flight"] = m["rps"] * m["mean_us"] / 1e6  # Little's law
        m["cpu_us_per_decision"] = m["cpu_s_per_1k"] * 1000
        m["rss_kb_max"] = max(max(r["rss_kb_samples"] or [r["rss_kb"]]) for r in rs)
        samples = [c for r in rs for c in r["esper_connections"]]
        m["esper_connections_max"] = max(samples or [0])
        m["esper_connections_median"] = statistics.median(samples or [0])
        m["clients"] = clients
        out[k] = m
    return out, raw


def far_case(rtt, mode):
    return f"R{rtt}-{mode}"


def far_locations(relays, tls_dir):
    """nginx's upstreams and locations for case R at a distance, one per
    case, each to its own relay."""
    upstreams, locations = [], []
    for (rtt, mode), (_, port) in relays.items():
        name = far_case(rtt, mode).lower()
        if mode == "P":
            upstreams.append(f"    upstream {name} {{ server 127.0.0.1:{port}; keepalive 1024; }}")
            locations.append(f"""        location /{name}/ {{
            rewrite ^ /api/v1/runtime/mitigation break;
            proxy_pass https://{name};{PROXY_CALL.format(payload=PAYLOAD)}{PROXY_TLS.format(tls_dir=tls_dir)}
        }}""")
        else:
            locations.append(f"        location /{name}/ {{ esper on; esper_http2 {mode}; "
                             f"esper_api_url https://127.0.0.1:{port}; alias {TMP}/html/; }}")
    return "\n".join(upstreams), "\n".join(locations)


def start_relay(to_port, rtt_ms):
    proc = subprocess.Popen([os.path.join(ROOT, "target/release/esper-relay"), "--to", f"127.0.0.1:{to_port}",
                             "--rtt-ms", str(rtt_ms)], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline().rsplit(":", 1)[1])


def connections_by_pid(port, local=False):
    """Established TCP connections to (or, with `local`, at) 127.0.0.1:`port`,
    counted by the process that holds them."""
    side = "sport" if local else "dport"
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( {side} = :{port} )"],
                         capture_output=True, text=True).stdout
    counts = {}
    for line in out.splitlines():
        for pid in set(re.findall(r"pid=(\d+)", line)):
            counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


def proc_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# The HTTP/2 pool closes a connection beyond a worker's first after this
# long without a call (esper-client/src/h2.rs SURPLUS_IDLE_TIMEOUT): a burst's surplus
# may stay that long.
SURPLUS_IDLE_S = 5
SAMPLE_EVERY_S = 0.5


def connections_check(workers_conns, client_conns, pending, in_main, sampled_at, limit=R_STREAMS):
    """Issue 23's bound, per worker and sample: its connections to Esper at
    most ceil(its calls in flight / limit) + 1, its calls in flight being the
    most it had over the last SURPLUS_IDLE_S (a surplus closes after that
    long idle). The calls in flight are sampled for all workers
    (esper_pending); a worker's part is its share of the client connections
    in the same sample (each client has at most one request in flight).
    Only the samples of the measured part (`in_main`) are judged; the
    warm-up's count for the window before them."""
    per_worker = []
    for clients, total in zip(client_conns, pending):
        n = sum(clients) or 1
        per_worker.append([total * c / n for c in clients])
    over, judged, worst, worst_excess = 0, 0, None, -10**9
    for i, conns in enumerate(workers_conns):
        if not in_main[i]:
            continue
        window = [x for x, at in zip(per_worker[:i + 1], sampled_at) if at >= sampled_at[i] - SURPLUS_IDLE_S]
        for w, c in enumerate(conns):
            calls = max(x[w] for x in window)
            target = -(-int(round(calls)) // limit) + 1
            excess = c - target
            judged += 1
            over += excess > 0
            if excess > worst_excess:
                worst_excess, worst = excess, {"worker": w, "connections": c, "target": target,
                                               "calls_in_flight": round(calls), "sample": i}
    return {"ok": over == 0, "over": over, "samples": judged, "worst": worst, "worst_excess": worst_excess}


def far(seconds, runs, clients=R_CONNECTIONS):
    """R at a distance: for each RTT of R_RTTS_MS, the module with
    esper_http2 auto, on and off and nginx's own proxy_pass of the same call,
    each through a relay of its own to one TLS terminator (R_STREAMS streams
    per HTTP/2 connection) and one mock that answers at once; `clients`
    clients, R_WORKERS workers; the 2 x 4 cases interleaved, `runs` times,
    each run after a 1 s warm-up of its own (so that every case starts from
    its pool as the load leaves it, not from the 5 s idle trim). During each
    run, the connections to the case's relay and the clients' connections
    are sampled per worker twice a second."""
    prefix = os.path.join(TMP, "far")
    tls_dir = os.path.join(prefix, "tls")
    shutil.rmtree(prefix, ignore_errors=True)
    make_certificates(tls_dir, leaf_key="ec -pkeyopt ec_paramgen_curve:prime256v1")
    mock, mock_port = start_mock()
    terminator = nginx = None
    relays = {}
    raw = {}
    try:
        terminator = Nginx(FAR_TERMINATOR_CONF, tls_dir, mock=mock_port, streams=R_STREAMS)
        for rtt in R_RTTS_MS:
            for mode in R_FAR_MODES:
                relays[(rtt, mode)] = start_relay(terminator.port, rtt)
        upstreams, locations = far_locations(relays, tls_dir)
        nginx = Nginx(FAR_CONF, prefix, workers=R_WORKERS, module=module_path(), tls_dir=tls_dir,
                      upstreams=upstreams, locations=locations)
        base = f"http://127.0.0.1:{nginx.port}"
        cases = {far_case(rtt, mode): (rtt, mode) for rtt, mode in relays}
        raw = {k: [] for k in cases}
        for i in range(runs):
            for k, (rtt, mode) in cases.items():
                url = f"{base}/{k.lower()}/index.html"
                relay_port = relays[(rtt, mode)][1]
                conns, workers_conns, client_conns, pending, in_main, sampled_at, cpu = [], [], [], [], [], [], {}
                stop = threading.Event()

                def sample():
                    # From the warm-up's start (the calls in flight of the
                    # last SURPLUS_IDLE_S before a measured sample count),
                    # until the measured part ends (h2load's ending closes
                    # its connections); `measured` marks the measured part.
                    end = time.time() + R_FAR_WARM_UP_S + seconds - 0.3
                    while not stop.wait(SAMPLE_EVERY_S) and time.time() < end:
                        by_pid = connections_by_pid(relay_port)
                        clients_by_pid = connections_by_pid(nginx.port, local=True)
                        calls = metrics(nginx).get("esper_pending", 0)
                        if not sum(clients_by_pid.values()):
                            continue
                        pending.append(calls)
                        workers_conns.append([by_pid.get(p, 0) for p in nginx.workers])
                        client_conns.append([clients_by_pid.get(p, 0) for p in nginx.workers])
                        in_main.append(bool(cpu))
                        sampled_at.append(time.time())
                        if cpu:
                            conns.append(sum(by_pid.values()))

                t = threading.Thread(target=sample)

                def on_main():
                    cpu.update(workers=nginx.cpu_seconds(), terminator=terminator.cpu_seconds(),
                               relay=proc_cpu_seconds(relays[(rtt, mode)][0].pid), metrics=metrics(nginx))

                t.start()
                r = h2load(url, clients, seconds, R_FAR_WARM_UP_S, on_main=on_main)
                stop.set()
                t.join()
                n = r["requests"] or 1
                r["cpu_s_per_1k"] = (nginx.cpu_seconds() - cpu["workers"]) / n * 1000
                r["terminator_cpu_s_per_1k"] = (terminator.cpu_seconds() - cpu["terminator"]) / n * 1000
                r["relay_cpu_share"] = (proc_cpu_seconds(relays[(rtt, mode)][0].pid) - cpu["relay"]) / seconds
                # The decisions' own time (the module's histogram, from the
                # call's start on the nginx thread to its answer) over the
                # window: the decisions in flight on average.
                r["decisions_in_flight"] = metric_delta(cpu["metrics"], metrics(nginx),
                                                        "esper_decision_duration_seconds_sum") / seconds
                r["rss_kb"] = nginx.rss_kb()
                r["esper_connections"] = conns
                r["esper_connections_by_worker"] = workers_conns
                r["client_connections_by_worker"] = client_conns
                r["pending"] = pending
                r["in_main"] = in_main
                r["sampled_at"] = sampled_at
                r["connections_check"] = connections_check(workers_conns, client_conns, pending, in_main, sampled_at)
                raw[k].append(r)
                print(f"run {i + 1}/{runs} {k}: {r['rps']:,.0f} requests/s, p99 "
                      f"{r['latency_us']['99'] / 1000:.1f} ms, {max(conns or [0])} connections to Esper, "
                      f"{sum(r['errors'].values())} failed, relay {r['relay_cpu_share']:.2f} core", file=sys.stderr)
    finally:
        for n in (nginx, terminator):
            if n:
                n.stop()
        for proc, _ in [*relays.values(), (mock, mock_port)]:
            proc.terminate()
            proc.wait()
    out = {}
    for k, rs in raw.items():
        rtt, mode = cases[k]
        m = median_of(rs)
        m["rtt_ms"], m["mode"], m["clients"] = rtt, mode, clients
        m["mean_us"] = statistics.median(r["mean_us"] for r in rs)
        m["added_p99_us"] = m["latency_us"]["99"] - rtt * 1000
        m["in_flight"] = m["rps"] * m["mean_us"] / 1e6  # Little's law
        m["decisions_in_flight"] = statistics.median(r["decisions_in_flight"] for r in rs)
        m["cpu_us_per_decision"] = m["cpu_s_per_1k"] * 1000
        m["terminator_cpu_us_per_call"] = statistics.median(r["terminator_cpu_s_per_1k"] for r in rs) * 1000
        m["relay_cpu_share"] = statistics.median(r["relay_cpu_share"] for r in rs)
        samples = [c for r in rs for c in r["esper_connections"]]
        m["esper_connections_max"] = max(samples or [0])
        m["esper_connections_median"] = statistics.median(samples or [0])
        checks = [r["connections_check"] for r in rs]
        m["connections_within_target"] = all(c["ok"] for c in checks)
        m["connections_samples_over"] = sum(c["over"] for c in checks)
        m["connections_samples"] = sum(c["samples"] for c in checks)
        m["pending_max"] = max((p for r in rs for p, main in zip(r["pending"], r["in_main"]) if main), default=0)
        worst = max(checks, key=lambda c: c["worst_excess"])
        m["connections_worst"] = worst["worst"]
        out[k] = m
    return out, raw


def reload_cost(nginx, handshakes, url, before_s=3, after_s=8):
    """SIGHUP to the module's nginx under load on `url` (B-TLS): 1 s wrk
    windows back to back, `before_s` before the reload and `after_s` after;
    the handshakes the reload cost (the new workers open new connections)
    and how long until p99 is back within 1.5 x its value before."""
    wrk(url, 50, 1)  # the pool may have closed idle connections since B-TLS last ran: reopen them first
    before = []
    mark0 = handshakes.mark()
    t_before = time.time()
    for _ in range(before_s):
        before.append(wrk(url, 50, 1))
    base_h = handshakes.since(mark0)["handshakes"] / (time.time() - t_before)
    mark = handshakes.mark()
    old = set(nginx.workers)
    t0 = time.time()
    os.kill(nginx.master, signal.SIGHUP)
    after = []
    for _ in range(after_s):
        after.append(wrk(url, 50, 1))
    span = time.time() - t0
    time.sleep(0.3)
    nginx.refresh_workers(old=old)
    h = handshakes.since(mark)
    base_p99 = statistics.median(r["latency_us"]["99"] for r in before)
    p99s = [r["latency_us"]["99"] for r in after]
    back = None
    for i in range(len(p99s)):
        if all(p <= 1.5 * base_p99 for p in p99s[i:]):
            back = i
            break
    return {
        "p99_before_us": [r["latency_us"]["99"] for r in before], "p99_after_us": p99s,
        "rps_before": [r["rps"] for r in before], "rps_after": [r["rps"] for r in after],
        "errors_after": sum(sum(r["errors"].values()) - r["errors"]["status"] for r in after),
        "base_p99_us": base_p99,
        # windows (1 s each, plus wrk's start) after the reload until p99 is
        # back: 0 means the first window after the reload was already fine
        "p99_back_after_windows": back,
        "window_s": span / after_s,
        "p99_back_after_s": None if back is None else round(back * span / after_s, 1),
        "handshakes": h["handshakes"], "resumed": h["resumed"], "full": h["full"],
        "handshakes_baseline_per_s": base_h,
        "handshakes_per_reload": h["handshakes"] - base_h * span,
        "last_handshake_after_s": (max(h["times"]) - t0) if h["times"] else None,
    }


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no chart (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("A", "A. esper off (baseline)"), ("B", "B. esper on"), ("P", "P. proxy_pass"),
                        ("C", "C. auth_request"), ("B-TLS", "B-TLS. esper on, https"),
                        ("C-TLS", "C-TLS. auth_request, https")):
        if name not in results["cases"]:
            continue
        lat = results["cases"][name]["latency_us"]
        qs = list(lat.keys())
        ax.plot(qs, [lat[q] / 1000 for q in qs], marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Latency by percentile, 1 nginx worker, 50 connections")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


NAMES = {"A": "A. baseline (esper off)", "A0": "A0. esper off, the same body by return (no file)", "B": "B. esper on, allow", "B2": "B. with esper_http2 on",
         "P": "P. plain proxy_pass of the same POST, answer relayed",
         "C": "C. auth_request",
         "B-TLS": "B-TLS. esper on, https Esper", "P-TLS": "P-TLS. proxy_pass, https",
         "C-TLS": "C-TLS. auth_request, https",
         "D": "D. esper off beside 200 slow decisions", "E": "E. deadline, Esper never answers",
         "G-lookup": "G. allow-lookup: B with esper_enforcement (a zone miss per request)"}


def table(results):
    c = results["cases"]
    rows = ["| case | requests/s | p50 ms | p99 ms | p99.9 ms | worker CPU s / 1k req | worker RSS MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in INTERLEAVED[:-1] + ["D", "E", "G-lookup"]:
        if key not in c:
            continue
        r = c[key]
        lat = r["latency_us"]
        rows.append(f"| {NAMES[key]} | {r['rps']:,.0f} | {lat['50'] / 1000:.2f} | {lat['99'] / 1000:.2f} | "
                    f"{lat['99.9'] / 1000:.2f} | {r['cpu_s_per_1k']:.4f} | {r['rss_kb'] / 1024:.1f} |")
    for p, b, over, sharing in (("P", "B", "plain HTTP", "wrk and the mock"),
                                ("P-TLS", "B-TLS", "HTTPS", "wrk, the mock and the TLS terminator")):
        if not all(k in c for k in ("A0", "A", p, b)):
            continue
        us = {k: c[k]["cpu_s_per_1k"] * 1000 for k in ("A0", "A", p, b)}
        file, exchange, decision = us["A"] - us["A0"], us[p] - us["A0"], us[b] - us["A"]
        rows += ["", f"Worker CPU per request, {over} to Esper: A0 {us['A0']:.1f} µs (an answer from memory); "
                 f"A {us['A']:.1f} (+ {file:.1f} for the file); {p} {us[p]:.1f} (A0 + {exchange:.1f} for nginx's "
                 f"own upstream exchange and relay); {b} {us[b]:.1f} (A + {decision:.1f} for the decision). With "
                 f"the cores saturated ({sharing} share them), {b}/{p} >= 1.0 needs {b}'s "
                 f"CPU <= {p}'s, a decision of at most {us[p] - us['A']:.1f} µs: "
                 f"{(us[p] - us['A']) / exchange:.2f} of nginx's own exchange, which makes the same round trip."]
    tls = [k for k in TLS_CASES if k in c]
    if tls:
        rows += ["", "TLS handshakes at the terminator during the measured runs (warm-up excluded; "
                 "the terminator never closes a client's connection first)", "",
                 "| case | decisions | handshakes | of them resumed | handshakes per 100k decisions |",
                 "| --- | ---: | ---: | ---: | ---: |"]
        for k in tls:
            h = c[k]["tls"]
            rows.append(f"| {k} | {h['requests']:,} | {h['handshakes']} | {h['resumed']} | {h['per_100k']:.2f} |")
    if "reload" in results:
        rl = results["reload"]
        back = "not within the windows measured" if rl["p99_back_after_windows"] is None else \
            f"after {rl['p99_back_after_windows']} window(s) of ~{rl['window_s']:.1f} s (~{rl['p99_back_after_s']} s)"
        rows += ["", f"reload (SIGHUP to the module's nginx under B-TLS load, 50 connections): "
                 f"{rl['handshakes_per_reload']:.0f} handshakes ({rl['full']} full, {rl['resumed']} resumed; "
                 f"baseline {rl['handshakes_baseline_per_s']:.1f}/s), the last one "
                 f"{rl['last_handshake_after_s'] or 0:.1f} s after the signal; p99 before "
                 f"{rl['base_p99_us'] / 1000:.2f} ms, per 1 s window after: "
                 f"{', '.join(f'{p / 1000:.1f}' for p in rl['p99_after_us'])} ms; p99 back within 1.5 x {back}; "
                 f"{rl['errors_after']} socket errors after the reload"]
    for rkey in ("R", "R-light"):
        if rkey not in results:
            continue
        n = results[rkey]["R-B"]["clients"]
        rows += ["", f"{rkey}. production latency: the mock answers after {R_DELAY_MS} ms, {n:,} clients "
                 f"(wrk -t2), {R_WORKERS} workers; ideal throughput {n:,} / {R_DELAY_MS} ms = "
                 f"{n / (R_DELAY_MS / 1000):,.0f} requests/s"
                 + (" (informational: a load this machine can carry)" if rkey == "R-light" else ""), "",
                 f"| case | requests/s | of ideal | p50 ms | p99 ms | p99 - {R_DELAY_MS} ms | decisions in flight "
                 "(Little) | connections to Esper (max / median) | worker CPU µs / decision | workers' RSS MB (max) |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for k, label in (("R-B", "esper on, HTTP/1.1"), ("R-B2", "esper on, esper_http2 on"),
                         ("R-C", "auth_request"), ("R-P", "plain proxy_pass of the same call, answer relayed")):
            r = results[rkey][k]
            lat = r["latency_us"]
            rows.append(f"| {rkey}. {label} | {r['rps']:,.0f} | {r['of_ideal']:.2f} | {lat['50'] / 1000:.2f} | "
                        f"{lat['99'] / 1000:.2f} | {r['added_p99_us'] / 1000:.2f} | {r['in_flight']:,.0f} | "
                        f"{r['esper_connections_max']} / {r['esper_connections_median']:.0f} | "
                        f"{r['cpu_us_per_decision']:.1f} | {r['rss_kb_max'] / 1024:.1f} |")
    if "R-far" in results:
        rf = results["R-far"]
        rows += ["", f"R at a distance: Esper over TLS behind a relay of {' and '.join(map(str, R_RTTS_MS))} ms RTT "
                 f"(half each way; a new connection is relayed onwards one RTT after its connect), a server "
                 f"allowing {R_STREAMS} streams per HTTP/2 connection (nginx as TLS terminator, h2 and "
                 f"http/1.1 by ALPN, in front of the mock, which answers at once), {R_CONNECTIONS:,} clients "
                 f"(h2load -t2, HTTP/1.1, {R_FAR_WARM_UP_S} s of warm-up on the same connections before each run), "
                 f"{R_WORKERS} workers; Esper's latency is the RTT; P is nginx's own proxy_pass "
                 f"of the same call (HTTP/1.1, upstream keepalive 1024, proxy_ssl_session_reuse on)", "",
                 "| case | requests/s | p50 ms | p99 ms | added p99 ms (p99 - RTT) | requests in flight (Little) "
                 "| calls in flight (the module's decision time) "
                 "| connections to Esper (max / median) | per worker and sample: <= ceil(its calls in flight / "
                 f"{R_STREAMS}) + 1 | failed | worker CPU µs / decision | terminator CPU µs / call | relay CPU (cores) |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for k, r in rf.items():
            lat = r["latency_us"]
            wst = r["connections_worst"]
            target = "" if r["mode"] in ("off", "P") or not wst else \
                f"{'within' if r['connections_within_target'] else 'OVER'} (closest: {wst['connections']} " \
                f"for {wst['calls_in_flight']} calls, target {wst['target']})"
            rows.append(f"| {k} | {r['rps']:,.0f} | {lat['50'] / 1000:.2f} | {lat['99'] / 1000:.2f} | "
                        f"{r['added_p99_us'] / 1000:.2f} | {r['in_flight']:,.0f} | "
                        f"{'' if r['mode'] == 'P' else format(r['decisions_in_flight'], ',.0f')} | "
                        f"{r['esper_connections_max']} / {r['esper_connections_median']:.0f} | {target} | "
                        f"{r['errors']} | {r['cpu_us_per_decision']:.1f} | {r['terminator_cpu_us_per_call']:.1f} | "
                        f"{r['relay_cpu_share']:.2f} |")
    if "flood" in results:
        g = results["flood"]
        rows += ["",
                 f"G. flood: one blocked entity, {FLOOD_CONNECTIONS} connections at full speed, beside an ordinary "
                 f"allowed client ({ORDINARY_CONNECTIONS} connections, another User-Agent, same location)",
                 "",
                 "| case | flood requests/s | Esper calls/s (all) | flooding entity's calls/s | its calls in all "
                 "| flood blocked | blocked from the zone | ordinary requests/s | ordinary p99 ms |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key, label in (("without_zone", "G. flood without zone"), ("with_zone", "G. flood with zone")):
            r = g[key]
            rows.append(f"| {label} | {r['flood_rps']:,.0f} | {r['esper_calls_per_s']:,.0f} | "
                        f"{r['flood_calls_per_s']:,.1f} | {r['flood_calls']:,.0f} | "
                        f"{r['flood_blocked_share'] * 100:.2f} % | {r['enforced']:,.0f} | "
                        f"{r['ordinary_rps']:,.0f} | {r['ordinary_p99_us'] / 1000:.2f} |")
    lines = rows + [
        "",
        f"mock Esper alone: {results['mock_rps']:,.0f} requests/s (not the bottleneck)",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    for name, value, ok in results["targets"]:
        lines.append(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
    for label, key in (("esper_http2 on", "memory"), ("HTTP/1.1", "memory_http1")):
        if key not in results:
            continue
        mm = results[key]
        lines += ["", f"memory ({label}): worker RSS {mm['rss_kb_at_100k']} kB after 100k decisions, "
                  f"{mm['rss_kb_at_1m']} kB after 1M; 5,000 pending decisions: "
                  f"{mm['cold']['kb_per_pending']:.1f} kB each in the first round, "
                  f"{mm['steady']['kb_per_pending']:.1f} kB in the second"]
    return "\n".join(lines)


def ratio_target(cases, name, num, den, minimum):
    if num in cases and den in cases:
        r = cases[num]["rps"] / cases[den]["rps"]
        return [(name, f"{r:.2f} ({cases[num]['rps']:,.0f} vs {cases[den]['rps']:,.0f} requests/s)", r >= minimum)]
    return []


def p99_target(cases, name, a, b):
    if a in cases and b in cases:
        pa, pb = cases[a]["latency_us"]["99"], cases[b]["latency_us"]["99"]
        return [(name, f"{pa / 1000:.2f} ms vs {pb / 1000:.2f} ms", pa <= pb)]
    return []


def targets_of(res):
    cases = res["cases"]
    t = []
    t += ratio_target(cases, "B/C throughput >= 1.5", "B", "C", 1.5)
    t += p99_target(cases, "B p99 <= C p99", "B", "C")
    t += ratio_target(cases, "B/P throughput >= 1.0 (plain HTTP)", "B", "P", 1.0)
    t += ratio_target(cases, "B-TLS/P-TLS throughput >= 1.0", "B-TLS", "P-TLS", 1.0)
    t += ratio_target(cases, "B-TLS/C-TLS throughput >= 3", "B-TLS", "C-TLS", 3.0)
    t += p99_target(cases, "B-TLS p99 <= C-TLS p99", "B-TLS", "C-TLS")
    if "D" in res:
        d = res["D"]
        t += [("D: esper off p99 < 5 ms beside slow decisions", f"{cases['D']['latency_us']['99'] / 1000:.2f} ms",
               cases["D"]["latency_us"]["99"] < 5000),
              ("D: esper off keeps >= 0.9 of its throughput",
               f"{d['throughput_ratio']:.2f} ({d['beside']['rps']:,.0f} vs {d['alone']['rps']:,.0f} requests/s alone)",
               d["throughput_ratio"] >= 0.9)]
    if "E" in res:
        e = res["E"]
        lost = e["errors"]["timeout"] + e["errors"]["read"] + e["errors"]["connect"]
        t += [("E: p99 <= 120 ms", f"{e['latency_us']['99'] / 1000:.1f} ms", e["latency_us"]["99"] <= 120_000),
              ("E: nothing later than 150 ms", f"max {e['max_us'] / 1000:.1f} ms", e["max_us"] <= 150_000),
              ("E: failure action (block) on every response, none lost",
               f"{e['errors']['status']} of {e['requests']} answered 403; {lost} lost",
               e["errors"]["status"] == e["requests"] and lost == 0)]
    t += ratio_target(cases, "B with esper_http2 on: B/C throughput >= 1.5", "B2", "C", 1.5)
    if "memory" in res:
        mem = res["memory"]
        t += [("F: RSS growth 100k -> 1M < 8 MB (esper_http2 on)",
               f"{(mem['growth_kb_100k_to_1m'] or 0) / 1024:.1f} MB",
               mem["growth_kb_100k_to_1m"] is not None and mem["growth_kb_100k_to_1m"] < 8 * 1024),
              ("F: 5,000 pending all answered (esper_http2 on), both rounds",
               f"{mem['cold']['answered']} and {mem['steady']['answered']} answered "
               f"({mem['cold']['held_at_mock']} and {mem['steady']['held_at_mock']} held at once)",
               all(r["answered"] == r["pending"] == r["held_at_mock"] for r in (mem["cold"], mem["steady"]))),
              ("F: < 16 KB of worker memory per pending decision (esper_http2 on, second round)",
               f"{mem['steady']['kb_per_pending']:.1f} kB (first round {mem['cold']['kb_per_pending']:.1f} kB)",
               mem["steady"]["kb_per_pending"] < 16)]
    if "flood" in res:
        gz, gn = res["flood"]["with_zone"], res["flood"]["without_zone"]
        t += [(f"G: with the zone, the flooding entity costs at most one call per connection "
               f"(<= {FLOOD_CONNECTIONS + 1} calls in all, every run)",
               f"{gz['flood_calls_max']:.0f} calls ({gz['flood_calls_per_s']:,.1f}/s over the flood; "
               f"without the zone {gn['flood_calls_per_s']:,.0f}/s)",
               gz["flood_calls_max"] <= FLOOD_CONNECTIONS + 1),
              ("G: with the zone, >= 99.9 % of the flood blocked (every run)",
               f"{gz['flood_blocked_share_min'] * 100:.3f} % ({gz['enforced']:,.0f} from the zone, median)",
               gz["flood_blocked_share_min"] >= 0.999)]
        if "B" in cases:
            b = cases["B"]
            t.append(("G: ordinary client's p99 beside the flood with the zone <= 1.5 x B's p99",
                      f"{gz['ordinary_p99_us'] / 1000:.2f} ms vs {b['latency_us']['99'] / 1000:.2f} ms "
                      f"({gz['ordinary_p99_us'] / b['latency_us']['99']:.2f} x; without the zone "
                      f"{gn['ordinary_p99_us'] / 1000:.2f} ms)",
                      gz["ordinary_p99_us"] <= 1.5 * b["latency_us"]["99"]))
    t += ratio_target(cases, "G: zone lookup on the allow path keeps >= 0.95 of B's throughput", "G-lookup", "B", 0.95)
    if "R" in res:
        rc, rp = res["R"]["R-C"], res["R"]["R-P"]
        for k, label in (("R-B", "HTTP/1.1"), ("R-B2", "esper_http2 on")):
            r = res["R"][k]
            t.append((f"R ({label}): p99 - {R_DELAY_MS} ms <= 5 ms", f"{r['added_p99_us'] / 1000:.2f} ms "
                      f"(auth_request: {rc['added_p99_us'] / 1000:.2f} ms; "
                      f"proxy_pass: {rp['added_p99_us'] / 1000:.2f} ms)",
                      r["added_p99_us"] <= 5000))
            t.append((f"R ({label}): throughput >= 0.9 of {R_CONNECTIONS:,} clients / {R_DELAY_MS} ms",
                      f"{r['of_ideal']:.2f} ({r['rps']:,.0f} of {r['ideal_rps']:,.0f} requests/s; "
                      f"auth_request {rc['of_ideal']:.2f}, proxy_pass {rp['of_ideal']:.2f})",
                      r["of_ideal"] >= 0.9))
        r1, r2 = res["R"]["R-B"], res["R"]["R-B2"]
        t.append(("R (HTTP/1.1): connections to Esper <= decisions in flight (at most one per client)",
                  f"max {r1['esper_connections_max']} connections, {r1['in_flight']:,.0f} in flight "
                  f"(Little's law), {R_CONNECTIONS:,} clients",
                  r1["esper_connections_max"] <= R_CONNECTIONS))
        t.append((f"R (esper_http2 on): one connection to Esper per worker (<= {R_WORKERS})",
                  f"max {r2['esper_connections_max']}", r2["esper_connections_max"] <= R_WORKERS))
    if "R-far" in res:
        rf = res["R-far"]
        for rtt in R_RTTS_MS:
            p, h1 = rf[far_case(rtt, "P")], rf[far_case(rtt, "off")]
            for mode in ("auto", "on"):
                t += ratio_target(rf, f"R{rtt} (esper_http2 {mode}): HTTP/2 throughput >= 0.9 of HTTP/1.1's",
                                  far_case(rtt, mode), far_case(rtt, "off"), 0.9)
            for mode in ("auto", "on", "off"):
                r = rf[far_case(rtt, mode)]
                t.append((f"R{rtt} (esper_http2 {mode}): added p99 (p99 - {rtt} ms) <= 1.5 x proxy_pass's",
                          f"{r['added_p99_us'] / 1000:.2f} ms vs {p['added_p99_us'] / 1000:.2f} ms "
                          f"({r['added_p99_us'] / max(p['added_p99_us'], 1):.2f} x)",
                          r["added_p99_us"] <= 1.5 * p["added_p99_us"]))
            for mode in ("auto", "on"):
                r = rf[far_case(rtt, mode)]
                w = r["connections_worst"] or {}
                t.append((f"R{rtt} (esper_http2 {mode}): each worker's connections to Esper within ceil(its calls "
                          f"in flight / {R_STREAMS}) + 1 (the most in the last {SURPLUS_IDLE_S} s), every sample",
                          f"{r['connections_samples_over']} of {r['connections_samples']} worker samples over; "
                          f"closest: {w.get('connections')} connections for {w.get('calls_in_flight')} calls "
                          f"(target {w.get('target')}); max {r['esper_connections_max']} in all for at most "
                          f"{r['pending_max']:,.0f} calls in flight",
                          r["connections_within_target"]))
            t.append((f"R{rtt} (esper_http2 off): connections to Esper <= clients",
                      f"max {h1['esper_connections_max']}, {h1['decisions_in_flight']:,.0f} calls in flight",
                      h1["esper_connections_max"] <= R_CONNECTIONS))
            t.append((f"R{rtt}: no failed decisions",
                      ", ".join(f"{m} {rf[far_case(rtt, m)]['errors']}" for m in R_FAR_MODES),
                      all(rf[far_case(rtt, m)]["errors"] == 0 for m in R_FAR_MODES)))
    return t


PHASES = INTERLEAVED + ["D", "E", "F", "G", "R", "R-far", "reload"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3, help="runs of the interleaved cases, D, G and R (medians reported)")
    ap.add_argument("--seconds", type=int, default=5, help="length of one run")
    ap.add_argument("--only", help="comma-separated cases or phases to run, of " + ",".join(PHASES) +
                    " (results.* are then not written)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else set(PHASES)
    unknown = only - set(PHASES)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; known: {','.join(PHASES)}")
    if "G" in only:
        only.add("B")  # G's ordinary client is compared with B
    if "R" in only:
        only.add("R-far")  # R at a distance is part of R

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # 5,000 sockets (F), 1,000 clients (R)

    started = time.time()
    os.makedirs(TMP, exist_ok=True)
    mock_port = free_port()
    mock = subprocess.Popen([os.path.join(ROOT, "target/release/esper-mock"), "--listen",
                             f"127.0.0.1:{mock_port}", "--no-record", "--api-key", "bench-key"],
                            stdout=subprocess.PIPE, text=True)
    mock.stdout.readline()
    nginx = terminator = None
    try:
        mock_alone = wrk(f"http://127.0.0.1:{mock_port}/api/v1/runtime/mitigation", 50, args.seconds, PAYLOAD)
        tls_dir = os.path.join(TMP, "tls")
        shutil.rmtree(tls_dir, ignore_errors=True)
        make_certificates(tls_dir)
        terminator = Nginx(TERMINATOR_CONF, tls_dir, mock=mock_port)
        handshakes = Handshakes(terminator)
        nginx = Nginx(NGINX_CONF, TMP, module=module_path(), mock=mock_port, tls=terminator.port,
                      tls_dir=tls_dir, proxy_call=PROXY_CALL.format(payload=PAYLOAD),
                      proxy_tls=PROXY_TLS.format(tls_dir=tls_dir))
        urls = {k: f"http://127.0.0.1:{nginx.port}/{PATHS[k]}/index.html" for k in INTERLEAVED if k in only}
        for k, url in urls.items():
            w = wrk(url, 50, 1)  # warm up connections and pools
            if w["errors"]["status"] or not w["requests"]:
                sys.exit(f"case {k} does not answer 200: {w}")
        runs = {k: [] for k in urls}
        for i in range(args.runs):
            for k in urls:
                runs[k].append(measured(nginx, urls[k], 50, args.seconds,
                                        handshakes=handshakes if k in TLS_CASES else None))
                print(f"run {i + 1}/{args.runs} {k}: {runs[k][-1]['rps']:,.0f} requests/s", file=sys.stderr)
        cases = {k: median_of(v) for k, v in runs.items()}
        results = {"cases": cases, "raw": {"runs": runs}}

        if "D" in only:
            d = isolation(nginx, args.seconds, args.runs)
            cases["D"] = d["beside"]
            results["D"] = d
            results["raw"]["D"] = d
        if "E" in only:
            e = measured(nginx, f"http://127.0.0.1:{nginx.port}/e/index.html?mock_hang=1", 200, args.seconds)
            cases["E"] = median_of([e])
            results["E"] = e
            results["raw"]["E"] = e
        if "F" in only:
            results["memory"] = memory(nginx, mock_port, 120, "h2", "hold-h2")
            results["memory_http1"] = memory(nginx, mock_port, 120, "b", "hold")
        if "G" in only:
            flood_runs = {"without_zone": [], "with_zone": []}
            for i in range(args.runs):
                for key, location in (("without_zone", "flood"), ("with_zone", "flood-zone")):
                    flood_runs[key].append(flood(nginx, mock_port, args.seconds, location, i))
                    r = flood_runs[key][-1]
                    print(f"run {i + 1}/{args.runs} G {key}: flood {r['flood_rps']:,.0f} requests/s, "
                          f"{r['flood_calls']:.0f} calls for it, ordinary p99 {r['ordinary_p99_us'] / 1000:.2f} ms",
                          file=sys.stderr)
            results["flood"] = {k: median_flood(v) for k, v in flood_runs.items()}
            results["raw"]["G"] = flood_runs
        if "R" in only:
            results["R"], results["raw"]["R"] = production(args.seconds, args.runs)
            # the same at a load this 2-core machine can carry (informational)
            results["R-light"], results["raw"]["R-light"] = production(args.seconds, 1, R_LIGHT_CONNECTIONS)
        if "R-far" in only:
            results["R-far"], results["raw"]["R-far"] = far(args.seconds, args.runs)
        if "reload" in only:  # last: the module's nginx has new workers afterwards
            results["reload"] = reload_cost(nginx, handshakes, f"http://127.0.0.1:{nginx.port}/b-tls/index.html")
            print(f"reload: {results['reload']['handshakes_per_reload']:.0f} handshakes, p99 after "
                  f"{[round(p / 1000, 1) for p in results['reload']['p99_after_us']]} ms", file=sys.stderr)

        results = {
            "machine": {"cpus": os.cpu_count(), "runs": args.runs, "seconds": args.seconds,
                        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "total_s": round(time.time() - started)},
            "mock_rps": mock_alone["rps"],
            **results,
        }
        ratios = {}
        for num, den in (("B", "A"), ("B", "C"), ("B", "P"), ("B2", "P"), ("B-TLS", "P-TLS"), ("B-TLS", "C-TLS"),
                         ("G-lookup", "B")):
            if num in cases and den in cases:
                ratios[f"{num}/{den}"] = cases[num]["rps"] / cases[den]["rps"]
        for num, den in (("B", "C"), ("B", "P"), ("B-TLS", "P-TLS"), ("B-TLS", "C-TLS")):
            if num in cases and den in cases:
                ratios[f"{num}/{den} cpu"] = cases[num]["cpu_s_per_1k"] / cases[den]["cpu_s_per_1k"]
        results["ratios"] = ratios
        results["targets"] = targets_of(results)
        text = table(results)
        ratio_text = "ratios: " + ", ".join(
            f"{k} {'CPU per request' if k.endswith(' cpu') else 'throughput'} {v:.2f}".replace(" cpu ", " ")
            for k, v in ratios.items())
        print(text + "\n\n" + ratio_text + f"\n\ntotal time {results['machine']['total_s']} s")
        if args.only:
            return 0 if all(ok for _, _, ok in results["targets"]) else 1
        png = chart(results, os.path.join(BENCH, "latency.png"))
        with open(os.path.join(BENCH, "results.md"), "w") as f:
            f.write(f"# Benchmark results\n\n{results['machine']['when']}, {os.cpu_count()} cores, "
                    f"medians of {args.runs} runs of {args.seconds} s for the interleaved cases "
                    f"({', '.join(INTERLEAVED)}), D, G and R; `make bench` took "
                    f"{results['machine']['total_s']} s.\n\n{text}\n\n{ratio_text}\n")
            if png:
                f.write("\n![latency by percentile](latency.png)\n")
        with open(os.path.join(BENCH, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        return 0 if all(ok for _, _, ok in results["targets"]) else 1
    finally:
        for n in (nginx, terminator):
            if n:
                n.stop()
        mock.terminate()
        mock.wait()


if __name__ == "__main__":
    sys.exit(main())
