"""The architecture rules of ARCHITECTURE.md: the import-linter contracts (pyproject.toml), and imports
inside functions only with a reason."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# Files whose imports inside functions predate the rule below. The render backends and their shared
# post-processing are hashed into every TTS cache identity (factory.render.base.render_identity), so
# any edit to them changes the cache keys a run's recipes store: they are cleaned up when their code
# next changes for a reason of its own. Take a file off once its imports are at the top or say why;
# a new file is checked from the start.
PENDING = {
    "factory/audio/vad.py",
    "factory/render/kokoro_backend.py",
    "factory/render/phonemize.py",
    "factory/render/piper_backend.py",
    "factory/render/text.py",
}


def _imports_in_functions(tree: ast.AST) -> list[list[ast.Import | ast.ImportFrom]]:
    """Imports inside functions, in groups of consecutive import statements (one comment may
    explain a group)."""
    groups: list[list[ast.Import | ast.ImportFrom]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            previous_was_import = False
            for child in block:
                is_import = isinstance(child, ast.Import | ast.ImportFrom)
                if is_import and in_function:
                    if previous_was_import:
                        groups[-1].append(child)
                    else:
                        groups.append([child])
                previous_was_import = is_import
        for child in ast.iter_child_nodes(node):
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    walk(tree, False)
    return groups


def test_imports_inside_functions_say_why() -> None:
    """An import inside a function hides a dependency (and import cycles) from a reader: it is for
    an optional or heavy dependency only, with a `# lazy:` comment on its line or the line above."""
    unexplained = []
    for path in sorted([*ROOT.joinpath("factory").rglob("*.py"), *ROOT.joinpath("flows").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel in PENDING:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for group in _imports_in_functions(ast.parse("\n".join(lines), rel)):
            # the group's lines and the comment lines right above it
            first, last = group[0].lineno - 1, group[-1].end_lineno or group[-1].lineno
            while first > 0 and lines[first - 1].strip().startswith("#"):
                first -= 1
            if not any("# lazy:" in line for line in lines[first:last]):
                unexplained.append(f"{rel}:{group[0].lineno}: {lines[group[0].lineno - 1].strip()}")
    assert not unexplained, "imports inside functions without a '# lazy:' reason:\n" + "\n".join(unexplained)


# Session fixtures too expensive to build once per xdist worker: each is built by one unit of work.
ONE_WORKER_FIXTURES = ("vllm_server", "audited_run", "planned_corpus")


def test_modules_sharing_an_expensive_fixture_are_one_unit_of_work() -> None:
    """Every test module that asks for one of these fixtures (as an argument, or by name through
    request.getfixturevalue) is scheduled in the same unit (tests/conftest.py), so the two xdist
    workers of `make test` do not both start a vLLM server or audit the tiny run."""
    from tests.conftest import unit_of_work

    tests = Path(__file__).parent
    for fixture in ONE_WORKER_FIXTURES:
        users = set()
        for path in sorted(p for p in tests.glob("test_*.py") if p.name != Path(__file__).name):
            tree = ast.parse(path.read_text())
            args = {a.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for a in node.args.args}
            named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == fixture}
            if fixture in args | named:
                users.add(f"tests/{path.name}")
        assert users, f"no module uses {fixture}: drop it from ONE_WORKER_FIXTURES"
        units = {unit_of_work(f"{module}::test") for module in users}
        assert len(units) == 1, f"{fixture} is used by {sorted(users)} in units {sorted(units)}: group them in conftest"
