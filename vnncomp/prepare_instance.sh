#!/usr/bin/env bash
# VNN-COMP: per-instance preparation (no analysis). Usage:
#   prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Nothing to convert: lirpa reads .onnx and .vnnlib directly. Fails (non-zero) when
# the binary is missing or an input file does not exist.
set -euo pipefail
if [ "$#" -ne 4 ] || [ "$1" != "v1" ]; then echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2; exit 1; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -x "$ROOT/target/release/lirpa" ] || { echo "run install_tool.sh first" >&2; exit 1; }
[ -f "$3" ] || { echo "$3: no such file" >&2; exit 1; }
[ -f "$4" ] || { echo "$4: no such file" >&2; exit 1; }
exit 0
