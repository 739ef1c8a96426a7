#!/usr/bin/env python3
"""A late joiner's time to its first decoded video frame (issue 11's target: < 1 s p50 after it starts).

A live 640x360 H.264/AAC source (ffmpeg -re, one keyframe a second) feeds `shardstream coordinator`
on stdin; 5 s in, `shardstream peer --upload 0` starts, its stdout piped into ffmpeg, which prints
one framecrc line per decoded video frame (flushed per packet). Two times per run, from the peer's
start: its first byte on stdout, and ffmpeg's first decoded video frame. Each run is one new stream.

An earlier version timed ffmpeg's exit with `-frames:v 1`: ffmpeg stops the video output after one
frame but keeps decoding the audio until its input ends, so that measured the stream's remaining
length, not the first frame.

Usage: bench/late-join-ttff.py [RUNS] [FORMAT]   FORMAT flv (default) or mpegts
Environment: SHARDSTREAM, the command that runs the CLI (default `shardstream`), e.g.
  SHARDSTREAM="dotnet src/ShardStream.Cli/bin/Release/net10.0/shardstream.dll";
  PLAYER_OPTS, ffmpeg input options of the player, e.g. "-probesize 32" (ffmpeg's MPEG-TS probing
  otherwise reads seconds of a live stream before its first frame)
"""
import os, shlex, statistics, subprocess, sys, threading, time

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
fmt = sys.argv[2] if len(sys.argv) > 2 else "flv"
cli = shlex.split(os.environ.get("SHARDSTREAM", "shardstream"))
player_opts = shlex.split(os.environ.get("PLAYER_OPTS", ""))
port = 19970

def one(port):
    src = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
        "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440", "-t", "12",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-f", fmt, "-"], stdout=subprocess.PIPE)
    coord = subprocess.Popen(cli + ["coordinator", "-l", f"127.0.0.1:{port}", "-q"], stdin=src.stdout,
        stderr=subprocess.DEVNULL)
    src.stdout.close()
    time.sleep(5)
    t0 = time.monotonic()
    peer = subprocess.Popen(cli + ["peer", "-c", f"127.0.0.1:{port}", "--upload", "0", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    play = subprocess.Popen(["ffmpeg", "-hide_banner", "-v", "error"] + player_opts + ["-i", "-", "-map", "0:v",
        "-f", "framecrc", "-flush_packets", "1", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    first_byte = [None]
    def pump():
        while True:
            b = peer.stdout.read1(65536)
            if not b: break
            if first_byte[0] is None: first_byte[0] = time.monotonic() - t0
            try: play.stdin.write(b); play.stdin.flush()
            except BrokenPipeError: break
        try: play.stdin.close()
        except BrokenPipeError: pass
    threading.Thread(target=pump, daemon=True).start()
    first_frame = None
    for line in play.stdout:
        if not line.startswith(b"#"):
            first_frame = time.monotonic() - t0
            break
    for p in (play, peer, coord, src):
        p.kill()
    for p in (play, peer, coord, src):
        p.wait()
    return first_byte[0], first_frame

bytes_t, frames_t = [], []
for i in range(runs):
    b, f = one(port + i)
    print(f"run {i + 1}: first byte {b:.3f} s, first decoded frame {f:.3f} s" if b and f else f"run {i + 1}: failed ({b}, {f})", flush=True)
    if b and f: bytes_t.append(b); frames_t.append(f)
load = open("/proc/loadavg").read().split()[0]
if frames_t:
    print(f"{fmt} {' '.join(player_opts)}: {len(frames_t)} runs, first byte p50 {statistics.median(bytes_t):.3f} s, "
          f"first decoded frame p50 {statistics.median(frames_t):.3f} s (load average {load})")
