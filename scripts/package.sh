#!/usr/bin/env bash
# Builds the packages a user installs, into artifacts/packages/ (docs/install.md):
#   shardstream.VERSION.nupkg      a .NET tool: dotnet tool install -g shardstream --add-source artifacts/packages
#   shardstream-linux-x64          native AOT, one file, no .NET needed (falls back to a self-contained
#                                  single file when native AOT does not build here: it needs clang)
#   shardstream-linux-arm64, shardstream-osx-arm64, shardstream-win-x64.exe
#                                  self-contained, trimmed single files
# Usage: scripts/package.sh [--rids "linux-x64 linux-arm64 osx-arm64 win-x64"] [--no-aot]
set -euo pipefail
cd "$(dirname "$0")/.."
rids="linux-x64 linux-arm64 osx-arm64 win-x64"
aot=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rids) rids="$2"; shift 2 ;;
    --no-aot) aot=0; shift ;;
    *) echo "package.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
out="$(pwd)/artifacts/packages"
work="$(pwd)/artifacts/publish"
rm -rf "$out" "$work"
mkdir -p "$out" "$work"
cli=src/ShardStream.Cli

echo "package: .NET tool" >&2
dotnet pack "$cli" -c Release -o "$out" >&2

single_file() {
  local rid="$1"
  dotnet publish "$cli" -c Release -r "$rid" --self-contained -p:PublishSingleFile=true \
    -p:IncludeNativeLibrariesForSelfExtract=true -p:PublishTrimmed=true -p:DebugType=none \
    -o "$work/$rid" >&2
}

for rid in $rids; do
  exe=shardstream; suffix=""
  case "$rid" in win-*) exe=shardstream.exe; suffix=.exe ;; esac
  if [ "$rid" = linux-x64 ] && [ "$aot" = 1 ] && command -v clang >/dev/null 2>&1 \
     && echo "package: $rid native AOT" >&2 \
     && dotnet publish "$cli" -c Release -r "$rid" -p:PublishAot=true -o "$work/$rid" >&2; then
    :
  else
    echo "package: $rid self-contained single file" >&2
    single_file "$rid"
  fi
  cp "$work/$rid/$exe" "$out/shardstream-$rid$suffix"
done
(cd "$out" && sha256sum -- * > SHA256SUMS)
ls -l "$out" >&2
