"""A finished run read back as Samples, and its clean audio (and voice prompt) rebuilt from the mix
recipe alone.

The truth is the stored FLAC bytes the pipeline wrote; the rebuild reads the renders from the
TTS cache with every TTS backend made to raise, so it can only succeed through the recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from factory.audio.mix import MixError, flac_bytes
from factory.config import load_config
from factory.models import Channel, SampleMeta
from factory.run.read import RunFolderError, read_sample_metas, read_samples
from factory.run.rebuild import SourceMissing, rebuild_clean, rebuild_voice_prompt
from factory.run.rows import row_to_sample, sample_to_row

from .conftest import decode, read_rows


@pytest.fixture
def no_tts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every TTS entry point raises: a rebuild that renders anything fails."""
    from factory.render import coqui, espeak_backend, kokoro_backend, piper_backend, registry

    def refuse(*args, **kwargs):
        raise AssertionError("a TTS backend was called")

    monkeypatch.setattr(registry, "get_backend", refuse)
    for module in (piper_backend, kokoro_backend, espeak_backend, coqui):
        for name in dir(module):
            cls = getattr(module, name)
            if isinstance(cls, type) and name.endswith("Backend") and hasattr(cls, "synthesize"):
                monkeypatch.setattr(cls, "synthesize", refuse)


def _cache_dir(run: Path) -> Path:
    cfg = load_config(run / "config.yaml", [])
    assert cfg.tts.cache_dir is not None
    return cfg.tts.cache_dir


def test_read_samples_gives_back_every_produced_sample(tiny_run: Path) -> None:
    rows = {r["id"]: r for r in read_rows(tiny_run)}
    samples = list(read_samples(tiny_run))
    assert [s.id for s in samples] == sorted(rows) and len(samples) == 4
    for s in samples:
        stored, sr = decode(rows[s.id]["audio"])
        assert sr == s.sample_rate and np.array_equal(s.stems, stored)
        assert s.stems.shape == (s.meta.recipe.n_samples, 2)
        assert s.meta.voices[Channel.user] == rows[s.id]["user_voice"]
        # metadata alone (no audio decode) agrees with the full read
        SampleMeta.model_validate(s.meta.model_dump())
    metas = list(read_sample_metas(tiny_run))
    assert [m.model_dump_json() for m in metas] == [s.meta.model_dump_json() for s in samples]


def test_row_round_trip_is_exact(tiny_run: Path) -> None:
    for row in read_rows(tiny_run):
        again = sample_to_row(row_to_sample(row))
        assert again.pop("duration") == pytest.approx(row.pop("duration"), abs=1e-4)  # stored as float32
        assert again == row


def test_clean_audio_rebuilds_byte_identically_from_the_recipe_without_tts(tiny_run: Path, no_tts: None) -> None:
    cache = _cache_dir(tiny_run)
    rows = {r["id"]: r for r in read_rows(tiny_run)}
    for s in read_samples(tiny_run):
        recipe = s.meta.recipe
        assert len(recipe.pieces) == len(s.timeline.turns)  # every spoken piece is in the recipe
        rebuilt = rebuild_clean(recipe, cache)
        assert np.array_equal(rebuilt, s.stems)
        assert flac_bytes(rebuilt, s.sample_rate) == rows[s.id]["audio"]["bytes"]


def test_voice_prompt_rebuilds_from_the_tts_cache_without_tts(tiny_run: Path, no_tts: None) -> None:
    cache = _cache_dir(tiny_run)
    rows = {r["id"]: r for r in read_rows(tiny_run)}
    for s in read_samples(tiny_run):
        rebuilt = rebuild_voice_prompt(s.meta.voice_prompt, s.sample_rate, cache)
        assert np.array_equal(rebuilt, s.voice_prompt)
        assert flac_bytes(rebuilt, s.sample_rate) == rows[s.id]["voice_prompt"]["bytes"]


def test_recipe_places_each_turn_where_the_timeline_says(tiny_run: Path) -> None:
    for s in read_samples(tiny_run):
        sr = s.sample_rate
        by_start = {(p.channel, p.offset): p for p in s.meta.recipe.pieces}
        for t in s.timeline.turns:
            piece = by_start[(t.channel, int(round(t.start * sr)))]
            assert abs((piece.offset + piece.length) / sr - t.end) <= 1 / sr
            assert piece.cut == (t.end_reason.value == "interrupted")


