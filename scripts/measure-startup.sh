#!/usr/bin/env bash
# Usage: scripts/measure-startup.sh BINARY [DATABASE_URL]
# Prints the milliseconds from exec to the first /readyz 200 on a fresh store and on restart,
# the resident memory when idle and after 200 requests, and the exit code on SIGTERM.
# Needs curl; listens on 127.0.0.1:${PORT:-18099}.
bin=$1; dir=$(mktemp -d); port=${PORT:-18099}
extra=()
[ -n "${2:-}" ] && extra=(--database-url "$2")
start=$(date +%s%N)
OPSDECK_ADMIN_EMAIL=a@b.co OPSDECK_ADMIN_PASSWORD=passwordpassword "$bin" serve --data-dir "$dir" --listen 127.0.0.1:$port "${extra[@]}" >/dev/null 2>&1 &
pid=$!
until curl -sf -o /dev/null http://127.0.0.1:$port/readyz; do sleep 0.002; done
ready=$(( ($(date +%s%N) - start) / 1000000 ))
sleep 5
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
# A few requests, then idle again.
for i in $(seq 1 200); do curl -s -o /dev/null http://127.0.0.1:$port/healthz; done
sleep 3
rss2=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
kill -TERM $pid; wait $pid; code=$?
echo "ready_ms=$ready idle_rss_kb=$rss rss_after_200_requests_kb=$rss2 exit_on_sigterm=$code"
# Second start on the now-populated store.
start=$(date +%s%N)
"$bin" serve --data-dir "$dir" --listen 127.0.0.1:$port "${extra[@]}" >/dev/null 2>&1 &
pid=$!
until curl -sf -o /dev/null http://127.0.0.1:$port/readyz; do sleep 0.002; done
echo "restart_ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))"
kill -TERM $pid; wait $pid
rm -rf "$dir"
