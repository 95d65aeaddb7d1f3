#!/usr/bin/env python3
"""Usage: scripts/measure-overview.py BINARY [--customers N] [--events N] [--quota N]
                                          [--database-url URL]

Times the Overview's reads as a user sees them: the release binary runs as its own process
(`opsdeck serve`, shipped defaults plus one plan that every customer is on), this script is the
separate load process. It ingests N events spread over the last 30 days across the customers
(through POST /api/v1/events, 1,000 per request, as an app would), waits for the quota states
to settle, then requests each Overview read sequentially and prints p50 / p95 / p99 / max.

Reads go out at 8 a second, under the shipped per-key limit of 600 a minute, so no limit is
lifted. Needs only Python's standard library; listens on 127.0.0.1:$PORT (default 18097).
"""

import argparse
import http.client
import http.cookiejar
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

PORT = int(os.environ.get("PORT", "18097"))
BASE = f"http://127.0.0.1:{PORT}"
EMAIL, PASSWORD = "bench@example.com", "correct horse battery"
# Every customer is on one plan whose quota is set so that about half of them end up near or
# over it, as on a busy month-end: the at-risk list and the quota alerts then have work to do.
CONFIG = """
[usage]
default_plan = "growth"

[[plans]]
id = "growth"
name = "Growth"
price = "49.00"
currency = "usd"
api_calls = {quota}
provider_credits = 0
overage_per_1k_calls = "0.50"
hard_limit_percent = 120
"""


def key(binary, data_dir, extra, scope):
    out = subprocess.run(
        [binary, "key", "create", "--data-dir", data_dir, *extra, "--name", scope, "--scope", scope],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.strip().splitlines()[-1]


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def ingest(conn, ingest_key, customers, total):
    now = int(time.time() * 1000)
    month = 30 * 86_400_000
    rng = random.Random(7)
    sent, started = 0, time.monotonic()
    while sent < total:
        batch = []
        for i in range(min(1000, total - sent)):
            n = sent + i
            batch.append({
                "specversion": "1.0", "id": f"ev-{n}", "source": "bench",
                "type": "api.request", "subject": f"cus_{rng.randrange(customers):06d}",
                "time": iso(now - rng.randrange(month)),
                "data": {"endpoint": f"/api/{rng.choice(['auth', 'items', 'search'])}",
                         "method": "GET", "status": 500 if n % 50 == 0 else 200,
                         "duration_ms": rng.randrange(5, 400)},
            })
        body = json.dumps(batch)
        for _ in range(20):
            conn.request("POST", "/api/v1/events", body, {
                "Authorization": f"Bearer {ingest_key}", "Content-Type": "application/json"})
            res = conn.getresponse()
            res.read()
            if res.status != 429:
                break
            time.sleep(float(res.getheader("Retry-After", "1")))
        if res.status != 200:
            sys.exit(f"ingest answered {res.status}")
        sent += len(batch)
    return sent / (time.monotonic() - started)


def percentile(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))]


def timed(label, fetch, count):
    samples = []
    for _ in range(count):
        t0 = time.monotonic()
        status = fetch()
        samples.append((time.monotonic() - t0) * 1000)
        if status != 200:
            sys.exit(f"{label} answered {status}")
        time.sleep(max(0.0, 0.125 - samples[-1] / 1000))
    samples.sort()
    print(f"{label:<58} p50 {percentile(samples, 50):7.1f} ms  p95 {percentile(samples, 95):7.1f} ms"
          f"  p99 {percentile(samples, 99):7.1f} ms  max {samples[-1]:7.1f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--quota", type=int, help="the plan's monthly calls (default: the mean a "
                    "customer makes this month, so about half are near or over it)")
    ap.add_argument("--database-url")
    args = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="opsdeck-overview-")
    extra = ["--database-url", args.database_url] if args.database_url else []
    config = os.path.join(data_dir, "opsdeck.toml")
    with open(config, "w") as f:
        # Events fall evenly over the last 30 days; this month holds today's day-of-month of them.
        this_month = min(1.0, time.gmtime().tm_mday / 30)
        quota = args.quota or max(1, round(args.events / args.customers * this_month))
        f.write(CONFIG.format(quota=quota))
    extra += ["--config", config]
    env = dict(os.environ, OPSDECK_ADMIN_EMAIL=EMAIL, OPSDECK_ADMIN_PASSWORD=PASSWORD)
    server = subprocess.Popen(
        [args.binary, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{PORT}", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"{BASE}/readyz").status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        ingest_key = key(args.binary, data_dir, extra, "ingest")
        read_key = key(args.binary, data_dir, extra, "read")
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        rate = ingest(conn, ingest_key, args.customers, args.events)
        print(f"ingested {args.events:,} events for {args.customers:,} customers at {rate:,.0f} events/s")
        # Let the quota evaluator (every 10 s) and the alert engine see the last batches.
        time.sleep(25)

        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = browser.open(f"{BASE}/signin").read().decode()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"email": EMAIL, "password": PASSWORD, "csrf_token": csrf})
        browser.open(f"{BASE}/signin", form.encode()).read()

        def api(path):
            def fetch():
                conn.request("GET", path, headers={"Authorization": f"Bearer {read_key}"})
                res = conn.getresponse()
                res.read()
                return res.status
            return fetch

        def html(path):
            def fetch():
                with browser.open(f"{BASE}{path}") as res:
                    res.read()
                    return res.status
            return fetch

        today = time.strftime("%Y-%m-%d", time.gmtime())
        start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 14 * 86_400))
        n = args.requests
        timed("GET /api/v1/metrics/overview (30d)", api("/api/v1/metrics/overview"), n)
        timed("GET /api/v1/metrics/overview?from=…&to=… (14 days)",
              api(f"/api/v1/metrics/overview?from={start}&to={today}"), n)
        timed("GET /api/v1/alerts?state=open", api("/api/v1/alerts?state=open"), n)
        timed("GET / (Overview page: triage, at-risk, alerts, cards)", html("/"), n)
        timed("GET /?from=…&to=… (Overview page, custom range)", html(f"/?from={start}&to={today}"), n)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
