#!/usr/bin/env python3
# netns-unequal.py: the real CLI on unequal links (docs/resilience.md, "Slow viewers"). A router
# namespace and one namespace per node (host 1 the coordinator, hosts 2.. the viewers, joined in
# that order, each once the one before has joined), each on its own veth and subnet
# 10.241.H.0/24 (--net), routed; links made unequal with tc tbf (netem is not used). A paced source of
# /dev/urandom bytes of known sha256 (RATE bytes/s in 1/16 s pieces) starts once
# every viewer has joined. Prints, per viewer: exit code, bytes, sha256 against the source, when
# it completed, its largest lag per 5 s (when its output file had N bytes, minus when the source
# wrote byte N) and its rate per 5 s. Logs (default level) in OUT/*.err. Every namespace is
# named after this run and deleted on exit, whatever the outcome.
#
# usage (as root): scripts/netns-unequal.py OUT --viewers N --shards K [--topology T]
#        [--rate B/s] [--seconds S] [--cli shardstream.dll] [--coord-upload X]
#        [--in H=RATE]...  cap host H's download (tbf on the router's veth toward it)
#        [--out H=RATE]... cap host H's upload (tbf on its own eth0)
#        [--change T:H:in|out:RATE]... tc qdisc change at T s into the stream
#        [--net A.B]  the /16 to use (default 10.241)
#        [--sigterm S]  SIGTERM to the coordinator S seconds after the source closed
#        [--burst S]  write S seconds of stream at once at the start (a source with data buffered), then the live pace
import argparse, atexit, hashlib, json, math, os, re, signal, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("out"); ap.add_argument("--viewers", type=int, default=8)
ap.add_argument("--shards", type=int, default=1); ap.add_argument("--topology")
ap.add_argument("--rate", type=int, default=250000); ap.add_argument("--seconds", type=int, default=40)
ap.add_argument("--in", dest="cin", action="append", default=[])
ap.add_argument("--out", dest="cout", action="append", default=[])
ap.add_argument("--change", action="append", default=[])
ap.add_argument("--coord-upload")
ap.add_argument("--cli", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src/ShardStream.Cli/bin/Release/net10.0/shardstream.dll"))
ap.add_argument("--verbose", action="store_true")
ap.add_argument("--drain", type=int, default=70)
ap.add_argument("--net", default="10.241", help="the /16 the namespaces' subnets are cut from (A.B)")
ap.add_argument("--sigterm", type=float, help="SIGTERM to the coordinator this many seconds after the source closed")
ap.add_argument("--burst", type=float, default=0, help="seconds of stream written at once at the start, then the live pace")
a = ap.parse_args()
D = a.out; os.makedirs(D, exist_ok=True)
P = f"ssun{os.getpid()}"; R = f"{P}-r"; N = a.viewers + 1  # host 1 = coordinator
hosts = [f"{P}-h{i}" for i in range(1, N + 1)]
procs = []

def report(D):
    r = json.load(open(f"{D}/res.json"))
    rate, secs, size = r["rate"], r["seconds"], r["size"]; piece = rate // 16
    burst = r.get("burst", 0)
    def srct(s): return max(0, math.ceil(s / piece) - 1 - burst) / 16
    W = 5
    for e in r["events"]: print(f"  {e[0]:6.1f} s  {e[1][:230]}")
    print(f"source {size} B over {secs} s ({rate*8/1e6:.2f} Mbit/s), coordinator rc {r['coord_rc']}")
    for h, v in sorted(r["viewers"].items(), key=lambda x: int(x[0])):
        sz = v["sizes"]; lag = {}; rt = {}
        done = next((t for t, s in sz if s >= size), None)
        for t, s in sz:
            w = int(t // W)
            if s < size: lag[w] = max(lag.get(w, 0), t - srct(s))
        prev = {}
        for t, s in sz:
            w = int(t // W); prev.setdefault(w, (t, s)); rt[w] = (prev[w], (t, s))
        rates = []
        for w in sorted(rt):
            (ta, sa), (tb, sb) = rt[w]
            rates.append(f"{(sb-sa)*8/1e6/max(tb-ta,1e-3):.1f}" if w * W < secs + 5 else "")
        lags = " ".join(f"{lag.get(w, 0):.1f}" for w in range(0, int(secs // W) + 1))
        err = [l.strip() for l in open(f"{D}/v{h}.err", errors="replace") if "shardstream: error" in l][-1:]
        print(f"h{h}: rc {v['rc']} bytes {v['bytes']} sha {'OK' if v['sha_ok'] else ('prefix' if v['prefix_ok'] else 'WRONG')}"
              f" done {('%.1f s' % done) if done else '-'}; lag/5s: {lags}; Mbit/s/5s: {' '.join(x for x in rates if x)}" + (f"; {err[0][:160]}" if err else ""))

def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode: raise SystemExit(f"failed: {cmd}: {r.stderr}")
    return r.stdout

def cleanup():
    for p in procs:
        try: os.killpg(p.pid, signal.SIGKILL)
        except Exception: pass
    for n in hosts + [R]:
        for pid in sh(f"ip netns pids {n} 2>/dev/null", False).split():
            try: os.kill(int(pid), signal.SIGKILL)
            except Exception: pass
        sh(f"ip netns del {n} 2>/dev/null", False)
atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3)); signal.signal(signal.SIGINT, lambda *_: sys.exit(3))

sh(f"ip netns add {R}; ip -n {R} link set lo up; ip netns exec {R} sysctl -qw net.ipv4.ip_forward=1")
for i, n in enumerate(hosts, 1):
    sh(f"ip netns add {n}; ip -n {n} link set lo up; ip -n {R} link add vh{i} type veth peer name eth0 netns {n};"
       f"ip -n {R} addr add {a.net}.{i}.1/24 dev vh{i}; ip -n {R} link set vh{i} up;"
       f"ip -n {n} addr add {a.net}.{i}.2/24 dev eth0; ip -n {n} link set eth0 up;"
       f"ip -n {n} route add {a.net}.0.0/16 via {a.net}.{i}.1")
def dev(h, d): return (f"ip netns exec {R} tc qdisc %s dev vh{h} root" if d == "in" else f"ip netns exec {hosts[h-1]} tc qdisc %s dev eth0 root")
TBF = "tbf rate {} burst 16kb latency 200ms"
caps = {}
for d, lst in (("in", a.cin), ("out", a.cout)):
    for s in lst:
        h, r = s.split("="); sh((dev(int(h), d) % "add") + " " + TBF.format(r)); caps[(int(h), d)] = r
changes = []
for c in a.change:
    t, h, d, r = c.split(":"); h = int(h)
    if (h, d) not in caps: sh((dev(h, d) % "add") + " " + TBF.format("10gbit")); caps[(h, d)] = "10gbit"
    changes.append((float(t), h, d, r))
changes.sort()

size = a.rate * a.seconds
src = f"{D}/src.bin"
with open(src, "wb") as f, open("/dev/urandom", "rb") as u: f.write(u.read(size))
sha = hashlib.sha256(open(src, "rb").read()).hexdigest()

cli = f"dotnet {a.cli}"
v = " -v" if a.verbose else ""
J = f"{a.net}.1.2:1234"
copts = f"-s {a.shards}" + (f" --topology {a.topology}" if a.topology else "") + (f" --upload {a.coord_upload}" if a.coord_upload else "")
coord = subprocess.Popen(f"ip netns exec {hosts[0]} {cli} coordinator -l 0.0.0.0:1234 {copts} --min-peers {a.viewers} --http 0.0.0.0:9000{v} > {D}/coord.out 2> {D}/coord.err",
                         shell=True, stdin=subprocess.PIPE, start_new_session=True)
procs.append(coord)
def wait_for(path, pat, secs=60):
    end = time.time() + secs
    while time.time() < end:
        try:
            if re.search(pat, open(path, errors="replace").read()): return True
        except FileNotFoundError: pass
        time.sleep(0.1)
    raise SystemExit(f"no '{pat}' in {path} within {secs} s")
wait_for(f"{D}/coord.err", "listening on")
viewers = []
for h in range(2, N + 1):
    p = subprocess.Popen(f"ip netns exec {hosts[h-1]} {cli} peer -c {J} -l 0.0.0.0:1235{v} > {D}/v{h}.out 2> {D}/v{h}.err",
                         shell=True, start_new_session=True)
    procs.append(p); viewers.append((h, p))
    wait_for(f"{D}/v{h}.err", "joined as peer")
wait_for(f"{D}/coord.err", r"\[1653\]")
# The source: paced pieces of 1/16 s by the wall clock.
piece = a.rate // 16
data = open(src, "rb").read()
burst = int(a.burst * 16); termed = False; closed_at = 0
t0 = time.time(); sizes = {h: [] for h, _ in viewers}; off = 0; i = 0; ci = 0
lastpoll = 0; fd = coord.stdin
os.set_blocking(fd.fileno(), True)
events = []
while off < size or any(p.poll() is None for _, p in viewers):
    now = time.time()
    while ci < len(changes) and now - t0 >= changes[ci][0]:
        t, h, d, r = changes[ci]; sh((dev(h, d) % "change") + " " + TBF.format(r)); events.append((now - t0, f"tbf {d} of h{h} -> {r}")); ci += 1
    # --burst: the first BURST seconds' pieces are due at once, then one every 1/16 s.
    if off < size and now >= t0 + max(0, i - burst) / 16:
        b = data[off:off + piece]; fd.write(b); fd.flush(); off += len(b); i += 1
        if off >= size: fd.close(); closed_at = time.time(); events.append((closed_at - t0, "source closed"))
        continue
    if a.sigterm is not None and off >= size and not termed and now - closed_at >= a.sigterm:
        os.killpg(coord.pid, signal.SIGTERM); termed = True; events.append((now - t0, "SIGTERM to the coordinator"))
    if now - lastpoll >= 0.25:
        lastpoll = now
        for h, _ in viewers:
            try: sizes[h].append((now - t0, os.path.getsize(f"{D}/v{h}.out")))
            except FileNotFoundError: pass
    if off >= size and now - t0 > a.seconds + a.drain: events.append((now - t0, "drain limit: killing")); break
    time.sleep(0.01)
coord.wait(timeout=30) if coord.poll() is None else None
for h in range(1, N + 1):
    for d in ("in", "out"):
        if (h, d) in caps: events.append((time.time() - t0, f"tbf {d} h{h}: " + " ".join(sh((dev(h, d) % "show").replace("qdisc show", "-s qdisc show").replace(" root", ""), False).split())))
res = {"t0": t0, "burst": burst, "rate": a.rate, "seconds": a.seconds, "sha": sha, "size": size, "events": events, "viewers": {}}
for h, p in viewers:
    out = f"{D}/v{h}.out"; b = open(out, "rb").read()
    res["viewers"][h] = {"rc": p.poll(), "bytes": len(b), "sha_ok": hashlib.sha256(b).hexdigest() == sha,
                         "prefix_ok": data[:len(b)] == b, "sizes": sizes[h]}
res["coord_rc"] = coord.poll()
json.dump(res, open(f"{D}/res.json", "w"))
report(D)
