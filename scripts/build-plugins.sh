#!/usr/bin/env bash
# Builds every plugin under plugins/ as a wasm component into
# target/wasm32-wasip2/release/, where pipeline.toml expects them.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi

packages=()
for manifest in plugins/*/Cargo.toml; do
  name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n1)
  packages+=(-p "$name")
done
cargo build --release --target wasm32-wasip2 "${packages[@]}"
ls -1 target/wasm32-wasip2/release/*.wasm
