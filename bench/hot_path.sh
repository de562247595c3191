#!/usr/bin/env bash
# Runs the criterion micro-benchmarks (benches/hot_path.rs) and writes their medians to
# bench/results/hot_path.md, which bench/run.sh includes in BENCHMARKS.md.
#
#   bench/hot_path.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
log=$(mktemp /tmp/sms-hot-path.XXXXXX)
trap 'rm -f "$log"' EXIT
cargo bench --locked --bench hot_path 2>&1 | tee "$log"
{
  echo "## Micro-benchmarks of the hot path"
  echo
  echo "\`cargo bench --bench hot_path\` (criterion, 1 s per benchmark) on $(date -u '+%Y-%m-%d %H:%M UTC'):"
  echo "the estimate and its confidence interval, one pipeline stage at a time, warm caches."
  echo
  echo "| stage | time | interval |"
  echo "|---|---|---|"
  # criterion prints the name (alone on its line when long), then "time: [low est high]".
  awk '
    /^[a-z]+\/[^:]*$/ && !/^Benchmarking/ { name = $0; sub(/ +$/, "", name); next }
    /time:/ {
      line = $0
      if (line !~ /^ /) { name = line; sub(/ +time:.*/, "", name) }
      sub(/.*time: +\[/, "", line); sub(/\].*/, "", line)
      split(line, v, " ")
      printf "| %s | %s %s | %s %s – %s %s |\n", name, v[3], v[4], v[1], v[2], v[5], v[6]
    }' "$log"
} >bench/results/hot_path.md
echo "wrote bench/results/hot_path.md"
