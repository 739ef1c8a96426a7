#!/usr/bin/env bash
# demo-repeat.sh — runs `shardstream demo` several times in a row and prints, per run, the exit
# code, the wall time, the demo's own verdict line and the 1-minute load average when it started.
# Used for the "10 runs in a row" target of docs/performance.md (failure detection under load).
#
#   scripts/demo-repeat.sh [--runs N] [--cli PATH] [--log-dir DIR] [-- demo options...]
#
# Without --cli it runs `dotnet run --project src/ShardStream.Cli -c Release -- demo ...` as a new
# user would (the first run also builds). Default demo options: --peers 200 --shards 8
# --topology striped --mib 16. A run's stderr and stdout are kept in DIR/run-I.log.
set -uo pipefail

runs=10
cli=""
log_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --cli) cli="$2"; shift 2 ;;
    --log-dir) log_dir="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo-repeat.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
demo_args=("$@")
if [[ ${#demo_args[@]} -eq 0 ]]; then
  demo_args=(--peers 200 --shards 8 --topology striped --mib 16)
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
log_dir="${log_dir:-$(mktemp -d /tmp/demo-repeat.XXXXXX)}"
mkdir -p "$log_dir"
if [[ -z "$cli" ]]; then
  run_demo() { dotnet run --project "$root/src/ShardStream.Cli" -c Release -- demo "${demo_args[@]}"; }
elif [[ "$cli" == *.dll ]]; then
  run_demo() { dotnet "$cli" demo "${demo_args[@]}"; }
else
  run_demo() { "$cli" demo "${demo_args[@]}"; }
fi

echo "demo ${demo_args[*]}; logs in $log_dir"
passed=0
for i in $(seq 1 "$runs"); do
  load="$(cut -d' ' -f1-3 /proc/loadavg)"
  start=$(date +%s.%N)
  run_demo >"$log_dir/run-$i.log" 2>&1
  code=$?
  end=$(date +%s.%N)
  verdict="$(grep -E 'peers identical' "$log_dir/run-$i.log" | tail -1)"
  [[ -n "$verdict" ]] || verdict="$(tail -1 "$log_dir/run-$i.log")"
  printf 'run %2d: exit %d, %6.1f s, load %s: %s\n' "$i" "$code" "$(echo "$end - $start" | bc)" "$load" "$verdict"
  [[ $code -eq 0 ]] && passed=$((passed + 1))
done
echo "$passed of $runs runs passed"
[[ $passed -eq $runs ]]
