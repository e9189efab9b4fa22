from pathlib import Path

import pytest

from factory.config import ConfigError, RunConfig, load_config


def test_defaults_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("run:\n  seed: 7\n  n_samples: 3\naudio:\n  sample_rate: 16000\n")
    cfg = load_config(path, ["run.seed=9", "behaviour.backchannel_tokens=[yeah, right]"])
    assert (cfg.run.seed, cfg.run.n_samples, cfg.audio.sample_rate) == (9, 3, 16000)
    assert cfg.behaviour.backchannel_tokens == ["yeah", "right"]
    assert cfg.run_id == "demo-seed9"
    assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # what the flow receives


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("llm.backend=gpt", "llm.backend: Input should be 'embedded' or 'http'"),
        ("audio.sample_rate=8000", "audio.sample_rate: Input should be 16000, 22050, 24000, 44100 or 48000"),
        ("run.samples=3", "run.samples: unknown field (allowed here: run_id, name, seed, n_samples"),
        ("run.n_samples=0", "run.n_samples: Input should be greater than or equal to 1"),
        ("timing.overlap_probability=1.5", "timing.overlap_probability: Input should be less than or equal to 1"),
        ("dialogue.n_turns=[9, 3]", "n_turns must satisfy 2 <= low <= high <= 64"),
        ("augment.snr_db={low: 30, high: 10}", "low (30.0) must be <= high (10.0)"),
        ("augment.colors=[violet]", "augment.colors.0: Input should be 'white', 'pink' or 'brown'"),
        ("tts.voice=x", "tts.voice: unknown field (allowed here: voice_bank, user_voice, agent_voice, cache_dir"),
    ],
)
def test_bad_values_name_the_field_and_allowed_values(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)


def test_bad_files_and_override_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(bad)
    with pytest.raises(ConfigError, match="must look like section.field=value"):
        load_config(None, ["run.seed"])
    with pytest.raises(ConfigError, match="dotted path"):
        load_config(None, ["seed=3"])


def test_a_run_config_written_before_the_one_engine_still_loads(tmp_path: Path) -> None:
    """Runs made before `run.wave_size` stored `run.batched` in their config.yaml (regenerate and
    augment read it back): false meant one dialogue at a time, which is a wave of one now."""
    old = tmp_path / "config.yaml"
    old.write_text("run:\n  batched: false\n  seed: 3\n")
    assert load_config(old).run.wave_size == 1
    old.write_text("run:\n  batched: true\n")
    assert load_config(old).run.wave_size is None
    assert load_config(None, ["run.wave_size=4"]).run.wave_size == 4
    with pytest.raises(ConfigError, match="wave_size"):
        load_config(None, ["run.wave_size=0"])
