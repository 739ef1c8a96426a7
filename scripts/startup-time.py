#!/usr/bin/env python3
"""Time from starting `shardstream peer` to its first Hello byte at the coordinator's address.

Usage: scripts/startup-time.py [--runs N] -- COMMAND...   (COMMAND is the shardstream binary, or
`dotnet path/shardstream.dll`). A plain TCP listener on 127.0.0.1 stands in for the coordinator: it
only records when the first byte of the peer's Hello arrives, then the peer is killed. Prints the
median and the spread over the runs, on stdout.
"""
import socket, statistics, subprocess, sys, time

def main() -> int:
    args = sys.argv[1:]
    runs = 10
    if args[:1] == ["--runs"]:
        runs, args = int(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(30)
    port = listener.getsockname()[1]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        peer = subprocess.Popen(args + ["peer", "-c", f"127.0.0.1:{port}", "-l", "127.0.0.1:0", "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            conn, _ = listener.accept()
            conn.settimeout(30)
            if not conn.recv(1):
                print("the peer closed before sending a Hello", file=sys.stderr)
                return 1
            times.append((time.perf_counter() - start) * 1000)
            conn.close()
        finally:
            peer.kill()
            peer.wait()
    times.sort()
    print(f"{' '.join(args)}: first Hello after {statistics.median(times):.0f} ms median "
          f"(min {times[0]:.0f}, max {times[-1]:.0f}, {runs} runs)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
