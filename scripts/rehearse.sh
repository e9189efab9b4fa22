#!/usr/bin/env bash
# Rehearse a fresh machine (`make rehearse`): copy this working tree to a temporary folder and
# build every environment there from its lock, with empty per-machine caches (no
# ~/.cache/duplex-factory envs or wheelhouse, a new uv cache), then run each environment's import
# checks (scripts/check_env.py). Run it before merging any change of dependencies (pyproject.toml,
# locks/, the set-up scripts). Takes ~7-8 minutes and ~13 GB of disk, mostly downloads and the
# llama.cpp compile; the folder is removed afterwards unless REHEARSE_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$(mktemp -d -p "${REHEARSE_DIR:-/tmp}" duplex-rehearse.XXXXXX)
[ "${REHEARSE_KEEP:-0}" = 1 ] || trap 'rm -rf "$ROOT"' EXIT
echo "[rehearse] fresh machine in $ROOT"
# What a clone would hold, plus uncommitted changes: tracked and untracked, non-ignored files.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && mkdir -p "$ROOT/repo/$(dirname "$f")" && cp -p "$f" "$ROOT/repo/$f"
done

export DUPLEX_ENVS_DIR="$ROOT/cache/envs" DUPLEX_WHEELS_DIR="$ROOT/cache/wheels"
export DUPLEX_UV_HOME="$ROOT/cache/uv-tool" UV_CACHE_DIR="$ROOT/cache/uv" PIP_NO_CACHE_DIR=1
cd "$ROOT/repo"
total=$(date +%s)
for step in setup.sh setup_vllm.sh setup_coqui.sh; do
  start=$(date +%s)
  bash "scripts/$step"
  echo "[rehearse] $step: $(( $(date +%s) - start )) s"
done
.venv/bin/python scripts/check_env.py main
.envs/vllm/bin/python scripts/check_env.py vllm
.envs/coqui/bin/python scripts/check_env.py coqui
echo "[rehearse] every environment built from its lock and imported in $(( $(date +%s) - total )) s"
