# The two commands (see README): `make demo` runs the main job on the embedded CPU defaults,
# `make test` runs the tests. Both set up a fresh machine first (scripts/setup.sh, idempotent),
# installing exactly what locks/ pins.
.PHONY: setup envs demo test lint bench schemas lock rehearse

setup:
	@scripts/setup.sh

# Heavy environments the tests need, each in its own venv under .envs/, built once per machine
# from its lock (stamped with the lock's hash): the vLLM server (cannot share Prefect's
# environment) and Coqui TTS (needs torch).
envs: setup
	@bash scripts/setup_vllm.sh
	@bash scripts/setup_coqui.sh

demo: setup
	.venv/bin/duplex-factory generate

# Style, the architecture rules (ARCHITECTURE.md: ruff, import-linter's contracts) and types
# (basedpyright over factory/ and flows/, pyrightconfig.json).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	.venv/bin/basedpyright

# The main suite (three pytest-xdist workers), with the lint and the Coqui suite (torch environment)
# running beside it: scripts/test.sh.
test: setup envs
	@scripts/test.sh

bench: setup
	.venv/bin/python benchmarks/stages.py

schemas: setup
	.venv/bin/duplex-factory schemas

# Re-resolve every environment's lock on purpose (after changing a dependency), then rehearse.
lock:
	@bash scripts/lock.sh

# Build every environment from its lock in a temporary folder, as a fresh machine would.
rehearse:
	@bash scripts/rehearse.sh
