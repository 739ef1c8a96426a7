#!/usr/bin/env bash
# upload-mix-sweep.sh — for each K and upload multiple, the smallest share of uploaders (in steps
# of 1%, the rest uploading nothing) at which `shardstream simulate --upload-mix` carries every
# peer (0 evictions). Prints one Markdown table row per (K, upload), with the share just below
# for contrast, and the command of the row. docs/topology.md holds the table it made.
#
#   scripts/upload-mix-sweep.sh [--cli PATH] [--peers N] [--seed S] [--shards "4 8 16"] [--uploads "1.5 2 2.5 3"]
#
# The sweep starts one step below K / floor(upload x K) (the share at which the uploaders'
# budgets just equal what the peers take, one shard-stream per peer and tree) and goes up.
set -euo pipefail

cli=""
peers=1000000
seed=1
shards="4 8 16"
uploads="1.5 2 2.5 3"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cli) cli="$2"; shift 2 ;;
    --peers) peers="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --uploads) uploads="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "upload-mix-sweep.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "$cli" ]]; then
  out="$(mktemp -d /tmp/upload-mix-sweep.XXXXXX)"
  dotnet build "$root/src/ShardStream.Cli" -c Release -o "$out" >/dev/null
  cli="$out/shardstream"
fi

# One simulation; prints "evictions maxdepth meandepth".
simulate() { # K upload share
  local k="$1" u="$2" p="$3" viewers
  viewers="$(echo "1 - $p" | bc -l | sed 's/^\./0./')"
  "$cli" simulate --peers "$peers" --topology striped --shards "$k" --seed "$seed" \
    --upload-mix "0:$viewers,$u:$p" | awk '
      /^evictions/ { gsub(",", "", $2); e = $2 }
      /^max depth per shard/ { m = 0; for (i = 5; i <= NF; i++) if ($i > m) m = $i }
      /^mean depth per shard/ { a = 0; for (i = 5; i <= NF; i++) if ($i > a) a = $i }
      END { print e, m, a }'
}

echo "| K | upload of uploaders | budget | smallest share carrying all ($peers peers) | max / mean depth | share 1% lower: evictions |"
echo "|---|---|---|---|---|---|"
for k in $shards; do
  for u in $uploads; do
    budget="$(echo "$u * $k / 1" | bc)"
    start="$(echo "scale=2; (100 * $k + $budget - 1) / $budget / 100 - 0.01" | bc)"
    p="$start"
    below=""
    while :; do
      read -r e m a < <(simulate "$k" "$u" "$p")
      if [[ "$e" == "0" ]]; then
        break
      fi
      below="$e"
      p="$(echo "$p + 0.01" | bc)"
    done
    if [[ -z "$below" ]]; then
      lower="$(echo "$p - 0.01" | bc)"
      read -r below _ _ < <(simulate "$k" "$u" "$lower")
    fi
    printf '| %s | %sx | %s | %s%% | %s / %s | %s |\n' "$k" "$u" "$budget" "$(echo "$p * 100 / 1" | bc)" "$m" "$a" "$below"
  done
done
echo
echo "command of a row: $cli simulate --peers $peers --topology striped --shards K --seed $seed --upload-mix 0:(1-share),UPLOAD:share"
