#!/usr/bin/env bash
# netns-striped.sh — proof on a real (virtual, kernel) network with real upload caps that the
# striped topology delivers a live stream to every peer while no node uploads more than 1.25x the
# stream rate, and that a star (everyone fed by the coordinator) under the same caps cannot.
#
# One network namespace per node (the coordinator and N peers), each joined by a veth pair to a
# bridge that lives in a namespace of its own. Every node's upload is capped by the kernel with
# `tc qdisc ... tbf` on its veth end inside its namespace. Addresses are 10.211.0.0/24 and exist
# only inside these namespaces: nothing is configured in the root namespace, nothing routes out.
# Everything is made with names unique to this run and removed on exit (trap EXIT), also on failure.
#
# Needs: root, iproute2 (ip, tc), python3 >= 3.9, and the shardstream CLI (built here unless --cli).
# Run `scripts/netns-striped.sh --help` for the options; docs/netns.md explains the figures.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/netns-striped.sh [options]      (as root)

  --cli PATH          the shardstream apphost or shardstream.dll (default: build
                      src/ShardStream.Cli -c Release into a temporary folder)
  --peers N           peers (default 12)
  --shards K          shards of the striped run (default 4)
  --upload X          every peer's upload and the striped coordinator's, as a multiple of the
                      stream rate (default 1.25: floor(X*K) shard-streams)
  --seconds S         length of the striped stream (default 20)
  --star-seconds S    length of the star control (default 10; 0 = no star run)
  --stream-kbit R     stream rate in kbit/s (default 2000)
  --period-ms P       the source writes rate x P bytes every P ms (default 20: 5,000 bytes;
                      see docs/netns.md for 100 ms, 25,000-byte bursts)
  --headroom H        tbf rate = budget x stream rate x H (default 1.1, i.e. budget + 10%)
  --tbf-burst B       tbf burst (default 16kb)
  --tbf-latency L     tbf latency (default 200ms)
  --max-lag S         also fail when a striped peer is ever more than S seconds behind the source
                      (from handing a byte to the coordinator to its arrival; default 0: not checked)
  --max-stall S       also fail when a striped peer's output stops for longer than S seconds
                      (default 0: stalls are measured and printed, not checked; see below)
  --seed N            seed of the generated stream (default 1)
  --json FILE         also write the measurements as JSON
  --logs DIR          keep every node's stderr in DIR (default: a temporary folder, removed)
  --check             only check that this machine can run the script (root, ip, tc, python3,
                      namespaces, veth, tbf); exit 0 if so, 2 with the reason if not
  -h, --help          this text

Every striped peer must write the exact stream and exit 0; the harness waits for that up to 30 s
after the source ends (a star's peers, 10x short of capacity, would need minutes). Stalls and lag
are measured and printed, and checked only when asked: on a busy machine a node kept off the CPU
sends its backlog in one burst that the tbf queue partly drops, so they measure the CPU as much as
the network (docs/netns.md).

exit status: 0 both runs showed what they should; 1 the striped run failed its checks (a peer did
not get the exact stream within 30 s of the source's end, exited non-zero, or broke a non-zero
--max-lag or --max-stall); 3 the star control kept up (the caps are not biting, so the
proof does not hold); 2 usage or missing prerequisites.
EOF
}

CLI="" PEERS=12 SHARDS=4 UPLOAD=1.25 SECONDS_STRIPED=20 SECONDS_STAR=10 STREAM_KBIT=2000
PERIOD_MS=20 HEADROOM=1.1 TBF_BURST=16kb TBF_LATENCY=200ms MAX_STALL=0 MAX_LAG=0 SEED=1 JSON="" LOGS="" CHECK_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cli) CLI="$2"; shift 2 ;;
    --peers) PEERS="$2"; shift 2 ;;
    --shards) SHARDS="$2"; shift 2 ;;
    --upload) UPLOAD="$2"; shift 2 ;;
    --seconds) SECONDS_STRIPED="$2"; shift 2 ;;
    --star-seconds) SECONDS_STAR="$2"; shift 2 ;;
    --stream-kbit) STREAM_KBIT="$2"; shift 2 ;;
    --period-ms) PERIOD_MS="$2"; shift 2 ;;
    --headroom) HEADROOM="$2"; shift 2 ;;
    --tbf-burst) TBF_BURST="$2"; shift 2 ;;
    --tbf-latency) TBF_LATENCY="$2"; shift 2 ;;
    --max-stall) MAX_STALL="$2"; shift 2 ;;
    --max-lag) MAX_LAG="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --json) JSON="$2"; shift 2 ;;
    --logs) LOGS="$2"; shift 2 ;;
    --check) CHECK_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "netns-striped: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$PEERS" -lt 1 ] || [ "$PEERS" -gt 200 ]; then echo "netns-striped: --peers must be 1..200" >&2; exit 2; fi

