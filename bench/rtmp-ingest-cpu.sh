#!/usr/bin/env bash
# Ingest CPU of `shardstream coordinator --rtmp` against nginx-rtmp, same input, same run (issue 11).
# Needs ffmpeg, nginx and libnginx-mod-rtmp (Debian: apt-get install nginx-light libnginx-mod-rtmp),
# and a built CLI: dotnet build -c Release src/ShardStream.Cli
# Usage: bench/rtmp-ingest-cpu.sh [SECONDS] (default 30)
set -euo pipefail
secs=${1:-30}
repo=$(cd "$(dirname "$0")/.." && pwd)
cli="$repo/src/ShardStream.Cli/bin/Release/net10.0/shardstream.dll"
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

# nginx-rtmp: one worker, one player.
cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off; master_process on; worker_processes 1;
pid $dir/nginx.pid; error_log $dir/nginx.err;
events {}
rtmp { server { listen 127.0.0.1:19935; application live { live on; } } }
CONF
nginx -p "$dir" -c "$dir/nginx.conf" & pids+=($!)
sleep 1
worker=$(pgrep -P "$(cat "$dir/nginx.pid")")
( sleep 1; ffmpeg -hide_banner -loglevel error -i rtmp://127.0.0.1:19935/live/k -c copy -f null - ) & pids+=($!)
t0=$(ticks "$worker"); publish rtmp://127.0.0.1:19935/live/k; t1=$(ticks "$worker")
nginx_cpu=$(echo "scale=2; 100 * ($t1 - $t0) / $hz / $secs" | bc)

# shardstream: the coordinator with --rtmp and one peer (the overlay's one viewer). Measured three
# ways in the same run: idle (no publish: the overlay's own heartbeats and timers), fed the same FLV
# on stdin at the same pace (the overlay's cost of the stream), and published over RTMP.
dotnet "$cli" coordinator -l 127.0.0.1:19936 --rtmp 127.0.0.1:19937 --rtmp-key k -q 2>"$dir/coord.err" & coord=$!; pids+=($coord)
sleep 3
dotnet "$cli" peer -c 127.0.0.1:19936 -q > /dev/null 2>"$dir/peer.err" & pids+=($!)
sleep 3
t0=$(ticks "$coord"); sleep "$secs"; t1=$(ticks "$coord")
idle_cpu=$(echo "scale=2; 100 * ($t1 - $t0) / $hz / $secs" | bc)
t0=$(ticks "$coord"); publish rtmp://127.0.0.1:19937/live/k; t1=$(ticks "$coord")
ours_cpu=$(echo "scale=2; 100 * ($t1 - $t0) / $hz / $secs" | bc)
mkfifo "$dir/fifo"
dotnet "$cli" coordinator -l 127.0.0.1:19938 -q < "$dir/fifo" 2>"$dir/coord2.err" & coord2=$!; pids+=($coord2)
exec 7>"$dir/fifo"
sleep 3
dotnet "$cli" peer -c 127.0.0.1:19938 -q > /dev/null 2>"$dir/peer2.err" & pids+=($!)
sleep 3
t0=$(ticks "$coord2"); ffmpeg -hide_banner -loglevel error -re -i "$dir/in.flv" -c copy -f flv - >&7; t1=$(ticks "$coord2")
stdin_cpu=$(echo "scale=2; 100 * ($t1 - $t0) / $hz / $secs" | bc)
exec 7>&-

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nginx-rtmp worker: ${nginx_cpu}% of a core over ${secs} s (one player)"
echo "shardstream coordinator, one peer: idle ${idle_cpu}%, fed the FLV on stdin ${stdin_cpu}%, published over RTMP ${ours_cpu}% of a core over ${secs} s"
echo "RTMP over stdin: $(echo "scale=2; $ours_cpu - $stdin_cpu" | bc) points; whole coordinator against the nginx worker: $(echo "scale=1; $ours_cpu / $nginx_cpu" | bc)x"
