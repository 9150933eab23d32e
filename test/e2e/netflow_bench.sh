#!/usr/bin/env bash
# Packet-detection benchmark report (called by `make bench`): builds the
# ~1M-packet reference capture under .cache/bench (once), measures
# `vigil-agent scan` against ndpiReader and tcpdump, decode + features alone,
# the IPC share and RSS, and prints a Markdown section for docs/benchmarks.md
# (also written to .cache/bench/netflow-report.md).
# Env: VIGIL_BIN (built binaries, default ./bin), VIGIL_SHARED_DATA,
# ONNXRUNTIME_LIB, VIGIL_BENCH_PACKETS (default 1000000), VIGIL_BENCH_ROUNDS (default 15).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mkdir -p .cache/bench
export VIGIL_E2E=1 VIGIL_BENCH=1
# As `make`: netflow/v1 with its SIMD window updates (see the Makefile).
export GOEXPERIMENT="${GOEXPERIMENT-simd}"
export VIGIL_BIN="${VIGIL_BIN:-$root/bin}"
export VIGIL_SHARED_DATA="${VIGIL_SHARED_DATA:-$root/../shared/data}"
export VIGIL_BENCH_OUT="$root/.cache/bench/netflow-report.md"
go test -count=1 -timeout 30m -run '^TestNetflowBenchReport$' -v ./test/e2e >/dev/null
cat "$VIGIL_BENCH_OUT"
