#!/usr/bin/env bash
# weir's benchmark harness, in one run on this machine (see BENCHMARKS.md):
#   B0 Apache Kafka's own perf tools, B1/B2 native rdkafka loops (copy, F1
#   degradation), B3 weir (passthrough, F1 degradation plugins; the F1
#   plugin's deduplication state in memory, in a changelog at-least-once and
#   exactly-once), B4 the F1 Kafka demo's Python consumer; keys restored per second
#   from a changelog; latency at 50% of B1's rate; plugin load times;
#   criterion micro-benchmarks of the plugin boundary.
# Results are printed and written into BENCHMARKS.md (between the markers)
# and target/bench/results.json.
#
# Usage: scripts/bench.sh [weir-bench all options, e.g. --messages 200000 --only b1,b3-pass]
# Environment: WEIR_BENCH_SKIP_MICRO=1 skips the criterion benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*" >&2; }

step "build (release)"
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi
cargo build --release --locked -p weir -p weir-bench
scripts/build-plugins.sh >/dev/null

step "Python for B4 (confluent-kafka)"
venv="${WEIR_BENCH_VENV:-$HOME/.cache/weir/bench-venv}"
stamp="$venv/.requirements.sha256"
want=$(sha256sum bench/python/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/python/requirements.txt
  echo "$want" >"$stamp"
fi

if [ "${WEIR_BENCH_SKIP_MICRO:-0}" != 1 ]; then
  step "criterion micro-benchmarks"
  cargo bench --locked -p weir --bench boundary --bench degradation --bench state -- \
    --warm-up-time 1 --measurement-time 3 --noplot 2>&1 | grep -E '^[a-z_]+/|time:|thrpt:' >&2
fi

step "Apache Kafka"
kafka_dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-kafka.XXXXXX")
cleanup() {
  status=$?
  "$root/scripts/kafka.sh" stop "$kafka_dir" >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ] && [ -f "$kafka_dir/kafka.log" ]; then
    tail -n 40 "$kafka_dir/kafka.log" >&2 || true
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM
bootstrap=$(scripts/kafka.sh start "$kafka_dir" | tail -n1)
kafka_version=$(sed -n 's/^readonly KAFKA_VERSION=//p' scripts/kafka.sh)

step "rungs"
target/release/weir-bench all --bootstrap "$bootstrap" --kafka-version "$kafka_version" \
  --python "$venv/bin/python" "$@"
