#!/usr/bin/env bash
# Ingest CPU of `shardstream coordinator --rtmp` against nginx-rtmp, same input, same run (issue 11).
# Needs ffmpeg, nginx and libnginx-mod-rtmp (Debian: apt-get install nginx-light libnginx-mod-rtmp),
# and a built CLI: dotnet build -c Release src/ShardStream.Cli
# Usage: bench/rtmp-ingest-cpu.sh [SECONDS] (default 30)
set -euo pipefail
secs=${1:-30}
repo=$(cd "$(dirname "$0")/.." && pwd)
cli=${SHARDSTREAM_CLI:-"$repo/src/ShardStream.Cli/bin/Release/net10.0/shardstream.dll"}
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)

echo "input: ${secs} s of 1080p30 H.264 at 6 Mbit/s + AAC (encoded once)" >&2
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi -i sine=frequency=440 \
  -c:v libx264 -preset ultrafast -b:v 6M -maxrate 6M -bufsize 12M -g 30 -pix_fmt yuv420p -c:a aac -t "$secs" -f flv "$dir/in.flv"
publish() { ffmpeg -hide_banner -loglevel error -re -i "$dir/in.flv" -c copy -f flv "$1"; }
# Before each measured publish, a 5 s one to the same server: the .NET side's one-off JIT of the
# publish path is then not in the figure (nginx has none), and the figures are the steady cost.
warmup() { ffmpeg -hide_banner -loglevel error -re -i "$dir/in.flv" -t 5 -c copy -f flv "$1"; }
# cpu PID CMD...: runs CMD, prints PID's CPU time over it as a percentage of one core (wall time measured).
cpu() { local p=$1 t0 t1 s0 s1; shift; t0=$(ticks "$p"); s0=$(date +%s.%N); "$@"; t1=$(ticks "$p"); s1=$(date +%s.%N); echo "scale=2; 100 * ($t1 - $t0) / $hz / ($s1 - $s0)" | bc; }
gone() { while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }   # waits for a process that is not a child
listening() { for _ in $(seq 600); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing listens on port $1" >&2; exit 1; }

# nginx-rtmp: one worker, one player.
cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off; master_process on; worker_processes 1;
pid $dir/nginx.pid; error_log $dir/nginx.err;
events {}
rtmp { server { listen 127.0.0.1:19935; application live { live on; } } }
CONF
nginx -p "$dir" -c "$dir/nginx.conf" & pids+=($!)
listening 19935
worker=$(pgrep -P "$(cat "$dir/nginx.pid")")
( sleep 1; ffmpeg -hide_banner -loglevel fatal -i rtmp://127.0.0.1:19935/live/k -c copy -f null - ) & pids+=($!)   # fatal: the republish after the warm-up restarts its timestamps
warmup rtmp://127.0.0.1:19935/live/k
nginx_cpu=$(cpu "$worker" publish rtmp://127.0.0.1:19935/live/k)

# shardstream: the coordinator with --rtmp and one peer (the overlay's one viewer). Measured three
# ways in the same run: idle (no publish: the overlay's own heartbeats and timers), fed the same FLV
# on stdin at the same pace (the overlay's cost of the stream), and published over RTMP.
dotnet "$cli" coordinator -l 127.0.0.1:19936 --rtmp 127.0.0.1:19937 --rtmp-key k -q 2>"$dir/coord.err" & coord=$!; pids+=($coord)
listening 19936; listening 19937
dotnet "$cli" peer -c 127.0.0.1:19936 -q > /dev/null 2>"$dir/peer.err" & pids+=($!)
sleep 10   # the peer's start and join are not the coordinator's idle cost
idle_cpu=$(cpu "$coord" sleep "$secs")
warmup rtmp://127.0.0.1:19937/live/k
ours_cpu=$(cpu "$coord" publish rtmp://127.0.0.1:19937/live/k)
mkfifo "$dir/fifo"
dotnet "$cli" coordinator -l 127.0.0.1:19938 -q < "$dir/fifo" 2>"$dir/coord2.err" & coord2=$!; pids+=($coord2)
exec 7>"$dir/fifo"
listening 19938
dotnet "$cli" peer -c 127.0.0.1:19938 -q > /dev/null 2>"$dir/peer2.err" & pids+=($!)
sleep 10
# One FLV stream (a second file header would not be FLV any more): 5 s of warm-up, then the
# measured $secs s, from the same ffmpeg run looping the input.
ffmpeg -hide_banner -loglevel error -re -stream_loop 1 -i "$dir/in.flv" -t $((secs + 5)) -c copy -f flv - >&7 & feed=$!
sleep 5
stdin_cpu=$(cpu "$coord2" gone "$feed")
exec 7>&-

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nginx-rtmp worker: ${nginx_cpu}% of a core over ${secs} s (one player)"
echo "shardstream coordinator, one peer: idle ${idle_cpu}%, fed the FLV on stdin ${stdin_cpu}%, published over RTMP ${ours_cpu}% of a core over ${secs} s"
echo "RTMP over stdin: $(echo "scale=2; $ours_cpu - $stdin_cpu" | bc) points; whole coordinator against the nginx worker: $(echo "scale=1; $ours_cpu / $nginx_cpu" | bc)x"
