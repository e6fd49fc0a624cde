#!/usr/bin/env bash
# VNN-COMP: one-time installation. Usage: install_tool.sh v1
# Builds the `lirpa` binary once (release); needs a Rust toolchain (rustup, stable).
set -euo pipefail
if [ "${1:-}" != "v1" ]; then echo "expected the version string 'v1', got '${1:-}'" >&2; exit 1; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
cd "$ROOT"
cargo build --release -p lirpa-cli
"$ROOT/target/release/lirpa" ops >/dev/null
echo "installed $ROOT/target/release/lirpa"
