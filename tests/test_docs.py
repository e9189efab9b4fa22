"""README.md and docs/**/*.md cannot drift from the code: every `duplex-factory` command and
option they name exists (asked of the click command tree typer builds), every config key exists in
the config model, every relative link and named repository file exists, every Python block
compiles, every shell block's commands are known (our commands, Makefile targets, repository
scripts, or a listed tool of another project), and config YAML blocks validate as a RunConfig.
The README's command table lists every command. Static checks only (a few seconds); the README's
run-reading Python runs in tests/test_quickstart_notebook.py, against the session's tiny run."""

from __future__ import annotations

import importlib
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from factory.cli import app
from factory.config import RunConfig
from factory.export.registry import FORMATS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SECTIONS = tuple(RunConfig.model_fields)

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INVOCATION = re.compile(r"duplex-factory((?:[ \t]+[^\s`|;&#]+)*)")
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
KEY = re.compile(rf"^(?:{'|'.join(SECTIONS)})\.[a-z_]+(?:\.[a-z_<>]+)*$")
FILE_NAME = re.compile(r"\.(py|parquet|json|md|yaml|png|html|ipynb|wav|npz|txt)$")
SET_KEY = re.compile(r"--set\s+'?([a-z_]+(?:\.[a-z_]+)+)=")
REPO_TOP = (
    *("factory", "flows", "tests", "scripts", "benchmarks", "schemas", "notebooks", "docs", "voices", "dialogues"),
    "locks",
)
REPO_FILES = ("Makefile", "pyproject.toml", "prefect.yaml", "ARCHITECTURE.md", "README.md")
PLACEHOLDER = re.compile(r"[<>*{}]|\.\.\.|NNNNN|\bRUN\b|\bEXPORT\b|\bID\b|/$")
# Programs of other projects the docs show a command of (their options are theirs, not checked).
FOREIGN = {
    "prefect", "vllm", "fairseq-preprocess", "fairseq-train", "torchrun", "tts", "hf", "huggingface-cli",
    "dask", "ray", "export", "for", "done", "do", "apt-get", "pip", "git", "cd", "open", "ls", "mkdir",
}  # fmt: skip


def _blocks(path: Path) -> list[tuple[str, str]]:
    return [(m["lang"], m["body"]) for m in FENCE.finditer(path.read_text())]


def _prose(path: Path) -> str:
    return FENCE.sub("", path.read_text())


@cache
def _commands() -> dict[str, set[str]]:
    """Each duplex-factory command's options (long and short, --help included)."""
    group = typer.main.get_command(app)  # typer's own (vendored) click: read it by its attributes
    options = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        opts = {"--help"}
        for param in command.params:
            if param.param_type_name == "option":
                opts.update(param.opts + param.secondary_opts)
        options[name] = opts
    return options


def _invocations(text: str) -> list[tuple[str, list[str]]]:
    """(command, options) of every `duplex-factory CMD ...`, continuation lines joined."""
    found = []
    for match in INVOCATION.finditer(text.replace("\\\n", " ")):
        words = match[1].split()
        if not words or not re.match(r"[a-z]", words[0]):
            continue
        found.append((words[0].rstrip("),.:;"), [o.split("=")[0] for w in words[1:] for o in OPTION.findall(w)]))
    return found


