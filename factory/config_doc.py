"""docs/configuration.md, generated from the run config model (`factory.config.RunConfig`).

`duplex-factory schemas` writes it beside `schemas/`; tests/test_config_doc.py fails when the
committed file drifts from the model, so the reference can never disagree with the code.
"""

from __future__ import annotations

import enum
import inspect
import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from factory.config import RunConfig

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

INTRO = """\
# Configuration

<!-- Generated from factory/config.py by `duplex-factory schemas`; do not edit by hand
     (tests/test_config_doc.py keeps it in sync). -->

A run is configured by a YAML file (`-c FILE`) over the defaults below, then `--set
SECTION.FIELD=VALUE` overrides (values parsed as YAML, e.g. `--set dialogue.n_turns=[8,12]`).
Every field is validated: an error names the field, what was given and what is allowed (exit 2).
`duplex-factory config -c FILE` prints the resolved config; `schemas/run_config.schema.json` is
the same model as a JSON Schema. A run writes its resolved config into its folder (`config.yaml`).
What the behaviour, timing and augmentation settings do: [generation.md](generation.md); the
backends the `llm` and `tts` sections choose: [backends.md](backends.md).

Sections: {sections}.
"""


def _type(annotation: Any) -> str:
    """A short reader-facing name of a field's type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        names = [_type(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"[{', '.join(_type(a) for a in args)}]"
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map {_type(args[0])} → {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "{" + ", ".join(annotation.model_fields) + "}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(f"`{m.value}`" for m in annotation)
    if annotation is Any:
        return "any"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    marks = {Ge: ("≥", "ge"), Gt: (">", "gt"), Le: ("≤", "le"), Lt: ("<", "lt")}
    parts = []
    for meta in field.metadata:
        for kind, (sign, attr) in marks.items():
            if isinstance(meta, kind):
                parts.append(f"{sign} {getattr(meta, attr)}")
        if isinstance(meta, MinLen):
            parts.append(f"at least {meta.min_length}")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if field.default_factory is not None and isinstance(value, Path):
        return "a folder in the per-user cache, computed when the config loads"  # not this machine's path
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return "`" + json.dumps(value, default=str, ensure_ascii=False) + "`"


def _fields(model: type[BaseModel], prefix: str) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        facts = [_type(field.annotation), "required" if field.is_required() else f"default {_default(field)}"]
        if bounds := _bounds(field):
            facts.append(bounds)
        line = f"- `{key}` ({'; '.join(facts)})"
        lines.append(line + (f": {field.description}" if field.description else ""))
        inner = [a for a in (field.annotation, *get_args(field.annotation)) if get_origin(a) is list]
        items = get_args(inner[0])[0] if inner else None
        if isinstance(items, type) and issubclass(items, BaseModel):  # a list of records: each item's fields
            lines += ["  " + sub for sub in _fields(items, f"{key}[]")]
    return lines


def render() -> str:
    sections = RunConfig.model_fields
    parts = [INTRO.format(sections=", ".join(f"[`{s}`](#{s})" for s in sections))]
    for name, field in sections.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        parts.append(f"## {name}\n")
        if model.__doc__ and model.__doc__ is not inspect.getdoc(BaseModel):
            parts.append(" ".join(inspect.cleandoc(model.__doc__).split()) + "\n")
        parts.append("\n".join(_fields(model, name)) + "\n")
    return "\n".join(parts)


def write(path: Path = DOC_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
