#!/usr/bin/env python3
"""End-to-end load comparison on loopback, side by side in one run.

Starts a fast origin (`tollgate demo-origin --fixed`), Tollgate with the
full default chain (limits set high so nothing is refused), Tollgate with
an empty chain, and nginx configured as the closest equivalent (keep-alive
upstream, limit_req at a high rate, add_header security headers, a
map-based API-key check). Drives each with wrk for the same duration at 1
and at 64 connections, and prints requests/s, p50 and p99 for each target,
also as ratios to the direct origin measured in the same run, and the
empty chain forwarding to a 3-endpoint round-robin upstream as a ratio to
the single-origin empty chain. Then the
same gateways over HTTP/2 (h2load, h2c), and Tollgate's empty chain and
nginx over TLS (HTTP/1.1 keep-alive, one certificate made with openssl
for both). Writes
benches/results/load.json and benches/results/load.svg.

Usage: python3 benches/load.py            (DURATION=10 for longer runs)

Traffic goes only to 127.0.0.1; every run is bounded by DURATION seconds.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "tollgate"
OUT = ROOT / "benches" / "results"
DURATION = int(os.environ.get("DURATION", "5"))
CONNECTIONS = [1, 64]
API_KEY = "bench-key"


def ensure_tools():
    missing = [p for p, exe in (("nginx", "nginx"), ("wrk", "wrk"), ("nghttp2-client", "h2load"))
               if shutil.which(exe) is None and not Path("/usr/sbin/" + exe).exists()]
    if missing:
        print(f"installing {' '.join(missing)} from Debian's packages", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    subprocess.run(["cargo", "build", "--release", "-p", "tollgate"], cwd=ROOT, check=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def tollgate_config(port, origin_port, full, tls=None, upstream_ports=None):
    """`tls`: (port, cert, key) for an extra TLS listener, or None.
    `upstream_ports`: forward to a round-robin upstream over these origin
    ports instead of to the single origin."""
    key_hash = hashlib.sha256(API_KEY.encode()).hexdigest()
    chain = '"headers", "url-guard", "auth", "rate-limit"' if full else ""
    tls_table = "" if tls is None else f"""
[server.tls]
listen = ["127.0.0.1:{tls[0]}"]
cert = "{tls[1]}"
key = "{tls[2]}"
"""
    if upstream_ports:
        endpoints = ", ".join(f'"http://127.0.0.1:{p}"' for p in upstream_ports)
        upstream_table = f"[upstreams.three]\nendpoints = [{endpoints}]\n"
        target = 'upstream = "three"'
    else:
        upstream_table = ""
        target = f'origin = "http://127.0.0.1:{origin_port}"'
    return f"""
[server]
listen = ["127.0.0.1:{port}"]
{tls_table}[limits]
max_instances = 256
[components.headers]
source = "builtin:headers"
[components.url-guard]
source = "builtin:url-guard"
variables = {{ query_params = "url" }}
[components.auth]
source = "builtin:auth"
key_value_stores = ["default"]
variables = {{ api_keys = "bench:{key_hash}" }}
[components.rate-limit]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "per-ip ip 100000000/1s; per-user identity 100000000/1s" }}
{upstream_table}[[route]]
{target}
middleware = [{chain}]
"""


def nginx_config(port, origin_port, tmp, tls):
    """`tls`: (port, cert, key) for a second, TLS server with the same
    location, in the same process."""
    location = f"""
        location / {{
            if ($api_ok = 0) {{ return 401; }}
            limit_req zone=perip burst=100000 nodelay;
            add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;
            add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;
            add_header X-Frame-Options DENY always;
            add_header X-Content-Type-Options nosniff always;
            add_header Referrer-Policy no-referrer always;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_pass http://origin;
        }}"""
    return f"""