say() { echo "netns-striped: $*" >&2; }
missing() { echo "netns-striped: cannot run: $*" >&2; exit 2; }

# ---------------------------------------------------------------- prerequisites
[ "$(id -u)" = 0 ] || missing "not root (network namespaces and tc need root)"
for tool in ip tc python3; do command -v "$tool" >/dev/null 2>&1 || missing "'$tool' not found on PATH (iproute2, python3)"; done
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' || missing "python3 >= 3.9 needed"

# Names unique to this run: our pid and a random suffix. Interfaces are created directly inside
# our own namespaces (ip -n), so no name is ever used in the root namespace.
RUN="ssnet-$$-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
BR_NS="$RUN-br"
NAMESPACES=()
CHILDREN=()
WORK=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Processes still running inside our namespaces were started by this run: end them by pid.
  local ns pids
  for ns in "${NAMESPACES[@]}"; do
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
  done
  for pid in "${CHILDREN[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.2
  for ns in "${NAMESPACES[@]}"; do
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  done
  # Deleting a namespace deletes its links; the veth pairs and the bridge go with them.
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

add_ns() { ip netns add "$1"; NAMESPACES+=("$1"); }

# Namespaces of earlier runs whose script died without cleaning up (SIGKILL, power loss): remove
# those whose owner pid is gone and that hold no process. Anything else is left alone.
sweep_stale() {
  local ns owner
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^ssnet-[0-9]+-[0-9a-f]+-' || true); do
    owner="${ns#ssnet-}"; owner="${owner%%-*}"
    if ! kill -0 "$owner" 2>/dev/null && [ -z "$(ip netns pids "$ns" 2>/dev/null)" ]; then
      say "removing stale namespace $ns (its run, pid $owner, is gone)"
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

if [ "$CHECK_ONLY" = 1 ]; then
  add_ns "$RUN-a"; add_ns "$RUN-b"
  ip -n "$RUN-a" link add eth0 type veth peer name eth0 netns "$RUN-b" 2>/dev/null || missing "cannot create a veth pair between namespaces"
  ip -n "$RUN-a" link set eth0 up
  tc -n "$RUN-a" qdisc add dev eth0 root tbf rate 1mbit burst 16kb latency 200ms 2>/dev/null || missing "cannot add a tbf qdisc"
  echo "netns-striped: ok (root, ip, tc, python3, namespaces, veth, tbf)"
  exit 0
fi

sweep_stale
WORK="$(mktemp -d /tmp/ssnet.XXXXXX)"
if [ -z "$LOGS" ]; then LOGS="$WORK/logs"; fi
mkdir -p "$LOGS"

# ---------------------------------------------------------------- the CLI
if [ -z "$CLI" ]; then
  command -v dotnet >/dev/null 2>&1 || missing "no --cli given and no dotnet SDK to build it"
  repo="$(cd "$(dirname "$0")/.." && pwd)"
  say "building src/ShardStream.Cli (Release)"
  dotnet build "$repo/src/ShardStream.Cli" -c Release -o "$WORK/cli" -nologo -v q >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log" >&2; missing "build failed"; }
  CLI="$WORK/cli/shardstream"
fi
[ -e "$CLI" ] || missing "$CLI does not exist"
CLI="$(cd "$(dirname "$CLI")" && pwd)/$(basename "$CLI")"
case "$CLI" in
  *.dll) command -v dotnet >/dev/null 2>&1 || missing "dotnet needed to run $CLI"; CLI_JSON="[\"$(command -v dotnet)\", \"$CLI\"]" ;;
  *) CLI_JSON="[\"$CLI\"]" ;;
esac

# ---------------------------------------------------------------- the network
SUBNET=10.211.0
COORD_NS="$RUN-c"
COORD_IP="$SUBNET.1"
PEER_NS=() PEER_IP=()
for i in $(seq 1 "$PEERS"); do PEER_NS+=("$RUN-p$i"); PEER_IP+=("$SUBNET.$((10 + i))"); done