def _config_key_exists(key: str) -> bool:
    model: type[BaseModel] | None = RunConfig
    for part in key.split("."):
        if model is None:  # inside a free-form map (e.g. tts.backend_options.<backend>)
            return True
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def _module_path(dotted: str) -> tuple[Path, list[str]] | None:
    """The source file of the longest module prefix of a dotted `factory.`/`flows.` name, and the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, parts[cut:]
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_and_options_exist(doc: Path) -> None:
    commands, bad = _commands(), []
    for command, options in _invocations(doc.read_text()):
        if command not in commands:
            bad.append(f"duplex-factory {command}: no such command")
            continue
        bad += [f"duplex-factory {command} {o}: no such option" for o in options if o not in commands[command]]
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(sorted(set(bad)))


def _format_fields(name: str) -> set[str] | None:
    """The `-o` keys of an export format: its options model's fields (None: no such format)."""
    if name not in FORMATS:
        return None
    module, cls = FORMATS[name]
    try:
        return set(getattr(importlib.import_module(module), cls).options_model.model_fields)
    except ImportError:  # a torch-env format (nemo-duplex): its options model's fields, read from its source
        source = ROOT.joinpath(*module.split(".")).with_suffix(".py").read_text()
        return set(re.findall(r"^    (\w+): .*=", source, re.M))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_export_formats_and_their_options_exist(doc: Path) -> None:
    bad = []
    for line in doc.read_text().replace("\\\n", " ").splitlines():
        for match in re.finditer(r"duplex-factory export\b([^`#\n]*)", line):
            args = match[1]
            named = re.search(r"(?:--format|-f)[ =]([\w-]+)", args)
            if not named or named[1] == "F":
                continue
            fields = _format_fields(named[1])
            if fields is None:
                bad.append(f"no format {named[1]}")
                continue
            bad += [f"{named[1]} -o {k}" for k in re.findall(r"-o (\w+)=", args) if k not in fields]
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(sorted(set(bad)))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_table_cells_are_short(doc: Path) -> None:
    rows = [line for line in doc.read_text().splitlines() if line.startswith("|")]
    long = [cell.strip()[:60] for row in rows for cell in row.split(" | ") if len(cell.strip(" |")) > 200]
    assert not long, f"{doc.relative_to(ROOT)}: table cells over 200 characters, starting: {long}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_options_exist(doc: Path) -> None:
    """A `--option` named alone in prose is an option of one of our commands or of a tool the
    same page shows a command of."""
    ours = set().union(*_commands().values())
    shown = {o for _, body in _blocks(doc) for o in OPTION.findall(body)}
    named = {code for code in INLINE.findall(_prose(doc)) if re.fullmatch(r"--[a-z][\w-]*", code)}
    bad = named - ours - shown
    assert not bad, f"{doc.relative_to(ROOT)}: options named but not ours nor shown: {sorted(bad)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_keys_exist(doc: Path) -> None:
    text = doc.read_text()
    keys = set(SET_KEY.findall(text))
    for code in INLINE.findall(text):
        candidate = re.split(r"[=:\s]", code.strip(), maxsplit=1)[0].replace("[]", "")
        if KEY.match(candidate) and not FILE_NAME.search(candidate):
            keys.add(candidate)
    bad = sorted(k for k in keys if not _config_key_exists(k))
    assert not bad, f"{doc.relative_to(ROOT)}: config keys not in factory/config.py: {bad}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_named_files_exist(doc: Path) -> None:
    bad = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:|#", target):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            bad.append(f"link {target}")
    for code in INLINE.findall(doc.read_text()):
        name = code.split()[0] if code.split() else code
        name = name.split(":")[0].rstrip(",.;)")
        if PLACEHOLDER.search(name):
            continue
        if name.startswith(tuple(f"{top}/" for top in REPO_TOP)) or name in REPO_FILES:
            if not (ROOT / name).exists():
                bad.append(f"file {name}")
        elif re.fullmatch(r"(factory|flows)(\.\w+)+", name):
            found = _module_path(name)
            rest = found[1] if found else []
            source = found[0].read_text() if found else ""
            if not found or (rest and not re.search(rf"^\s*(def|class|async def)? ?{rest[0]}\b", source, re.M)):
                bad.append(f"name {name}")
    assert not bad, f"{doc.relative_to(ROOT)}: missing: {sorted(set(bad))}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_compile(doc: Path) -> None:
    for lang, body in _blocks(doc):
        if lang == "python":
            compile(body, f"{doc.name} python block", "exec")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_yaml_blocks_validate(doc: Path) -> None:
    """A YAML block made only of config sections is a valid RunConfig."""
    for lang, body in _blocks(doc):
        if lang == "yaml":
            data = yaml.safe_load(body)
            if isinstance(data, dict) and set(data) <= set(SECTIONS):
                RunConfig.model_validate(data)


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_commands_are_known(doc: Path) -> None:
    bad = []
    for lang, body in _blocks(doc):
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|\||;|\|", line.split(" #")[0]):
                try:
                    words = shlex.split(part)
                except ValueError:
                    words = part.split()
                while words and re.fullmatch(r"\w+=\S*|nice|-n|\d+", words[0]):  # VAR=value, nice -n 10
                    words = words[1:]
                if words and words[0] in ("export", "then", "do", "else"):
                    continue
                if not words or words[0].startswith("#"):
                    continue
                program = words[0].removeprefix(".venv/bin/").removeprefix(".envs/coqui/bin/")
                args = words[1:]
                if program in ("python", "bash") and args and args[0] != "-m":
                    program, args = args[0], args[1:]
                if program == "duplex-factory" or program in FOREIGN or (program == "python" and args[:1] == ["-m"]):
                    continue  # ours are checked by test_commands_and_options_exist
                if program == "make":
                    bad += [f"make {t}" for t in args if t not in _make_targets()]
                elif program.startswith(REPO_TOP):
                    if not (ROOT / program).is_file():
                        bad.append(program)
                elif not program.startswith(("examples/", "get_transcript/", "<", "$")):  # foreign checkouts' scripts
                    bad.append(f"unknown program {program!r}")
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(sorted(set(bad)))


def test_readme_lists_every_command() -> None:
    """The README's command table has one row per command the CLI registers, and no other."""
    rows = set(re.findall(r"^\| `duplex-factory ([a-z-]+)` \|", (ROOT / "README.md").read_text(), re.M))
    group = typer.main.get_command(app)
    commands = {name for name, command in group.commands.items() if not command.hidden}  # type: ignore[attr-defined]
    assert rows == commands, f"README command table: missing {commands - rows}, extra {rows - commands}"
