#!/usr/bin/env bash
# Ingest CPU of `shardstream coordinator --rtmp` against nginx-rtmp: same input, same run, same
# seconds (issue 11). One ffmpeg publishes the input once, through its tee muxer, at the same
# time to nginx-rtmp (one worker, one ffmpeg player), to `coordinator --rtmp` (one peer) and, as
# plain FLV through a FIFO, to a coordinator that reads it on stdin (one peer): the three
# processes then see the same bytes at the same moments and the same load of the machine.
# CPU time is utime + stime from /proc/PID/stat over each window (clock ticks), as a share of
# one core over the window's wall time.
#
# Needs ffmpeg, nginx and libnginx-mod-rtmp (Debian: apt-get install nginx-light libnginx-mod-rtmp),
# and a built CLI: dotnet build -c Release src/ShardStream.Cli
# Usage: bench/rtmp-ingest-cpu.sh [SECONDS [ROUNDS]]   (default 20 s, 3 rounds)
# Environment: SHARDSTREAM_CLI (the CLI's dll), SHARDSTREAM_CLI_B (a second build, measured side
# by side with the first over the same windows: before/after a change), WARM (seconds the nodes
# run before the idle windows, and seconds of publishing before the measured ones; default 60
# and 20: a .NET process compiles its hot methods again, optimised, over its first tens of
# seconds, a one-off cost nginx does not have), PORT (first of the ports used, default 19935).
set -euo pipefail
secs=${1:-20}
rounds=${2:-3}
warm=${WARM:-60}
pubwarm=$(( warm < 20 ? warm : 20 ))
port=${PORT:-19935}
repo=$(cd "$(dirname "$0")/.." && pwd)
clis=("${SHARDSTREAM_CLI:-"$repo/src/ShardStream.Cli/bin/Release/net10.0/shardstream.dll"}")
[ -n "${SHARDSTREAM_CLI_B:-}" ] && clis+=("$SHARDSTREAM_CLI_B")
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)
listening() { for _ in $(seq 600); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing listens on port $1" >&2; exit 1; }

echo "input: 20 s of 1080p30 H.264 at 6 Mbit/s + AAC (encoded once, published in a loop)" >&2
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi -i sine=frequency=440 \
  -c:v libx264 -preset ultrafast -b:v 6M -maxrate 6M -bufsize 12M -g 30 -pix_fmt yuv420p -c:a aac -t 20 -f flv "$dir/in.flv"

# nginx-rtmp: one worker, one player.
cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off; master_process on; worker_processes 1;
pid $dir/nginx.pid; error_log $dir/nginx.err;
events {}
rtmp { server { listen 127.0.0.1:$port; application live { live on; } } }
CONF
nginx -p "$dir" -c "$dir/nginx.conf" & pids+=($!)
listening "$port"
for _ in $(seq 100); do [ -s "$dir/nginx.pid" ] && break; sleep 0.1; done
names=(nginx); procs=($(pgrep -P "$(cat "$dir/nginx.pid")"))
ffmpeg -hide_banner -loglevel fatal -i "rtmp://127.0.0.1:$port/live/k" -c copy -f null - & pids+=($!)
outputs=("[f=flv:onfail=ignore]rtmp://127.0.0.1:$port/live/k")

# Per build: a coordinator with --rtmp and one peer, and a coordinator reading stdin and one peer.
p=$port
for i in "${!clis[@]}"; do
  cli=${clis[$i]}; tag=$([ "$i" = 0 ] && echo "" || echo " B")
  p=$((p + 1)); rtmp=$((p + 1))
  dotnet "$cli" coordinator -l "127.0.0.1:$p" --rtmp "127.0.0.1:$rtmp" --rtmp-key k -q 2>"$dir/coord$i.err" & pids+=($!)
  names+=("rtmp$tag"); procs+=($!)
  listening "$p"; listening "$rtmp"
  dotnet "$cli" peer -c "127.0.0.1:$p" -q > /dev/null 2>"$dir/peer$i.err" & pids+=($!)
  outputs+=("[f=flv:onfail=ignore]rtmp://127.0.0.1:$rtmp/live/k")
  p=$((rtmp + 1))
  mkfifo "$dir/fifo$i"
  dotnet "$cli" coordinator -l "127.0.0.1:$p" -q < "$dir/fifo$i" 2>"$dir/coord-stdin$i.err" & pids+=($!)
  names+=("stdin$tag"); procs+=($!)
  exec {fd}>"$dir/fifo$i"   # held open: the coordinator's stdin does not end between writers
  listening "$p"
  dotnet "$cli" peer -c "127.0.0.1:$p" -q > /dev/null 2>"$dir/peer-stdin$i.err" & pids+=($!)
  outputs+=("[f=flv:onfail=ignore]$dir/fifo$i")
done

# calc EXPR DIGITS: EXPR by bc, printed with DIGITS decimals and a leading zero (bc alone prints ".39").
calc() { LC_ALL=C printf "%.${2}f" "$(echo "scale=6; $1" | bc)"; }

# window LABEL CMD...: runs CMD, prints each process's CPU over it (% of one core) and adds its ticks to the totals.
declare -A total
wall_idle=0; wall_pub=0
window() {
  local label=$1 t0=() t1=() s0 s1 line=""; shift
  for q in "${procs[@]}"; do t0+=($(ticks "$q")); done; s0=$(date +%s.%N)
  "$@"
  for q in "${procs[@]}"; do t1+=($(ticks "$q")); done; s1=$(date +%s.%N)
  local wall; wall=$(echo "$s1 - $s0" | bc)
  for j in "${!procs[@]}"; do
    local d=$(( t1[j] - t0[j] ))
    total[$label,$j]=$(( ${total[$label,$j]:-0} + d ))
    line+=" ${names[$j]} $(calc "100 * $d / $hz / $wall" 2)%"
  done
  echo "$label (${wall%.*} s, load $(cut -d' ' -f1 /proc/loadavg)):$line"
  if [ "$label" = idle ]; then wall_idle=$(echo "$wall_idle + $wall" | bc); else wall_pub=$(echo "$wall_pub + $wall" | bc); fi
}

sleep "$warm"   # the nodes' start, the peers' joins and the JIT's second compiles are not the idle cost
for _ in $(seq "$rounds"); do window idle sleep "$secs"; done
tee=$(IFS='|'; echo "${outputs[*]}")
ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$dir/in.flv" -t $((pubwarm + rounds * secs + 5)) -map 0 -c copy -f tee "$tee" & feed=$!; pids+=($feed)
sleep "$pubwarm"
for _ in $(seq "$rounds"); do window publish sleep "$secs"; done
kill -0 "$feed" 2>/dev/null || { echo "the publish ended early: the figures above are not all of a publish" >&2; exit 1; }

echo "over all rounds (${rounds} x ${secs} s; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)):"
for j in "${!procs[@]}"; do
  idle=$(calc "100 * ${total[idle,$j]} / $hz / $wall_idle" 2)
  pub=$(calc "100 * ${total[publish,$j]} / $hz / $wall_pub" 2)
  echo "  ${names[$j]}: idle ${idle}%, publishing ${pub}% of a core (${total[publish,$j]} ticks)"
done
nginx_ticks=${total[publish,0]}
for j in "${!procs[@]}"; do
  [ "$j" = 0 ] && continue
  if [ "$nginx_ticks" -gt 0 ]; then echo "  ${names[$j]} against the nginx worker while publishing: $(calc "${total[publish,$j]} / $nginx_ticks" 1)x"; fi
done
