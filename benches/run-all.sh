#!/usr/bin/env bash
# Runs every loopd benchmark (release build) and prints their figures, one after the other.
#
#   benches/run-all.sh            # all nine, 30 minutes or more on 2 cores
#   benches/run-all.sh stall_detection api_latency    # some of them
#
# Each bench is a `harness = false` bench target of the root package (see benches/README.md);
# cargo builds loopd in release mode for it. Knobs are LOOPD_BENCH_* environment variables,
# documented at the top of each benches/*.rs file.
set -euo pipefail
cd "$(dirname "$0")/.."
benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
  benches=(attempt_overhead restart_latency stall_detection api_latency scale boot_ledger sse_fanout dashboard lanes)
fi
# Build everything first so that compiling does not run during a measurement.
cargo bench --no-run "${benches[@]/#/--bench=}" >&2
# Every bench's scratch files are removed once all benches are done, not as each one ends: on
# ext4 without a journal, inodes freed in the last minute slow down the next file creations
# (benches/common/mod.rs, `Cleanup`), which would be charged to the next bench's loopd runs.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/loopd-benches-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch" LOOPD_BENCH_KEEP=quiet
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -h | awk '/^Mem:/ {print $2}') RAM"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for b in "${benches[@]}"; do
  echo
  cargo bench --quiet --bench "$b"
done
