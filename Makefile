# The two commands (see README): `make demo` runs the main job on the embedded CPU defaults,
# `make test` runs the tests. Both set up a fresh machine first (scripts/setup.sh, idempotent).
.PHONY: setup envs demo test bench schemas

setup:
	@scripts/setup.sh

# Heavy environments the tests need, each in its own venv under .envs/, built once (stamped):
# the vLLM server (cannot share Prefect's environment) and Coqui TTS (needs torch).
envs: setup
	@bash scripts/setup_vllm.sh
	@bash scripts/setup_coqui.sh

demo: setup
	.venv/bin/duplex-factory generate

test: setup envs
	.venv/bin/python -m pytest
	.envs/coqui/bin/python -m pytest --confcutdir=tests/coqui tests/coqui

bench: setup
	.venv/bin/python benchmarks/stages.py

schemas: setup
	.venv/bin/duplex-factory schemas