def test_rebuild_refuses_a_wrong_source_or_a_broken_recipe(tiny_run: Path, tmp_path: Path, no_tts: None) -> None:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(_cache_dir(tiny_run), cache)
    sample = next(read_samples(tiny_run))
    # a cache entry whose audio is not what the recipe used
    key = sample.meta.recipe.pieces[0].source.cache_key
    npy = cache / key[:2] / f"{key}.npy"
    audio = np.load(npy)
    np.save(npy, audio * 0.5)
    with pytest.raises(SourceMissing, match="not the audio the recipe used"):
        rebuild_clean(sample.meta.recipe, cache)
    np.save(npy, audio)
    # a recipe whose piece lengths disagree with its edits
    broken = sample.meta.recipe.model_copy(deep=True)
    broken.pieces[0].length += 10
    with pytest.raises(MixError):
        rebuild_clean(broken, cache)
    # a moved piece gives different audio
    moved = sample.meta.recipe.model_copy(deep=True)
    moved.pieces[0].offset += 1
    assert not np.array_equal(rebuild_clean(moved, cache), sample.stems)
    with pytest.raises(SourceMissing, match="not in"):
        rebuild_clean(sample.meta.recipe, tmp_path / "empty")


def test_read_samples_refuses_a_damaged_shard(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = sorted((run / "data").glob("*.parquet"))[0]
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(RunFolderError, match="sha256"):
        list(read_samples(run))
    with pytest.raises(RunFolderError, match="not a run folder"):
        list(read_samples(tmp_path / "nothing"))
    record = json.loads(sorted((run / "shards").glob("*.json"))[0].read_text())
    assert record["shard"] == data.stem


def test_a_sample_regenerates_alone_from_its_seed_and_key(tiny_run: Path, tmp_path: Path) -> None:
    """From config.yaml + run_seed + sample_key, in an empty TTS cache: the same bytes."""
    from factory.run.regenerate import regenerate

    cache = tmp_path / "fresh-cache"  # an empty TTS cache: every render is made again
    sample = regenerate(tiny_run, "train-0000003", [f"tts.cache_dir={cache}"])
    assert len(list(cache.glob("*/*.npy"))) >= len(sample.meta.recipe.pieces) // 2
    stored = next(read_samples(tiny_run, ["train-0000003"]))
    assert sample.meta.model_dump_json() == stored.meta.model_dump_json()
    assert flac_bytes(sample.stems, sample.sample_rate) == flac_bytes(stored.stems, stored.sample_rate)


def test_augmentation_reruns_on_a_finished_run(tiny_run: Path, no_tts: None) -> None:
    """Augmentation takes Samples: re-drawing it on read-back samples gives the stored bytes,
    and a different config gives a different, recorded augmentation."""
    from factory.augment import augment_sample

    cfg = load_config(tiny_run / "config.yaml", [])
    rows = {r["id"]: r for r in read_rows(tiny_run)}
    n_augmented = 0
    for s in read_samples(tiny_run):
        again = augment_sample(s, cfg.augment)
        assert again.meta.augmentation == s.meta.augmentation
        stored = rows[s.id]["audio_augmented"]
        if s.augmented is None:
            assert again.augmented is None and stored is None
            continue
        n_augmented += 1
        assert flac_bytes(again.augmented, s.sample_rate) == stored["bytes"]
        always = augment_sample(s, cfg.augment.model_copy(update={"noise_probability": 1.0, "colors": ["white"]}))
        assert always.meta.augmentation[0].params["color"] == "white"
    assert n_augmented, "no sample of the tiny run drew an augmentation: the test checks nothing"


def test_re_augmenting_a_run_into_a_new_folder_runs_no_tts(tiny_run: Path, no_tts: None, tmp_path: Path) -> None:
    """`duplex-factory augment RUN --out NEW`: the clean audio is carried over byte for byte, the
    augmented audio is redrawn under the new chains (babble from the TTS cache), recorded, and
    the new folder reads like any run; the same chains twice give the same bytes."""
    from typer.testing import CliRunner

    from factory.cli import app

    chains = (
        "augment.chains=[{name: street, probability: 1.0, steps: ["
        "{transform: babble, apply_to: user, options: {voices: [2, 3], min_seconds: 0.5}},"
        "{transform: room, apply_to: user, options: {bank_size: 3}},"
        "{transform: echo, apply_to: mix}, {transform: codec, apply_to: mix, options: {codecs: [opus]}}]}]"
    )
    outs = []
    for k in range(2):
        out = tmp_path / f"re{k}"
        result = CliRunner().invoke(
            app,
            ["augment", str(tiny_run), "--out", str(out), "--set", chains, "--set", f"augment.cache_dir={tmp_path}"],
        )
        assert result.exit_code == 0, result.output + repr(result.exception)
        outs.append(out)
    source = {s.id: s for s in read_samples(tiny_run)}
    again = {s.id: s for s in read_samples(outs[1])}
    for s in read_samples(outs[0]):
        assert flac_bytes(s.stems, s.sample_rate) == flac_bytes(source[s.id].stems, s.sample_rate)
        assert s.augmented is not None and [r.transform for r in s.meta.augmentation][:2] == ["babble", "room"]
        assert {r.chain for r in s.meta.augmentation} == {"street"}
        assert flac_bytes(s.augmented, s.sample_rate) == flac_bytes(again[s.id].augmented, s.sample_rate)
    result = CliRunner().invoke(app, ["augment", str(tiny_run), "--out", str(outs[0])])
    assert result.exit_code == 1 and "not empty" in result.output