say "run $RUN: bridge namespace $BR_NS, coordinator $COORD_IP, $PEERS peers $SUBNET.11..$SUBNET.$((10 + PEERS)) (logs: $LOGS)"
add_ns "$BR_NS"
ip -n "$BR_NS" link set lo up
ip -n "$BR_NS" link add br0 type bridge
ip -n "$BR_NS" link set br0 up

# attach NAMESPACE ADDRESS PORTNAME: a node namespace with eth0 (ADDRESS/24), plugged into br0.
attach() {
  local ns="$1" addr="$2" port="$3"
  add_ns "$ns"
  ip -n "$BR_NS" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$BR_NS" link set "$port" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
}
attach "$COORD_NS" "$COORD_IP" vc
for i in $(seq 0 $((PEERS - 1))); do attach "${PEER_NS[$i]}" "${PEER_IP[$i]}" "vp$((i + 1))"; done

# Caps: kbit/s = multiple x stream rate x headroom.
kbit() { awk -v m="$1" -v r="$STREAM_KBIT" -v h="$HEADROOM" 'BEGIN { printf "%d", m * r * h + 0.5 }'; }
budget_multiple() { awk -v x="$1" -v k="$2" 'BEGIN { printf "%g", int(x * k + 1e-9) / k }'; }
PEER_MULT="$(budget_multiple "$UPLOAD" "$SHARDS")"
PEER_CAP_KBIT="$(kbit "$PEER_MULT")"
COORD_CAP_KBIT="$PEER_CAP_KBIT"   # the coordinator's uplink is the same in both runs

# cap NAMESPACE KBIT: (re)install the tbf qdisc on the node's eth0; re-adding resets its counters.
cap() {
  tc -n "$1" qdisc del dev eth0 root 2>/dev/null || true
  tc -n "$1" qdisc add dev eth0 root tbf rate "${2}kbit" burst "$TBF_BURST" latency "$TBF_LATENCY"
}
cap_all() {
  cap "$COORD_NS" "$COORD_CAP_KBIT"
  for ns in "${PEER_NS[@]}"; do cap "$ns" "$PEER_CAP_KBIT"; done
}

# A quick reachability check before any stream: every peer can reach the coordinator.
for i in $(seq 0 $((PEERS - 1))); do
  ip netns exec "${PEER_NS[$i]}" python3 -c 'import socket,sys
s=socket.socket(); s.settimeout(3)
try:
    s.connect((sys.argv[1], 9)); sys.exit(0)
except ConnectionRefusedError: sys.exit(0)
except OSError as e: print(e); sys.exit(1)' "$COORD_IP" || missing "${PEER_NS[$i]} cannot reach $COORD_IP"
done

# ---------------------------------------------------------------- the measuring harness
cat >"$WORK/run.py" <<'PY'
"""Runs one stream over the namespaces: coordinator + peers as real processes, a paced source,
every peer's stdout timed and compared with the source. Prints nothing; writes a JSON result."""
import hashlib, json, os, random, re, subprocess, sys, threading, time

cfg = json.loads(sys.argv[1])
cli, block, period = cfg["cli"], cfg["block"], cfg["period"]
nblocks = int(round(cfg["seconds"] / period))
rng = random.Random(cfg["seed"])
source = b"".join(rng.randbytes(block) for _ in range(nblocks))
source_sha = hashlib.sha256(source).hexdigest()
procs, extra = [], []  # the nodes; helper processes
PROBE = """
import select, sys, time
worst = 0.0
while not select.select([sys.stdin], [], [], 0)[0]:
    t = time.monotonic(); time.sleep(0.01); worst = max(worst, time.monotonic() - t - 0.01)
print(worst)
"""
ended = set()  # the processes the harness had to end

def tc_sent(ns):
    out = subprocess.run(["tc", "-n", ns, "-s", "qdisc", "show", "dev", "eth0"], capture_output=True, text=True).stdout
    m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", out)
    return (int(m.group(1)), int(m.group(3))) if m else (0, 0)

def spawn(ns, args, log, stdin=None, stdout=None):
    p = subprocess.Popen(["ip", "netns", "exec", ns] + cli + args, stdin=stdin, stdout=stdout,
                         stderr=subprocess.PIPE)
    procs.append(p)
    lines = []
    def pump():
        with open(log, "wb") as f:
            for line in p.stderr:
                f.write(line); f.flush()
                lines.append(line.decode(errors="replace"))
    t = threading.Thread(target=pump, daemon=True); t.start()
    return p, lines, t

