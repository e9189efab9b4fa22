"""Each export format validates its own options (a pydantic model per format, like the TTS
backends') once, before any sample or run file is read: an unknown key or a bad value is an
ExportError naming the format, the key and what the format accepts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.export.errors import ExportError
from factory.export.options import ExportOptions
from factory.export.registry import get_format, known_formats
from factory.export.run import export_run
from factory.models import Sample


def _never_read() -> Iterator[Sample]:
    raise AssertionError("a sample was read before the options were checked")
    yield  # a generator: the assertion fires on the first read only


def test_the_registry_holds_every_format_including_full_duplex_bench() -> None:
    assert known_formats() == ["bayling", "dgslm", "fdb", "lslm", "moshi", "nemo-duplex", "units-1s"]
    for name in known_formats():
        assert get_format(name).name == name


@pytest.mark.parametrize(
    ("fmt", "options", "message"),
    [
        # dgslm's options were a hand-checked dict: now its model names the key and the type
        (
            "dgslm",
            {"rate": 25},
            "dgslm format options: unknown option 'rate' (dgslm takes: frame_rate (float, default 50.0))",
        ),
        ("dgslm", {"frame_rate": "fast"}, "dgslm format options: frame_rate='fast': Input should be a valid number"),
        ("dgslm", {"frame_rate": 0}, "frame_rate=0: Input should be greater than 0"),
        ("lslm", {"listen": "both"}, "lslm format options: listen='both': Input should be 'tokens' or 'features'"),
        ("lslm", {"listen": "both"}, "listen ('tokens' | 'features', default 'tokens')"),
        ("lslm", {"mu": -1}, "lslm format options: mu=-1: Input should be greater than or equal to 0"),
        (
            "units-1s",
            {"frame_rate": 12.5},
            "frame_rate=12.5: units-1s needs whole frames per 1 s unit: frame_rate 25 or 50",
        ),
        ("bayling", {"lag": 1}, "bayling format options: unknown option 'lag' (bayling takes no format options)"),
        ("moshi", {"tokens": "maybe"}, "moshi format options: tokens='maybe': Input should be a valid boolean"),
        ("nemo-duplex", {"source_sample_rate": 12345}, "source_sample_rate=12345: 12345 Hz has no whole number"),
        ("fdb", {"tasks": "pause"}, "fdb format options: tasks.0='pause': Input should be 'pause_handling'"),
        ("fdb", {"lead_s": 61}, "fdb format options: lead_s=61: Input should be less than or equal to 60"),
    ],
)
def test_a_bad_option_is_refused_before_any_sample_is_read(
    fmt: str, options: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ExportError) as err:
        get_format(fmt).export(_never_read(), tmp_path / "out", ExportOptions(format_options=options))
    assert message in str(err.value) and err.value.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_several_problems_are_reported_together() -> None:
    fmt = get_format("lslm")
    with pytest.raises(ExportError) as err:
        fmt.parse_options(ExportOptions(format_options={"mu": "soon", "nu": 1}))
    assert "mu='soon': Input should be a valid number" in str(err.value)
    assert "unknown option 'nu'" in str(err.value)


def test_export_run_checks_options_before_it_opens_the_run(tmp_path: Path) -> None:
    # the run does not exist: the option error comes first, so nothing of the run was read
    with pytest.raises(ExportError, match="dgslm format options: unknown option 'nu'"):
        export_run(tmp_path / "absent", "dgslm", options=ExportOptions(format_options={"nu": 1}))
    with pytest.raises(ExportError, match="is remote: give the export folder"):
        export_run("s3://bucket/runs/r1", "dgslm")


def test_valid_options_keep_their_defaults() -> None:
    assert get_format("dgslm").parse_options(ExportOptions()).frame_rate == 50.0  # type: ignore[attr-defined]
    lslm = get_format("lslm").parse_options(ExportOptions(format_options={"mu": 1, "listen": "features"}))
    assert (lslm.mu, lslm.listen, lslm.frame_rate) == (1.0, "features", 50.0)  # type: ignore[attr-defined]
    fdb = get_format("fdb").parse_options(ExportOptions(format_options={"split": "all", "tasks": "backchannel"}))
    assert (fdb.split, fdb.tasks) == (None, ("backchannel",))  # type: ignore[attr-defined]
