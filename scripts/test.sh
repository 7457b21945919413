#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
#   1. installs the wasm target the plugins need,
#   2. checks formatting and lints,
#   3. installs the pinned schemathesis (PyPI) into ~/.cache/weir/venv for
#      the admin API's fuzz test (cached after the first run),
#   4. starts a real single-node Apache Kafka (KRaft, loopback) from jars
#      fetched with Maven (cached after the first run),
#   5. builds the `weir` binary (WEIR_TEST_BIN) for the tests that run it as
#      a child process,
#   6. runs `cargo test --workspace --no-fail-fast` against it (build.rs builds the plugins),
#      then the admin API's tests in a build without the scenarios feature,
#   7. stops the broker, on failure too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*" >&2; }

# A one-shot build gains nothing from incremental caches, and for the
# workspace's own crates they take gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target_dir"
disk_report() {
  echo "disk: $(df -Ph "$target_dir" | awk 'NR==2 {print $4 " free of " $2}'); target: $(du -sh "$target_dir" 2>/dev/null | cut -f1)" >&2
}

step "toolchain"
disk_report
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required to run Apache Kafka" >&2; exit 1; }
done

if [ "${WEIR_SKIP_LINT:-0}" != 1 ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  step "cargo clippy, weir without the scenarios feature"
  cargo clippy -p weir -p weir-admin --no-default-features --all-targets --locked -- -D warnings
fi

step "schemathesis"
WEIR_SCHEMATHESIS=$("$root/scripts/schemathesis.sh")
export WEIR_SCHEMATHESIS
echo "schemathesis at $WEIR_SCHEMATHESIS" >&2

step "Apache Kafka"
kafka_dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-kafka.XXXXXX")
cleanup() {
  status=$?
  "$root/scripts/kafka.sh" stop "$kafka_dir" >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then disk_report; fi
  if [ "$status" -ne 0 ] && [ -f "$kafka_dir/kafka.log" ]; then
    echo "--- last lines of the broker log ($kafka_dir/kafka.log) ---" >&2
    tail -n 40 "$kafka_dir/kafka.log" >&2 || true
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM
bootstrap=$("$root/scripts/kafka.sh" start "$kafka_dir" | tail -n1)
echo "broker at $bootstrap" >&2
# The broker-pause test freezes the broker's JVM by its pid.
export WEIR_TEST_KAFKA_PID="$(cat "$kafka_dir/pid")"

step "weir binary"
# The durable-state tests run weir as child processes (to SIGKILL them):
# the binary of the same profile as the tests, found through WEIR_TEST_BIN.
profile=debug
for arg in "$@"; do [ "$arg" = --release ] && profile=release; done
if [ "$profile" = release ]; then
  cargo build -p weir --bin weir --locked --release
else
  cargo build -p weir --bin weir --locked
fi
WEIR_TEST_BIN="$target_dir/$profile/weir"
export WEIR_TEST_BIN
echo "weir binary at $WEIR_TEST_BIN" >&2

step "cargo test --workspace"
# --no-fail-fast: one failing suite does not hide how the others fare.
status=0
WEIR_TEST_KAFKA_BOOTSTRAP="$bootstrap" cargo test --workspace --locked --no-fail-fast "$@" || status=$?
step "the admin API without the scenarios feature"
# Only weir-admin is built again: its routes and served document without
# run control.
cargo test -p weir-admin --no-default-features --locked "$@" || status=$?
[ "$status" -eq 0 ] || exit "$status"
disk_report
