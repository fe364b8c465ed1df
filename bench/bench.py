#!/usr/bin/env python3
"""`make bench`: the decision path side by side with nginx's own auth_request.

One nginx binary (the vendored one, built with auth_request), one worker, one
mock Esper (compiled, --no-record), one load generator (wrk), loopback only.
Every case runs in this one invocation; A, B, C and G's allow-path lookup run
several times, interleaved, and the medians are reported. Writes bench/results.md,
bench/results.json and bench/latency.png.
"""

import argparse
import json
import os
import re
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
    esper_enforcement_zone zone=bench_zone:10m ttl=5m;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        root {tmp}/html;
        location /a/ {{ alias {tmp}/html/; }}
        location /b/ {{ esper on; alias {tmp}/html/; }}
        location /h2/ {{ esper on; esper_http2 on; alias {tmp}/html/; }}
        location /hold/ {{ esper on; esper_timeout 30s; esper_max_pending 8192; alias {tmp}/html/; }}
        location /hold-h2/ {{ esper on; esper_timeout 30s; esper_max_pending 8192; esper_http2 on; alias {tmp}/html/; }}
        location /c/ {{ auth_request /auth; alias {tmp}/html/; }}
        location /bz/ {{ esper on; esper_enforcement bench_zone; alias {tmp}/html/; }}
        location /flood/ {{ esper on; alias {tmp}/html/; }}
        location /flood-zone/ {{ esper on; esper_enforcement bench_zone; alias {tmp}/html/; }}
        location = /esper-metrics {{ esper_metrics; }}
        location = /auth {{
            internal;
            proxy_pass http://esper/api/v1/runtime/mitigation;
            proxy_method POST;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Content-Type application/json;
            proxy_set_header x-esper-api-key bench-key;
            proxy_pass_request_body off;
            proxy_set_body '{payload}';
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Nginx:
    def __init__(self, mock_port):
        self.binary = open(os.path.join(ROOT, "target/release/nginx-build-dir")).read().strip() + "/nginx"
        self.port = free_port()
        os.makedirs(os.path.join(TMP, "html"), exist_ok=True)
        with open(os.path.join(TMP, "html/index.html"), "w") as f:
            f.write("ok\n")
        conf = NGINX_CONF.format(
            module=os.path.join(ROOT, "target/release/libngx_http_esper_module.so"),
            tmp=TMP, mock=mock_port, port=self.port, payload=PAYLOAD)
        self.conf = os.path.join(TMP, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        run([self.binary, "-p", TMP + "/", "-c", self.conf])
        wait_port(self.port)
        master = int(open(os.path.join(TMP, "nginx.pid")).read())
        deadline = time.time() + 5
        while time.time() < deadline:
            children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
            if children:
                self.worker = int(children[0])
                break
            time.sleep(0.05)
        self.master = master

    def cpu_seconds(self):
        """User and system time of the worker process, all its threads."""
        fields = open(f"/proc/{self.worker}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_kb(self):
        for line in open(f"/proc/{self.worker}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        os.kill(self.master, signal.SIGQUIT)
        deadline = time.time() + 10
        while time.time() < deadline and os.path.exists(f"/proc/{self.master}"):
            time.sleep(0.05)


def wait_port(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def wrk(url, connections, seconds, body=None, user_agent=None):
    env = dict(os.environ)
    if body:
        env["WRK_BODY"] = body
    headers = ["-H", f"User-Agent: {user_agent}"] if user_agent else []
    out = run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
               *headers, "-s", REPORT_LUA, url], env=env).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    result = json.loads(line[5:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measured(nginx, url, connections, seconds, user_agent=None):
    """A wrk run with the worker's CPU time and RSS."""
    cpu = nginx.cpu_seconds()
    r = wrk(url, connections, seconds, user_agent=user_agent)
    r["cpu_s_per_1k"] = (nginx.cpu_seconds() - cpu) / r["requests"] * 1000 if r["requests"] else None
    r["rss_kb"] = nginx.rss_kb()
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


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no chart (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("A", "A. esper off (baseline)"), ("B", "B. esper on"), ("C", "C. auth_request")):
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


def table(results):
    c = results["cases"]
    rows = ["| case | requests/s | p50 ms | p99 ms | p99.9 ms | worker CPU s / 1k req | worker RSS MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    names = {"A": "A. baseline (esper off)", "B": "B. esper on, allow", "B2": "B. with esper_http2 on",
             "C": "C. auth_request",
             "D": "D. esper off beside 200 slow decisions", "E": "E. deadline, Esper never answers",
             "G-lookup": "G. allow-lookup: B with esper_enforcement (a zone miss per request)"}
    for key in ["A", "B", "B2", "C", "D", "E", "G-lookup"]:
        r = c[key]
        lat = r["latency_us"]
        rows.append(f"| {names[key]} | {r['rps']:,.0f} | {lat['50'] / 1000:.2f} | {lat['99'] / 1000:.2f} | "
                    f"{lat['99.9'] / 1000:.2f} | {r['cpu_s_per_1k']:.4f} | {r['rss_kb'] / 1024:.1f} |")
    t = results["targets"]
    m = results["memory"]
    m1 = results["memory_http1"]
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
    for name, value, ok in t:
        lines.append(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
    for label, mm in (("esper_http2 on", m), ("HTTP/1.1", m1)):
        lines += ["", f"memory ({label}): worker RSS {mm['rss_kb_at_100k']} kB after 100k decisions, "
                  f"{mm['rss_kb_at_1m']} kB after 1M; 5,000 pending decisions: "
                  f"{mm['cold']['kb_per_pending']:.1f} kB each in the first round, "
                  f"{mm['steady']['kb_per_pending']:.1f} kB in the second"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3, help="runs of A, B and C (medians reported)")
    ap.add_argument("--seconds", type=int, default=5, help="length of one run")
    args = ap.parse_args()

    os.makedirs(TMP, exist_ok=True)
    mock_port = free_port()
    mock = subprocess.Popen([os.path.join(ROOT, "target/release/esper-mock"), "--listen",
                             f"127.0.0.1:{mock_port}", "--no-record", "--api-key", "bench-key"],
                            stdout=subprocess.PIPE, text=True)
    mock.stdout.readline()
    nginx = None
    try:
        mock_alone = wrk(f"http://127.0.0.1:{mock_port}/api/v1/runtime/mitigation", 50, args.seconds, PAYLOAD)
        nginx = Nginx(mock_port)
        urls = {k: f"http://127.0.0.1:{nginx.port}/{k.lower()}/index.html" for k in "ABC"}
        urls["B2"] = f"http://127.0.0.1:{nginx.port}/h2/index.html"
        urls["G-lookup"] = f"http://127.0.0.1:{nginx.port}/bz/index.html"
        for url in urls.values():
            wrk(url, 50, 1)  # warm up connections and pools
        runs = {k: [] for k in urls}
        for i in range(args.runs):
            for k in urls:
                runs[k].append(measured(nginx, urls[k], 50, args.seconds))
                print(f"run {i + 1}/{args.runs} {k}: {runs[k][-1]['rps']:,.0f} requests/s", file=sys.stderr)
        cases = {k: median_of(v) for k, v in runs.items()}

        d = isolation(nginx, args.seconds, args.runs)
        cases["D"] = d["beside"]
        e = measured(nginx, f"http://127.0.0.1:{nginx.port}/e/index.html?mock_hang=1", 200, args.seconds)
        cases["E"] = median_of([e])
        mem = memory(nginx, mock_port, 120, "h2", "hold-h2")
        mem_http1 = memory(nginx, mock_port, 120, "b", "hold")

        flood_runs = {"without_zone": [], "with_zone": []}
        for i in range(args.runs):
            for key, location in (("without_zone", "flood"), ("with_zone", "flood-zone")):
                flood_runs[key].append(flood(nginx, mock_port, args.seconds, location, i))
                r = flood_runs[key][-1]
                print(f"run {i + 1}/{args.runs} G {key}: flood {r['flood_rps']:,.0f} requests/s, "
                      f"{r['flood_calls']:.0f} calls for it, ordinary p99 {r['ordinary_p99_us'] / 1000:.2f} ms",
                      file=sys.stderr)
        g = {k: median_flood(v) for k, v in flood_runs.items()}
        gz, gn, gl = g["with_zone"], g["without_zone"], cases["G-lookup"]

        b, c, a = cases["B"], cases["C"], cases["A"]
        targets = [
            ("B/C throughput >= 1.5", f"{b['rps'] / c['rps']:.2f}", b["rps"] / c["rps"] >= 1.5),
            ("B p99 <= C p99", f"{b['latency_us']['99'] / 1000:.2f} ms vs {c['latency_us']['99'] / 1000:.2f} ms",
             b["latency_us"]["99"] <= c["latency_us"]["99"]),
            ("D: esper off p99 < 5 ms beside slow decisions", f"{cases['D']['latency_us']['99'] / 1000:.2f} ms",
             cases["D"]["latency_us"]["99"] < 5000),
            ("D: esper off keeps >= 0.9 of its throughput",
             f"{d['throughput_ratio']:.2f} ({d['beside']['rps']:,.0f} vs {d['alone']['rps']:,.0f} requests/s alone)",
             d["throughput_ratio"] >= 0.9),
            ("E: p99 <= 120 ms", f"{e['latency_us']['99'] / 1000:.1f} ms", e["latency_us"]["99"] <= 120_000),
            ("E: nothing later than 150 ms", f"max {e['max_us'] / 1000:.1f} ms", e["max_us"] <= 150_000),
            ("E: failure action (block) on every response, none lost",
             f"{e['errors']['status']} of {e['requests']} answered 403; "
             f"{e['errors']['timeout'] + e['errors']['read'] + e['errors']['connect']} lost",
             e["errors"]["status"] == e["requests"] and e["errors"]["timeout"] + e["errors"]["read"] + e["errors"]["connect"] == 0),
            ("B with esper_http2 on: B/C throughput >= 1.5", f"{cases['B2']['rps'] / c['rps']:.2f}",
             cases["B2"]["rps"] / c["rps"] >= 1.5),
            ("F: RSS growth 100k -> 1M < 8 MB (esper_http2 on)",
             f"{(mem['growth_kb_100k_to_1m'] or 0) / 1024:.1f} MB",
             mem["growth_kb_100k_to_1m"] is not None and mem["growth_kb_100k_to_1m"] < 8 * 1024),
            ("F: 5,000 pending all answered (esper_http2 on), both rounds",
             f"{mem['cold']['answered']} and {mem['steady']['answered']} answered "
             f"({mem['cold']['held_at_mock']} and {mem['steady']['held_at_mock']} held at once)",
             all(r["answered"] == r["pending"] == r["held_at_mock"] for r in (mem["cold"], mem["steady"]))),
            ("F: < 16 KB of worker memory per pending decision (esper_http2 on, second round)",
             f"{mem['steady']['kb_per_pending']:.1f} kB (first round {mem['cold']['kb_per_pending']:.1f} kB)",
             mem["steady"]["kb_per_pending"] < 16),
            (f"G: with the zone, the flooding entity costs at most one call per connection "
             f"(<= {FLOOD_CONNECTIONS + 1} calls in all, every run)",
             f"{gz['flood_calls_max']:.0f} calls ({gz['flood_calls_per_s']:,.1f}/s over the flood; "
             f"without the zone {gn['flood_calls_per_s']:,.0f}/s)",
             gz["flood_calls_max"] <= FLOOD_CONNECTIONS + 1),
            ("G: with the zone, >= 99.9 % of the flood blocked (every run)",
             f"{gz['flood_blocked_share_min'] * 100:.3f} % ({gz['enforced']:,.0f} from the zone, median)",
             gz["flood_blocked_share_min"] >= 0.999),
            ("G: ordinary client's p99 beside the flood with the zone <= 1.5 x B's p99",
             f"{gz['ordinary_p99_us'] / 1000:.2f} ms vs {b['latency_us']['99'] / 1000:.2f} ms "
             f"({gz['ordinary_p99_us'] / b['latency_us']['99']:.2f} x; without the zone "
             f"{gn['ordinary_p99_us'] / 1000:.2f} ms)",
             gz["ordinary_p99_us"] <= 1.5 * b["latency_us"]["99"]),
            ("G: zone lookup on the allow path keeps >= 0.95 of B's throughput",
             f"{gl['rps'] / b['rps']:.2f} ({gl['rps']:,.0f} vs {b['rps']:,.0f} requests/s)",
             gl["rps"] / b["rps"] >= 0.95),
        ]
        results = {
            "machine": {"cpus": os.cpu_count(), "runs": args.runs, "seconds": args.seconds,
                        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "mock_rps": mock_alone["rps"],
            "ratios": {"B/A": b["rps"] / a["rps"], "B/C": b["rps"] / c["rps"],
                       "B/C cpu": b["cpu_s_per_1k"] / c["cpu_s_per_1k"],
                       "G-lookup/B": gl["rps"] / b["rps"]},
            "cases": cases, "raw": {"runs": runs, "D": d, "E": e, "G": flood_runs}, "memory": mem,
            "memory_http1": mem_http1, "flood": g,
            "targets": targets,
        }
        text = table(results)
        ratios = (f"ratios: B/A throughput {results['ratios']['B/A']:.2f}, "
                  f"B/C throughput {results['ratios']['B/C']:.2f}, "
                  f"B/C CPU per request {results['ratios']['B/C cpu']:.2f}")
        print(text + "\n\n" + ratios)
        png = chart(results, os.path.join(BENCH, "latency.png"))
        with open(os.path.join(BENCH, "results.md"), "w") as f:
            f.write(f"# Benchmark results\n\n{results['machine']['when']}, {os.cpu_count()} cores, "
                    f"medians of {args.runs} runs of {args.seconds} s for A, B, C, G.\n\n{text}\n\n{ratios}\n")
            if png:
                f.write("\n![latency by percentile](latency.png)\n")
        with open(os.path.join(BENCH, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        return 0 if all(ok for _, _, ok in targets) else 1
    finally:
        if nginx:
            nginx.stop()
        mock.terminate()
        mock.wait()


if __name__ == "__main__":
    sys.exit(main())
