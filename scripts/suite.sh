#!/usr/bin/env bash
# suite.sh: run the whole benchmark suite and draw its charts into results/<date>-<commit>/.
#
#   scripts/suite.sh [--out DIR] [any 'parliament bench' flags...]
#
# Builds the binary from this checkout, runs 'parliament bench' (the default suite: per-site
# latency on the emulated 5-site WAN at 0% and 100% conflict for both protocols, throughput
# vs conflict rate without WAN, latency vs throughput in open loop, and a replica failure
# timeline), then 'parliament plot' on the results, so the charts are made from the
# results files alone. Extra flags go to 'parliament bench' unchanged. The results are
# stamped with machine, CPUs, Go version, commit, command line, seed and start time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	commit="$commit-dirty"
fi
out="results/$(date -u +%Y-%m-%d)-$commit"
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=${2:?--out needs a directory}; shift 2 ;;
	--out=*) out=${1#--out=}; shift ;;
	-h | --help) sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) args+=("$1"); shift ;;
	esac
done

# Everything printed below (tables included) is kept beside the results as summary.txt.
mkdir -p "$out"
exec > >(tee "$out/summary.txt") 2>&1

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
echo "== build"
go build -o "$bin/parliament" ./cmd/parliament

echo "== bench -> $out"
start=$(date +%s)
"$bin/parliament" bench --out "$out" --plot=false "${args[@]+"${args[@]}"}"
echo "== bench took $(($(date +%s) - start)) s"

echo "== plot"
"$bin/parliament" plot "$out"
ls -l "$out"