daemon off;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    limit_req_zone $binary_remote_addr zone=perip:10m rate=100000000r/s;
    map $http_x_api_key $api_ok {{ default 0; "{API_KEY}" 1; }}
    server {{
        listen 127.0.0.1:{port};{location}
    }}
    server {{
        listen 127.0.0.1:{tls[0]} ssl;
        ssl_certificate {tls[1]};
        ssl_certificate_key {tls[2]};
        ssl_protocols TLSv1.2 TLSv1.3;{location}
    }}
}}
"""


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": rps, "p50_us": pct(50), "p99_us": pct(99), "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def drive(port, conns, scheme="http"):
    threads = 1 if conns == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{DURATION}s", "--latency",
           "-H", f"x-api-key: {API_KEY}", f"{scheme}://127.0.0.1:{port}/v1/items"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION + 30, check=True).stdout
    return parse_wrk(out)


def drive_h2(port, conns):
    """HTTP/2 with prior knowledge (h2c), one stream at a time per
    connection, as wrk drives HTTP/1.1; None without h2load."""
    if shutil.which("h2load") is None:
        return None
    threads = 1 if conns == 1 else 2
    cmd = ["h2load", "-t", str(threads), "-c", str(conns), "-m", "1", "-D", str(DURATION),
           "-H", f"x-api-key: {API_KEY}", f"http://127.0.0.1:{port}/v1/items"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION + 30, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    ok = int(re.search(r"requests: .* (\d+) succeeded", out).group(1))
    failed = re.search(r"(\d+) failed", out)
    return {"rps": rps, "succeeded": ok, "failed": int(failed.group(1)) if failed else 0}


def svg_chart(rows):
    width, bar_h, gap, left = 720, 22, 8, 230
    peak = max(r["rps"] for r in rows) or 1
    height = 40 + len(rows) * (bar_h + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<text x="10" y="20" font-size="14">Requests per second (wrk, {DURATION}s, loopback)</text>']
    for i, r in enumerate(rows):
        y = 34 + i * (bar_h + gap)
        w = (width - left - 90) * r["rps"] / peak
        parts.append(f'<text x="10" y="{y + 15}">{r["target"]} @ {r["connections"]}c</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#4a7ab5"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}">{r["rps"]:,.0f}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main():
    ensure_tools()
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-load-"))
    procs = []
    try:
        origin_port = free_port()
        procs.append(subprocess.Popen([str(BIN), "demo-origin", "--fixed", "--listen", f"127.0.0.1:{origin_port}"],
                                      stderr=subprocess.DEVNULL))
        targets = {"origin": origin_port}
        # One certificate for both TLS servers (P-256, as is common).
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        tls_targets = {}
        for name, full in (("tollgate-full", True), ("tollgate-empty", False)):
            port = free_port()
            cfg = tmp / f"{name}.toml"
            tls = None
            if not full:
                tls = (free_port(), cert, key)
                tls_targets["tollgate-empty-tls"] = tls[0]
            cfg.write_text(tollgate_config(port, origin_port, full, tls))
            procs.append(subprocess.Popen([str(BIN), "serve", "--config", str(cfg)], stderr=subprocess.DEVNULL,
                                          env=dict(os.environ, RUST_LOG="warn")))
            targets[name] = port
        # The empty chain again, forwarding to a round-robin upstream of
        # three origins (the first one and two more like it).
        upstream_ports = [origin_port]
        for _ in range(2):
            upstream_ports.append(free_port())
            procs.append(subprocess.Popen([str(BIN), "demo-origin", "--fixed", "--listen",
                                           f"127.0.0.1:{upstream_ports[-1]}"], stderr=subprocess.DEVNULL))
        port = free_port()
        cfg = tmp / "tollgate-upstream3.toml"
        cfg.write_text(tollgate_config(port, origin_port, False, upstream_ports=upstream_ports))
        procs.append(subprocess.Popen([str(BIN), "serve", "--config", str(cfg)], stderr=subprocess.DEVNULL,
                                      env=dict(os.environ, RUST_LOG="warn")))
        targets["tollgate-upstream3"] = port
        # The same four gates as a Spin app: `tollgate up -f spin.toml`,
        # with limits high enough that nothing is refused.
        port = free_port()
        key_hash = hashlib.sha256(API_KEY.encode()).hexdigest()
        procs.append(subprocess.Popen(
            [str(BIN), "up", "-f", str(ROOT / "spin.toml"), "--listen", f"127.0.0.1:{port}"],
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn",
                     SPIN_VARIABLE_ORIGIN_URL=f"http://127.0.0.1:{origin_port}",
                     SPIN_VARIABLE_API_KEYS=f"bench:{key_hash}",
                     SPIN_VARIABLE_RATE_POLICIES="per-ip ip 100000000/1s; per-user identity 100000000/1s")))
        targets["tollgate-up"] = port
        port = free_port()
        tls = (free_port(), cert, key)
        tls_targets["nginx-tls"] = tls[0]
        (tmp / "nginx.conf").write_text(nginx_config(port, origin_port, tmp, tls))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(subprocess.Popen([nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")]))
        targets["nginx"] = port
        for p in [*targets.values(), *tls_targets.values()]:
            wait_port(p)

        rows = []
        for conns in CONNECTIONS:
            base = None
            for name, p in targets.items():
                drive(p, conns)  # warm-up pass, discarded (pools, instances)
                r = drive(p, conns)
                r.update(target=name, connections=conns)
                if name == "origin":
                    base = r
                r["rps_ratio"] = r["rps"] / base["rps"]
                r["p50_ratio"] = r["p50_us"] / base["p50_us"]
                r["p99_ratio"] = r["p99_us"] / base["p99_us"]
                r["added_p50_us"] = r["p50_us"] - base["p50_us"]
                rows.append(r)

        print(f"{'target':<16}{'conns':>6}{'req/s':>12}{'x origin':>10}{'p50 us':>10}{'x origin':>10}"
              f"{'p99 us':>10}{'x origin':>10}{'non-2xx':>9}")
        for r in rows:
            print(f"{r['target']:<16}{r['connections']:>6}{r['rps']:>12,.0f}{r['rps_ratio']:>10.2f}"
                  f"{r['p50_us']:>10.0f}{r['p50_ratio']:>10.2f}{r['p99_us']:>10.0f}{r['p99_ratio']:>10.2f}"
                  f"{r['non_2xx']:>9}")
        print()
        by = {(r["target"], r["connections"]): r for r in rows}
        for conns in CONNECTIONS:
            full, empty = by[("tollgate-full", conns)], by[("tollgate-empty", conns)]
            nginx, up = by[("nginx", conns)], by[("tollgate-up", conns)]
            print(f"c={conns}: full/empty {full['rps'] / empty['rps']:.2f}x req/s, "
                  f"full/nginx {full['rps'] / nginx['rps']:.2f}x, empty/nginx {empty['rps'] / nginx['rps']:.2f}x, "
                  f"up/full {up['rps'] / full['rps']:.2f}x, "
                  f"full p50 +{full['p50_us'] - empty['p50_us']:.0f} us over empty")
            three = by[("tollgate-upstream3", conns)]
            print(f"c={conns}: upstream3/empty {three['rps'] / empty['rps']:.2f}x req/s "
                  f"(3-endpoint round-robin upstream against the single origin), "
                  f"p50 {three['p50_us']:.0f} us against {empty['p50_us']:.0f} us")
        # HTTP/2 rows (h2load from Debian's nghttp2-client): the same
        # gateways over h2c, against their own HTTP/1.1 numbers above.
        h2_rows = []
        for conns in CONNECTIONS:
            for name in ("tollgate-empty", "tollgate-full"):
                drive_h2(targets[name], conns)  # warm-up, discarded
                r = drive_h2(targets[name], conns)
                if r is None:
                    print("h2load not found (apt-get install nghttp2-client): no HTTP/2 rows")
                    break
                r.update(target=name + "-h2", connections=conns,
                         rps_ratio_to_h1=r["rps"] / by[(name, conns)]["rps"])
                h2_rows.append(r)
        if h2_rows:
            print()
            print(f"{'target (h2c)':<20}{'conns':>6}{'req/s':>12}{'x h1':>8}{'failed':>8}")
            for r in h2_rows:
                print(f"{r['target']:<20}{r['connections']:>6}{r['rps']:>12,.0f}{r['rps_ratio_to_h1']:>8.2f}"
                      f"{r['failed']:>8}")
        # TLS rows: HTTP/1.1 keep-alive over TLS (wrk), Tollgate's empty
        # chain against nginx's TLS server, same certificate.
        tls_rows = []
        for conns in CONNECTIONS:
            for name, p in tls_targets.items():
                drive(p, conns, "https")  # warm-up, discarded
                r = drive(p, conns, "https")
                r.update(target=name, connections=conns)
                tls_rows.append(r)
        tls_by = {(r["target"], r["connections"]): r for r in tls_rows}
        print()
        print(f"{'target (TLS)':<20}{'conns':>6}{'req/s':>12}{'p50 us':>10}{'p99 us':>10}{'non-2xx':>9}")
        for r in tls_rows:
            print(f"{r['target']:<20}{r['connections']:>6}{r['rps']:>12,.0f}{r['p50_us']:>10.0f}"
                  f"{r['p99_us']:>10.0f}{r['non_2xx']:>9}")
        for conns in CONNECTIONS:
            t, n = tls_by[("tollgate-empty-tls", conns)], tls_by[("nginx-tls", conns)]
            print(f"c={conns}: empty-tls/nginx-tls {t['rps'] / n['rps']:.2f}x req/s, "
                  f"empty-tls/empty {t['rps'] / by[('tollgate-empty', conns)]['rps']:.2f}x")
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "load.json").write_text(json.dumps({"duration_s": DURATION, "rows": rows, "h2_rows": h2_rows,
                                                   "tls_rows": tls_rows}, indent=2) + "\n")
        (OUT / "load.svg").write_text(svg_chart(rows) + "\n")
        print(f"wrote {OUT / 'load.json'} and {OUT / 'load.svg'}")
        bad = ([r for r in rows + tls_rows if r["non_2xx"]]
               + [r for r in h2_rows if r["failed"]])
        if bad:
            raise SystemExit(f"some targets answered non-2xx: {[(r['target'], r.get('non_2xx', r.get('failed'))) for r in bad]}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
