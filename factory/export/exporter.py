"""The export format seam: `ExportFormat` (what the registry, `export_run` and `inspect` use) and
`Exporter`, the base class every format derives from. A format states its name, version, token
grid, its own bad-input rules, the files it writes beside the shards, and its options model; its
options are validated once, before any sample is read (`parse_options`), then `write` streams
the samples."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar, Protocol

from factory.export.errors import ExportError
from factory.export.options import ExportOptions, FrameRateOptions, OptionsT, parse_format_options
from factory.export.output import Decoded, prepare_out_dir
from factory.export.report import COMMON_RULES, ExportReport, Rule, RuleCounter
from factory.models import Sample


class ExportFormat(Protocol[OptionsT]):
    """One training (or evaluation) format, as the framework drives it; `OptionsT` is its own
    options model: what `parse_options` returns is what `tokenizer_rate` and `write` take."""

    name: ClassVar[str]
    format_version: ClassVar[str]
    frame_rate: ClassVar[float | None]  # its token grid, Hz; None when it has none
    needs_audio_tokens: ClassVar[bool]  # `export_run` prepares (fits) the audio tokenizer before reading samples
    needs_torch: ClassVar[bool]  # whatever its tokenizers, it runs in the torch environment (the CLI sends it there)
    outputs: ClassVar[tuple[str, ...]]  # glob patterns of what it writes beside data/*.parquet (cleared on re-export)

    def rules(self) -> dict[str, Rule]: ...

    def parse_options(self, options: ExportOptions) -> OptionsT: ...

    def tokenizer_rate(self, format_options: OptionsT) -> float: ...

    def write(
        self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions, format_options: OptionsT
    ) -> ExportReport: ...

    def export(self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions) -> ExportReport: ...

    def decode(self, out_dir: Path, sample_id: str) -> Decoded: ...


class Exporter(ExportFormat[OptionsT], ABC):
    """Base of every format: subclasses set the class attributes and `options_model`, and
    implement `write` (and `decode` for `inspect`). It derives from the protocol, so the type
    checker holds every format to it."""

    name: ClassVar[str]
    format_version: ClassVar[str] = "1"
    frame_rate: ClassVar[float | None] = None
    needs_audio_tokens: ClassVar[bool] = False
    needs_torch: ClassVar[bool] = False
    outputs: ClassVar[tuple[str, ...]] = ()
    own_rules: ClassVar[dict[str, Rule]] = {}
    options_model: type[OptionsT]
    report_model: ClassVar[type[ExportReport]] = ExportReport

    def rules(self) -> dict[str, Rule]:
        """Every rule the format applies: the common ones, then its own."""
        return {**COMMON_RULES, **self.own_rules}

    def parse_options(self, options: ExportOptions) -> OptionsT:
        return parse_format_options(self.name, self.options_model, options.format_options)

    def tokenizer_rate(self, format_options: OptionsT) -> float:
        """The frame rate the audio tokenizer is built (or fitted) at."""
        rate = format_options.frame_rate if isinstance(format_options, FrameRateOptions) else self.frame_rate
        if rate is None:
            raise ExportError(f"{self.name} has no token grid: it uses no audio tokenizer")
        return float(rate)

    def export(self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions) -> ExportReport:
        """Validate the options, prepare `out_dir` (a previous export there is cleared), write."""
        format_options = self.parse_options(options)
        prepare_out_dir(Path(out_dir), self.outputs)
        return self.write(samples, Path(out_dir), options, format_options)

    @abstractmethod
    def write(
        self, samples: Iterable[Sample], out_dir: Path, options: ExportOptions, format_options: OptionsT
    ) -> ExportReport:
        """Stream `samples` into `out_dir` with options already validated."""

    def decode(self, out_dir: Path, sample_id: str) -> Decoded:
        raise ExportError(f"format {self.name!r} has no decoder for inspect")

    def start(self, out_dir: Path) -> tuple[ExportReport, RuleCounter, float]:
        """A fresh report and counter for the format's rules (the first thing `write` does)."""
        counter = RuleCounter(self.rules())
        report = self.report_model(format=self.name, format_version=self.format_version, out_dir=str(out_dir))
        return report, counter, time.perf_counter()
