#!/usr/bin/env bash
# Installs the pinned schemathesis (PyPI) into a venv under ~/.cache/weir,
# once: a venv already holding that version is left as it is. Prints the
# path of the `schemathesis` executable, which the fuzz test
# (tests/tests/admin_fuzz.rs) finds by itself or through WEIR_SCHEMATHESIS.
#   scripts/schemathesis.sh          # install if needed, print the path
set -euo pipefail

version=4.32.5
cache="${WEIR_CACHE_DIR:-$HOME/.cache/weir}"
venv="$cache/venv"
exe="$venv/bin/schemathesis"

installed() {
  [ -x "$exe" ] && [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" = "$version" ]
}

if installed; then
  echo "$exe"
  exit 0
fi

python=$(command -v python3 || true)
if [ -z "$python" ]; then
  echo "error: python3 is needed to install schemathesis" >&2
  exit 1
fi

# Debian's python3 ships venv without ensurepip (the python3-venv package);
# without it `python3 -m venv` leaves a venv with no pip.
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing python3-venv with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || {
      echo "error: $python still has no ensurepip after installing python3-venv (is it the system python3?)" >&2
      exit 1
    }
  else
    echo "error: python3 has no ensurepip: install python3-venv (as root: apt-get install -y python3-venv)" >&2
    exit 1
  fi
fi

# A venv with another version (or half-built) is rebuilt from scratch, so
# nothing of an older install lingers.
rm -rf "$venv"
mkdir -p "$cache"
echo "installing schemathesis $version into $venv" >&2
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version" >&2
installed || { echo "error: schemathesis $version did not install into $venv" >&2; exit 1; }
echo "$exe"
