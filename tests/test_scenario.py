from factory.models import Mode
from factory.script.scenario import bank_size, draw_scenario
from factory.seeding import rng_for

WEIGHTS = {Mode.assistant: 0.5, Mode.peer: 0.5}


def test_bank_has_over_a_million_scenarios_and_draws_spread() -> None:
    assert bank_size() >= 1_000_000
    drawn = {draw_scenario(f"s{i}", rng_for(1, f"s{i}", "scenario"), WEIGHTS, (6, 8)).model_dump_json(exclude={"id"})
             for i in range(2000)}
    assert len(drawn) > 1990  # 2,000 draws from ~9M combinations barely collide


def test_draws_are_deterministic_per_seed_and_sample() -> None:
    a = draw_scenario("x", rng_for(3, "x", "scenario"), WEIGHTS, (6, 8))
    assert a == draw_scenario("x", rng_for(3, "x", "scenario"), WEIGHTS, (6, 8))
    assert a != draw_scenario("x", rng_for(4, "x", "scenario"), WEIGHTS, (6, 8))
    modes = {draw_scenario(f"m{i}", rng_for(3, f"m{i}", "scenario"), WEIGHTS, (6, 8)).mode for i in range(50)}
    assert modes == {Mode.assistant, Mode.peer}
