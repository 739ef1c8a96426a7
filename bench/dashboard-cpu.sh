#!/usr/bin/env bash
# Coordinator CPU spent on the HTTP side (issue 13: "/metrics and the page cost the coordinator under
# 1% CPU with 1,000 peers"). A coordinator with --http carries `shardstream swarm --peers N` (the
# control plane of N peers, a live one-line-a-second source); its CPU time (utime+stime from
# /proc/PID/stat) is read over equal windows, alternating: no HTTP client (A), then the page open in
# chromium (its server-sent updates) and /metrics scraped every 5 s (B). The HTTP side's cost is the
# mean of B minus the mean of A, as a share of one core. CPU time, not wall time, so a busy machine
# disturbs it less than a throughput figure. Before the rounds, one window with the page opened for
# the first time (W) is reported apart: it holds the one-off JIT of the HTTP side's code.
# STREAMS=N (default 0) adds N more readers of /events (curl) in every B window: N more pages' worth
# of server-sent events, to make a per-page cost stand out of the machine's noise.
# Needs a built CLI (dotnet build -c Release src/ShardStream.Cli), Debian's chromium and the
# Playwright package the integration tests restore (dotnet build tests/ShardStream.IntegrationTests).
# Usage: bench/dashboard-cpu.sh [PEERS] [WINDOW_SECONDS] [ROUNDS]   (defaults 1000 20 3)
set -euo pipefail
peers=${1:-1000} window=${2:-20} rounds=${3:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
cli=${SHARDSTREAM_CLI:-"$repo/src/ShardStream.Cli/bin/Release/net10.0/shardstream.dll"}   # SHARDSTREAM_CLI: another build, for before/after runs
pw="$repo/tests/ShardStream.IntegrationTests/bin/Debug/net10.0/.playwright"
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

(while true; do date; sleep 1; done) | dotnet "$cli" coordinator -l 127.0.0.1:19950 -s 2 --http 127.0.0.1:19951 \
  --heartbeat-timeout 60 -q 2>"$dir/coord.err" & pids+=($!)
coord=
for _ in $(seq 600); do   # up to 60 s: until its HTTP port answers (then its peer port listens too)
  coord=$(pgrep -f "$cli coordinator -l 127.0.0.1:19950" | head -1 || true)
  [ -n "$coord" ] && curl -sf -o /dev/null http://127.0.0.1:19951/api/overlay && break; sleep 0.1
done
curl -sf -o /dev/null http://127.0.0.1:19951/api/overlay || { echo "the coordinator did not start" >&2; exit 1; }
hold=$(( (2 * rounds + 3) * window + 150 ))
dotnet "$cli" swarm -c 127.0.0.1:19950 --peers "$peers" --join-rate 200 --hold "$hold" --heartbeat-timeout 60 \
  >"$dir/swarm.out" 2>"$dir/swarm.err" & pids+=($!)
for _ in $(seq 600); do   # up to 5 min: until the swarm's ramp is over (its status line says "hold")
  grep -q " hold " "$dir/swarm.err" 2>/dev/null && break; sleep 0.5
done
v=$(curl -s http://127.0.0.1:19951/api/overlay | python3 -c 'import json,sys; print(json.load(sys.stdin)["viewers"])')
[ "$v" -ge "$peers" ] || { echo "only $v of $peers swarm peers joined" >&2; tail -3 "$dir/swarm.err" >&2; exit 1; }
echo "viewers: $v of $peers (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
sleep 5

cat > "$dir/open.js" <<'JS'
const { chromium } = require(process.env.PLAYWRIGHT_PACKAGE);
(async () => {
  const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const p = await b.newPage();
  await p.goto(process.env.PAGE_URL);
  await p.waitForTimeout(Number(process.env.SECONDS_OPEN) * 1000);
  await b.close();
})();
JS
measure() { local t0 t1; t0=$(ticks "$coord"); sleep "$window"; t1=$(ticks "$coord"); echo $((t1 - t0)); }
with_page() {   # measures one window with the page open, /metrics scraped and STREAMS more readers
  local page scrape extra=()
  PLAYWRIGHT_PACKAGE="$pw/package" PAGE_URL=http://127.0.0.1:19951/ SECONDS_OPEN=$((window + 8)) \
    "$pw/node/linux-x64/node" "$dir/open.js" & page=$!
  ( for _ in $(seq $((window / 5 + 2))); do curl -s -o /dev/null http://127.0.0.1:19951/metrics; sleep 5; done ) & scrape=$!
  for _ in $(seq "${STREAMS:-0}"); do curl -s -N -o /dev/null -m $((window + 6)) http://127.0.0.1:19951/events & extra+=($!); done
  sleep 4   # the browser's own start is not the coordinator's cost; let the page connect first
  measure
  wait "$page" "$scrape" "${extra[@]}" 2>/dev/null || true
}
w=$(with_page)
a=() b=()
for r in $(seq "$rounds"); do
  a+=("$(measure)")
  b+=("$(with_page)")
done
python3 - "$hz" "$window" "${a[*]}" "${b[*]}" "$peers" "$w" "${STREAMS:-0}" <<'PY'
import sys
hz, window = int(sys.argv[1]), float(sys.argv[2])
a = [int(x) for x in sys.argv[3].split()]; b = [int(x) for x in sys.argv[4].split()]
pct = lambda t: 100.0 * t / hz / window
print(f"coordinator CPU with {sys.argv[5]} swarm peers, {window:.0f} s windows, % of one core" + (f", {sys.argv[7]} more /events readers" if sys.argv[7] != "0" else ""))
print(f"  page opened the first time (JIT): {pct(int(sys.argv[6])):.2f}")
print("  no HTTP client:       " + " ".join(f"{pct(t):.2f}" for t in a) + f"   mean {sum(map(pct,a))/len(a):.2f}")
print("  page open + /metrics: " + " ".join(f"{pct(t):.2f}" for t in b) + f"   mean {sum(map(pct,b))/len(b):.2f}")
print(f"  HTTP side: {sum(map(pct,b))/len(b) - sum(map(pct,a))/len(a):+.2f} % of one core")
PY
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
