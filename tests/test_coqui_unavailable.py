"""In the torch-free main environment the coqui backend is unavailable, with a message that
says how to get it. Its real tests live in tests/coqui and run in .envs/coqui."""

from __future__ import annotations

import importlib.util

import pytest

from factory.render.base import BackendUnavailable
from factory.render.registry import BACKENDS, get_backend


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None and importlib.util.find_spec("TTS") is not None,
    reason="coqui-tts is installed here: tests/coqui cover it",
)
def test_coqui_unavailable_names_setup_script() -> None:
    assert "coqui" in BACKENDS
    with pytest.raises(BackendUnavailable) as info:
        get_backend("coqui")
    message = str(info.value)
    assert "scripts/setup_coqui.sh" in message
    assert "duplex-factory[gpu]" in message


def test_coqui_module_imports_without_torch() -> None:
    # the module itself is importable everywhere (lazy imports); only the backend needs torch
    import factory.render.coqui as coqui

    assert coqui.CoquiBackend.name == "coqui"


def test_gpu_voice_bank_example_is_valid_and_not_loaded_by_default() -> None:
    from factory.locations import voice_bank_dir
    from factory.render.voices import VoiceBank

    example = VoiceBank.load(voice_bank_dir() / "gpu" / "coqui.yaml")
    assert {v.backend for v in example} == {"coqui"}
    assert any(v.reference for v in example) and any(v.speaker for v in example)
    assert not any(v.backend == "coqui" for v in VoiceBank.load())
