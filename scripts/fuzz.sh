#!/usr/bin/env bash
# fuzz.sh — a bounded coverage-guided fuzz run of the frame decoder: SharpFuzz instruments
# ShardStream.Core.dll for afl++, and afl-fuzz mutates the committed seed corpus
# (tests/ShardStream.Fuzz/corpus) for a fixed time. Each input goes through
# tests/ShardStream.Fuzz/FrameRoundTrip.cs: FrameCodec.TryReadFrame, every message's TryRead, and a
# decode → encode → decode round trip. A crash (any exception but ProtocolException, or a round trip
# that differs) or a hang fails the run; the inputs are printed in hex with the exception and kept
# in the folder given by --keep. docs/fuzzing.md explains it.
#
# Needs: afl-fuzz (Debian: afl++), the .NET SDK; the sharpfuzz tool comes from .config/dotnet-tools.json.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_RUN=60 KEEP="" TIMEOUT_MS=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_RUN="$2"; shift 2 ;;
    --keep) KEEP="$2"; shift 2 ;;
    -h|--help) echo "usage: scripts/fuzz.sh [--seconds S (default 60)] [--keep DIR (findings kept there)]"; exit 0 ;;
    *) echo "fuzz: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v afl-fuzz >/dev/null 2>&1 || { echo "fuzz: afl-fuzz not found (apt-get install afl++)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/shardstream-fuzz.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

dotnet tool restore >&2
# A build of its own: instrumenting rewrites ShardStream.Core.dll in place.
dotnet build tests/ShardStream.Fuzz -c Release -o "$WORK/bin" -nologo -v q >&2
# Replays run on a copy left uninstrumented (instrumented code writes to afl's shared memory).
cp -r "$WORK/bin" "$WORK/plain"
dotnet tool run sharpfuzz "$WORK/bin/ShardStream.Core.dll" >&2

# The seeds must pass the check before any mutation: a bug in a valid frame is found here.
dotnet "$WORK/plain/ShardStream.Fuzz.dll" replay tests/ShardStream.Fuzz/corpus >&2

echo "fuzz: afl-fuzz for $SECONDS_RUN s over $(ls tests/ShardStream.Fuzz/corpus | wc -l) seeds" >&2
# The target is `dotnet`, which afl cannot see instrumented (SharpFuzz reports the coverage of
# ShardStream.Core.dll itself): skip that check. No UI, no CPU binding (the machine is shared),
# and no need for a core_pattern: crashes are .NET exceptions that SharpFuzz reports.
set +e
AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  afl-fuzz -i tests/ShardStream.Fuzz/corpus -o "$WORK/findings" -V "$SECONDS_RUN" -t "$TIMEOUT_MS" -m none \
  -- dotnet "$WORK/bin/ShardStream.Fuzz.dll" > "$WORK/afl.log" 2>&1
status=$?
set -e
out="$WORK/findings/default"
if [ ! -f "$out/fuzzer_stats" ]; then
  tail -n 40 "$WORK/afl.log" >&2
  echo "fuzz: afl-fuzz did not run (exit $status)" >&2
  exit 1
fi
stat() { sed -n "s/^$1 *: *//p" "$out/fuzzer_stats"; }
echo "fuzz: $(stat execs_done) inputs in $(stat run_time) s ($(stat execs_per_sec) a second), $(stat corpus_count) in the queue, coverage $(stat bitmap_cvg), $(stat saved_crashes) crashes, $(stat saved_hangs) hangs" >&2
[ -n "$KEEP" ] && { mkdir -p "$KEEP"; cp -r "$out/." "$KEEP/"; }

found=0
for f in "$out"/crashes/id* "$out"/hangs/id*; do
  [ -e "$f" ] || continue
  found=$((found + 1))
done
if [ "$found" -gt 0 ]; then
  echo "fuzz: FAILED: $found input(s) crashed or hung the decoder; each one replayed:" >&2
  dotnet "$WORK/plain/ShardStream.Fuzz.dll" replay "$out/crashes" "$out/hangs" >&2 || true
  exit 1
fi
if [ "$status" != 0 ]; then
  tail -n 20 "$WORK/afl.log" >&2
  echo "fuzz: afl-fuzz exited with $status" >&2
  exit 1
fi
echo "fuzz: ok, no crash and no hang" >&2
