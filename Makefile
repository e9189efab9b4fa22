# The two commands (see README): `make demo` runs the main job on the embedded CPU defaults,
# `make test` runs the tests. Both set up a fresh machine first (scripts/setup.sh, idempotent).
.PHONY: setup demo test bench schemas

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/duplex-factory generate

test: setup
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python benchmarks/stages.py

schemas: setup
	.venv/bin/duplex-factory schemas
