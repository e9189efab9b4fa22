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
WANT=$(cat scripts/setup.sh scripts/uv.sh pyproject.toml locks/main.txt locks/nodeps.txt | sha256sum | cut -d' ' -f1)

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

# llama-cpp-python ships only as an sdist: build it once per machine into a wheelhouse, from the
# sdist whose hash the lock pins. GGML_NATIVE=OFF: the native build segfaults on this CPU family
# (AMX path) at the first decode.
WHEELS=${DUPLEX_WHEELS_DIR:-$HOME/.cache/duplex-factory/wheels}
LLAMA=$(grep -A1 '^llama-cpp-python==' locks/main.txt | tr -d '\\\n' | tr -s ' ')
LLAMA_VERSION=$(echo "$LLAMA" | sed -E 's/^llama-cpp-python==([^ ]+).*/\1/')
LLAMA_HASH=$(echo "$LLAMA" | sed -E 's/.*--hash=sha256:([0-9a-f]+).*/\1/')
if ! ls "$WHEELS/$LLAMA_HASH"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  mkdir -p "$WHEELS/$LLAMA_HASH"
  echo "llama-cpp-python==$LLAMA_VERSION --hash=sha256:$LLAMA_HASH" > "$WHEELS/$LLAMA_HASH/req.txt"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$UV_HOME/bin/python" -m pip wheel -q --disable-pip-version-check \
    --no-deps --no-binary llama-cpp-python --require-hashes -r "$WHEELS/$LLAMA_HASH/req.txt" \
    -w "$WHEELS/$LLAMA_HASH" 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi

# Everything else exactly as locked (sync also removes what the lock does not name), then the
# wheel built above, the project itself and the --no-deps packages.
awk '/^llama-cpp-python==/ {skip=1; next} skip && /^ / {next} {skip=0; print}' locks/main.txt > .venv/lock-main.txt
"$UV" pip sync -q --python .venv/bin/python --require-hashes .venv/lock-main.txt
"$UV" pip install -q --python .venv/bin/python --no-deps --no-index \
  --find-links "$WHEELS/$LLAMA_HASH" "llama-cpp-python==$LLAMA_VERSION"
"$UV" pip install -q --python .venv/bin/python --no-deps --require-hashes -r locks/nodeps.txt
"$UV" pip install -q --python .venv/bin/python --no-deps -e .
.venv/bin/python scripts/check_env.py main
echo "$WANT" > "$STAMP"
echo "[setup] done in $(( $(date +%s) - start )) s"
