#!/usr/bin/env bash
# VNN-COMP: verify one instance. Usage:
#   run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT_SECONDS
# Writes RESULTS_FILE: `unsat`, `sat` and the counterexample, `unknown` or `timeout`
# (`unknown` also when lirpa cannot handle the model). Always exits 0.
set -uo pipefail
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT_SECONDS" >&2
    exit 1
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ONNX="$3"; VNNLIB="$4"; RESULTS="$5"; TIMEOUT="$6"
rm -f "$RESULTS"
if ! "$ROOT/target/release/lirpa" verify "$ONNX" "$VNNLIB" --timeout "$TIMEOUT" --results "$RESULTS"; then
    echo "lirpa verify failed: answering unknown" >&2
    echo "unknown" > "$RESULTS"
fi
[ -s "$RESULTS" ] || echo "unknown" > "$RESULTS"
exit 0
