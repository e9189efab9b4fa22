"""The export formats by name. Each is an `Exporter` subclass in its own module of
`factory.export`, imported when asked for (nemo-duplex needs lhotse, which needs torch), and
`needs_torch`: which exports run in the torch environment."""

from __future__ import annotations

import importlib
from typing import Any

from factory.export.errors import ExportError
from factory.export.exporter import ExportFormat
from factory.export.options import ExportOptions
from factory.tokenize import TORCH_AUDIO_TOKENIZERS

# format name -> (module, class)
FORMATS: dict[str, tuple[str, str]] = {
    "bayling": ("factory.export.bayling", "Bayling"),
    "dgslm": ("factory.export.dgslm", "Dgslm"),
    "lslm": ("factory.export.lslm", "Lslm"),
    "units-1s": ("factory.export.units1s", "Units1s"),
    "moshi": ("factory.export.moshi", "Moshi"),
    "nemo-duplex": ("factory.export.nemo", "NemoDuplex"),
    "fdb": ("factory.export.fdb", "FullDuplexBench"),
}


def known_formats() -> list[str]:
    return sorted(FORMATS)


def get_format(name: str) -> ExportFormat[Any]:
    """The exporter of format `name`; an unknown name lists the known ones. Its options model is
    known only to the format (`Any` here): callers pass `write` what its `parse_options` returned."""
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; known formats: {', '.join(known_formats())}")
    module_name, class_name = FORMATS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ExportError(f"format {name!r} is registered but its module {exc.name} is not installed") from None
        raise
    exporter: type[ExportFormat[Any]] = getattr(module, class_name)
    return exporter()


def needs_torch(name: str, options: ExportOptions) -> bool:
    """Whether exporting format `name` with `options` needs torch: the format itself (nemo-duplex
    builds its CutSet with lhotse) or a codec audio tokenizer (mimi, encodec)."""
    return get_format(name).needs_torch or options.audio_tokenizer in TORCH_AUDIO_TOKENIZERS
