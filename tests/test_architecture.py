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
    "factory/render/kokoro_backend.py",
    "factory/render/phonemize.py",
    "factory/render/piper_backend.py",
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


# One resample function (ARCHITECTURE.md, "One of each"): factory.audio.edit.resample. Files
# that may still call a resampler themselves, each with its reason.
RESAMPLERS_ALLOWED = {
    "factory/audio/edit.py": "the one resample function",
    "scripts/warm_numba.py": "compiles librosa's own functions into the tests' numba cache; resamples no data",
}
RESAMPLER_MODULES = ("soxr", "samplerate", "resampy")  # whole libraries that only resample
RESAMPLER_FUNCTIONS = {  # a library's resampling functions: module -> names
    "librosa": {"resample"},
    "librosa.core": {"resample"},
    "scipy.signal": {"resample", "resample_poly"},
    "torchaudio.functional": {"resample"},
    "torchaudio.transforms": {"Resample"},
}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _direct_resampling(tree: ast.AST) -> list[tuple[int, str]]:
    """Imports of a resampling library and uses of a library's resampling function (by its
    dotted path, e.g. `librosa.resample`, `scipy.signal.resample_poly`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [a.name for a in node.names if a.name.split(".")[0] in RESAMPLER_MODULES]
            found += [(node.lineno, f"import {name}") for name in roots]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in RESAMPLER_MODULES:
                found.append((node.lineno, f"from {node.module} import ..."))
            names = RESAMPLER_FUNCTIONS.get(node.module, set())
            found += [(node.lineno, f"from {node.module} import {a.name}") for a in node.names if a.name in names]
        elif isinstance(node, ast.Attribute):
            path = _dotted(node)
            module, _, name = (path or "").rpartition(".")
            if name in RESAMPLER_FUNCTIONS.get(module, set()):
                found.append((node.lineno, path or ""))
    return found


def test_one_resample_function() -> None:
    """Only factory.audio.edit.resample resamples audio: every other module calls it (with its
    options: `length`), so one quality and one set of bytes hold across renders, exports, ASR,
    VAD and the tokenizers."""
    files = [p for d in ("factory", "flows", "benchmarks", "scripts") for p in ROOT.joinpath(d).rglob("*.py")]
    direct = []
    for path in sorted(files):
        rel = path.relative_to(ROOT).as_posix()
        if rel in RESAMPLERS_ALLOWED:
            continue
        for line, what in _direct_resampling(ast.parse(path.read_text(encoding="utf-8"), rel)):
            direct.append(f"{rel}:{line}: {what}")
    assert not direct, "resampling outside factory.audio.edit.resample (call it instead):\n" + "\n".join(direct)


def test_the_resampling_check_sees_each_way_of_calling_a_resampler() -> None:
    cases = {
        "import soxr\ny = soxr.resample(x, 1, 2)": 1,
        "import librosa\ny = librosa.resample(x, orig_sr=1, target_sr=2)": 1,
        "from librosa import resample": 1,
        "import scipy.signal\ny = scipy.signal.resample_poly(x, 2, 1)": 1,
        "from scipy.signal import resample_poly": 1,
        "import torchaudio\nr = torchaudio.transforms.Resample(1, 2)": 1,
        "from factory.audio.edit import resample\ny = resample(x, 1, 2)": 0,
        "import librosa\nm = librosa.feature.mfcc(y=x)": 0,
    }
    for source, n in cases.items():
        assert len(_direct_resampling(ast.parse(source))) == n, source


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
