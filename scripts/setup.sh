#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian packages, and .venv installed exactly from
# locks/main.txt (+ locks/nodeps.txt) with hash checking. Re-running is a no-op when nothing
# changed: the stamp is the hash of this script, the locks and pyproject.toml, so a changed lock
# rebuilds the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
STAMP=.venv/.setup-stamp
WANT=$(cat scripts/setup.sh scripts/uv.sh scripts/llama_wheel.sh scripts/warm_numba.py pyproject.toml locks/main.txt locks/nodeps.txt | sha256sum | cut -d' ' -f1)

# espeak-ng: one of the embedded CPU voices (its C library, driven through ctypes).
if ! ldconfig -p | grep -q libespeak-ng.so.1; then
  echo "[setup] installing Debian espeak-ng"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng libespeak-ng1 >/dev/null
fi

# chromium: the audit report's test opens the HTML in headless Chromium (screenshot, console
# errors, audio loading). --no-install-recommends keeps it to ~400 MB.
if ! command -v chromium >/dev/null; then
  echo "[setup] installing Debian chromium (headless browser for the audit report test)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# ffmpeg: MP3/Opus codec round trips of the augmentation chains (through pydub).
if ! command -v ffmpeg >/dev/null; then
  echo "[setup] installing Debian ffmpeg"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

start=$(date +%s)
echo "[setup] creating .venv from locks/main.txt (first run on a machine compiles llama.cpp: a few minutes)"
. scripts/uv.sh
[ -x .venv/bin/python ] || "$PY" -m venv .venv
rm -f "$STAMP"

# llama-cpp-python: built once per machine from the locked sdist (scripts/llama_wheel.sh).
. scripts/llama_wheel.sh

# Everything else exactly as locked (sync also removes what the lock does not name), then the
# wheel built above, the project itself and the --no-deps packages.
awk '/^llama-cpp-python==/ {skip=1; next} skip && /^ / {next} {skip=0; print}' locks/main.txt > .venv/lock-main.txt
"$UV" pip sync -q --python .venv/bin/python --require-hashes .venv/lock-main.txt
"$UV" pip install -q --python .venv/bin/python --no-deps --no-index \
  --find-links "$LLAMA_WHEELS" "llama-cpp-python==$LLAMA_VERSION"
"$UV" pip install -q --python .venv/bin/python --no-deps --require-hashes -r locks/nodeps.txt
"$UV" pip install -q --python .venv/bin/python --no-deps -e .
.venv/bin/python scripts/check_env.py main
rm -rf .venv/numba-cache  # librosa's numba functions compiled once, for the test processes to copy
.venv/bin/python scripts/warm_numba.py .venv/numba-cache
echo "$WANT" > "$STAMP"
echo "[setup] done in $(( $(date +%s) - start )) s"
