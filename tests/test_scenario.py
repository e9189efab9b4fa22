from pathlib import Path

import pytest

from factory.config import load_config
from factory.locations import scenario_bank_dir
from factory.models import Mode, Persona
from factory.script.scenario import ScenarioBankError, bank_size, draw_scenario, load_bank
from factory.seeding import rng_for

WEIGHTS = {Mode.assistant: 0.5, Mode.peer: 0.5}


def test_bank_has_over_a_million_scenarios_and_draws_spread() -> None:
    assert bank_size() >= 1_000_000
    drawn = {
        draw_scenario(f"s{i}", rng_for(1, f"s{i}", "scenario"), WEIGHTS, (6, 8)).model_dump_json(exclude={"id"})
        for i in range(2000)
    }
    assert len(drawn) > 1990  # 2,000 draws from ~9M combinations barely collide


def test_draws_are_deterministic_per_seed_and_sample() -> None:
    a = draw_scenario("x", rng_for(3, "x", "scenario"), WEIGHTS, (6, 8))
    assert a == draw_scenario("x", rng_for(3, "x", "scenario"), WEIGHTS, (6, 8))
    assert a != draw_scenario("x", rng_for(4, "x", "scenario"), WEIGHTS, (6, 8))
    modes = {draw_scenario(f"m{i}", rng_for(3, f"m{i}", "scenario"), WEIGHTS, (6, 8)).mode for i in range(50)}
    assert modes == {Mode.assistant, Mode.peer}


def test_packaged_bank_loads_from_package_data() -> None:
    bank = load_bank()
    assert sorted(p.name for p in scenario_bank_dir().glob("*.yaml")) == [
        "personas.yaml",
        "settings.yaml",
        "styles.yaml",
        "topics.yaml",
    ]
    assert len(bank.topics) >= 50 and len(bank.user_personas) >= 10 and len(bank.agent_personas) >= 10
    assert all(isinstance(p, Persona) for p in bank.user_personas)
    assert len(set(bank.topics)) == len(bank.topics)  # repeats would skew the draw
    assert bank.topics[0] == "planning a weekend hiking trip"  # order is what a seed picks by


def test_user_folder_extends_the_bank_and_its_topic_gets_drawn(tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text(
        "topics: [tuning a grand piano]\nagent_personas:\n  - {name: Rex, description: a piano technician}\n"
    )
    bank = load_bank(tmp_path)
    packaged = load_bank()
    assert bank.topics == (*packaged.topics, "tuning a grand piano")
    assert bank.settings == packaged.settings and bank.size() > packaged.size()
    drawn = [draw_scenario(f"s{i}", rng_for(5, f"s{i}", "scenario"), WEIGHTS, (6, 8), bank) for i in range(600)]
    assert any(s.topic == "tuning a grand piano" for s in drawn)
    assert any(s.agent.name == "Rex" for s in drawn)


def test_user_file_replaces_the_fields_it_names(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("replace: [topics]\ntopics: [only this]\nstyles: [whispered]\n")
    bank = load_bank(tmp_path)
    assert bank.topics == ("only this",)
    assert bank.styles[-1] == "whispered" and len(bank.styles) > 1
    scenario = draw_scenario("x", rng_for(1, "x", "scenario"), WEIGHTS, (6, 8), bank)
    assert scenario.topic == "only this"


def test_config_bank_folder_reaches_the_draw(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("replace: [settings]\nsettings: [on the moon]\n")
    cfg = load_config(None, [f"dialogue.scenario_bank={tmp_path}"])
    assert cfg.dialogue.scenario_bank == tmp_path
    bank = load_bank(cfg.dialogue.scenario_bank)
    assert draw_scenario("x", rng_for(1, "x", "scenario"), WEIGHTS, (6, 8), bank).setting == "on the moon"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("topics: [a walk, 5]\n", "topics.1"),
        ("topics: [a walk, '  ']\n", "topics.1"),
        ("topcis: [a walk]\n", "topcis: unknown field"),
        ("user_personas:\n  - {name: Sam}\n", "user_personas.0.description"),
        ("replace: [topics]\nstyles: [odd]\n", "replace names ['topics']"),
        ("replace: [voices]\n", "replace.0"),
        ("- just a list\n", "expected a mapping"),
        ("topics: [unclosed\n", "not readable YAML"),
    ],
)
def test_malformed_bank_file_names_the_file_and_the_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    with pytest.raises(ScenarioBankError) as err:
        load_bank(tmp_path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_a_bank_left_empty_or_missing_says_so(tmp_path: Path) -> None:
    with pytest.raises(ScenarioBankError, match="does not exist"):
        load_bank(tmp_path / "nowhere")
    with pytest.raises(ScenarioBankError, match="no \\*.yaml files"):
        load_bank(tmp_path)
