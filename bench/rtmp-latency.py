#!/usr/bin/env python3
"""RTMP start-up and per-hop delay through the overlay (issue 11's targets).

A coordinator with --rtmp and two peers in a chain (every node uploads one stream: coordinator ->
peer 1 -> peer 2), all joined before the publish; the real ffmpeg publishes the issue's synthetic
source with a 1 s keyframe interval. Each peer's stdout (FLV) is parsed tag by tag as it arrives.
Reports, per run: the time from the coordinator's "publishing started" log line to the first
keyframe tag complete on peer 2's stdout (two hops down), and the median and p90 of the delay of
the same tag between peer 1 and peer 2 (one relay hop). Usage: bench/rtmp-latency.py [RUNS] [SECONDS]
Needs a built CLI (dotnet build -c Release src/ShardStream.Cli) and ffmpeg.
"""
import os, re, statistics, subprocess, sys, threading, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(REPO, "src/ShardStream.Cli/bin/Release/net10.0/shardstream.dll")
KEY = "bench-key"


def start(args, **kw):
    return subprocess.Popen(["dotnet", CLI] + args, stdin=subprocess.DEVNULL, **kw)


def read_flv(stream, tags):
    """(timestamp, is_keyframe, arrival) for every complete tag."""
    buf = bytearray()
    header_done = False
    while True:
        data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not data:
            return
        now = time.monotonic()
        buf += data
        if not header_done:
            if len(buf) < 13:
                continue
            del buf[:13]
            header_done = True
        while len(buf) >= 11:
            size = int.from_bytes(buf[1:4], "big")
            if len(buf) < 11 + size + 4:
                break
            ts = int.from_bytes(buf[4:7], "big") | buf[7] << 24
            key = buf[0] == 9 and size > 0 and (buf[11] >> 4) & 7 == 1
            tags.append((buf[0], ts, key, now))
            del buf[:11 + size + 4]


def run(seconds):
    coord = start(["coordinator", "-l", "127.0.0.1:0", "--upload", "1", "--rtmp", "127.0.0.1:0", "--rtmp-key", KEY],
                  stderr=subprocess.PIPE)
    lines = []
    def pump():
        for raw in coord.stderr:
            lines.append((time.monotonic(), raw.decode(errors="replace")))
    threading.Thread(target=pump, daemon=True).start()
    def wait_for(pattern, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(lines):
                m = re.search(pattern, line)
                if m:
                    return t, m
            time.sleep(0.01)
        raise TimeoutError(pattern + "\n" + "".join(l for _, l in lines))
    _, m = wait_for(r"coordinator listening on (\S+?),")
    overlay = m.group(1)
    _, m = wait_for(r"rtmp: listening on (\S+) ")
    rtmp = m.group(1)
    peers, tags = [], []
    for i in (1, 2):
        p = start(["peer", "-c", overlay, "-l", "127.0.0.1:0", "--upload", "1", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        t = []
        threading.Thread(target=read_flv, args=(p.stdout, t), daemon=True).start()
        peers.append(p)
        tags.append(t)
        wait_for(r"peer %d \(.*joined" % i)
    ff = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
                           "-f", "lavfi", "-i", "sine=frequency=440", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
                           "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", str(seconds), "-f", "flv", f"rtmp://{rtmp}/live/{KEY}"])
    ff.wait()
    published, _ = wait_for(r"publishing started")
    time.sleep(2)
    for p in peers + [coord]:
        p.terminate()
    for p in peers + [coord]:
        p.wait()
    first_key = next(t for (_, _, k, t) in tags[1] if k)
    one = {(ty, ts): t for (ty, ts, _, t) in tags[0]}
    hops = [t - one[(ty, ts)] for (ty, ts, _, t) in tags[1] if (ty, ts) in one]
    return first_key - published, hops, len(tags[1])


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    starts, all_hops = [], []
    for i in range(runs):
        start_s, hops, n = run(seconds)
        starts.append(start_s)
        all_hops += hops
        print(f"run {i + 1}: first keyframe at peer 2 (two hops) {start_s * 1000:.0f} ms after publishing started; "
              f"{n} tags; hop peer 1 -> peer 2: median {statistics.median(hops) * 1000:.2f} ms", flush=True)
    q = statistics.quantiles(all_hops, n=10)
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    print(f"publish to first keyframe two hops down: p50 {statistics.median(starts) * 1000:.0f} ms over {runs} runs")
    print(f"one relay hop: p50 {statistics.median(all_hops) * 1000:.2f} ms, p90 {q[8] * 1000:.2f} ms over {len(all_hops)} tags")


if __name__ == "__main__":
    main()
