#!/usr/bin/env bash
# The first command: builds the plugins and weir, then runs pipeline.toml.
# With nothing configured it uses the embedded development broker.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins.sh >/dev/null
exec cargo run --release -p weir -- run "${1:-pipeline.toml}"
