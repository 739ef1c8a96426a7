#!/bin/bash
# Late joiner's time to first decoded frame: a live source (-g 30, 1 keyframe/s) into the coordinator,
# a peer started 5 s in, piped into ffmpeg that stops after the first decoded video frame.
FMT=$1; PORT=$2; B=${SHARDSTREAM:-shardstream}
( ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440 -t 9 -c:v libx264 -preset veryfast -tune zerolatency -g 30 -pix_fmt yuv420p -c:a aac -f $FMT - | $B coordinator -l 127.0.0.1:$PORT 2>/dev/null ) &
sleep 5
t0=$(date +%s.%N)
$B peer -c 127.0.0.1:$PORT --upload 0 2>/dev/null | ffmpeg -hide_banner -v error -xerror $PROBE -i - -frames:v 1 -f null - 2>&1
t1=$(date +%s.%N)
echo "$FMT ttff $(echo "$t1 - $t0" | bc) s (load $(cut -d' ' -f1 /proc/loadavg))"
wait
