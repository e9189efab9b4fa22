"""The agent's prompts: the text role prompt each dialogue carries (composed from its scenario) and
its voice prompt (a clip of the agent's voice that is not in the dialogue), in the run's rows and
in the moshi export, where PersonaPlex reads them (nemo-duplex: tests/coqui/test_export_nemo.py).

Truth: the scenario, script and recipe the tiny run stored, the TTS cache's renders, and the files
an export wrote, read back with json and soundfile.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from factory.audio.vad import energy_vad
from factory.export import moshi
from factory.export.options import ExportOptions
from factory.models import Channel, Mode, Persona, Scenario
from factory.run.read import read_samples
from factory.script.prompts import role_prompt
from factory.tokenize import get_text_tokenizer
from tests.export_fixtures import make_sample

from .conftest import read_rows


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def test_role_prompt_names_the_scenario_in_personaplex_style() -> None:
    scenario = Scenario(
        id="s",
        mode=Mode.assistant,
        topic="fixing a slow home wifi network",
        setting="late at night",
        style="hurried",
        user=Persona(name="Raj", description="an accountant who likes a plan"),
        agent=Persona(name="Owen", description="a handy helper who knows tools and repairs"),
        n_turns=4,
    )
    peer = scenario.model_copy(update={"mode": Mode.peer})
    for s, opening in ((scenario, "You are Owen, "), (peer, "You enjoy having a good conversation. ")):
        prompt = role_prompt(s)
        assert prompt.startswith(opening)  # NVIDIA/personaplex README "Prompting Guide": its two styles
        for part in (s.topic, s.setting, s.style, s.agent.name, s.agent.description, s.user.name):
            assert part in prompt
        assert "<system>" not in prompt  # PersonaPlex wraps it itself (offline.py wrap_with_system_tags)
    assert role_prompt(scenario) != role_prompt(peer)


def test_each_row_carries_the_role_prompt_of_its_scenario(tiny_run: Path) -> None:
    for row in read_rows(tiny_run):
        scenario = Scenario.model_validate_json(row["scenario"])
        assert row["role_prompt"] == role_prompt(scenario)
        assert scenario.agent.name in row["role_prompt"] and scenario.topic in row["role_prompt"]


def test_voice_prompt_is_the_agents_voice_and_not_in_the_dialogue(tiny_run: Path) -> None:
    for s in read_samples(tiny_run):
        prompt, recipe, sr = s.meta.voice_prompt, s.meta.recipe, s.sample_rate
        agent = [p.source for p in recipe.pieces if p.channel is Channel.agent]
        assert prompt.source.voice_id == s.meta.voices[Channel.agent]
        assert {(a.backend, a.voice_id) for a in agent} == {(prompt.source.backend, prompt.source.voice_id)}
        assert prompt.source.rate in {a.rate for a in agent}  # the agent's speaking rate
        assert prompt.gain == recipe.gains[Channel.agent.index]
        # not a piece of the dialogue: neither its text nor its render
        assert _plain(prompt.source.text) not in {_plain(t.text) for t in s.meta.script.turns}
        assert prompt.source.sha256 not in {p.source.sha256 for p in recipe.pieces}
        assert prompt.source.cache_key not in {p.source.cache_key for p in recipe.pieces}
        assert s.voice_prompt.ndim == 1 and len(s.voice_prompt) == prompt.source.n_samples
        assert 2.0 <= len(s.voice_prompt) / sr <= 6.0
        assert energy_vad(s.voice_prompt, sr).mean() > 0.5  # mostly speech, not silence


@pytest.fixture(scope="module")
def moshi_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    samples = [make_sample(0), make_sample(1)]
    out = tmp_path_factory.mktemp("moshi-prompts")
    moshi.Moshi().export(samples, out, ExportOptions(text_tokenizer_obj=get_text_tokenizer(None)))
    return out, samples


def test_moshi_export_writes_the_prompts_where_personaplex_reads_them(moshi_export) -> None:
    out, samples = moshi_export
    entries = [json.loads(line) for line in (out / "train" / "data.jsonl").read_text().splitlines()]
    assert [Path(e["path"]).name for e in entries] == [f"{s.id}.wav" for s in samples]  # no prompt is a dialogue
    for s in samples:
        doc = json.loads((out / "train" / "audio" / f"{s.id}.json").read_text())
        assert doc["text_prompt"] == s.meta.role_prompt
        assert "text_conditions" not in doc  # moshi-finetune would hand it to a condition provider Moshi lacks
        audio, sr = sf.read(out / "train" / doc["voice_prompt"], dtype="float32")  # relative to the split
        assert sr == 24000 and audio.ndim == 1
        assert sf.info(out / "train" / doc["voice_prompt"]).subtype == "PCM_16"
        want = soxr.resample(s.voice_prompt, s.sample_rate, 24000)
        assert len(audio) == len(want) and np.abs(audio - want).max() <= 1 / 32768 + 1e-7
