#!/usr/bin/env bash
# netns-slow-relay.sh — a relay whose uplink cannot carry its children, with the real CLI on
# kernel TCP (docs/resilience.md, "Never at the cost of others"). Four network namespaces behind a
# router namespace: the coordinator (--upload 1, K=1), the relay (its uplink capped by
# `tc qdisc add dev eth0 root tbf rate 2mbit burst 32kbit latency 400ms`), and two children with
# the default upload; a paced 1.2 Mbit/s source. Prints the coordinator's slow-child decisions
# (events 902-914), each viewer's lag (arrival time of each read - when the source wrote that
# byte), and whether each output equals the source. Addresses 10.97.0.0/16 exist only inside the
# namespaces; all are named after this run and removed on exit.
#
# usage (as root): scripts/netns-slow-relay.sh CLI_DLL OUT_DIR [SECONDS]   (SECONDS default 90)
set -uo pipefail
CLI="dotnet $1"; D=$2; SECS=${3:-90}
mkdir -p "$D"
P=ssr$$; R=$P-r; NET=97
cleanup() {
  for n in $P-h1 $P-h2 $P-h3 $P-h4 $R; do
    for pid in $(ip netns pids $n 2>/dev/null); do kill $pid 2>/dev/null; done
    ip netns del $n 2>/dev/null
  done
}
trap cleanup EXIT
ip netns add $R; ip -n $R link set lo up; ip netns exec $R sysctl -qw net.ipv4.ip_forward=1
for i in 1 2 3 4; do
  n=$P-h$i; ip netns add $n; ip -n $n link set lo up
  ip -n $R link add vh$i type veth peer name eth0 netns $n
  ip -n $R addr add 10.$NET.$i.1/24 dev vh$i; ip -n $R link set vh$i up
  ip -n $n addr add 10.$NET.$i.2/24 dev eth0; ip -n $n link set eth0 up
  ip -n $n route add 10.$NET.0.0/16 via 10.$NET.$i.1
done
ip netns exec $P-h2 tc qdisc add dev eth0 root tbf rate 2mbit burst 32kbit latency 400ms

# The source: 150,000 bytes/s in 1/16 s pieces, from when the coordinator streams; logs "time bytes".
cat > "$D/src.py" <<'EOF'
import sys, time, random, os
rate, seconds, log, data, go = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], 'w'), open(sys.argv[4], 'wb'), sys.argv[5]
piece, rnd, out, written = rate // 16, random.Random(7), sys.stdout.buffer, 0
while not os.path.exists(go): time.sleep(0.05)
start = time.time()
for i in range(seconds * 16):
    if start + i / 16 > time.time(): time.sleep(start + i / 16 - time.time())
    b = rnd.randbytes(piece); out.write(b); out.flush(); data.write(b); written += len(b)
    log.write(f"{time.time():.3f} {written}\n"); log.flush()
data.close()
EOF
# A viewer's output: kept, and "time bytes" after each read.
cat > "$D/rec.py" <<'EOF'
import sys, time
out, log, total = open(sys.argv[1], 'wb'), open(sys.argv[2], 'w'), 0
while (b := sys.stdin.buffer.read1(65536)):
    out.write(b); total += len(b); log.write(f"{time.time():.3f} {total}\n")
EOF
cat > "$D/stamp.py" <<'EOF'
import sys, time
for line in sys.stdin: sys.stdout.write(f"{time.time():.3f} {line}"); sys.stdout.flush()
EOF

# Waits (up to 60 s) until FILE has a line matching PATTERN; says so and fails the run otherwise.
wait_for() {
  for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "netns-slow-relay: no '$2' in $1 within 60 s" >&2; exit 1
}

J=10.$NET.1.2:1234
python3 "$D/src.py" 150000 "$SECS" "$D/src.times" "$D/src.bin" "$D/go" \
  | ip netns exec $P-h1 $CLI coordinator -l 0.0.0.0:1234 --upload 1 --min-peers 3 -v 2> >(python3 "$D/stamp.py" > "$D/coord.log") &
wait_for "$D/coord.log" 'listening on'
# One at a time, each once the one before has joined: the relay first, so that it is the
# coordinator's only child and the two after it are its children.
for v in relay:2 c1:3 c2:4; do
  ip netns exec $P-h${v#*:} $CLI peer -c $J -l 0.0.0.0:1235 -v 2> >(python3 "$D/stamp.py" > "$D/${v%:*}.log") \
    | python3 "$D/rec.py" "$D/${v%:*}.bin" "$D/${v%:*}.times" &
  wait_for "$D/${v%:*}.log" 'joined as peer'
done
wait_for "$D/coord.log" '\[1653\]'
touch "$D/go"
wait
ip netns exec $P-h2 tc -s qdisc show dev eth0 > "$D/tbf.txt"

python3 - "$D" <<'EOF'
import sys, bisect, re
D = sys.argv[1]
src = [tuple(map(float, l.split())) for l in open(f"{D}/src.times")]
st, sb, t0 = [s[0] for s in src], [s[1] for s in src], src[0][0]
def lags(name):
    rows = [tuple(map(float, l.split())) for l in open(f"{D}/{name}.times")]
    return [(t - t0, t - st[min(bisect.bisect_left(sb, b), len(st) - 1)]) for t, b in rows]
exchange = moved = None
for l in open(f"{D}/coord.log"):
    if m := re.search(r"coordinator\[(90[2-9]|91[0-4])\] (.*)", l):
        at = float(l.split()[0]) - t0
        print(f"{at:6.1f} s [{m.group(1)}] {m.group(2)[:180]}")
        if m.group(1) == "912" and exchange is None: exchange = at
        if m.group(1) == "913" and moved is None: moved = at
for name in ("relay", "c1", "c2"):
    ls = lags(name); end = ls[-1][0]
    per = " ".join(f"{max([l for t, l in ls if a <= t < a + 10], default=float('nan')):.1f}" for a in range(0, int(end) + 1, 10))
    same = open(f"{D}/{name}.bin", 'rb').read() == open(f"{D}/src.bin", 'rb').read()
    line = f"{name}: {'identical to the source' if same else 'NOT identical'}; largest lag per 10 s: {per}"
    if exchange is not None and name != "relay":
        after = [(t, l) for t, l in ls if t >= exchange]
        line += f"; under 1 s for good {max([t for t, l in after if l >= 1.0], default=exchange) - exchange:.1f} s after the exchange"
    if moved is not None and name != "relay":
        after = [(t, l) for t, l in ls if t >= moved]
        line += f"; {max([l for t, l in ls if moved - 1 <= t < moved], default=float('nan')):.1f} s behind at the move, under 1 s for good {max([t for t, l in after if l >= 1.0], default=moved) - moved:.1f} s after it"
    if err := [l.split(' ', 1)[1].strip() for l in open(f"{D}/{name}.log") if 'shardstream: error' in l]: line += f"; {err[-1]}"
    print(line)
EOF
