#!/usr/bin/env bash
# The test run of `make test` (after setup and envs). Three jobs at once, because none of them keeps
# a 2-core CI machine busy alone: the main suite on three pytest-xdist workers (tests/conftest.py says
# how modules are grouped), and beside it the lint (ruff, import-linter, basedpyright) and the Coqui
# suite in the torch environment. Their output is printed after the main suite's, each under its
# name; the exit status is non-zero if any job failed.
set -uo pipefail
cd "$(dirname "$0")/.."
# Python writes each module's bytecode once and every later process reads it. With
# PYTHONDONTWRITEBYTECODE set (as on these machines) every process compiled every module it
# imported from source: ~4 of the ~8 CPU seconds a fresh process spends importing the factory and
# Prefect, more for torch and vLLM, in a suite that starts many fresh processes (CLI runs, worker
# pools, servers, notebook kernels). uv installs no bytecode; this writes it where it is used.
unset PYTHONDONTWRITEBYTECODE
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_beside() {  # run_beside NAME CMD...: in the background, output to $logs/NAME.log
  local name=$1; shift
  ( "$@" > "$logs/$name.log" 2>&1; echo $? > "$logs/$name.rc" ) &
}
run_beside lint make --no-print-directory lint
# One torch thread beside the main suite: torch's OpenMP threads spin while they wait, and two of
# them on a 2-core machine that also runs two test workers slowed everything (Coqui suite 160 s
# alone, 430 s beside the main suite with its default threads).
run_beside coqui env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .envs/coqui/bin/python -m pytest --confcutdir=tests/coqui tests/coqui --durations=10

# Three workers on two cores: the suite's tests wait on servers, subprocesses and stalls for a
# quarter of their time, and a third worker fills it (same machine, back to back: 943 s with two,
# 860 s with three).
# --durations: the slowest phases in every CI log, where issue 20's CI-time work reads them.
.venv/bin/python -m pytest -n 3 --dist loadscope --no-loadscope-reorder --durations=40 "$@"
status=$?
wait
for name in lint coqui; do
  rc=$(cat "$logs/$name.rc" 2>/dev/null || echo 1)
  echo
  echo "=== $name (exit $rc) ==="
  cat "$logs/$name.log"
  [ "$rc" = 0 ] || status=1
done
[ "$status" = 0 ] && echo "[test] main suite, lint and Coqui suite passed" || echo "[test] FAILED (exit codes above)"
exit "$status"
