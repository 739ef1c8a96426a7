#!/usr/bin/env bash
# handshake-rtt.sh — what Linux reports as an accepted TCP connection's RTT right after accept
# (getsockopt TCP_INFO, tcpi_rtt at byte 68, microseconds), which the coordinator takes as a lower
# bound on a joiner's RTT to it, and how many SYN-ACKs it sent again (tcpi_total_retrans at byte
# 100), which makes that figure unusable (src/ShardStream/Transport/HandshakeRtt.cs;
# docs/security.md, "The join"). Seven cases: loopback; loopback accepted 1 s late; loopback while
# 8 busy loops load the machine; two namespaces joined by a veth; the same with a tbf queue kept
# full (~100 ms of queueing on the server's side, a delay known without netem); the first SYN-ACK
# of each handshake dropped (as a joiner can on its own host; dropped here on the server's egress,
# by an htb class whose fifo holds no packet), TCP timestamps on, then off; SYN cookies always on.
#
# Addresses 10.212.0.1/.2 exist only inside two namespaces made here and removed on exit.
# Needs: root, iproute2 (ip, tc), python3. Takes about 2 min. Usage: scripts/handshake-rtt.sh
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "handshake-rtt: needs root (namespaces)" >&2; exit 2; }
WORK="$(mktemp -d /tmp/handshake-rtt.XXXXXX)"
A="hsrtt-$$-a"; B="hsrtt-$$-b"; NS=()
cleanup() {
  for ns in "${NS[@]}"; do p="$(ip netns pids "$ns" 2>/dev/null || true)"; [ -n "$p" ] && kill $p 2>/dev/null || true; done
  sleep 0.2
  for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/hs.py" <<'PY'
import socket, struct, sys, time
mode, addr, port, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "server":
    late = float(sys.argv[5]) if len(sys.argv) > 5 else 0
    l = socket.socket(); l.bind((addr, 0)); l.listen(512)
    with open(sys.argv[6] + ".tmp", "w") as f: f.write(str(l.getsockname()[1]))
    import os; os.rename(sys.argv[6] + ".tmp", sys.argv[6])
    for _ in range(n):
        if late: time.sleep(late)
        s, _ = l.accept()
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        rtt, rttvar = struct.unpack_from("II", info, 68)
        (retrans,) = struct.unpack_from("I", info, 100)
        print(rtt, rttvar, retrans, flush=True); s.close()
else:
    for _ in range(n):
        s = socket.socket(); t = time.perf_counter(); s.connect((addr, int(open(port).read())))
        print(f"{(time.perf_counter() - t) * 1000:.3f}", flush=True); s.close(); time.sleep(0.02)
PY

# run NS_SERVER NS_CLIENT ADDR CASE N LATE: N handshakes to a free port; prints "rtt_us rttvar_us retrans connect_ms" lines.
run() {
  local sns="$1" cns="$2" addr="$3" port="$4" n="$5" late="${6:-0}" ready="$WORK/port.$4"
  local S=() C=()
  [ -n "$sns" ] && S=(ip netns exec "$sns"); [ -n "$cns" ] && C=(ip netns exec "$cns")
  "${S[@]}" python3 "$WORK/hs.py" server "$addr" - "$n" "$late" "$ready" > "$WORK/s.$port" &
  local spid=$!
  for _ in $(seq 100); do [ -e "$ready" ] && break; sleep 0.05; done
  "${C[@]}" python3 "$WORK/hs.py" client "$addr" "$ready" "$n" > "$WORK/c.$port"
  wait "$spid"
  paste -d' ' "$WORK/s.$port" "$WORK/c.$port"
}
# summary: tcpi_rtt min/median/max (µs), whole-ms count, how many have RTTVAR = RTT/2 (the
# estimator's state after exactly one sample), how many had a SYN-ACK sent again
# (tcpi_total_retrans above 0) and the most, userland connect max (ms).
summary() {
  sort -n | awk '{r[NR]=$1; if ($1 % 1000 == 0) z++; if ($4 > c) c = $4; v = v " " $1; d = $1 - 2 * $2; if (d >= -1 && d <= 1) h++; if ($3 > 0) x++; if ($3 > m) m = $3}
    END {printf "  %d handshakes: tcpi_rtt min %d median %d max %d us; whole-ms %d; RTTVAR half of it (one sample) %d; SYN-ACK sent again %d (at most %d times); userland connect max %.3f ms\n", NR, r[1], r[int((NR+1)/2)], r[NR], z+0, h+0, x+0, m+0, c;
         if (NR <= 30) print "  tcpi_rtt (us):" v}'
}

echo "1. loopback, accepted at once"
run "" "" 127.0.0.1 1 200 | summary
echo "2. loopback, each accepted 1 s after its handshake"
run "" "" 127.0.0.1 2 5 1 | summary
echo "3. loopback, 8 busy loops on $(nproc) cores"
for _ in 1 2 3 4 5 6 7 8; do timeout 15 sh -c 'while :; do :; done' & done
sleep 1; run "" "" 127.0.0.1 3 20 | summary; wait

ip netns add "$A"; NS+=("$A"); ip netns add "$B"; NS+=("$B")
ip -n "$A" link add eth0 type veth peer name eth0 netns "$B"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
ip -n "$A" addr add 10.212.0.1/24 dev eth0; ip -n "$B" addr add 10.212.0.2/24 dev eth0
echo "4. two namespaces, a veth"
run "$A" "$B" 10.212.0.1 4 20 | summary
echo "5. the same, the server's egress a tbf (1mbit, latency 100ms) kept full by a UDP flood"
tc -n "$A" qdisc add dev eth0 root tbf rate 1mbit burst 2kb latency 100ms
ip netns exec "$B" timeout 12 python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.212.0.2", 9999))
while True: s.recv(2000)' &
ip netns exec "$A" timeout 10 python3 -c 'import socket, time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); t=time.time()
while time.time() - t < 10:
    try: s.sendto(b"x" * 1000, ("10.212.0.2", 9999))
    except OSError: pass
    time.sleep(0.002)' &
sleep 2; run "$A" "$B" 10.212.0.1 5 8 | summary
wait
tc -n "$A" qdisc del dev eth0 root

# Case 6: SYN-ACKs (TCP flags byte, at 33 with a 20-byte IP header, 0x12) go to class 1:20, whose
# fifo holds none while dropping; once the first of a handshake was dropped (the fifo's drop count
# went up), it holds 100 again, and the kernel's second SYN-ACK gets through.
tc -n "$A" qdisc add dev eth0 root handle 1: htb default 10 2>/dev/null
tc -n "$A" class add dev eth0 parent 1: classid 1:10 htb rate 1gbit 2>/dev/null
tc -n "$A" class add dev eth0 parent 1: classid 1:20 htb rate 1gbit 2>/dev/null
tc -n "$A" qdisc add dev eth0 parent 1:20 handle 20: pfifo limit 100
tc -n "$A" filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match u8 0x12 0xff at 33 flowid 1:20
dropped() { tc -n "$A" -s qdisc show dev eth0 parent 1:20 | awk '/dropped/ {gsub(",", ""); print $7}'; }
# drop_first CASE N: N handshakes, one at a time, each with its first SYN-ACK dropped.
drop_first() {
  local ready="$WORK/port.$1" before
  ip netns exec "$A" python3 "$WORK/hs.py" server 10.212.0.1 - "$2" 0 "$ready" > "$WORK/s.$1" &
  local spid=$!
  for _ in $(seq 100); do [ -e "$ready" ] && break; sleep 0.05; done
  : > "$WORK/c.$1"
  for _ in $(seq "$2"); do
    before="$(dropped)"
    tc -n "$A" qdisc change dev eth0 parent 1:20 handle 20: pfifo limit 0
    ip netns exec "$B" python3 "$WORK/hs.py" client 10.212.0.1 "$ready" 1 >> "$WORK/c.$1" &
    local cpid=$!
    for _ in $(seq 100); do [ "$(dropped)" != "$before" ] && break; sleep 0.02; done
    tc -n "$A" qdisc change dev eth0 parent 1:20 handle 20: pfifo limit 100
    wait "$cpid"
  done
  wait "$spid"
  paste -d' ' "$WORK/s.$1" "$WORK/c.$1"
}
echo "6. the first SYN-ACK of each handshake dropped, TCP timestamps on, then off"
drop_first 6 5 | summary
ip netns exec "$A" sysctl -q -w net.ipv4.tcp_timestamps=0
drop_first 7 5 | summary
ip netns exec "$A" sysctl -q -w net.ipv4.tcp_timestamps=1
tc -n "$A" qdisc del dev eth0 root

echo "7. SYN cookies always (tcp_syncookies=2), TCP timestamps on, then off"
ip netns exec "$A" sysctl -q -w net.ipv4.tcp_syncookies=2
run "$A" "$B" 10.212.0.1 8 30 | summary
ip netns exec "$A" sysctl -q -w net.ipv4.tcp_timestamps=0
run "$A" "$B" 10.212.0.1 9 3 | awk '{print "  tcpi_rtt " $1 " us, rttvar " $2 " us, SYN-ACKs sent again " $3}'