def wait_line(lines, pattern, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(re.search(pattern, l) for l in lines): return True
        if proc.poll() is not None: return False
        time.sleep(0.02)
    return False

class Meter:
    """Reads a peer's stdout: timestamps every read, checks the bytes against the source."""
    def __init__(self, proc):
        self.proc, self.arrivals, self.n, self.match = proc, [], 0, True
        self.sha = hashlib.sha256()
        self.thread = threading.Thread(target=self.run, daemon=True); self.thread.start()
    def run(self):
        fd = self.proc.stdout.fileno()
        while True:
            b = os.read(fd, 1 << 16)
            if not b: break
            t = time.monotonic()
            if self.match and b != source[self.n:self.n + len(b)]: self.match = False
            self.sha.update(b); self.n += len(b); self.arrivals.append((t, self.n))

result = {"mode": cfg["mode"], "source_bytes": len(source), "source_sha256": source_sha, "error": None}
try:
    coord, clines, _ = spawn(cfg["coord_ns"], cfg["coord_args"], os.path.join(cfg["logs"], cfg["mode"] + "-coordinator.log"), stdin=subprocess.PIPE)
    if not wait_line(clines, r"listening on \S+,", coord, 60): raise RuntimeError("the coordinator did not start listening")
    peers = []
    for i, (ns, args) in enumerate(zip(cfg["peer_ns"], cfg["peer_args"])):
        p, plines, _ = spawn(ns, args, os.path.join(cfg["logs"], f"{cfg['mode']}-peer{i + 1}.log"), stdout=subprocess.PIPE)
        peers.append((p, Meter(p)))
    t_launch = time.monotonic()
    if not wait_line(clines, r"\] streaming\s*$", coord, 90): raise RuntimeError("the coordinator never had its %d peers attached" % len(peers))
    result["join_seconds"] = time.monotonic() - t_launch
    nodes = [cfg["coord_ns"]] + cfg["peer_ns"]
    sent0 = {ns: tc_sent(ns) for ns in nodes}

    # How starved of CPU this machine is while we measure: a thread that sleeps 10 ms at a time
    # records its worst oversleep. A node process waits for a core about as long.
    # A process of its own (not a thread: the GIL would count as starvation), at our priority.
    probe = subprocess.Popen([sys.executable, "-c", PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    extra.append(probe)
    result["loadavg_at_start"] = float(open("/proc/loadavg").read().split()[0])

    # The live source: block i is handed to the coordinator at t0 + i*period (never earlier).
    produced = []
    t0 = time.monotonic()
    for i in range(nblocks):
        d = t0 + i * period - time.monotonic()
        if d > 0: time.sleep(d)
        produced.append(time.monotonic())
        coord.stdin.write(source[i * block:(i + 1) * block]); coord.stdin.flush()
    t_gen_end = time.monotonic()
    coord.stdin.close()

    if cfg["mode"] == "star":
        # The control: stop a little after the source ends and look at what arrived by then.
        time.sleep(cfg["grace"])
        t_stop = time.monotonic()
        sent1 = {ns: tc_sent(ns) for ns in nodes}
        for p in procs:
            if p.poll() is None: ended.add(id(p)); p.terminate()
    else:
        # Wait for every peer to have written the whole stream, then give the processes a few
        # seconds to exit on their own; one that does not is ended and reported as such.
        deadline = t_gen_end + cfg["finish_timeout"]
        while time.monotonic() < deadline and not all(m.n >= len(source) or p.poll() is not None for p, m in peers):
            time.sleep(0.05)
        t_stop = time.monotonic()
        sent1 = {ns: tc_sent(ns) for ns in nodes}
        exit_deadline = time.monotonic() + cfg["exit_grace"]
        while time.monotonic() < exit_deadline and any(p.poll() is None for p in procs):
            time.sleep(0.05)
        for p in procs:
            if p.poll() is None: ended.add(id(p)); p.terminate()
    for p in procs:
        try: p.wait(timeout=5)
        except subprocess.TimeoutExpired: p.kill(); p.wait()
    for _, m in peers: m.thread.join(timeout=5)

    def overlay_id(i):  # the id the coordinator gave peer i, from its log ("joined as peer N")
        try:
            m = re.search(r"joined as peer (\d+)", open(os.path.join(cfg["logs"], f"{cfg['mode']}-peer{i + 1}.log")).read())
            return int(m.group(1)) if m else None
        except OSError: return None

    def produced_by(t):  # bytes the source had handed over by time t
        return sum(1 for x in produced if x <= t) * block

    result["sched_delay_max_s"] = round(float(probe.communicate("stop\n", timeout=5)[0] or "nan"), 3) if probe.poll() is None else None
    result["loadavg_at_end"] = float(open("/proc/loadavg").read().split()[0])
    result["cpus"] = os.cpu_count()
    window = t_stop - t0
    out = []
    for i, (p, m) in enumerate(peers):
        arr = [a for a in m.arrivals if a[0] <= t_stop]
        n = arr[-1][1] if arr else 0
        stall, lag = 0.0, 0.0
        for j, (t, c) in enumerate(arr):
            if j: stall = max(stall, t - arr[j - 1][0])
            lag = max(lag, t - produced[(c - 1) // block])
        complete = n == len(source)
        if arr and not complete: stall = max(stall, t_stop - arr[-1][0])  # still waiting at the end
        behind = (produced_by(t_stop) - n) / (block / period)  # seconds of stream not yet received
        ns = cfg["peer_ns"][i]
        out.append({
            "peer": i + 1, "overlay_id": overlay_id(i), "exit": None if id(p) in ended else p.returncode,
            "ended_by_harness": id(p) in ended, "bytes": n, "complete": complete,
            "sha_ok": complete and m.match and m.sha.hexdigest() == source_sha,
            "prefix_ok": m.match,
            "first_byte_s": round(arr[0][0] - t0, 3) if arr else None,
            "longest_stall_s": round(stall, 3) if arr else None,
            "max_lag_s": round(lag, 3),
            "behind_at_end_s": round(max(0.0, behind), 3),
            "rate_mbit": round(n * 8 / (arr[-1][0] - t0) / 1e6, 3) if arr and arr[-1][0] > t0 else 0.0,
            "upload_mbit": round((sent1[ns][0] - sent0[ns][0]) * 8 / window / 1e6, 3),
            "drops": sent1[ns][1] - sent0[ns][1],
            # (seconds since the source started, bytes received by then), for plots and debugging
            "trace": [(round(t - t0, 3), c) for t, c in arr[::max(1, len(arr) // 400)]],
        })
    cns = cfg["coord_ns"]
    result.update({
        "seconds": cfg["seconds"], "window_s": round(window, 3), "peers": out,
        "coordinator": {"exit": None if id(coord) in ended else coord.returncode, "ended_by_harness": id(coord) in ended,
                        "upload_mbit": round((sent1[cns][0] - sent0[cns][0]) * 8 / window / 1e6, 3),
                        "drops": sent1[cns][1] - sent0[cns][1]},
        "aggregate_mbit": round(sum(o["bytes"] for o in out) * 8 / window / 1e6, 3),
        "needed_mbit": round(len(out) * len(source) * 8 / cfg["seconds"] / 1e6, 3),
    })
except Exception as e:  # reported, never hidden: the caller fails the run
    result["error"] = f"{type(e).__name__}: {e}"
finally:
    for p in procs + extra:
        if p.poll() is None:
            p.kill(); p.wait()
    with open(cfg["out"], "w") as f: json.dump(result, f, indent=1)
PY

cat >"$WORK/report.py" <<'PY'
"""Prints the tables, applies the checks, writes the combined JSON, exits with the status."""
import json, sys
striped_path, star_path, json_out, max_stall, cfg = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), json.loads(sys.argv[5])
runs = {"striped": json.load(open(striped_path))}
if star_path != "-": runs["star"] = json.load(open(star_path))

def table(r, title):
    print(f"\n{title}")
    if r.get("error"): print(f"  error: {r['error']}"); return
    print(f"  source {r['source_bytes']} bytes in {r['seconds']} s ({cfg['block']} bytes every {cfg['period_ms']} ms), sha256 {r['source_sha256'][:16]}…; peers attached after {r['join_seconds']:.1f} s; window {r['window_s']:.1f} s")
    print(f"  {'peer':>4} {'id':>3} {'exit':>4} {'bytes':>9} {'sha ok':>6} {'1st byte':>8} {'stall max':>9} {'lag max':>7} {'behind':>6} {'rate':>6} {'upload':>6} {'drops':>5}")
    print(f"  {'':>4} {'':>3} {'':>4} {'':>9} {'':>6} {'s':>8} {'s':>9} {'s':>7} {'s':>6} {'Mbit/s':>6} {'Mbit/s':>6} {'':>5}")
    for p in r["peers"]:
        ok = "yes" if p["sha_ok"] else ("prefix" if p["prefix_ok"] and not p["complete"] else "NO")
        fb = f"{p['first_byte_s']:.2f}" if p["first_byte_s"] is not None else "-"
        st = f"{p['longest_stall_s']:.2f}" if p["longest_stall_s"] is not None else "-"
        ex = "end" if p["ended_by_harness"] else str(p["exit"])
        print(f"  {p['peer']:>4} {str(p['overlay_id']):>3} {ex:>4} {p['bytes']:>9} {ok:>6} {fb:>8} {st:>9} {p['max_lag_s']:>7.2f} {p['behind_at_end_s']:>6.2f} {p['rate_mbit']:>6.2f} {p['upload_mbit']:>6.2f} {p['drops']:>5}")
    sd = r.get("sched_delay_max_s")
    print(f"  machine: load average {r['loadavg_at_start']:.1f} at the start, {r.get('loadavg_at_end', float('nan')):.1f} at the end ({r.get('cpus')} cores); worst scheduling delay of a probe process {'?' if sd is None else f'{sd * 1000:.0f} ms'}")
    c = r["coordinator"]
    print(f"  coordinator: exit {'end' if c['ended_by_harness'] else c['exit']}, upload {c['upload_mbit']:.2f} Mbit/s, drops {c['drops']}; all peers together received {r['aggregate_mbit']:.2f} Mbit/s of the {r['needed_mbit']:.2f} Mbit/s needed")

cap = cfg["peer_cap_kbit"] / 1000
table(runs["striped"], f"striped: K={cfg['shards']}, every node --upload {cfg['upload']} (budget {cfg['budget']} shard-streams), tbf {cap:.3f} Mbit/s on every node")
if "star" in runs:
    table(runs["star"], f"star (control): K=1, coordinator --upload {cfg['peers']} (serves every peer directly), peers --upload 0, same tbf {cap:.3f} Mbit/s on every node")

failures, warnings = [], []
s = runs["striped"]
if s.get("error"): failures.append("striped: " + s["error"])
else:
    for p in s["peers"]:
        if p["ended_by_harness"]: warnings.append(f"striped: peer {p['peer']} had the whole stream but did not exit within 5 s (ended by the harness)")
        elif p["exit"] != 0: failures.append(f"striped: peer {p['peer']} exited with {p['exit']}")
        if not p["sha_ok"]: failures.append(f"striped: peer {p['peer']} wrote {p['bytes']} bytes that are not the source ({s['source_bytes']} bytes)")
        if cfg["max_lag_s"] > 0 and p["max_lag_s"] > cfg["max_lag_s"]: failures.append(f"striped: peer {p['peer']} fell {p['max_lag_s']} s behind the source (limit {cfg['max_lag_s']} s)")
        if max_stall > 0 and (p["longest_stall_s"] is None or p["longest_stall_s"] > max_stall): failures.append(f"striped: peer {p['peer']} stalled {p['longest_stall_s']} s (limit {max_stall} s)")
    if s["coordinator"]["ended_by_harness"]: warnings.append("striped: the coordinator did not exit within 5 s of the last peer's last byte (ended by the harness)")
    elif s["coordinator"]["exit"] != 0: failures.append(f"striped: coordinator exited with {s['coordinator']['exit']}")
star_failures = []
if "star" in runs:
    r = runs["star"]
    if r.get("error"): star_failures.append("star: " + r["error"])
    else:
        # It cannot keep up: together the peers get under a quarter of what they need (one capped
        # uplink carries ~1.3 of the 12 copies), and no peer gets even half of the stream.
        if r["aggregate_mbit"] >= 0.25 * r["needed_mbit"]: star_failures.append(f"star: the peers together received {r['aggregate_mbit']} Mbit/s, a quarter or more of the {r['needed_mbit']} needed: the cap is not biting")
        fast = [p["peer"] for p in r["peers"] if p["bytes"] >= 0.5 * r["source_bytes"]]
        if fast: star_failures.append(f"star: peer(s) {fast} received half of the stream or more")
verdict = {"striped_ok": not failures, "star_cannot_keep_up": ("star" in runs) and not star_failures,
           "failures": failures + star_failures, "warnings": warnings, "config": cfg, **runs}
if json_out != "-":
    with open(json_out, "w") as f: json.dump(verdict, f, indent=1)
print()
for w in warnings: print("WARN " + w)
for f in failures + star_failures: print("FAIL " + f)
print(f"striped run: {'ok' if not failures else 'FAILED'}" + (f"; star control: {'cannot keep up (as expected)' if not star_failures else 'UNEXPECTED'}" if "star" in runs else ""))
sys.exit(1 if failures else 3 if star_failures else 0)
PY

BUDGET="$(awk -v x="$UPLOAD" -v k="$SHARDS" 'BEGIN { printf "%d", int(x * k + 1e-9) }')"
BLOCK="$(awk -v r="$STREAM_KBIT" -v p="$PERIOD_MS" 'BEGIN { printf "%d", r * p / 8 }')"   # bytes every PERIOD_MS
json_list() { local first=1 out="["; for x in "$@"; do [ $first = 1 ] || out+=", "; out+="\"$x\""; first=0; done; echo "$out]"; }

# run_stream MODE SECONDS COORD_ARGS... -- then PEER_UPLOAD PORT
run_stream() {
  local mode="$1" secs="$2" port="$3" peer_upload="$4"; shift 4
  local coord_args peer_args="[" i
  coord_args="$(json_list coordinator -l "$COORD_IP:$port" "$@")"
  for i in $(seq 0 $((PEERS - 1))); do
    [ "$i" = 0 ] || peer_args+=", "
    peer_args+="$(json_list peer -c "$COORD_IP:$port" -l "${PEER_IP[$i]}:$port" --upload "$peer_upload")"
  done
  peer_args+="]"
  cap_all
  local cfg
  cfg="$(cat <<EOF
{"mode": "$mode", "cli": $CLI_JSON, "block": $BLOCK, "period": $(awk -v p="$PERIOD_MS" 'BEGIN { print p / 1000 }'), "seconds": $secs, "seed": $SEED,
 "grace": 2.0, "finish_timeout": 30.0, "exit_grace": 5.0, "logs": "$LOGS", "out": "$WORK/$mode.json",
 "coord_ns": "$COORD_NS", "coord_args": $coord_args,
 "peer_ns": $(json_list "${PEER_NS[@]}"), "peer_args": $peer_args}
EOF
)"
  say "$mode run: ${secs} s at $STREAM_KBIT kbit/s"
  # The nodes and the harness run at a raised priority (nice -15, inherited by every process the
  # harness starts): other work on the machine must not pass for network stalls.
  nice -n -15 python3 "$WORK/run.py" "$cfg" &
  CHILDREN+=("$!")
  wait "$!"
}

run_stream striped "$SECONDS_STRIPED" 7000 "$UPLOAD" -s "$SHARDS" --topology striped --upload "$UPLOAD" --min-peers "$PEERS"
STAR_JSON="-"
if [ "$SECONDS_STAR" != 0 ]; then
  run_stream star "$SECONDS_STAR" 7001 0 -s 1 --topology binary --upload "$PEERS" --min-peers "$PEERS"
  STAR_JSON="$WORK/star.json"
fi

REPORT_CFG="{\"block\": $BLOCK, \"period_ms\": $PERIOD_MS, \"peers\": $PEERS, \"shards\": $SHARDS, \"upload\": $UPLOAD, \"budget\": $BUDGET, \"stream_kbit\": $STREAM_KBIT, \"peer_cap_kbit\": $PEER_CAP_KBIT, \"coordinator_cap_kbit\": $COORD_CAP_KBIT, \"tbf_burst\": \"$TBF_BURST\", \"tbf_latency\": \"$TBF_LATENCY\", \"max_stall_s\": $MAX_STALL, \"max_lag_s\": $MAX_LAG, \"run\": \"$RUN\"}"
set +e
python3 "$WORK/report.py" "$WORK/striped.json" "$STAR_JSON" "${JSON:--}" "$MAX_STALL" "$REPORT_CFG"
status=$?
set -e
if [ "$status" != 0 ] && [ "$LOGS" = "$WORK/logs" ]; then
  say "keeping the logs of the failed run in /tmp/$RUN-logs"
  cp -r "$LOGS" "/tmp/$RUN-logs"
fi
exit "$status"
