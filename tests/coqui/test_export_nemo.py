"""The nemo-duplex export read back by lhotse: Shar and jsonl.gz, audio against the timeline,
supervisions, prompts, rules, determinism and the torch environment's CLI. NeMo's own dataset and
dataloader read it in tests/coqui/test_nemo_dataset.py (nemo_toolkit is installed here).

Truths from outside the exporter: lhotse's own readers (Shar and jsonl.gz), the audio they load
(put through the energy VAD against the timeline), the timeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from factory.audio.vad import energy_vad
from factory.export import nemo
from factory.export.options import ExportOptions
from factory.models import BargeInEvent, Channel
from factory.tokenize.text import HFTextTokenizer
from tests.export_fixtures import SCRIPT, make_sample

FRAME = 0.08


@pytest.fixture(scope="module")
def text_tok(tmp_path_factory) -> HFTextTokenizer:
    """A real word-level `tokenizers` vocabulary with BOS/EOS/PAD, as NeMo's tokenizer needs."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.WordLevel(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    words = [t.text for t in SCRIPT.turns] + [m.token for m in SCRIPT.marks if hasattr(m, "token")]
    hf.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    folder = tmp_path_factory.mktemp("tok")
    hf.save(str(folder / "tokenizer.json"))
    return HFTextTokenizer(folder)


@pytest.fixture(scope="module")
def samples():
    return [make_sample(0), make_sample(1, split="dev")]


