#!/usr/bin/env python3
"""Times `opsdeck demo` as a newcomer meets it: from exec to a year of history on the dashboard.

Usage: scripts/measure-demo.py target/release/opsdeck [--limit SECONDS]

Starts the binary as its own process (`demo --listen 127.0.0.1:0`, shipped defaults), signs in
with the login it prints, and once a second asks the Usage API (the same read the Usage page
makes, with the browser's session cookie) for the last 365 days by day. It prints, in seconds
from exec: the first events on the dashboard, the last 30 days with calls every day, the full
year complete (the calls before today at the count they end at), and the terminal's "history
loaded" line (usage events acknowledged and the Stripe sync done). Then it stops the demo with SIGTERM.
Standard library only.
"""

import argparse
import http.cookiejar
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

DAY_MS = 86_400_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--limit", type=float, default=180.0, help="give up after this many seconds")
    args = ap.parse_args()

    t0 = time.monotonic()
    proc = subprocess.Popen(
        [args.binary, "demo", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    seen = {}

    def read():
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip()))

    threading.Thread(target=read, daemon=True).start()

    def field(name):
        while time.monotonic() - t0 < args.limit:
            for _, l in list(lines):
                m = re.match(r"\s*" + name + r"\s+(\S+)", l)
                if m:
                    return m.group(1)
            time.sleep(0.05)
        sys.exit(f"the demo printed no '{name}' line")

    base, email, password = field("open"), field("sign in"), field("password")
    seen["server up"] = time.monotonic() - t0

    jar = http.cookiejar.CookieJar()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar), NoRedirect()
    )
    page = opener.open(base + "/signin").read().decode()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"email": email, "password": password, "csrf_token": csrf, "next": "/"}
    ).encode()
    try:
        opener.open(base + "/signin", form)
    except urllib.error.HTTPError as e:
        if e.code != 303:
            raise

    samples = []
    settle = 0
    now_ms = int(time.time() * 1000)
    today = now_ms // DAY_MS
    frm = time.strftime("%Y-%m-%d", time.gmtime((today - 364) * 86_400))
    url = f"{base}/api/v1/usage?from={frm}&interval=day"
    while time.monotonic() - t0 < args.limit:
        t = time.monotonic() - t0
        try:
            reply = json.load(opener.open(url))
        except Exception as e:  # the server is busy loading: note it and ask again
            print(f"{t:6.1f} s  usage read failed: {e}", file=sys.stderr)
            time.sleep(1)
            continue
        days = {p["bucket"] // DAY_MS for p in reply["series"] if p["calls"] > 0}
        calls = sum(p["calls"] for p in reply["series"])
        # Live traffic keeps adding to today: the history is what came before it.
        before_today = sum(p["calls"] for p in reply["series"] if p["bucket"] // DAY_MS < today)
        samples.append((t, before_today))
        if days and "first events shown" not in seen:
            seen["first events shown"] = t
        if all(d in days for d in range(today - 29, today + 1)) and "30 days shown" not in seen:
            seen["30 days shown"] = t
        oldest = min(days) if days else None
        loaded = [x for x in lines if "history loaded" in x[1]]
        if loaded and "history loaded line" not in seen:
            seen["history loaded line"] = loaded[0][0]
            settle = 2
        print(
            f"{t:6.1f} s  days with calls {len(days):3}  oldest "
            f"{(today - oldest) if oldest is not None else '-':>3} days ago  calls {calls}",
            file=sys.stderr,
        )
        if "history loaded line" in seen:
            settle -= 1
            if settle < 0:
                break
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    for t, l in lines:
        if "loading history" in l or "history loaded" in l:
            print(f"  terminal at {t:5.1f} s: {l.strip()}")
    # The year is complete when the calls before today reach their final count.
    if samples:
        final = samples[-1][1]
        seen["year complete (calls before today at their final count)"] = next(
            t for t, c in samples if c == final
        )
        seen["calls before today"] = final
        seen["days with calls"] = len(days)
    for k, v in seen.items():
        print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