@pytest.fixture(scope="module")
def exported(samples, text_tok, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nemo")
    nemo.NemoDuplex().export(
        samples, out, ExportOptions(text_tokenizer_obj=text_tok, format_options={"word_timestamps": True})
    )
    return out


def _without_voice_prompt(cut):
    cut = cut.copy()  # a shallow copy: its custom dict is its own below
    cut.custom = {k: v for k, v in cut.custom.items() if k != "voice_prompt"}
    return cut


@pytest.mark.parametrize("shar", [True, False])
def test_lhotse_loads_it_back_with_equal_durations_and_the_right_rates(exported, samples, shar) -> None:
    from lhotse.qa import validate

    for split in ("train", "dev"):  # lhotse's own consistency checks, audio read included
        cuts = nemo.read_cuts(exported, split, shar=shar).to_eager()
        # lhotse 1.33's validate_array (qa.py 315) compares the loaded shape, a tuple, with the
        # manifest's list: every custom Array fails it. The voice prompt is checked on its own below.
        validate(cuts.map(_without_voice_prompt), read_data=True)
    for s in samples:
        (cut,) = [c for c in nemo.read_cuts(exported, s.meta.split, shar=shar) if c.id == s.id]
        assert cut.sampling_rate == cut.recording.sampling_rate == 16000
        target = cut.target_audio
        assert target.sampling_rate == 22050
        assert cut.duration == cut.recording.duration == target.duration
        assert abs(cut.duration - s.duration) < 0.1 and round(cut.duration / 0.02, 9).is_integer()
        user, agent = cut.load_audio(), cut.load_custom("target_audio")
        assert user.shape == (1, round(cut.duration * 16000)) and agent.shape == (1, round(cut.duration * 22050))
        # the user's channel is the recording, the agent's the target: energy VAD vs the timeline
        for audio, sr, who in ((user[0], 16000, Channel.user), (agent[0], 22050, Channel.agent)):
            active = energy_vad(audio, sr)
            per_s = sr / round(0.01 * sr)  # VAD frames per second (220 samples at 22.05 kHz)
            for t in s.timeline.turns:
                if t.channel is who:
                    assert active[int(t.start * per_s) + 2 : int(t.end * per_s) - 2].mean() > 0.5, t
            quiet = np.ones(len(active), bool)
            for t in s.timeline.turns:
                if t.channel is who:
                    quiet[max(int(t.start * per_s) - 3, 0) : int(t.end * per_s) + 3] = False
            assert not active[quiet].any(), f"{who.value} audio where the timeline has none"


def test_supervisions_are_the_turns_ending_at_their_stop(exported, samples) -> None:
    for s in samples:
        (cut,) = [c for c in nemo.read_cuts(exported, s.meta.split) if c.id == s.id]
        tl = s.timeline
        assert len(cut.supervisions) == len(tl.turns)
        by_turn = {sup.custom["turn"]: sup for sup in cut.supervisions}
        for t in tl.turns:
            sup = by_turn[t.id]
            assert sup.speaker == nemo.ROLE[t.channel]
            assert abs(sup.start - t.start) < 1e-5 and abs(sup.end - t.end) < 1e-5
            words = nemo.parse_word_timestamps(sup.text)
            assert " ".join(w for _, w, _ in words) == t.spoken_text
            spoken = [w for w in tl.words if w.turn == t.id and w.spoken]
            for (fs, _, fe), w in zip(words, spoken):
                assert abs((nemo.frame(t.start, 16000) + fs) * FRAME - w.start) <= FRAME
                assert abs((nemo.frame(t.start, 16000) + fe) * FRAME - w.end) <= FRAME
        for e in tl.events:
            if isinstance(e, BargeInEvent):
                victim = by_turn[e.victim_turn]
                assert victim.custom["end_reason"] == "interrupted" and abs(victim.end - e.victim_stop) < 1e-5
        kinds = {(sup.speaker, sup.custom["kind"], sup.custom["end_reason"]) for sup in cut.supervisions}
        assert ("user", "backchannel", "complete") in kinds and ("user", "turn", "yielded") in kinds
        assert ("agent", "backchannel", "complete") in kinds


@pytest.mark.parametrize("shar", [True, False])
def test_cuts_carry_the_role_prompt_and_the_voice_prompt(exported, samples, shar) -> None:
    import soxr

    for s in samples:
        (cut,) = [c for c in nemo.read_cuts(exported, s.meta.split, shar=shar) if c.id == s.id]
        assert cut.custom["system_prompt"] == s.meta.role_prompt
        assert cut.system_prompt == s.meta.role_prompt  # how speechlm2 asks (salm_dataset.py 130-132)
        prompt = cut.load_custom("voice_prompt")  # int16 PCM
        assert cut.custom["voice_prompt_sampling_rate"] == 22050 and prompt.dtype == np.int16
        want = soxr.resample(s.voice_prompt, s.sample_rate, 22050)
        assert prompt.shape == want.shape and np.abs(prompt / 32768 - want).max() <= 1 / 32768 + 1e-7


def test_a_turn_ending_at_the_end_gets_room_for_its_eos(samples, text_tok, tmp_path) -> None:
    s = samples[0].model_copy(deep=True)
    last = max(s.timeline.turns, key=lambda t: t.end)
    n_end = round((last.end + 0.005) * s.sample_rate)
    s.stems = s.stems[:n_end]  # the audio ends 5 ms after the last turn: its EOS frame would be T
    s.meta.timeline.duration = n_end / s.sample_rate
    report = nemo.NemoDuplex().export([s], tmp_path / "x", ExportOptions(text_tokenizer_obj=text_tok))
    assert report.rules["turn_end_needs_a_frame"] == 1
    (cut,) = list(nemo.read_cuts(tmp_path / "x", "train"))
    assert nemo.frame(last.end, 16000) < nemo.frame(cut.duration, 16000)
    assert cut.duration == cut.target_audio.duration


def test_export_is_deterministic(samples, text_tok, tmp_path) -> None:
    for name in ("a", "b"):
        nemo.NemoDuplex().export(samples, tmp_path / name, ExportOptions(text_tokenizer_obj=text_tok))
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert Path("shar/train/recording.000000.tar") in a and Path("cuts_dev.jsonl.gz") in a
    for f in a:
        if f.name == "report.json":
            continue
        x, y = (tmp_path / "a" / f).read_bytes(), (tmp_path / "b" / f).read_bytes()
        if f.suffix == ".gz" and f.parent == Path("."):  # the manifest holds absolute audio paths
            import gzip

            x, y = gzip.decompress(x).replace(b"/a/", b"/b/"), gzip.decompress(y)
        assert x == y, f


def test_frame_rule_is_lhotses() -> None:
    from lhotse.utils import compute_num_frames

    rng = np.random.default_rng(0)
    for t in [0.0, 0.04, 0.039999, 0.04000001, 0.12, 1.0, *rng.uniform(0, 60, 200)]:
        assert nemo.frame(t, 16000) == compute_num_frames(t, 0.08, 16000), t


def _run_folder(run: Path, *samples) -> Path:
    """A run folder as factory.run.shards writes it (that module needs the main env's engine):
    one data shard with `samples`, one rejected sample in the manifest, and the typed shard record
    (the signatures file holds no MinHash here: datasketch is a main-env package)."""
    import numpy as np
    import polars as pl

    from factory.atomic import sha256_file
    from factory.run.records import ShardAudit, ShardRecord, shard_files, write_shard_record
    from factory.run.rows import write_shard
    from factory.run.store import RunStore

    name = "train-00000-of-00001"
    files = {kind: run / rel for kind, rel in shard_files(name).items()}
    digest = write_shard(list(samples), files["data"], samples[0].sample_rate)
    rows = [
        {"id": s.id, "shard": name, "status": "ok", "reason": None, "language": s.meta.scenario.language}
        for s in samples
    ] + [{"id": "d099", "shard": name, "status": "rejected", "reason": "behaviour_minimum: test", "language": "en"}]
    files["manifest"].parent.mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(files["manifest"])
    files["signatures"].parent.mkdir(parents=True)
    np.savez(files["signatures"], ids=np.array([s.id for s in samples]))
    record = ShardRecord(
        shard=name,
        sha256=digest,
        n_ok=len(samples),
        n_rejected=1,
        manifest_sha256=sha256_file(files["manifest"]),
        signatures_sha256=sha256_file(files["signatures"]),
        audit=ShardAudit(pooled={}, flagged=0, problems=[]),
    )
    write_shard_record(RunStore(str(run)), record)
    return run


def test_export_run_on_a_run_folder_in_the_torch_env(samples, text_tok, tmp_path) -> None:
    """The framework's export_run (read_samples, rejected and empty-shard counts) with this format."""
    from factory.export.run import export_run

    run = _run_folder(tmp_path / "run", samples[0])
    report = export_run(run, "nemo-duplex", tmp_path / "out", ExportOptions(text_tokenizer_obj=text_tok))
    assert report.samples_out == 1 and report.rules["rejected_samples"] == 1
    assert [c.id for c in nemo.read_cuts(tmp_path / "out", "train")] == [samples[0].id]


def test_the_torch_envs_cli_exports_nemo_and_names_missing_mimi_weights(samples, text_tok, tmp_path, monkeypatch):
    """`.envs/coqui/bin/duplex-factory export`: nemo-duplex with the trainer's tokenizer folder;
    moshi with Mimi tokens and no weights: exit 3, naming the repo and file to download."""
    from typer.testing import CliRunner

    from factory.cli import app

    run = _run_folder(tmp_path / "run", samples[0])
    folder = str(text_tok.path.parent)
    result = CliRunner().invoke(app, ["export", str(run), "-f", "nemo-duplex", "--text-tokenizer", folder])
    assert result.exit_code == 0, result.output
    assert [c.id for c in nemo.read_cuts(run / "exports" / "nemo-duplex", "train")] == [samples[0].id]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    args = ["export", str(run), "-f", "moshi", "--audio-tokenizer", "mimi", "-o", "tokens=true", "--text-tokenizer"]
    result = CliRunner().invoke(app, [*args, folder])
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "kyutai/moshiko-pytorch-bf16" in text and "tokenizer-e351c8d8-checkpoint125.safetensors" in text


def test_inspect_renders_each_role_per_frame(exported, samples) -> None:
    s = samples[0]
    dec = nemo.NemoDuplex().decode(exported, s.id)
    agent = dec.tracks["agent text"]
    for t in s.timeline.turns:
        if t.channel is Channel.agent:
            assert "> " + t.spoken_text.split()[0] + " <" in agent[nemo.frame(t.start, 16000)]
            assert agent[nemo.frame(t.end, 16000)] == "EOS"


def test_japanese_words_are_segmented_in_this_environment_too() -> None:
    """A Japanese run's nemo-duplex export runs here and counts its words with the analyser the
    main environment uses (pyopenjtalk, locked in locks/coqui.in): the same words, not one
    space-free block (an export of a 24-dialogue Japanese run failed here before)."""
    from factory.languages import words

    text = "えーと、駅までまっすぐ行って、二つ目の角を右です。"
    assert words(text, "ja") == ["えーと、", "駅まで", "まっすぐ", "行って、", "二つ目の", "角を", "右です。"]


def test_a_japanese_run_exports_every_turn_text_with_gemma_vocabulary(tmp_path) -> None:
    """export_run on a Japanese run (its manifest says ja) picks Gemma 3's vocabulary by default, here
    as in the main environment: no turn text overwritten by its EOS, each supervision the turn's
    spoken text, which the vocabulary round-trips exactly."""
    from factory.export.output import read_sidecar
    from factory.export.run import export_run
    from factory.tokenize import get_text_tokenizer
    from tests.export_fixtures import make_japanese_sample

    s = make_japanese_sample(0)
    report = export_run(_run_folder(tmp_path / "run", s), "nemo-duplex", tmp_path / "out")
    assert report.samples_out == 1 and report.rules["text_longer_than_turn"] == 0
    assert read_sidecar(tmp_path / "out").text_tokenizer["config"]["file"] == "gemma-3-270m-vocab.gguf"
    tok = get_text_tokenizer("gemma")
    (cut,) = nemo.read_cuts(tmp_path / "out", "train")
    by_turn = {sup.custom["turn"]: sup for sup in cut.supervisions}
    for t in s.timeline.turns:
        assert by_turn[t.id].text == t.spoken_text and tok.decode(tok.encode(t.spoken_text)) == t.spoken_text
